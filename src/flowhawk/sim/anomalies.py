"""Injecting anomalies into a simulated site's flows.

Anomalies happen after the clean days (default three, so detectors can learn), one
per time slot: the anomalous days are cut into as many equal slots as there are
anomalies, shuffled, and each anomaly starts at a random minute of its own slot, so
no two overlap in time and one cannot hide or inflate another. Every random choice
comes from the seed.

Each kind (see :mod:`flowhawk.sim.kinds`) changes the flows of the normal traffic,
removes some, or adds new ones, and marks every flow it touched with its id (removed
flows are kept aside). :mod:`flowhawk.sim.labels` then measures, on the final flows,
how each key the anomaly touched really behaved, and writes the labels from that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from flowhawk.demo.simulate import DGRAM_HDR, TCP_HDR, Stream, packets
from flowhawk.schema import proto_name
from flowhawk.sim.site import ANOMALY_EXTERNAL, Site

UTC_US = pl.Datetime("us", "UTC")
MINUTE = timedelta(minutes=1)


@dataclass
class Injected:
    """What an injector did: the label's headline."""

    kind: str
    variant: str
    start: datetime  # first bucket of the anomaly (minute-aligned)
    end: datetime  # end of its last bucket (exclusive)
    description: str


@dataclass
class World:
    """The flows being changed, and what injectors need to choose their targets.

    The normal flows (sorted by start) stay as they are; changes are kept aside (rows
    dropped, rows added) and applied once by :meth:`result`, so an injection costs
    the size of its window, not of the whole run.
    """

    site: Site
    streams: list[Stream]
    frame: pl.DataFrame  # the normal flows, sorted by ts_start, with "_anom" (null)
    rng: np.random.Generator
    removed: list[pl.DataFrame] = field(default_factory=list)
    prefer: str | None = None  # the variant the current injection should be, if it can
    _external: list[str] = field(default_factory=lambda: list(ANOMALY_EXTERNAL))
    _added: list[pl.DataFrame] = field(default_factory=list)
    _dropped: list[pl.Series] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.frame = self.frame.with_row_index("_row")
        self._times = self.frame.get_column("ts_start")

    # -- reading --------------------------------------------------------------------

    def flows(self, t0: datetime | None, t1: datetime) -> pl.DataFrame:
        """Flows starting in [t0, t1) (t0 None: from the beginning), anomalies included."""
        lo = 0 if t0 is None else self._times.search_sorted(t0, "left")
        hi = self._times.search_sorted(t1, "left")
        part = self.frame.slice(lo, hi - lo)
        if self._dropped:
            part = part.filter(~pl.col("_row").is_in(pl.concat(self._dropped).implode()))
        added = [a.filter(_between(t0 or a["ts_start"].min(), t1)) for a in self._added]
        return pl.concat([part, *(a for a in added if a.height)]) if added else part

    def result(self) -> pl.DataFrame:
        """The final flows: normal ones less the dropped, plus the added and changed."""
        out = self.frame
        if self._dropped:
            out = out.filter(~pl.col("_row").is_in(pl.concat(self._dropped).implode()))
        return pl.concat([out, *self._added]).drop("_row")

    # -- choosing -------------------------------------------------------------------

    def new_external(self, n: int = 1) -> list[str]:
        """``n`` external addresses no flow has used (from the reserved ranges)."""
        if n > len(self._external):
            raise ValueError("out of reserved external addresses for anomalies")
        picks = sorted(self.rng.choice(len(self._external), n, replace=False).tolist())
        out = [self._external[i] for i in picks]
        self._external = [a for i, a in enumerate(self._external) if i not in set(picks)]
        return out

    def window(
        self, lo: datetime, hi: datetime, minutes: tuple[float, float]
    ) -> tuple[datetime, datetime]:
        """A random minute-aligned [start, end) of ``minutes`` length inside the slot."""
        room = (hi - lo).total_seconds() / 60 - 20
        length = int(min(self.rng.uniform(*minutes), max(room * 0.8, 2)))
        offset = int(self.rng.uniform(0, max(room - length, 0)))
        start = _floor_minute(lo) + (offset + 10) * MINUTE
        return start, start + max(length, 2) * MINUTE

    def periodic(self, max_period: float, ports: set[int] | None = None) -> list[tuple]:
        """(client, server, port, proto, period) of periodic one-server streams."""
        out = []
        for s in self.streams:
            one = 0 < s.period <= max_period and len(s.servers) == 1 and s.activity is None
            if one and (ports is None or s.port in ports):
                out += [(c, s.servers[0], s.port, s.proto, s.period) for c in s.clients]
        return out

    def active(
        self, clients: list[str], stream: str, t0: datetime, t1: datetime, least: int
    ) -> list[str]:
        """Those of ``clients`` with at least ``least`` flows of ``stream`` in [t0, t1)."""
        df = self.flows(t0, t1).filter(
            (pl.col("stream") == stream) & pl.col("src_ip").is_in(pl.Series(clients).implode())
        )
        counts = df.group_by("src_ip").len().filter(pl.col("len") >= least)
        return sorted(counts.get_column("src_ip").to_list())

    def wants(self, variant: str, chance: float) -> bool:
        """Whether to make ``variant``: the preferred one, or (none preferred) by chance."""
        if self.prefer is None:
            return bool(self.rng.random() < chance)
        return self.prefer == variant

    def choice(self, items: list):
        return items[int(self.rng.integers(0, len(items)))]

    def seen_comm(self, src: str, dst: str, port: int, proto: int, before: datetime) -> bool:
        return self.flows(None, before).filter(comm(src, dst, port, proto)).height > 0

    # -- changing (each within [t0, t1): anomalies never overlap) -------------------

    def modify(
        self,
        mask: pl.Expr,
        t0: datetime,
        t1: datetime,
        aid: int,
        change: Callable[[pl.DataFrame], pl.DataFrame],
    ) -> int:
        """Replace the flows in [t0, t1) matching ``mask`` by ``change(flows)``."""
        hit = self.flows(t0, t1).filter(mask)
        if hit.height:
            self._dropped.append(hit.get_column("_row"))
            changed = change(hit).with_columns(_anom=pl.lit(aid, pl.Int32))
            self._added.append(self._shaped(changed))
        return hit.height

    def remove(self, mask: pl.Expr, t0: datetime, t1: datetime, aid: int) -> int:
        """Take away the flows in [t0, t1) matching ``mask`` (kept in ``removed``)."""
        hit = self.flows(t0, t1).filter(mask)
        if hit.height:
            self._dropped.append(hit.get_column("_row"))
            self.removed.append(hit.drop("_row").with_columns(_anom=pl.lit(aid, pl.Int32)))
        return hit.height

    def add(self, flows: pl.DataFrame, aid: int) -> int:
        if flows.height:
            flows = flows.with_columns(_anom=pl.lit(aid, pl.Int32), _row=pl.lit(None, pl.UInt32))
            self._added.append(self._shaped(flows))
        return flows.height

    def _shaped(self, df: pl.DataFrame) -> pl.DataFrame:
        return df.select(self.frame.columns).cast(dict(self.frame.schema))


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _between(t0: datetime, t1: datetime) -> pl.Expr:
    return (pl.col("ts_start") >= pl.lit(t0, UTC_US)) & (pl.col("ts_start") < pl.lit(t1, UTC_US))


