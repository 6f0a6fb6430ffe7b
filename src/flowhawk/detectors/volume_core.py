"""What the volume detectors M2-M9 share: one baseline, one scoring, one live state.

The eight detectors read the communication view against the same baseline; only their
metrics and direction differ. A :class:`VolumeCore`, one per engine and group of equal
settings (kept in ``context.shared``), does their common work once:

- trains the baseline once per training time (:func:`flowhawk.behavior.baseline.train`);
- steps each closed range of event time once, whichever detector asks first: the
  robust z-scores of its rows, keeping only the *candidates* (rows past some threshold
  of some metric, a tiny share), and, for the underflow methods, the silences noticed
  in it (:meth:`VolumeCore._silent`) before the live state advances with the range;
- keeps that live state: the last active bucket of each regular key and whether its
  current silence was alarmed (17 bytes per regular key, once for the group). A silent
  key is named (site, addresses, port, protocol) from the behavioral log's rows of its
  last active bucket, read when the silence is noticed.

A step is remembered until every detector of the group has asked for a later range,
so the order in which the engine calls the detectors does not change their alarms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.behavior import baseline as bl
from flowhawk.behavior.views import COMM
from flowhawk.detectors.base import Batch, DetectorContext, History
from flowhawk.detectors.shared import RangeSteps
from flowhawk.detectors.volume_scan import Scan

if TYPE_CHECKING:
    from collections.abc import Callable

LIVE: dict[str, pl.DataType] = {
    "_key": pl.UInt64(),
    "last": pl.Datetime("us", "UTC"),
    "alarmed": pl.Boolean(),
}
log = logging.getLogger("flowhawk.detectors.volume")
RAW = {  # packets of each metric
    "sent": pl.col("pkts_out"),
    "recv": pl.col("pkts_in"),
    "total": pl.col("pkts_out") + pl.col("pkts_in"),
}


@dataclass(frozen=True)
class CoreKey:
    """The settings a group of volume detectors must share to share a core."""

    params: bl.BaselineParams
    horizon: float
    retrain_every: float
    threshold: float | None  # fixed robust z (None: the self-tuned one)
    min_packets: int
    silence_gaps: float
    silence_buckets: int


@dataclass
class Step:
    """One closed range, scored: ``candidates`` (rows with z-scores) and ``silent``."""

    candidates: pl.DataFrame
    silent: pl.DataFrame


@dataclass
class VolumeCore:
    key: CoreKey
    history: History | None = None
    unnamed: int = 0  # silences not reported: their key's last bucket left the log
    live: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=LIVE))
    live_through: datetime | None = None  # end of the last range the live state includes
    tracks_silence: bool = False  # some underflow method is in the group
    _trained: tuple[datetime, pl.DataFrame] | None = None
    _steps: RangeSteps[Step] = field(default_factory=lambda: RangeSteps(_NOTHING))
    _arrow: pa.Table | None = None
    _scan: tuple[pl.DataFrame, int, Scan] | None = None

    @classmethod
    def join(
        cls, context: DetectorContext, key: CoreKey, member: object, under: bool
    ) -> VolumeCore:
        """The core of ``key`` in ``context`` (made if needed), with ``member`` in it."""
        core = context.shared.get(("volume", key))
        if core is None:
            core = context.shared[("volume", key)] = cls(key, context.history)
        core._steps.join(member)
        core.tracks_silence |= under
        return core

    # -- the baseline ------------------------------------------------------------------

    def baseline(self, until: datetime, history: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        """The baseline trained from the history before ``until`` (trained once)."""
        if self._trained is None or self._trained[0] != until:
            rows = history()
            bucket = 60 if rows.height == 0 else _bucket_seconds(rows)
            self._trained = (until, bl.train(rows, until, bucket, self.key.params))
        return self._trained[1]

    def adopt(self, until: datetime | None, model: pl.DataFrame) -> pl.DataFrame:
        """A restored baseline: the one already restored for the same training if any
        (the members' checkpoints each hold a copy; memory keeps one)."""
        if until is None:
            return model
        if self._trained is not None and self._trained[0] == until:
            return self._trained[1]
        if self._trained is None or self._trained[0] < until:
            self._trained = (until, model)
        return model

    # -- stepping closed ranges ----------------------------------------------------------

    def step(self, member: object, batch: Batch, model: pl.DataFrame | None) -> Step:
        """``batch``'s closed range scored against ``model`` (stepped once for all)."""
        return self._steps.once(member, batch, lambda: self._compute(batch, model))

    def _compute(self, batch: Batch, model: pl.DataFrame | None) -> Step:
        if model is None or model.height == 0:
            return _NOTHING
        rows = batch.log.get("comm")
        keyed = bl.keyed(rows) if rows is not None and rows.height else None
        scan = self._scan_of(model, batch.bucket_seconds)
        idx = scan.find(keyed.get_column("_key").to_numpy()) if keyed is not None else None
        candidates = pl.DataFrame()
        if keyed is not None and idx is not None:
            maybe = scan.candidates(idx, keyed, self.key.threshold, self.key.min_packets)
            candidates = self._candidates(bl.with_metric_values(keyed.filter(maybe)), model)
        silent = pl.DataFrame()
        if self.tracks_silence:
            silent = self._silences(batch, model, scan, keyed, idx)
            self.live_through = batch.closed_until
            self._arrow = None
        return Step(candidates, silent)

    def _silences(
        self,
        batch: Batch,
        model: pl.DataFrame,
        scan: Scan,
        keyed: pl.DataFrame | None,
        idx: np.ndarray | None,
    ) -> pl.DataFrame:
        """Silences noticed in the range (exact, for the keys the scan finds may have
        one), the live state advanced past it."""
        assert batch.closed_until is not None
        if keyed is None or idx is None:
            silent, quiet = self._silent(batch, model, None, self.live), None
        else:
            until_us = int(batch.closed_until.timestamp() * 1_000_000)
            maybe, active, kept = scan.quiet(idx, keyed, self.live, batch.bucket_seconds, until_us)
            keys = pl.Series(scan.keys[maybe]).implode()
            quiet = keyed.filter(pl.col("_key").is_in(keys))
            live = self.live.filter(pl.col("_key").is_in(keys))
            silent = self._silent(batch, model.filter(pl.Series(maybe)), quiet, live)
            self._with_activity(scan, active, kept)
        if silent.height:
            opened = silent.filter(pl.col("_open")).get_column("_key")
            mark = pl.col("_key").is_in(opened.implode())
            self.live = self.live.with_columns(alarmed=pl.col("alarmed") | mark)
            silent = self._named(silent, quiet, batch.bucket_seconds)
        return silent

    def _scan_of(self, model: pl.DataFrame, bucket_seconds: int) -> Scan:
        """The scan arrays of ``model`` (built once per baseline and bucket length)."""
        if self._scan is None or self._scan[0] is not model or self._scan[1] != bucket_seconds:
            self._scan = (model, bucket_seconds, Scan.of(model, self._allowed(bucket_seconds)))
        return self._scan[2]

    def _allowed(self, b: int) -> pl.Expr:
        """Seconds a regular key may stay quiet after its last active bucket."""
        k = self.key
        return pl.max_horizontal(pl.col("gap_max") * k.silence_gaps, pl.lit(k.silence_buckets * b))

    def threshold(self, col: str) -> pl.Expr:
        t = self.key.threshold
        return pl.lit(t, pl.Float64) if t is not None else pl.col(col)

    def over(self, metric: str) -> pl.Expr:
        """Overflow of ``metric`` in z-scored rows: above threshold, enough packets."""
        return (pl.col(f"z_{metric}") > self.threshold("thr_hi")) & (
            RAW[metric] >= self.key.min_packets
        )

    def under(self, metric: str) -> pl.Expr:
        """Underflow of ``metric`` in z-scored rows of a regular key."""
        return (pl.col(f"lo_{metric}") < -self.threshold("thr_lo")) & pl.col("regular")

    def _candidates(self, keyed: pl.DataFrame, model: pl.DataFrame) -> pl.DataFrame:
        """Rows past the overflow or underflow threshold of at least one metric."""
        tests = [*(self.over(m) for m in RAW), *(self.under(m) for m in RAW)]
        return bl.z_scores(keyed, model).filter(pl.any_horizontal(*tests))

    # -- silences (underflow) ------------------------------------------------------------

    def _silent(
        self, batch: Batch, model: pl.DataFrame, keyed: pl.DataFrame | None, live: pl.DataFrame
    ) -> pl.DataFrame:
        """Silences of regular keys noticed in ``batch``'s closed range, one row each.

        Every quiet stretch counts: from the key's last activity before the range (the
        live state) and from each of its active buckets in the range, up to its next
        active bucket or the end of the range. A silence is noticed at the first bucket
        boundary past its allowance, if the key was still quiet then; so the same flows
        give the same alarms however event time was cut into ranges. ``_open``: the
        stretch still runs at the end of the range (alarmed once: the live state marks it).
        """
        assert batch.closed_until is not None
        regular = model.filter(pl.col("regular")).select(
            "_key", "gap_max", "span_days", "total_med"
        )
        starts = [live.with_columns(_from_state=pl.lit(True))]
        if keyed is not None:
            active = (
                keyed.join(regular.select("_key"), on="_key", how="semi")
                .select("_key", last="bucket")
                .with_columns(alarmed=pl.lit(False), _from_state=pl.lit(False))
            )
            starts.append(active.select(*LIVE, "_from_state").cast(LIVE))  # type: ignore[arg-type]
        seq = pl.concat(starts, how="vertical").join(regular, on="_key", how="inner")
        if seq.height == 0:
            return pl.DataFrame()
        until = pl.lit(batch.closed_until).cast(pl.Datetime("us", "UTC"))
        seq = seq.sort("_key", "last").with_columns(
            _next=pl.col("last").shift(-1).over("_key").fill_null(until)
        )
        b = batch.bucket_seconds
        allowed = self._allowed(b)
        crossed = ((pl.col("last").dt.epoch("s") + b + allowed) // b + 1) * b
        detected = pl.from_epoch(crossed.cast(pl.Int64), time_unit="s").dt.replace_time_zone("UTC")
        found = (
            seq.with_columns(_det=detected, _allowed=allowed)
            .filter(
                (pl.col("_det") <= pl.col("_next"))
                & (pl.col("_det") <= until)
                & ~(pl.col("_from_state") & pl.col("alarmed"))
            )
            .with_columns(_open=pl.col("_next") == until)
        )
        return found

    def _named(self, found: pl.DataFrame, keyed: pl.DataFrame | None, b: int) -> pl.DataFrame:
        """``found`` with the key columns of each silent key, from the range's rows or the
        log's rows of its last active bucket; keys named by neither are counted, logged
        and left out."""
        want = found.select("_key").unique()
        names = []
        if keyed is not None:
            names.append(keyed.join(want, on="_key", how="semi").select("_key", *COMM.key))
        known = pl.concat(names).get_column("_key") if names else pl.Series([], dtype=pl.UInt64)
        missing = found.filter(~pl.col("_key").is_in(known.implode()))
        if missing.height and self.history is not None:
            hours = missing.group_by(pl.col("last").dt.truncate("1h")).agg(
                lo=pl.col("last").min(), hi=pl.col("last").max()
            )
            for lo, hi in hours.select("lo", "hi").iter_rows():
                rows = self.history.read(
                    "comm", lo, hi + timedelta(seconds=b), share=False, columns=COMM.key
                )
                if rows.height:
                    rows = rows.with_columns(bl.key_hash(rows))
                    names.append(rows.join(want, on="_key", how="semi").select("_key", *COMM.key))
        if not names:
            named = found.with_columns(*(pl.lit(None).alias(c) for c in COMM.key))
        else:
            table = pl.concat(names, how="vertical_relaxed").unique("_key")
            named = found.join(table, on="_key", how="left")
        lost = named.filter(pl.col("src_ip").is_null())
        if lost.height:
            self.unnamed += lost.height
            log.warning(
                "volume: %d silences not reported: the behavioral log no longer holds their "
                "keys' last active bucket (retention); %d so far",
                lost.height,
                self.unnamed,
            )
        return named.filter(pl.col("src_ip").is_not_null())

    def _with_activity(self, scan: Scan, active: np.ndarray, kept: np.ndarray) -> None:
        """The live state advanced with the range's activity of regular keys (``active``:
        each baseline key's last active bucket in the range; ``kept``: live rows no
        later activity replaces)."""
        has = np.flatnonzero(active != np.iinfo(np.int64).min)
        if len(has) == 0:
            return
        fresh = pl.DataFrame(
            {
                "_key": scan.keys[has],
                "last": pl.Series(active[has]).cast(pl.Datetime("us", "UTC")),
                "alarmed": np.zeros(len(has), bool),
            }
        )
        merged = pl.concat([self.live.filter(pl.Series(kept)), fresh.cast(LIVE)], how="vertical")  # type: ignore[arg-type]
        self.live = merged.sort("last", "_key")

    # -- checkpoint ----------------------------------------------------------------------

    def live_tables(self) -> dict[str, pa.Table]:
        """The live state as tables (the same objects for every member until it changes)."""
        if self._arrow is None:
            self._arrow = self.live.to_arrow()
        through = pa.table({"through": pa.array([self.live_through], pa.timestamp("us", "UTC"))})
        return {"live": self._arrow, "live_through": through}

    def load_live(self, state: dict[str, pa.Table]) -> None:
        """Restore a member's copy of the live state if it is the latest one seen."""
        table, meta = state.get("live"), state.get("live_through")
        if table is None:
            return
        through = meta.column("through")[0].as_py() if meta is not None else None
        if self.live_through is not None and (through is None or through <= self.live_through):
            return
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        self.live = df.select(list(LIVE)).cast(LIVE)  # type: ignore[arg-type]
        self.live_through = through
        self._arrow = None


_NOTHING = Step(pl.DataFrame(), pl.DataFrame())


def _bucket_seconds(rows: pl.DataFrame) -> int:
    diffs = np.diff(np.unique(rows.get_column("bucket").dt.epoch("s").to_numpy()))
    return int(diffs.min()) if len(diffs) else 60
