"""The base of behavior detectors: models trained from the behavioral log on a schedule.

A behavior detector reads closed buckets of one or more views. Its model is trained
from the log *history* (never from the buckets it is about to score) when it first
scores and then at every multiple of ``retrain_every`` of event time (a fixed grid, so
the same flows give the same models however they were batched); each training bumps
a version number that is checkpointed with the model, so a restart continues with the
same model and the same schedule. Subclasses implement :meth:`train` (history -> model tables) and
:meth:`detect` (closed buckets + model -> alarms); scores and thresholds stay separate.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk.config import Duration
from flowhawk.detectors.base import Batch, Detector, DetectorSettings, empty_alarms


class BehaviorSettings(DetectorSettings):
    retrain_every: Duration = Field(
        default=6 * 3600.0, description="Retrain the model after this much event time."
    )
    horizon: Duration = Field(
        default=30 * 86400.0, description="Longest history the model learns from (30 days)."
    )
    false_alarm_budget: float = Field(
        default=0.00003,
        gt=0,
        lt=0.5,
        description="Thresholds allow at most this fraction of a key's own history to alarm.",
    )


class BehaviorDetector(Detector):
    """A detector scoring closed buckets of behavioral-log views against trained models."""

    Settings = BehaviorSettings

    def __init__(self, settings: DetectorSettings, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, context)
        self.model: dict[str, pl.DataFrame] = {}
        self.version = 0
        self.trained_until: datetime | None = None
        self.rows_since_training = 0  # log rows seen since the last training
        self.quiet_until: datetime | None = None  # grid points up to here had nothing new

    # -- the contract ----------------------------------------------------------------

    def learn(self, batch: Batch) -> None:
        self.observe(batch)
        self.rows_since_training += sum(batch.log[v].height for v in self.views if v in batch.log)

    def score(self, batch: Batch) -> pl.DataFrame:
        if batch.closed_from is None or batch.closed_until is None:
            return empty_alarms()
        if self.trained_until is None:
            self._train(batch.closed_from)
        # Retrain on a fixed grid of event time, whatever the batches: a closed range
        # that crosses a grid point is scored in two parts, before and after retraining.
        alarms, cursor = [], batch.closed_from
        while (due := self._next_training()) < batch.closed_until:
            if due > cursor:
                alarms.append(self._detect_part(batch, cursor, due))
                cursor = due
            if self.rows_since_training == 0:
                # Nothing new since the last training: retrain after the next data
                # (event time can jump by years between two inputs); at least past this
                # grid point, so data starting exactly on one cannot hold the schedule.
                self.quiet_until = max(due, self._grid_floor(self._next_rows(batch, cursor)))
                continue
            self._train(due)
        alarms.append(self._detect_part(batch, cursor, batch.closed_until))
        alarms = [a for a in alarms if a.height]
        return pl.concat(alarms) if alarms else empty_alarms()

    def _detect_part(self, batch: Batch, lo: datetime, hi: datetime) -> pl.DataFrame:
        whole = lo == batch.closed_from and hi == batch.closed_until
        part = batch if whole else batch.closed_part(lo, hi)
        alarms = self.detect(part) if self.model else empty_alarms()
        self.observe(part)
        self.rows_since_training += sum(part.log[v].height for v in self.views if v in part.log)
        return alarms

    def _next_rows(self, batch: Batch, since: datetime) -> datetime:
        """The first bucket with rows of this detector's views at or after ``since`` in
        ``batch``, else the end of its closed range."""
        assert batch.closed_until is not None
        firsts = [
            batch.log[v].filter(pl.col("bucket") >= since).get_column("bucket").min()
            for v in self.views
            if v in batch.log
        ]
        found = [t for t in firsts if isinstance(t, datetime)]
        return min(found) if found else batch.closed_until

    def _grid_floor(self, t: datetime) -> datetime:
        assert isinstance(self.settings, BehaviorSettings)
        every = int(self.settings.retrain_every)
        epoch = int(t.timestamp()) // every * every
        if epoch >= int(t.timestamp()):  # a grid point itself: the one before it
            epoch -= every
        return datetime.fromtimestamp(epoch, tz=UTC)

    # -- for subclasses --------------------------------------------------------------

    def observe(self, batch: Batch) -> None:
        """Update live state (e.g. last values per key) from closed buckets."""

    @abstractmethod
    def train(self, history_until: datetime) -> dict[str, pl.DataFrame]:
        """A new model from the log history before ``history_until`` (tables by name)."""

    @abstractmethod
    def detect(self, batch: Batch) -> pl.DataFrame:
        """Alarms for the closed buckets of ``batch`` under the current model."""

    def history(self, view: str, until: datetime) -> pl.DataFrame:
        """The view's log from ``horizon`` before ``until`` up to ``until``."""
        if self.context.history is None:
            return pl.DataFrame()
        assert isinstance(self.settings, BehaviorSettings)
        since = until - timedelta(seconds=self.settings.horizon)
        return self.context.history.read(view, since, until)

    # -- schedule and state ------------------------------------------------------------

    def _next_training(self) -> datetime:
        """The first grid point (multiples of ``retrain_every`` since the epoch) after the
        last training."""
        assert isinstance(self.settings, BehaviorSettings) and self.trained_until is not None
        every = int(self.settings.retrain_every)
        t = int(max(self.trained_until, self.quiet_until or self.trained_until).timestamp())
        return datetime.fromtimestamp((t // every + 1) * every, tz=UTC)

    def _train(self, until: datetime) -> None:
        self.model = self.train(until)
        self.trained_until = until
        self.version += 1
        self.rows_since_training = 0

    def state(self) -> dict[str, pa.Table]:
        meta = pa.table(
            {
                "version": pa.array([self.version], pa.int64()),
                "trained_until": pa.array([self.trained_until], pa.timestamp("us", "UTC")),
                "rows_since_training": pa.array([self.rows_since_training], pa.int64()),
                "quiet_until": pa.array([self.quiet_until], pa.timestamp("us", "UTC")),
            }
        )
        return {
            "model_meta": meta,
            **{f"model_{k}": v.to_arrow() for k, v in self.model.items()},
            **self.live_state(),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        meta = state.get("model_meta")
        if meta is not None and meta.num_rows:
            self.version = int(meta.column("version")[0].as_py() or 0)
            self.trained_until = meta.column("trained_until")[0].as_py()
            if "rows_since_training" in meta.column_names:
                self.rows_since_training = int(meta.column("rows_since_training")[0].as_py())
                self.quiet_until = meta.column("quiet_until")[0].as_py()
        self.model = {}
        for name, table in state.items():
            if name.startswith("model_") and name != "model_meta":
                df = pl.from_arrow(table)
                assert isinstance(df, pl.DataFrame)
                self.model[name[len("model_") :]] = df
        self.load_live_state(state)

    def live_state(self) -> dict[str, pa.Table]:
        """Live state beyond the model (override with :meth:`load_live_state`)."""
        return {}

    def load_live_state(self, state: dict[str, pa.Table]) -> None:
        """Restore what :meth:`live_state` saved."""
