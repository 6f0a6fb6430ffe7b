"""Running every enabled detector over flows in event time, with a learning period.

The engine receives flows in ``ts_start`` order, batch after batch. Flow detectors
(M1, M30, M31, ...) see each batch at once. Behavior detectors (those reading views of
the behavioral log) see buckets once they *close*: the engine buffers the flows of
open buckets and closes them as event time passes (:mod:`flowhawk.behavior.log`), so
the same flows give the same buckets however they were batched.

The learning period starts at the first flow ever seen by this data directory and
lasts ``learning.period`` of event time (or ends at once after a ``flowhawk learn``
run); what falls before its end teaches the detectors without alarming. Detectors
with nothing to learn (``learns = False``, e.g. M27) score every flow from the first. Detector
state, the open buckets and the engine's metadata are checkpointed together.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from flowhawk.behavior.aggregate import aggregate
from flowhawk.behavior.log import BucketBuffer, LogStore, ceil_time
from flowhawk.config import Config
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.base import (
    Batch,
    Detector,
    DetectorContext,
    empty_alarms,
    empty_dns,
)
from flowhawk.memory import reuse_freed_memory
from flowhawk.netaddr import NetworkSet
from flowhawk.normalize.context import NetworkContext
from flowhawk.state import Meta, StateStore

if TYPE_CHECKING:
    from flowhawk.dns.passive import PassiveDns
    from flowhawk.intel import IntelSet


def build_detectors(
    cfg: Config,
    history: LogStore | None = None,
    intel: IntelSet | None = None,
    passive_dns: PassiveDns | None = None,
) -> list[Detector]:
    """One instance of every enabled detector, in registry order."""
    context = DetectorContext(
        internal=NetworkSet(cfg.network.internal),
        local_scope=NetworkSet(cfg.network.local_scope),
        history=history,
        intel=intel,
        passive_dns=passive_dns,
        network=NetworkContext.from_config(cfg),
    )
    out = []
    for method, cls in DETECTORS:
        settings = cls.Settings.model_validate(cfg.detector_settings(method))
        if settings.enabled:
            out.append(cls(settings, context))
    return out


class DetectionEngine:
    """Feeds time-ordered flow batches to the detectors and collects their alarms."""

    def __init__(
        self,
        cfg: Config,
        store: StateStore,
        learn_only: bool = False,
        log_store: LogStore | None = None,
        intel: IntelSet | None = None,
        passive_dns: PassiveDns | None = None,
    ):
        reuse_freed_memory()
        self.cfg = cfg
        self.store = store
        self.learn_only = learn_only
        self.log_store = log_store
        self.meta: Meta = store.load_meta()
        self.detectors = build_detectors(cfg, log_store, intel, passive_dns)
        for det in self.detectors:
            det.load_state(store.load_tables(det.method))
        self.flow_detectors = [d for d in self.detectors if not d.views]
        self.log_detectors = [d for d in self.detectors if d.views]
        self.bucket = int(cfg.behavior.bucket)
        self.buffer = BucketBuffer(self.bucket, cfg.behavior.lateness)
        self.buffer.load_state(store.load_tables("engine"))
        self.flows_learned = 0
        self.flows_scored = 0
        self.log_rows = 0

    def set_intel(self, intel: IntelSet | None) -> None:
        """Detect with another version of the intelligence from the next batch on (the
        detectors share one context)."""
        for det in self.detectors:
            det.context.intel = intel

    @property
    def learning_until(self) -> datetime | None:
        return self.meta.learning_end()

    def process(self, flows: pl.DataFrame, dns: pl.DataFrame | None = None) -> pl.DataFrame:
        """Alarms for a batch of flows sorted by ``ts_start`` (and for buckets it closed),
        with the DNS transactions of the same stretch of event time (sorted by ``ts``)."""
        dns = empty_dns() if dns is None else dns
        if flows.height == 0 and dns.height == 0:
            return empty_alarms()
        self._advance_meta(flows, dns)
        learn, score = self._split(flows, "ts_start")
        dns_learn, dns_score = self._split(dns, "ts")
        start = self._scoring_from()
        whole = Batch(flows, bucket_seconds=self.bucket, dns=dns, scoring_from=start)
        alarms = []
        for det in self.flow_detectors:
            if not self._has_input(det, flows, dns):
                continue
            if not det.learns and not self.learn_only:
                alarms.append(det.score(whole))
                continue
            if learn.height or dns_learn.height:
                det.learn(
                    Batch(learn, bucket_seconds=self.bucket, dns=dns_learn, scoring_from=start)
                )
            if score.height or dns_score.height:
                alarms.append(
                    det.score(
                        Batch(score, bucket_seconds=self.bucket, dns=dns_score, scoring_from=start)
                    )
                )
        self.flows_learned += learn.height
        self.flows_scored += score.height
        if flows.height:
            self.buffer.add(flows)
            alarms.append(self._close(self.buffer.close_due()))
        return pl.concat(alarms, how="vertical") if alarms else empty_alarms()

    @staticmethod
    def _has_input(det: Detector, flows: pl.DataFrame, dns: pl.DataFrame) -> bool:
        return ("flows" in det.inputs and flows.height > 0) or (
            "dns" in det.inputs and dns.height > 0
        )

    def _scoring_from(self) -> datetime | None:
        """Event time from which alarms are raised (None: a learn-only run)."""
        if self.learn_only:
            return None
        if self.meta.learning_complete or self.learning_until is None:
            return datetime.min.replace(tzinfo=UTC)
        return self.learning_until

    def finish(self) -> pl.DataFrame:
        """Close every open bucket and window (end of a file input): alarms for them."""
        held = [det.finish(self._scoring_from()) for det in self.flow_detectors]
        return pl.concat([*held, self._close(self.buffer.close_all())], how="vertical")

    def _advance_meta(self, flows: pl.DataFrame, dns: pl.DataFrame) -> None:
        times = [
            t
            for t in (
                flows.get_column("ts_start").min(),
                flows.get_column("ts_end").max(),
                dns.get_column("ts").min(),
                dns.get_column("ts").max(),
            )
            if isinstance(t, datetime)
        ]
        first, last = min(times), max(times)
        if self.meta.first_event is None:
            self.meta.first_event = first.isoformat()
        if self.meta.last_event is None or last.isoformat() > self.meta.last_event:
            self.meta.last_event = last.isoformat()
        if self.meta.learning_until is None and not self.meta.learning_complete:
            start = datetime.fromisoformat(self.meta.first_event)
            period = timedelta(seconds=self.cfg.learning.period)
            self.meta.learning_until = (start + period).isoformat()

    def _split(self, rows: pl.DataFrame, ts: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows to learn from, rows to score), by their time column ``ts``."""
        if self.learn_only:
            return rows, rows.clear()
        if self.meta.learning_complete:
            return rows.clear(), rows
        before = pl.col(ts) < pl.lit(self.learning_until, dtype=rows.schema[ts])
        return rows.filter(before), rows.filter(~before)

    def _close(self, closed: tuple[pl.DataFrame, datetime, datetime] | None) -> pl.DataFrame:
        """Aggregate the buckets that closed, store them, run the behavior detectors."""
        if closed is None:
            return empty_alarms()
        flows, start, until = closed
        log = aggregate(flows, self.bucket) if flows.height else {}
        if self.log_store is not None:
            self.log_rows += self.log_store.write(log)
        if not self.log_detectors:
            return empty_alarms()
        if self.learn_only:
            cut = until
        elif self.meta.learning_complete or self.learning_until is None:
            cut = start
        else:  # learning ends with the first bucket that starts at or after learning_until
            cut = min(max(ceil_time(self.learning_until, self.bucket), start), until)
        alarms = []
        closed = Batch(flows.clear(), log, start, until, self.bucket)
        for lo, hi, scoring in ((start, cut, False), (cut, until, True)):
            if hi <= lo:
                continue
            batch = closed.closed_part(lo, hi)
            for det in self.log_detectors:
                if scoring:
                    alarms.append(det.score(batch))
                else:
                    det.learn(batch)
        return pl.concat(alarms, how="vertical") if alarms else empty_alarms()

    def finish_learning(self) -> None:
        """End the learning period now (after a ``flowhawk learn`` run)."""
        self.meta.learning_complete = True

    def checkpoint(self, run_info: dict | None = None) -> None:
        if run_info:
            self.meta.runs.append(run_info)
        components: dict[str, dict[str, pa.Table]] = {
            det.method: det.state() for det in self.detectors
        }
        for method in DETECTORS.names():  # keep the memory of detectors disabled this run
            if method not in components:
                components[method] = self.store.load_tables(method)
        components["engine"] = self.buffer.state()
        self.store.save(self.meta, components)