def comm(src: str, dst: str, port: int, proto: int) -> pl.Expr:
    return (
        (pl.col("src_ip") == src)
        & (pl.col("dst_ip") == dst)
        & (pl.col("dst_port") == port)
        & (pl.col("proto") == proto)
    )


def between(t0: datetime, t1: datetime) -> pl.Expr:
    """Flows starting in [t0, t1)."""
    return _between(t0, t1)


def header(proto: int) -> int:
    return TCP_HDR if proto == 6 else DGRAM_HDR


def flows(
    kind: str,
    t: np.ndarray,  # start, epoch microseconds
    dur: np.ndarray,  # seconds
    src: list[str] | np.ndarray,
    dst: list[str] | np.ndarray,
    dst_port: int | np.ndarray,
    proto: int,
    req: np.ndarray,  # payload bytes each way (see demo.simulate.packets)
    resp: np.ndarray,
    answered: np.ndarray,
    rng: np.random.Generator,
    service: str | None = None,
    state: str = "SF",
    syn_tries: int = 1,
) -> pl.DataFrame:
    """New flows in the frame's shape (``_anom`` set by :meth:`World.add`)."""
    n = len(t)
    answered = np.broadcast_to(np.asarray(answered, dtype=bool), (n,))
    src_bytes, dst_bytes, src_pkts, dst_pkts = packets(proto, req, resp, answered, syn_tries)
    start = np.asarray(t, dtype=np.int64)
    end = start + (np.asarray(dur, dtype=float) * 1e6).astype(np.int64)
    return pl.DataFrame(
        {
            "src_ip": np.broadcast_to(np.asarray(src, dtype=object), (n,)).tolist(),
            "dst_ip": np.broadcast_to(np.asarray(dst, dtype=object), (n,)).tolist(),
            "src_port": np.zeros(n, np.int64) if proto == 1 else rng.integers(49152, 65536, n),
            "dst_port": np.broadcast_to(np.asarray(dst_port, dtype=np.int64), (n,)).copy(),
            "proto": np.full(n, proto, np.int64),
            "src_bytes": src_bytes,
            "dst_bytes": dst_bytes,
            "src_pkts": src_pkts,
            "dst_pkts": dst_pkts,
            "service": pl.repeat(service, n, dtype=pl.String, eager=True),
            "state": np.where(answered, state, "S0").tolist(),
            "stream": pl.repeat(f"anomaly:{kind}", n, dtype=pl.String, eager=True),
            "ts_start": pl.Series(start).cast(UTC_US),
            "ts_end": pl.Series(end).cast(UTC_US),
        },
        schema_overrides={"src_ip": pl.String, "dst_ip": pl.String, "state": pl.String},
    ).with_columns(
        orient=pl.lit("start"),
        uni=pl.lit(False),
        sampling=pl.lit(1, pl.Int32),
        input=pl.lit("simulator"),
        flow_id=pl.lit("", pl.String),
    )


