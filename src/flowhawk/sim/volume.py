"""Anomalies of volume: spikes, underflows, silences, exfiltration (see :mod:`.kinds`)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from flowhawk.demo.simulate import packets
from flowhawk.sim.anomalies import (
    Injected,
    World,
    comm,
    flows,
    header,
    minutes,
    port_text,
    scale,
    spread,
)

# -- volume ------------------------------------------------------------------------


def volume_spike(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    dense = w.periodic(30)
    udp = [c for c in dense if c[3] == 17 and c[2] == 5683]
    tcp = [c for c in dense if c[3] == 6]
    variant = "sent" if udp and (not tcp or w.wants("sent", 0.3)) else "both"
    pool = udp if variant == "sent" else tcp
    if not pool:
        return None
    src, dst, port, proto, period = w.choice(pool)
    start, end = w.window(lo, hi, (5, 30))
    factor = float(np.exp(w.rng.uniform(np.log(30), np.log(100))))
    cols = ["src_pkts", "src_bytes"] + (["dst_pkts", "dst_bytes"] if variant == "both" else [])

    def change(df: pl.DataFrame) -> pl.DataFrame:
        f = factor * w.rng.lognormal(0.0, 0.1, df.height)
        longer = (pl.col("ts_end") - pl.col("ts_start")) * float(np.sqrt(factor))
        return df.with_columns(*scale(cols, f), ts_end=pl.col("ts_start") + longer)

    if not w.modify(comm(src, dst, port, proto), start, end, aid, change):
        return None
    what = "sends and receives" if variant == "both" else "sends"
    return Injected(
        "volume_spike",
        variant,
        start,
        end,
        f"{src} -> {dst}:{port_text(port, proto)} (every {period:g} s) {what} about {factor:.0f}x "
        f"its usual packets for {minutes(start, end)} min",
    )


def underflow(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    feeds = [s for s in w.streams if s.name in ("historian", "mqtt-bridge")]
    if not feeds:
        return None
    s = next((f for f in feeds if f.name == w.prefer), None) or w.choice(feeds)
    src, dst = s.clients[0], s.servers[0]
    start, end = w.window(lo, hi, (60, 240))
    share = float(w.rng.uniform(0.03, 0.10))
    hdr = header(s.proto)

    def change(df: pl.DataFrame) -> pl.DataFrame:
        req = np.maximum(1, (df["src_bytes"] - hdr * df["src_pkts"]).to_numpy() * share)
        resp = np.maximum(1, (df["dst_bytes"] - hdr * df["dst_pkts"]).to_numpy() * share)
        sb, db, sp, dp = packets(s.proto, req.astype(np.int64), resp.astype(np.int64), True)
        shorter = (pl.col("ts_end") - pl.col("ts_start")) * share
        return df.with_columns(
            src_bytes=pl.Series(sb),
            dst_bytes=pl.Series(db),
            src_pkts=pl.Series(sp),
            dst_pkts=pl.Series(dp),
            ts_end=pl.col("ts_start") + shorter,
        )

    if not w.modify(comm(src, dst, s.port, s.proto), start, end, aid, change):
        return None
    return Injected(
        "underflow",
        s.name,
        start,
        end,
        f"{src} -> {dst}:{port_text(s.port, s.proto)} (every {s.period:g} s) carries only "
        f"{share:.0%} of its usual data for {minutes(start, end)} min, still on schedule",
    )


def silence(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    devices = {a for cls in ("mqtt", "cloud", "coap") for a in w.site.iot[cls]}
    reporting = [c for c in w.periodic(60, {1883, 8883, 5683}) if c[0] in devices]
    polled = w.periodic(60, {502})
    if not reporting and not polled:
        return None
    start, end = w.window(lo, hi, (60, 360))
    if reporting and (not polled or w.wants("stops_reporting", 0.5)):
        dev, srv, port, proto, period = w.choice(reporting)
        hit = w.remove((pl.col("src_ip") == dev) | (pl.col("dst_ip") == dev), start, end, aid)
        if not hit:
            return None
        return Injected(
            "silence",
            "stops_reporting",
            start,
            end,
            f"IoT device {dev} stops reporting to {srv}:{port_text(port, proto)} (every "
            f"{period:g} s): no flows at all for {minutes(start, end)} min",
        )
    poller, dev, port, proto, period = w.choice(polled)

    def change(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            src_pkts=pl.lit(1, pl.Int64),
            src_bytes=pl.lit(60, pl.Int64),
            dst_pkts=pl.lit(0, pl.Int64),
            dst_bytes=pl.lit(0, pl.Int64),
            state=pl.lit("S0"),
            service=pl.lit(None, pl.String),
            ts_end=pl.col("ts_start"),
        )

    if not w.modify(comm(poller, dev, port, proto), start, end, aid, change):
        return None
    return Injected(
        "silence",
        "stops_answering",
        start,
        end,
        f"{dev} stops answering {poller}'s polls on {port_text(port, proto)} (every {period:g} s) "
        f"for {minutes(start, end)} min: each poll is a single unanswered SYN",
    )


# -- exfiltration ----------------------------------------------------------------------


def exfiltration(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    start, end = w.window(lo, hi, (10, 40))
    sync = next((s for s in w.streams if s.name == "ws-sync"), None)
    users = w.active(sync.clients, "ws-web", start, end, 10) if sync else []
    busy = w.active(w.site.workstations, "ws-web", start, end, 10)
    dst = None
    if users and w.wants("known_destination", 0.5):
        host = w.choice(users)
        used = w.flows(None, start).filter(
            (pl.col("src_ip") == host) & (pl.col("stream") == "ws-sync")
        )
        if used.height >= 10:
            dst, variant = used.get_column("dst_ip")[0], "known_destination"
    if dst is None:
        host = (
            w.choice(busy)
            if busy and w.rng.random() < 0.5
            else w.site.role[w.choice(["db", "files"])]
        )
        dst, variant = w.new_external()[0], "new_destination"
    interval = float(w.rng.uniform(15, 45))
    n = max(3, int((end - start).total_seconds() / interval))
    total = float(np.exp(w.rng.uniform(np.log(3e8), np.log(3e9))))
    req = (total / n * w.rng.lognormal(0, 0.2, n)).astype(np.int64)
    resp = w.rng.lognormal(6.0, 0.3, n).astype(np.int64)
    dur = req / w.rng.uniform(3e6, 8e6)
    new = flows(
        "exfiltration",
        spread(w, start, end, n),
        dur,
        host,
        dst,
        443,
        6,
        req,
        resp,
        True,
        w.rng,
        service="ssl",
    )
    w.add(new, aid)
    where = "a storage service it uses" if variant == "known_destination" else "a new address"
    return Injected(
        "exfiltration",
        variant,
        start,
        end,
        f"{host} uploads {req.sum() / 1e6:,.0f} MB to {dst}:443/tcp ({where}) in {n} "
        f"connections over {minutes(start, end)} min",
    )
