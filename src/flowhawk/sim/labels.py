"""Labels measured on the data: for every key an anomaly touched, how it really behaved.

The flows are put into flowhawk's own shape (orientation and network context with
the default configuration, exactly as ``analyze`` would) and aggregated with
:func:`flowhawk.behavior.views.aggregate`, one-minute buckets. The keys an anomaly
touched, in every view, are the keys its flows (changed, added or removed) aggregate
to. Each is compared between its *baseline* (the 7 days before the anomaly, or
since the data starts) and the anomaly's *window*:

- ``up(m)``: the median of the window's rows is >= 10x the median of the baseline's
  rows (the key is *present*: rows in at least half the window's buckets, or for a
  key seen in few buckets at least half its usual number of rows, and 3 or more;
  the baseline has >= 10 rows),
  and the window's mean per bucket is >= 10x the mean at the same time of day on
  earlier days (so night-time or weekend quiet is not mistaken for an anomaly);
- ``down(m)``: the mean per bucket over the window (empty buckets count as 0) is
  <= 0.25x the baseline's (and at the same time of day on earlier days), and the
  baseline makes >= 10 rows expected in the window;
- ``fan-out``: peers or ports, window median >= 5x the baseline's and 5 more.

Methods (the flowhawk ids expected to fire), from the measurements:

- comm view: M1 when the communication never appeared before the window; M30/M31 on
  the communication a new internal device first sent in / a new external address
  first appeared in (as the M30/M31 detectors define appearing); M2 up(packets received),
  M3 up(packets sent), M4 up(packets total), M5 all three; M6 down(sent), M7
  down(received), M8 down(total), M9 all three;
- every view with clustering methods (:data:`CLUSTER_METHODS`): its methods when the
  key existed before and, present in the window, any of packets, bytes or flows is
  up or down, or peers or ports fan out.

A touched key that changed less (x3 or /3, or a new key in a view without M1) gets a
row with no methods: part of the anomaly, so an alarm there is not a false alarm, but
none is required. Keys that did not change get no row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from flowhawk.behavior.views import BY_NAME, COMM, MEASURE_TYPES, UTC_US, VIEWS, View, bucket_of
from flowhawk.config import Config
from flowhawk.normalize.context import NetworkContext, add_context
from flowhawk.normalize.orient import orient_by_port
from flowhawk.schema import EAST_WEST, NORTH_SOUTH
from flowhawk.sim.anomalies import Injected, utc

#: Clustering methods by view (velocity and magnitude, FlowScape's numbering).
CLUSTER_METHODS: dict[str, tuple[str, ...]] = {
    "comm": ("M10", "M11", "M18", "M19"),
    "port": ("M12", "M13"),
    "client_port": ("M14", "M15"),
    "server_port": ("M16", "M17"),
    "device": (),
    "ext_tcp": ("M20",),
    "int_tcp": ("M21",),
    "ext_udp": ("M22",),
    "int_udp": ("M23",),
    "ext_icmp": ("M24",),
    "int_icmp": ("M25",),
}
UP, DOWN, FAN, FAN_MIN = 10.0, 0.25, 5.0, 5
SOFT_UP, SOFT_DOWN = 3.0, 1 / 3
MIN_BASE_ROWS, MIN_EXPECTED, MIN_ACTIVE, MIN_SHARE = 10, 10.0, 0.5, 0.25
BASELINE = timedelta(days=7)
BUCKET = 60
COMM_KEY = COMM.key
KEY_COLUMNS = ("site", "src_ip", "dst_ip", "dst_port", "proto", "ip")
LABEL_COLUMNS = ("id", "kind", "variant", "methods", "view", *KEY_COLUMNS)
LABEL_COLUMNS += ("start", "end", "description")
LABEL_SCHEMA = {
    "id": pl.Int32, "kind": pl.String, "variant": pl.String, "methods": pl.String,
    "view": pl.String, "site": pl.String, "src_ip": pl.String, "dst_ip": pl.String,
    "dst_port": pl.Int32, "proto": pl.Int16, "ip": pl.String, "start": pl.String,
    "end": pl.String, "description": pl.String,
}  # fmt: skip
_VOLUME = ("pkts", "bytes", "pkts_out", "pkts_in", "bytes_out", "bytes_in", "flows")
_COUNTS = ("peers", "ports")


def canonical(frame: pl.DataFrame, cfg: Config | None = None) -> pl.DataFrame:
    """``frame`` oriented and with network context as flowhawk's normalizer makes them."""
    net = NetworkContext.from_config(cfg or Config())
    return add_context(orient_by_port(frame), net)


