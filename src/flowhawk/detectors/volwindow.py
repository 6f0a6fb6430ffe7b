"""Per-host volume in fixed windows of event time, alarming the moment it crosses a limit.

Windows are aligned on the epoch (``window`` seconds each, one hour by default). Flows
arrive in event-time order; one window is open at a time and what a host did in it so
far (bytes counted, bytes in total, distinct peers, and per communication the bytes
counted) is carried from batch to batch, so where batches are cut never matters. A
flow of a later window closes the open one: each host's window then teaches its
baselines (:class:`~flowhawk.detectors.volbaseline.WindowBaseline`), except the
windows that crossed their limit (an alarmed window does not become normal).

A host's limits for a window come from its baselines as they stood when the window
opened: bytes ``T = max(floor, factor * baseline)``; peers (when the rule has them)
``Tp = max(min_peers, peer_factor * peer baseline)``. The host *crosses* at the first
flow after which its counted bytes reach ``T``, or its distinct peers reach ``Tp``
while its counted bytes reach ``peer_share * T``. Every tracked communication of the
host then fires once, at the later of the crossing flow and the flow that brought the
communication's own bytes to ``min_share`` of the least volume the host can cross with
(``T``, or ``peer_share * T`` under the peer rule), so the destinations that carried
the volume are named, not every small one. Both are cumulative sums in flow order:
the same flows give the same firing rows however they were batched.

Input rows (one per flow, in event-time order) have the columns of :data:`ROW_SCHEMA`;
``counted`` is what the limit is about, ``total`` what the baseline learns, ``track``
marks flows whose communication may be named in an alarm.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.detectors.base import UTC_US, restore_frame
from flowhawk.detectors.volbaseline import WindowBaseline, host_hash

HOST = ["site", "host"]
COMM = ["site", "host", "peer", "dst_port", "proto"]

ROW_SCHEMA: dict[str, pl.DataType] = {
    "site": pl.String(),
    "host": pl.String(),
    "peer": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
    "direction": pl.String(),
    "ts_start": UTC_US,
    "ts_end": UTC_US,
    "counted": pl.Int64(),
    "total": pl.Int64(),
    "track": pl.Boolean(),
    "clients": pl.Int64(),  # (exfiltration) internal hosts known to the peer
    "own": pl.Boolean(),  # (exfiltration) the host is one of them
}
_HOSTS: dict[str, pl.DataType] = {
    "site": pl.String(),
    "host": pl.String(),
    "counted": pl.Int64(),
    "total": pl.Int64(),
    "peers": pl.Int64(),
    "crossed": pl.Boolean(),
}
_COMMS: dict[str, pl.DataType] = {
    **{c: ROW_SCHEMA[c] for c in COMM},
    "bytes": pl.Int64(),
    "fired": pl.Boolean(),
    "clients": pl.Int64(),
    "own": pl.Boolean(),
}
_PAIRS: dict[str, pl.DataType] = {c: ROW_SCHEMA[c] for c in ("site", "host", "peer")}


@dataclass(frozen=True)
class Limits:
    """How a host's limits for a window follow from its baselines."""

    floor: float  # bytes
    factor: float
    min_share: float
    min_peers: float = float("inf")  # inf: no peer rule
    peer_factor: float = 1.0
    peer_share: float = 1.0

    @property
    def comm_share(self) -> float:
        """Share of ``T`` a communication must carry to be named: ``min_share`` of the
        least volume a host can cross with (``peer_share * T`` under the peer rule)."""
        return self.min_share * (self.peer_share if np.isfinite(self.min_peers) else 1.0)


def _frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


