"""The memory N1 (beaconing) and N2 (C2 infrastructure) share: beats per series.

Every outbound flow (an internal client, an external server; all flows with
``scope = "all"``) becomes part of a *beat* of its communication (site, client,
server address, port, protocol): flows starting within ``burst_gap`` of the previous
one are one beat (a beacon that opens two connections per check-in beats once). A flow
whose client looked the server's address up by a DNS name shortly before
(:mod:`flowhawk.detectors.beacon_names`) is also a beat of its *name series* (site,
client, name, port, protocol), so a beacon to a name whose addresses rotate (fast
flux, round-robin DNS, a CDN in front of the C2) is one regular series where each
address alone is a few scattered contacts; flows to two of its addresses within the
burst gap are one beat. Beats are kept for ``horizon`` of event time, at most
``max_beats`` per series (the most recent), so a one-minute beacon is judged on its
last two hours and an hourly one on its last day or more.

Each time event time passes the end of a ``window`` (one hour by default), the
series that beat in that window are scored over their kept beats
(:func:`flowhawk.detectors.beacon_score.beat_stats`); the last window is scored when
the input ends. Windows are fixed in event time, so batching never changes what is
scored. Beats hold integers only (the series as a stable 64-bit hash); the names of
each series are kept once beside them, and forgotten every few windows once it has no
beat left; a name series also keeps the addresses it reached within the horizon. The
popularity of each external server or name (how many internal clients reached it
within the horizon, give or take those few windows) comes from that table, for N2.

One alarm for one beacon: an address series whose address belongs to a name series
of the same client, port and protocol that is regular in the same window is marked
``covered`` (the name series speaks for it, listing its addresses), and a name series
counts as established when its own series or one it covers was already regular while
learning (a monitored service that moved to a new address stays quiet).

Series that were already regular while the engine learned are remembered as
*established* (monitoring, update checks, heartbeats); N1 leaves them out unless
told otherwise. While learning, three beats are enough to judge a habit regular (a
two-hourly sync has only a dozen by the end of a day).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.detectors.base import UTC_US, Batch, restore_frame
from flowhawk.detectors.beacon_names import ClientNames
from flowhawk.detectors.beacon_score import beat_stats
from flowhawk.detectors.seen import SeenSet
from flowhawk.detectors.windows import US, WindowClock, micros
from flowhawk.keyhash import stable_hash
from flowhawk.netaddr import NetworkSet

#: The communication an alarm is about (its server address).
KEY = ["site", "src_ip", "dst_ip", "dst_port", "proto"]
#: A series: ``dst`` is the server address, or the DNS name for a name series.
SERIES = ["site", "src_ip", "dst", "dst_port", "proto"]
#: One row per series with beats in the horizon (its names, kept once).
COMM_SCHEMA: dict[str, pl.DataType] = {
    "pid": pl.UInt64(),  # stable hash of the series (SERIES)
    "site": pl.String(),
    "src_ip": pl.String(),
    "dst": pl.String(),
    "named": pl.Boolean(),  # dst is a DNS name
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
    "direction": pl.String(),
    "src_internal": pl.Boolean(),
    "dst_internal": pl.Boolean(),
}
#: One row per beat: integers only.
BEAT_SCHEMA: dict[str, pl.DataType] = {
    "pid": pl.UInt64(),
    "t": pl.Int64(),  # first flow of the beat, epoch microseconds
    "t_last": pl.Int64(),  # last flow start of the beat
    "t_end": pl.Int64(),  # latest flow end of the beat
    "bytes": pl.Int64(),
    "flows": pl.Int64(),
}
#: The addresses each name series reached within the horizon.
ADDR_SCHEMA: dict[str, pl.DataType] = {
    "pid": pl.UInt64(),
    "dst_ip": pl.String(),
    "first": pl.Int64(),
    "last": pl.Int64(),
}
#: Addresses of a name series written out in full (the rest are counted).
ADDRESSES_SHOWN = 10
_PRUNE_EVERY = 6
_LEARN_BEATS = 3


class BeaconCore:
    """Beats per series and the windows scored from them (shared by N1 and N2)."""

    def __init__(
        self,
        *,
        window: float,
        horizon: float,
        burst_gap: float,
        max_beats: int,
        min_beats: int,
        outbound_only: bool,
        established_score: float,
        name_memory: float = 86400.0,
        internal: NetworkSet | None = None,
    ):
        self.window_us = int(window * US)
        self.horizon_us = int(horizon * US)
        self.burst_us = int(burst_gap * US)
        self.max_beats = max_beats
        self.min_beats = min_beats
        self.outbound_only = outbound_only
        self.established_score = established_score
        self.beats = pl.DataFrame(schema=BEAT_SCHEMA)
        self.comms = pl.DataFrame(schema=COMM_SCHEMA)
        self.addrs = pl.DataFrame(schema=ADDR_SCHEMA)
        self.names = ClientNames(name_memory, internal if outbound_only else None)
        self.prune_at = 0  # event time from which communications are next pruned
        self.clock = WindowClock(window)
        self.established = SeenSet(SERIES, COMM_SCHEMA)
        self._memo: list[tuple[object, int, pl.DataFrame]] = []
        self._members: dict[int, int] = {}
        self._seq = 0

    # -- sharing one step's work between the detectors of the group --------------------

    def join(self, member: object) -> None:
        self._members[id(member)] = -1

    def step(
        self, member: object, batch: Batch | None, scoring_from: datetime | None
    ) -> pl.DataFrame:
        """Scored windows that closed with ``batch`` (None: the input ended), computed
        by the first member to ask and kept until every member asked. Windows ending
        at or before ``scoring_from`` (all when it is None) are learned, not scored."""
        token: object = batch.flows if batch is not None else ("end", scoring_from)
        for key, seq, found in self._memo:
            if key is token or (isinstance(key, tuple) and key == token):
                self._consumed(member, seq)
                return found
        start = micros(scoring_from)
        if batch is not None:
            found = self._ingest(batch.flows, batch.dns, start)
        else:
            found = self._end(start)
        self._seq += 1
        self._memo.append((token, self._seq, found))
        self._consumed(member, self._seq)
        return found

    def _consumed(self, member: object, seq: int) -> None:
        self._members[id(member)] = max(self._members.get(id(member), -1), seq)
        low = min(self._members.values())
        self._memo = [m for m in self._memo if m[1] > low]

    # -- beats ---------------------------------------------------------------------------

    def _ingest(
        self, flows: pl.DataFrame, dns: pl.DataFrame | None, scoring_from: int | None
    ) -> pl.DataFrame:
        scope = pl.col("src_internal") & ~pl.col("dst_internal")
        rows = flows.filter(scope) if self.outbound_only else flows
        rows = rows.select(
            pl.col("site", "src_ip", "dst_ip").cast(pl.String),
            pl.col("dst_port").cast(pl.Int32),
            pl.col("proto").cast(pl.Int16),
            pl.col("direction").cast(pl.String),
            pl.col("src_internal", "dst_internal").cast(pl.Boolean),
            t=pl.col("ts_start").cast(UTC_US).dt.epoch("us"),
            t_end=pl.col("ts_end").cast(UTC_US).dt.epoch("us"),
            bytes=(pl.col("src_bytes") + pl.col("dst_bytes")).cast(pl.Int64),
        )
        rows = rows.with_columns(name=self.names.name(rows, dns))
        if flows.height == 0:
            return _no_windows()
        series = pl.concat(
            [
                rows.with_columns(dst=pl.col("dst_ip"), named=pl.lit(False)),
                rows.filter(pl.col("name").is_not_null()).with_columns(
                    dst=pl.col("name"), named=pl.lit(True)
                ),
            ]
        )
        pid = pl.Series("pid", stable_hash(series, SERIES, COMM_SCHEMA), dtype=pl.UInt64)
        series = series.with_columns(pid)
        fresh = (
            series.select(COMM_SCHEMA.keys())
            .unique("pid", keep="first", maintain_order=True)
            .join(self.comms.select("pid"), on="pid", how="anti")
        )
        if fresh.height:
            self.comms = pl.concat([self.comms, fresh])
        series = series.select("pid", "named", "dst_ip", "t", "t_end", "bytes")
        starts = flows.get_column("ts_start").cast(UTC_US).dt.epoch("us")
        found = []
        for (part,), end in self.clock.split(starts.min(), starts.max(), [(series, "t")]):  # type: ignore[arg-type]
            self._add(part)
            if end is not None:  # a window this batch closed: score it on its beats
                found.append(self._close(end, scoring_from))
        found = [f for f in found if f.height]
        return pl.concat(found) if found else _no_windows()

    def _end(self, scoring_from: int | None) -> pl.DataFrame:
        if self.beats.height == 0 or (end := self.clock.close_open()) is None:
            return _no_windows()
        return self._close(end, scoring_from)

    def _add(self, rows: pl.DataFrame) -> None:
        """Merge flows (time-ordered) into the beats of their series."""
        if rows.height == 0:
            return
        reached = (
            rows.filter(pl.col("named"))
            .group_by("pid", "dst_ip")
            .agg(first=pl.col("t").min(), last=pl.col("t").max())
        )
        if reached.height:
            self.addrs = (
                pl.concat([self.addrs, reached.select(ADDR_SCHEMA.keys())])
                .group_by("pid", "dst_ip")
                .agg(pl.col("first").min(), pl.col("last").max())
            )
        last = (
            self.beats.join(rows.select("pid").unique(), on="pid", how="semi")
            .group_by("pid")
            .agg(_prev=pl.col("t_last").max())
        )
        rows = rows.sort("pid", "t", maintain_order=True).join(last, on="pid", how="left")
        prev = pl.col("t").shift(1).over("pid")
        prev = pl.when(prev.is_null()).then(pl.col("_prev")).otherwise(prev)
        rows = rows.with_columns(
            _beat=((pl.col("t") - prev > self.burst_us) | prev.is_null())
            .cast(pl.Int64)
            .cum_sum()
            .over("pid")
        )
        beats = rows.group_by(["pid", "_beat"], maintain_order=True).agg(
            t=pl.col("t").min(),
            t_last=pl.col("t").max(),
            t_end=pl.col("t_end").max(),
            bytes=pl.col("bytes").sum(),
            flows=pl.len().cast(pl.Int64),
        )
        joined = beats.filter(pl.col("_beat") == 0).drop("_beat")  # continue a kept beat
        if joined.height:
            self._extend_last(joined)
        fresh = beats.filter(pl.col("_beat") > 0).drop("_beat")
        self.beats = pl.concat([self.beats, fresh.select(BEAT_SCHEMA.keys())])

    def _extend_last(self, more: pl.DataFrame) -> None:
        """Fold flows that continue each series' latest beat into it."""
        idx = self.beats.with_row_index("_i").join(more.select("pid"), on="pid", how="semi")
        latest = idx.group_by("pid").agg(_i=pl.col("_i").top_k_by("t", 1).first())
        upd = latest.join(more, on="pid").select(
            "_i",
            _tl=pl.col("t_last"),
            _te=pl.col("t_end"),
            _b=pl.col("bytes"),
            _f=pl.col("flows"),
        )
        beats = self.beats.with_row_index("_i").join(upd, on="_i", how="left")
        self.beats = beats.with_columns(
            t_last=pl.max_horizontal("t_last", "_tl"),
            t_end=pl.max_horizontal("t_end", "_te"),
            bytes=pl.col("bytes") + pl.col("_b").fill_null(0),
            flows=pl.col("flows") + pl.col("_f").fill_null(0),
        ).select(BEAT_SCHEMA.keys())

    def _close(self, end: int, scoring_from: int | None) -> pl.DataFrame:
        """Score the window ending at ``end``; forget what fell out of the horizon."""
        learning = scoring_from is None or end <= scoring_from
        start = end - self.window_us
        keep = self.beats.filter(pl.col("t") >= end - self.horizon_us)
        counts = keep.group_by("pid").len().filter(pl.col("len") > self.max_beats)
        if counts.height:  # only the busiest series lose their oldest beats
            busy = keep.join(counts, on="pid", how="semi")
            newest = pl.col("t").rank("ordinal", descending=True).over("pid") <= self.max_beats
            keep = pl.concat([keep.join(counts, on="pid", how="anti"), busy.filter(newest)])
        self.beats = keep
        self.addrs = self.addrs.filter(pl.col("last") >= end - self.horizon_us)
        self.names.forget(end)
        if end >= self.prune_at:  # forget series without kept beats, now and then
            self.comms = self.comms.join(keep.select("pid").unique(), on="pid", how="semi")
            self.addrs = self.addrs.join(self.comms.select("pid"), on="pid", how="semi")
            self.prune_at = end + _PRUNE_EVERY * self.window_us
        active = self.beats.filter(pl.col("t").is_between(start, end, closed="left"))
        if active.height == 0:
            return _no_windows()
        history = self.beats.join(active.select("pid").unique(), on="pid", how="semi")
        # While learning, a habit is established once it is regular over a few beats
        # (slow ones, every hour or two, have few beats by the end of a short learning).
        stats = beat_stats(history, ["pid"], _LEARN_BEATS if learning else self.min_beats)
        if stats.height == 0:
            return _no_windows()
        window = (
            active.join(stats.select("pid"), on="pid", how="semi")
            .group_by("pid")
            .agg(w_first=pl.col("t").min(), w_last=pl.col("t_end").max(), w_beats=pl.len())
            .join(self.comms, on="pid")
        )
        window = self._addresses(window)
        servers = window.select("dst").unique()
        popular = (
            self.comms.filter(pl.col("src_internal") & ~pl.col("dst_internal"))
            .join(servers, on="dst", how="semi")
            .group_by("dst")
            .agg(clients=pl.col("src_ip").n_unique())
        )
        out = (
            stats.join(window, on="pid")
            .join(popular, on="dst", how="left")
            .with_columns(
                pl.col("clients").fill_null(0),
                window_start=pl.lit(start),
                window_end=pl.lit(end),
            )
        )
        regular = out.filter(pl.col("score") >= self.established_score)
        if learning:
            self.established.add(
                regular.with_columns(ts_start=pl.col("w_first").cast(UTC_US)), "ts_start"
            )
            return _no_windows()
        known = self.established.contains(out) if out.height else np.zeros(0, dtype=bool)
        out = self._cover(out.with_columns(established=pl.Series(known, dtype=pl.Boolean)))
        return out.drop("pid").sort([*KEY, "named"])

    def _addresses(self, window: pl.DataFrame) -> pl.DataFrame:
        """``dst_ip`` of each window's series (a name series: the address it reached
        last) and, for name series, its addresses within the horizon, latest first."""
        named = window.filter(pl.col("named")).select("pid")
        where = (
            self.addrs.join(named, on="pid", how="semi")
            .sort(["pid", "last", "dst_ip"], descending=[False, True, False])
            .group_by("pid", maintain_order=True)
            .agg(
                _rep=pl.col("dst_ip").first(),
                addresses=pl.col("dst_ip").head(ADDRESSES_SHOWN).str.join(", "),
                n_addresses=pl.len().cast(pl.Int64),
            )
        )
        return (
            window.join(where, on="pid", how="left")
            .with_columns(dst_ip=pl.coalesce(pl.when(pl.col("named")).then("_rep"), "dst"))
            .drop("_rep")
        )

    def _cover(self, out: pl.DataFrame) -> pl.DataFrame:
        """Mark address series ``covered`` by a regular name series of the same client,
        port and protocol that reached their address; such a name series is established
        if one of the address series it covers is."""
        regular = out.filter(pl.col("named") & (pl.col("score") >= self.established_score))
        cover = regular.select("pid", "site", "src_ip", "dst_port", "proto").join(
            self.addrs.select("pid", "dst_ip"), on="pid"
        )
        plain = out.filter(~pl.col("named")).select(*KEY, "established")
        hits = cover.join(plain, on=KEY)
        covered = hits.select(*KEY).unique().with_columns(_covered=pl.lit(True))
        inherited = hits.group_by("pid").agg(_est=pl.col("established").any())
        return (
            out.join(covered, on=KEY, how="left")
            .join(inherited, on="pid", how="left")
            .with_columns(
                covered=~pl.col("named") & pl.col("_covered").fill_null(False),
                established=pl.col("established") | pl.col("_est").fill_null(False),
            )
            .drop("_covered", "_est")
        )

    # -- checkpoints ---------------------------------------------------------------------

    def state(self) -> dict[str, pa.Table]:
        clock = self.clock.state()
        clock = clock.append_column("prune_at", pa.array([self.prune_at], pa.int64()))
        return {
            "beats": self.beats.to_arrow(),
            "comms": self.comms.to_arrow(),
            "addrs": self.addrs.to_arrow(),
            "names": self.names.state(),
            "clock": clock,
            "established": self.established.to_arrow(),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.beats = restore_frame(state.get("beats"), BEAT_SCHEMA)
        comms = state.get("comms")
        if comms is not None and "dst_ip" in comms.column_names:  # before name series
            comms = comms.rename_columns(
                ["dst" if c == "dst_ip" else c for c in comms.column_names]
            )
            comms = comms.append_column("named", pa.array([False] * comms.num_rows))
        self.comms = restore_frame(comms, COMM_SCHEMA)
        self.addrs = restore_frame(state.get("addrs"), ADDR_SCHEMA)
        self.names.load(state.get("names"))
        clock = state.get("clock")
        self.clock.load(clock)
        if clock is not None and clock.num_rows and "prune_at" in clock.column_names:
            self.prune_at = int(clock.column("prune_at")[0].as_py())
        self.established.load(state.get("established"))


def _no_windows() -> pl.DataFrame:
    return pl.DataFrame()