def _stats(
    rows: pl.DataFrame, key: tuple[str, ...], inj: Injected, base0: datetime
) -> pl.DataFrame:
    """Per key: rows before / in the baseline / in the window, and per measure the
    baseline's and the window's median row and sum, and the window's sum on each of the
    previous days at the same time of day (``<m>_days``)."""
    start, span = inj.start, (inj.end - inj.start).total_seconds()
    rows = rows.with_columns(
        pkts=pl.col("pkts_out") + pl.col("pkts_in"), bytes=pl.col("bytes_out") + pl.col("bytes_in")
    )
    t = pl.col("bucket")
    before, base = t < start, (t >= base0) & (t < start)
    win = t >= start
    aggs = [before.sum().alias("ever"), base.sum().alias("base_rows"), win.sum().alias("win_rows")]
    for m in (*_VOLUME, *_COUNTS):
        c = pl.col(m).cast(pl.Float64)
        aggs += [
            c.filter(base).median().alias(f"{m}_bmed"),
            c.filter(win).median().alias(f"{m}_wmed"),
            c.filter(base).sum().alias(f"{m}_bsum"),
            c.filter(win).sum().alias(f"{m}_wsum"),
        ]
    stats = rows.group_by(list(key)).agg(aggs)
    # The same clock window on each earlier day of the baseline.
    ago = (pl.lit(start, UTC_US) - t).dt.total_seconds()
    day = (ago / 86400).ceil().cast(pl.Int64)
    same = base & (day * 86400 - ago < span)
    daily = (
        rows.filter(same)
        .with_columns(_day=day)
        .group_by(*key, "_day")
        .agg(pl.col(m).sum().cast(pl.Float64) for m in _VOLUME)
        .group_by(list(key))
        .agg(pl.col(m).alias(f"{m}_days") for m in _VOLUME)
    )
    return stats.join(daily, on=list(key), how="left")


def _tod_mean(r: dict, m: str, n_days: int, n_win: float) -> float | None:
    """Median over the earlier days of the mean per bucket at the window's time of day."""
    if n_days < 1:
        return None
    sums = list(r.get(f"{m}_days") or [])
    sums += [0.0] * (n_days - len(sums))
    return float(np.median(sums)) / n_win