class WindowedVolume:
    """The open window's per-host and per-communication sums, and the baselines."""

    def __init__(
        self,
        window_seconds: float,
        limits: Limits,
        quantile: float,
        half_life_windows: float,
        min_history: float,
    ):
        self.window_us = max(int(window_seconds * 1_000_000), 1)
        self.limits = limits
        self.bytes_base = WindowBaseline(quantile, half_life_windows, min_history)
        self.peer_base = WindowBaseline(quantile, half_life_windows, min_history)
        self.window: int | None = None
        self.hosts = _frame(_HOSTS)
        self.comms = _frame(_COMMS)
        self.pairs = _frame(_PAIRS)

    # -- windows ------------------------------------------------------------------

    def split(self, rows: pl.DataFrame) -> Iterator[tuple[int, pl.DataFrame]]:
        """The rows by window, in order (rows of a window already closed count in the
        open one)."""
        if rows.height == 0:
            return
        w = pl.col("ts_start").dt.epoch("us") // self.window_us
        if self.window is not None:
            w = pl.max_horizontal(w, pl.lit(self.window, dtype=pl.Int64))
        rows = rows.with_columns(_w=w.cast(pl.Int64))
        for part in rows.partition_by("_w", maintain_order=True, as_dict=False):
            yield int(part.get_column("_w")[0]), part.drop("_w")

    def advance(self, window: int) -> pl.DataFrame | None:
        """Open ``window``, closing the open one if it is earlier: then its distinct
        (site, host, peer) pairs are returned."""
        if self.window is not None and window <= self.window:
            return None
        closed = None
        if self.window is not None:
            closed = self._close()
        self.window = window
        return closed

    def _close(self) -> pl.DataFrame:
        assert self.window is not None
        teach = self.hosts.filter(~pl.col("crossed"))
        keys = host_hash(teach)
        self.bytes_base.update(keys, teach.get_column("total").to_numpy(), self.window)
        if np.isfinite(self.limits.min_peers):
            self.peer_base.update(keys, teach.get_column("peers").to_numpy(), self.window)
        pairs = self.pairs
        self.hosts, self.comms, self.pairs = _frame(_HOSTS), _frame(_COMMS), _frame(_PAIRS)
        return pairs

    # -- one window's rows ----------------------------------------------------------

    def _limits(self, hosts: pl.DataFrame) -> pl.DataFrame:
        """The hosts with their baselines and limits for the open window."""
        assert self.window is not None
        lim = self.limits
        keys = host_hash(hosts)
        base, _ = self.bytes_base.baseline(keys, self.window)
        out = hosts.with_columns(
            _base=pl.Series(base),
            _T=pl.Series(np.maximum(lim.floor, lim.factor * base)),
        )
        if np.isfinite(lim.min_peers):
            pbase, _ = self.peer_base.baseline(keys, self.window)
            tp = np.maximum(lim.min_peers, lim.peer_factor * pbase)
        else:
            pbase, tp = np.zeros(hosts.height), np.full(hosts.height, np.inf)
        return out.with_columns(_pbase=pl.Series(pbase), _Tp=pl.Series(tp))

    def add(self, part: pl.DataFrame, scoring: bool) -> pl.DataFrame:
        """Add one window's rows (:data:`ROW_SCHEMA`, event-time order); with ``scoring``
        the communications that fire (columns: :data:`FIRED_SCHEMA`)."""
        if part.height == 0:
            return _frame(FIRED_SCHEMA)
        lim = self.limits
        part = part.with_row_index("_r").with_columns(pl.col("_r").cast(pl.Int64))
        hosts = self._limits(part.select(HOST).unique(maintain_order=True))
        hosts = hosts.join(
            self.hosts.rename({c: f"{c}0" for c in _HOSTS if c not in HOST}), on=HOST, how="left"
        ).with_columns(
            pl.col("counted0", "total0", "peers0").fill_null(0),
            pl.col("crossed0").fill_null(False),
        )
        known = self.pairs.with_columns(_known=pl.lit(True))
        rows = (
            part.join(hosts, on=HOST, how="left", maintain_order="left")
            .join(known, on=["site", "host", "peer"], how="left", maintain_order="left")
            .with_columns(
                _newp=(pl.col("_r") == pl.col("_r").min().over(["site", "host", "peer"]))
                & pl.col("_known").is_null()
            )
            .with_columns(
                _H=pl.col("counted0") + pl.col("counted").cum_sum().over(HOST),
                _P=pl.col("peers0") + pl.col("_newp").cast(pl.Int64).cum_sum().over(HOST),
            )
        )
        fired = _frame(FIRED_SCHEMA)
        crossed = hosts.select(*HOST, _rH=pl.lit(None, dtype=pl.Int64))
        if scoring:
            cond = (pl.col("_H") >= pl.col("_T")) | (
                (pl.col("_P").cast(pl.Float64) >= pl.col("_Tp"))
                & (pl.col("_H") >= pl.col("_T") * lim.peer_share)
            )
            first = rows.filter(cond & ~pl.col("crossed0")).group_by(HOST).agg(_rH=pl.min("_r"))
            crossed = (
                hosts.join(first, on=HOST, how="left")
                .with_columns(
                    _rH=pl.when(pl.col("crossed0"))
                    .then(pl.lit(-1, dtype=pl.Int64))
                    .otherwise("_rH")
                )
                .select(*HOST, "_rH")
            )
        comms, firing, tracked = self._comms(rows, crossed, scoring)
        if scoring and firing.height:
            fired = self._fired(rows, firing, tracked)
        self._update(rows, hosts, crossed, comms)
        return fired

    def _comms(
        self, rows: pl.DataFrame, crossed: pl.DataFrame, scoring: bool
    ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """(the tracked communications of the window after these rows; those firing now,
        with their firing row ``_fire``; each tracked row's communication bytes ``_C``)."""
        min_share = self.limits.comm_share
        state = self.comms.rename({"bytes": "_C0", "fired": "_fired0"}).drop("clients", "own")
        tracked = (
            rows.filter(pl.col("track"))
            .join(state, on=COMM, how="left", maintain_order="left")
            .with_columns(pl.col("_C0").fill_null(0), pl.col("_fired0").fill_null(False))
            .with_columns(_C=pl.col("_C0") + pl.col("counted").cum_sum().over(COMM))
        )
        agg = tracked.group_by(COMM, maintain_order=True).agg(
            _C0=pl.first("_C0"),
            _fired0=pl.first("_fired0"),
            bytes=pl.last("_C"),
            clients=pl.first("clients"),
            own=pl.first("own"),
            _T=pl.first("_T"),
            _rC=pl.col("_r").filter(pl.col("_C") >= pl.col("_T") * min_share).min(),
        )
        here = rows.select(*HOST, "_T").unique(subset=HOST, keep="first")
        old = (
            self.comms.join(agg.select(COMM), on=COMM, how="anti")
            .join(here, on=HOST, how="inner")
            .rename({"bytes": "_C0", "fired": "_fired0"})
            .with_columns(bytes=pl.col("_C0"), _rC=pl.lit(None, dtype=pl.Int64))
        )
        cols = [*COMM, "_C0", "_fired0", "bytes", "clients", "own", "_T", "_rC"]
        universe = (
            pl.concat([agg.select(cols), old.select(cols)], how="vertical_relaxed")
            .with_columns(
                _rC=pl.when(pl.col("_C0") >= pl.col("_T") * min_share)
                .then(pl.lit(-1, dtype=pl.Int64))
                .otherwise("_rC")
            )
            .join(crossed, on=HOST, how="left")
        )
        can = pl.col("_rH").is_not_null() & pl.col("_rC").is_not_null() & ~pl.col("_fired0")
        fire = pl.when(can).then(pl.max_horizontal("_rH", "_rC"))
        # both conditions held before this batch only if it fired then: only rows >= 0 fire
        universe = universe.with_columns(_fire=fire).with_columns(
            _fire=pl.when(pl.col("_fire") >= 0).then("_fire")
        )
        firing = universe.filter(pl.col("_fire").is_not_null()) if scoring else universe.head(0)
        untouched = self.comms.join(here.select(HOST), on=HOST, how="anti")
        after = pl.concat(
            [
                untouched,
                universe.with_columns(
                    fired=pl.col("_fired0") | pl.col("_fire").is_not_null()
                ).select(list(_COMMS)),
            ],
            how="vertical_relaxed",
        )
        return after, firing, tracked.select(*COMM, "_r", "_C").sort("_r")

    def _fired(
        self, rows: pl.DataFrame, firing: pl.DataFrame, tracked: pl.DataFrame
    ) -> pl.DataFrame:
        """The firing communications with the firing row's time and sums; a
        communication's own bytes are those at its last row at or before the firing row."""
        at = rows.select(
            "_r", "direction", "ts_start", "ts_end", "_H", "_P", "_base", "_T", "_pbase", "_Tp"
        )
        asof = (
            firing.drop("_T")
            .sort("_fire")
            .join_asof(
                tracked,
                left_on="_fire",
                right_on="_r",
                by=COMM,
                strategy="backward",
                check_sortedness=False,
            )
        )
        out = asof.with_columns(comm_bytes=pl.coalesce("_C", "_C0")).join(
            at, left_on="_fire", right_on="_r", how="left"
        )
        return out.select(
            *COMM,
            "direction",
            "ts_start",
            "ts_end",
            host_bytes=pl.col("_H").cast(pl.Float64),
            peers=pl.col("_P").cast(pl.Float64),
            comm_bytes=pl.col("comm_bytes").cast(pl.Float64),
            baseline=pl.col("_base"),
            threshold=pl.col("_T"),
            peer_baseline=pl.col("_pbase"),
            peer_threshold=pl.col("_Tp"),
            clients=pl.col("clients"),
            own=pl.col("own"),
        ).cast(FIRED_SCHEMA)  # type: ignore[arg-type]

    def _update(
        self,
        rows: pl.DataFrame,
        hosts: pl.DataFrame,
        crossed: pl.DataFrame,
        comms: pl.DataFrame,
    ) -> None:
        sums = rows.group_by(HOST).agg(
            _c=pl.sum("counted"), _t=pl.sum("total"), peers=pl.last("_P")
        )
        now = (
            hosts.join(sums, on=HOST, how="left")
            .join(crossed, on=HOST, how="left")
            .select(
                *HOST,
                counted=pl.col("counted0") + pl.col("_c"),
                total=pl.col("total0") + pl.col("_t"),
                peers="peers",
                crossed=pl.col("crossed0") | pl.col("_rH").is_not_null(),
            )
        )
        rest = self.hosts.join(now.select(HOST), on=HOST, how="anti")
        self.hosts = pl.concat([rest, now], how="vertical_relaxed").cast(_HOSTS).sort(HOST)  # type: ignore[arg-type]
        self.comms = comms.cast(_COMMS).sort(COMM)  # type: ignore[arg-type]
        new_pairs = rows.filter(pl.col("_newp")).select(list(_PAIRS))
        self.pairs = pl.concat([self.pairs, new_pairs]).sort(list(_PAIRS))

    # -- checkpoints ------------------------------------------------------------------

    def state(self, prefix: str) -> dict[str, pa.Table]:
        return {
            f"{prefix}window": pa.table({"window": pa.array([self.window], pa.int64())}),
            f"{prefix}hosts": self.hosts.to_arrow(),
            f"{prefix}comms": self.comms.to_arrow(),
            f"{prefix}pairs": self.pairs.to_arrow(),
            f"{prefix}bytes_baseline": self.bytes_base.to_arrow(),
            f"{prefix}peer_baseline": self.peer_base.to_arrow(),
        }

    def load_state(self, state: dict[str, pa.Table], prefix: str) -> None:
        win = state.get(f"{prefix}window")
        self.window = win.column("window")[0].as_py() if win is not None and win.num_rows else None
        self.hosts = restore_frame(state.get(f"{prefix}hosts"), _HOSTS)
        self.comms = restore_frame(state.get(f"{prefix}comms"), _COMMS)
        self.pairs = restore_frame(state.get(f"{prefix}pairs"), _PAIRS)
        self.bytes_base.load(state.get(f"{prefix}bytes_baseline"))
        self.peer_base.load(state.get(f"{prefix}peer_baseline"))


FIRED_SCHEMA: dict[str, pl.DataType] = {
    **{c: ROW_SCHEMA[c] for c in COMM},
    "direction": pl.String(),
    "ts_start": UTC_US,
    "ts_end": UTC_US,
    "host_bytes": pl.Float64(),  # the host's counted bytes in the window at the firing row
    "peers": pl.Float64(),  # its distinct peers in the window then
    "comm_bytes": pl.Float64(),  # the communication's counted bytes then
    "baseline": pl.Float64(),
    "threshold": pl.Float64(),
    "peer_baseline": pl.Float64(),
    "peer_threshold": pl.Float64(),
    "clients": pl.Int64(),
    "own": pl.Boolean(),
}