def minutes(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds() // 60)


def spread(w: World, start: datetime, end: datetime, n: int, lead: float = 5.0) -> np.ndarray:
    """``n`` sorted start times (epoch us) spread over [start, end), the first near start."""
    span = (end - start).total_seconds() - lead
    t = np.sort(w.rng.uniform(0, span, n))
    t[0] = w.rng.uniform(0, lead)
    return us(start) + (np.sort(t) * 1e6).astype(np.int64)


def scale(columns: list[str], factor: np.ndarray) -> list[pl.Expr]:
    return [
        (pl.col(c) * pl.lit(pl.Series(factor))).round().cast(pl.Int64).alias(c) for c in columns
    ]


def port_text(port: int, proto: int) -> str:
    return f"{port}/{proto_name(proto)}"


def rejected(df: pl.DataFrame, mask: np.ndarray) -> pl.DataFrame:
    """Mark rows as refused: the server answered the SYN with a RST."""
    m = pl.lit(pl.Series(mask))
    return df.with_columns(
        dst_pkts=pl.when(m).then(1).otherwise(pl.col("dst_pkts")),
        dst_bytes=pl.when(m).then(40).otherwise(pl.col("dst_bytes")),
        src_pkts=pl.when(m).then(1).otherwise(pl.col("src_pkts")),
        src_bytes=pl.when(m).then(60).otherwise(pl.col("src_bytes")),
        state=pl.when(m).then(pl.lit("REJ")).otherwise(pl.col("state")),
    )


def us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def plan(
    kinds: list[str],
    per_kind: int,
    start: datetime,
    days: int,
    clean_days: int,
    rng: np.random.Generator,
) -> list[tuple[int, str, datetime, datetime]]:
    """(id, kind, slot start, slot end) of every anomaly, ids in time order."""
    todo = [k for k in kinds for _ in range(per_kind)]
    if not todo:
        return []
    if clean_days >= days:
        raise ValueError(f"no day left for anomalies: {days} days, {clean_days} clean")
    lo = start + timedelta(days=clean_days)
    span = timedelta(days=days - clean_days) / len(todo)
    order = rng.permutation(len(todo))
    return [
        (i + 1, todo[int(order[i])], lo + span * i, lo + span * (i + 1)) for i in range(len(todo))
    ]


def inject(
    world: World,
    slots: list[tuple[int, str, datetime, datetime]],
    injectors: dict[str, Callable[[World, int, datetime, datetime], Injected | None]],
    variants: dict[str, tuple[str, ...]],
) -> dict[int, Injected]:
    """Run each slot's injector, the n-th of a kind preferring its n-th variant (the next
    variant and another draw when one finds no target, up to 5 tries); anomalies that
    still found none (a site without such devices) are left out."""
    done: dict[int, Injected] = {}
    nth: dict[str, int] = {}
    for aid, kind, lo, hi in slots:
        n = nth[kind] = nth.get(kind, -1) + 1
        for attempt in range(5):
            options = variants[kind]
            world.prefer = options[(n + attempt) % len(options)]
            result = injectors[kind](world, aid, lo, hi)
            if result is not None:
                done[aid] = result
                break
    world.prefer = None
    return done


def utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