def _judge(
    r: dict, n_base: float, n_win: float, n_days: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(strong, soft) findings per measure: "up", "down" or "fan"."""
    strong: dict[str, str] = {}
    soft: dict[str, str] = {}
    expected = r["base_rows"] / n_base * n_win if n_base else 0.0
    active = _active(r, n_base, n_win)
    for m in _VOLUME:
        bmed, wmed = r[f"{m}_bmed"] or 0.0, r[f"{m}_wmed"] or 0.0
        bmean = (r[f"{m}_bsum"] or 0.0) / n_base if n_base else 0.0
        wmean = (r[f"{m}_wsum"] or 0.0) / n_win
        tod = _tod_mean(r, m, n_days, n_win)

        def vs_tod(ratio: float, up: bool, tod: float | None = tod, wmean: float = wmean) -> bool:
            # The same time of day on earlier days must agree (no diurnal artefacts).
            return tod is None or (wmean >= ratio * tod if up else wmean <= ratio * tod)

        if r["base_rows"] >= MIN_BASE_ROWS and active:
            if ((bmed > 0 and wmed >= UP * bmed) or (bmed == 0 and wmed >= UP)) and vs_tod(
                UP, True
            ):
                strong[m] = "up"
            elif bmed > 0 and wmed >= SOFT_UP * bmed and vs_tod(SOFT_UP, True):
                soft[m] = "up"
        if expected >= MIN_EXPECTED and bmean > 0:
            if wmean <= DOWN * bmean and vs_tod(DOWN, False):
                strong[m] = "down"
            elif wmean <= SOFT_DOWN * bmean and vs_tod(SOFT_DOWN, False):
                soft[m] = "down"
    for m in _COUNTS:
        bmed, wmed = r[f"{m}_bmed"] or 0.0, r[f"{m}_wmed"] or 0.0
        if r["base_rows"] >= MIN_BASE_ROWS and active and bmed > 0:
            if wmed >= FAN * bmed and wmed - bmed >= FAN_MIN:
                strong[m] = "fan"
            elif wmed >= 2 * bmed and wmed - bmed >= 3:
                soft[m] = "fan"
    return strong, soft


def _active(r: dict, n_base: float, n_win: float) -> bool:
    """The key is present in the window about as usual: rows in half its buckets, or (a
    key with rows in few buckets) at least half as many rows as usual, and 3 or more."""
    expected = r["base_rows"] / n_base * n_win if n_base else 0.0
    return r["win_rows"] >= max(3, MIN_ACTIVE * min(n_win, expected))


def _methods(view: str, r: dict, strong: dict[str, str], n_base: float, n_win: float) -> list[str]:
    out: list[str] = []
    if view == "comm":
        if r["ever"] == 0:
            out.append("M1")
        up = [strong.get(m) == "up" for m in ("pkts_in", "pkts_out", "pkts")]
        down = [strong.get(m) == "down" for m in ("pkts_out", "pkts_in", "pkts")]
        out += [m for m, hit in zip(("M2", "M3", "M4"), up, strict=True) if hit]
        out += ["M5"] if all(up) else []
        out += [m for m, hit in zip(("M6", "M7", "M8"), down, strict=True) if hit]
        out += ["M9"] if all(down) else []
    if r["ever"] and _active(r, n_base, n_win) and strong:
        out += CLUSTER_METHODS[view]
    return out


def _summary(
    r: dict, strong: dict[str, str], soft: dict[str, str], n_base: float, n_win: float
) -> str:
    if r["base_rows"] == 0:
        return "new key (no rows in the baseline)" if r["ever"] == 0 else "no recent baseline"
    parts = []
    for m, how in sorted({**soft, **strong}.items()):
        if how == "down":
            b, w = r[f"{m}_bsum"] / n_base, r[f"{m}_wsum"] / n_win
            parts.append(f"{m} {b:.3g}->{w:.3g} per min")
        else:
            parts.append(f"{m} {r[f'{m}_bmed'] or 0:.3g}->{r[f'{m}_wmed'] or 0:.3g} (median)")
    return ", ".join(parts)


def view_log(
    flows: pl.DataFrame, view: View, bucket: int = BUCKET, keys: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The rows of one view (of ``keys`` only, if given), as
    :func:`flowhawk.behavior.aggregate.aggregate` makes them, unsorted: one view instead of
    all (a test holds the two to the same result)."""
    f = flows.with_columns(
        bucket=bucket_of(pl.col("ts_start"), bucket),
        _dur=(pl.col("ts_end") - pl.col("ts_start")).dt.total_microseconds(),
    )
    sides = {
        "comm": ("src", "dst", pl.lit(1), pl.col("src_port")),
        "port": ("src", "dst", pl.col("src_ip"), pl.col("dst_ip")),
        "client_port": ("src", "dst", pl.col("dst_ip"), pl.col("dst_port")),
        "server_port": ("dst", "src", pl.col("src_ip"), pl.col("src_port")),
    }
    if view.name in sides:
        me, other, peer, port = sides[view.name]
        if keys is not None:
            f = f.join(keys, on=list(view.key), how="semi")
    else:
        f = _ends(f, view.name, None if keys is None else keys.get_column("ip"))
        me, other, peer, port = "me", "other", pl.col("peer"), pl.col("port")
    df = f.group_by("bucket", *view.key).agg(
        pl.col(f"{me}_pkts").sum().alias("pkts_out"),
        pl.col(f"{other}_pkts").sum().alias("pkts_in"),
        pl.col(f"{me}_bytes").sum().alias("bytes_out"),
        pl.col(f"{other}_bytes").sum().alias("bytes_in"),
        pl.len().alias("flows"),
        peer.n_unique().alias("peers"),
        port.n_unique().alias("ports"),
        (pl.col("_dur").sum() / 1e6).alias("duration"),
    )
    return df.select(
        pl.col("bucket").cast(UTC_US),
        *view.key,
        *(pl.col(m).cast(t) for m, t in MEASURE_TYPES.items()),
    )


def _ends(f: pl.DataFrame, view: str, ips: pl.Series | None) -> pl.DataFrame:
    """Each internal endpoint of the flows (of ``ips``) as itself, for the device views."""
    cols = ("bucket", "site", "proto", "direction", "_dur")

    def side(a: str) -> pl.Expr:
        rule = pl.col(f"{a}_internal")
        return rule if ips is None else rule & pl.col(f"{a}_ip").is_in(ips.implode())

    ends = pl.concat(
        [
            f.filter(side(a)).select(
                *cols, ip=pl.col(f"{a}_ip"), peer=pl.col(f"{b}_ip"), port=pl.col("dst_port"),
                me_pkts=pl.col(f"{a}_pkts"), other_pkts=pl.col(f"{b}_pkts"),
                me_bytes=pl.col(f"{a}_bytes"), other_bytes=pl.col(f"{b}_bytes"),
            )
            for a, b in (("src", "dst"), ("dst", "src"))
        ]
    )  # fmt: skip
    if view == "device":
        return ends
    scope, proto = view.split("_")
    protos = {"tcp": [6], "udp": [17], "icmp": [1, 58]}[proto]
    direction = NORTH_SOUTH if scope == "ext" else EAST_WEST
    return ends.filter(pl.col("proto").is_in(protos) & (pl.col("direction") == direction))


def _contributing(flows: pl.DataFrame, view: View, keys: pl.DataFrame) -> pl.DataFrame:
    """The flows that may aggregate to ``keys`` of ``view`` (a cheap first cut)."""
    if view.name == "port":
        ports = pl.col("dst_port").is_in(keys.get_column("dst_port").implode())
        return flows.filter(ports).join(keys, on=list(view.key), how="semi")
    if view.name in ("comm", "client_port"):
        return flows.filter(pl.col("src_ip").is_in(keys.get_column("src_ip").implode()))
    if view.name == "server_port":
        return flows.filter(pl.col("dst_ip").is_in(keys.get_column("dst_ip").implode()))
    ips = keys.get_column("ip")
    ips = ips.implode()
    return flows.filter(pl.col("src_ip").is_in(ips) | pl.col("dst_ip").is_in(ips))


def _involved(
    touched: pl.DataFrame, removed: pl.DataFrame, window: pl.DataFrame, view: View
) -> pl.DataFrame:
    """Keys of ``view`` the anomaly's flows make up at least :data:`MIN_SHARE` of in its
    window (flows, packets, bytes or peers; removed flows count as if still there):
    the others (a busy server one scan probe touched) cannot change because of it."""
    mine = view_log(touched, view)
    keys = mine.select(view.key).unique()
    if keys.height == 0 or view.name == "comm":
        return keys
    everyone = view_log(pl.concat([window, removed]), view, keys=keys)
    sums = [pl.col(m).sum() for m in ("flows", "pkts_out", "pkts_in", "bytes_out", "peers")]
    a = mine.group_by(view.key).agg(sums)
    b = everyone.group_by(view.key).agg(sums)
    share = a.join(b, on=list(view.key), suffix="_all").with_columns(
        pl.max_horizontal(
            pl.col(m) / pl.max_horizontal(pl.col(f"{m}_all"), 1)
            for m in ("flows", "pkts_out", "pkts_in", "bytes_out", "peers")
        ).alias("_share")
    )
    return share.filter(pl.col("_share") >= MIN_SHARE).select(view.key)


def _first_seen(canon: pl.DataFrame) -> pl.DataFrame:
    """Per address: when any flow first involved it, and when it first *sent* (a client,
    or a server that answered): M31 and M30's notions of a device appearing."""
    t = "ts_start"
    return pl.concat(
        [
            canon.select(ip=pl.col("src_ip"), internal=pl.col("src_internal"), t=pl.col(t),
                         sent=pl.col(t)),
            canon.select(ip=pl.col("dst_ip"), internal=pl.col("dst_internal"), t=pl.col(t),
                         sent=pl.when(pl.col("dst_pkts") > 0).then(pl.col(t))),
        ]
    ).group_by("ip").agg(
        pl.col("internal").first(), pl.col("t").min(), pl.col("sent").min()
    )  # fmt: skip


def _device_methods(touched: pl.DataFrame, seen: pl.DataFrame, start: datetime) -> dict:
    """comm key -> ["M30"/"M31"]: the communication each new device first appeared in."""
    ips = pl.concat([touched.get_column("src_ip"), touched.get_column("dst_ip")]).unique()
    new = seen.filter(
        pl.col("ip").is_in(ips.implode())
        & (pl.when(pl.col("internal")).then(pl.col("sent")).otherwise(pl.col("t")) >= start)
    )
    out: dict[tuple, list[str]] = {}
    for ip, internal in new.sort("ip").select("ip", "internal").iter_rows():
        mine = touched.filter((pl.col("src_ip") == ip) | (pl.col("dst_ip") == ip))
        if internal:
            mine = mine.filter((pl.col("src_ip") == ip) | (pl.col("dst_pkts") > 0))
        if mine.height:
            key = mine.sort("ts_start").select(COMM_KEY).row(0)
            out.setdefault(key, []).append("M30" if internal else "M31")
    return out


def label_rows(
    flows: pl.DataFrame,
    removed: pl.DataFrame,
    done: dict[int, Injected],
    data_start: datetime,
    cfg: Config | None = None,
) -> pl.DataFrame:
    """Label rows (:data:`LABEL_COLUMNS`) of the anomalies in ``done``.

    ``flows`` are the final flows and ``removed`` the ones anomalies took away, both
    with ``_anom`` (the anomaly id) and in the raw frame shape.
    """
    if not done:
        return pl.DataFrame(schema=LABEL_SCHEMA)
    out = _label_rows(flows, removed, done, data_start, cfg)
    if not out:
        return pl.DataFrame(schema=LABEL_SCHEMA)
    return pl.DataFrame(out, schema=LABEL_SCHEMA)


def _label_rows(
    flows: pl.DataFrame,
    removed: pl.DataFrame,
    done: dict[int, Injected],
    data_start: datetime,
    cfg: Config | None,
) -> list[dict]:
    keep = [c for c in flows.columns if c not in ("service", "state", "stream", "input", "flow_id")]
    cat = [pl.col("src_ip", "dst_ip").cast(pl.Categorical)]  # joins and filters on integers
    canon = canonical(flows.select(keep), cfg).with_columns(cat)
    if not canon.get_column("ts_start").is_sorted():
        canon = canon.sort("ts_start", maintain_order=True)
    gone = (
        canonical(removed.select(keep), cfg).with_columns(cat) if removed.height else canon.clear()
    )
    times = canon.get_column("ts_start")
    seen = _first_seen(canon)
    mine_all = canon.filter(pl.col("_anom").is_not_null())

    def between(t0: datetime, t1: datetime) -> pl.DataFrame:
        lo, hi = times.search_sorted(t0, "left"), times.search_sorted(t1, "left")
        return canon.slice(lo, hi - lo)

    out = []
    for aid, inj in sorted(done.items()):
        base0 = max(data_start, inj.start - BASELINE)
        n_base = (inj.start - base0).total_seconds() / BUCKET
        n_win = (inj.end - inj.start).total_seconds() / BUCKET
        n_days = min(7, int((inj.start - base0).total_seconds() // 86400))
        in_window = (pl.col("ts_start") >= inj.start) & (pl.col("ts_start") < inj.end)
        taken = gone.filter((pl.col("_anom") == aid) & in_window)
        touched = pl.concat([mine_all.filter((pl.col("_anom") == aid) & in_window), taken])
        span = between(base0, inj.end)
        ips = pl.concat([touched.get_column("src_ip"), touched.get_column("dst_ip")]).unique()
        both = ips.implode()
        near = span.filter(pl.col("src_ip").is_in(both) | pl.col("dst_ip").is_in(both))
        devices = _device_methods(touched.filter(pl.col("_anom") == aid), seen, inj.start)
        window = between(inj.start, inj.end)
        for view in VIEWS:
            keys = _involved(touched, taken, window, view)
            if keys.height == 0:
                continue
            sub = _contributing(span if view.name == "port" else near, view, keys)
            rows = view_log(sub, view, keys=keys)
            stats = keys.join(_stats(rows, view.key, inj, base0), on=list(view.key), how="left")
            if view.name == "comm":
                old = between(data_start, base0).join(keys, on=list(view.key), how="semi")
                old = old.select(view.key).unique().with_columns(_old=pl.lit(1))
                stats = stats.join(old, on=list(view.key), how="left")
            for r in stats.sort(list(view.key)).iter_rows(named=True):
                for k in ("ever", "base_rows", "win_rows"):
                    r[k] = r[k] or 0
                r["ever"] += r.get("_old") or 0
                strong, soft = _judge(r, n_base, n_win, n_days)
                methods = _methods(view.name, r, strong, n_base, n_win)
                if view.name == "comm":
                    methods[1:1] = devices.get(tuple(r[k] for k in COMM_KEY), [])
                if not (methods or strong or soft or r["ever"] == 0):
                    continue
                out.append({
                    "id": aid, "kind": inj.kind, "variant": inj.variant,
                    "methods": ";".join(sorted(methods, key=lambda m: int(m[1:]))),
                    "view": view.name, **{k: r.get(k) for k in KEY_COLUMNS},
                    "start": utc(inj.start), "end": utc(inj.end),
                    "description": f"{inj.description} | {view.name}: "
                    + _summary(r, strong, soft, n_base, n_win),
                })  # fmt: skip
    return out


def view_keys(view: str) -> tuple[str, ...]:
    return BY_NAME[view].key
