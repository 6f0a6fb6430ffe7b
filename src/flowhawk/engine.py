"""Running every enabled detector over flows in event time, with a learning period.

The engine receives flows in ``ts_start`` order, batch after batch. The learning
period starts at the first flow ever seen by this data directory and lasts
``learning.period`` of event time (or ends at once after a ``flowhawk learn`` run);
flows before its end teach the detectors without alarming. Detector state and
the engine's own metadata are checkpointed together in the data directory.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa

from flowhawk.config import Config
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.base import Detector, DetectorContext, empty_alarms
from flowhawk.netaddr import NetworkSet
from flowhawk.state import Meta, StateStore


def build_detectors(cfg: Config) -> list[Detector]:
    """One instance of every enabled detector, in registry order."""
    context = DetectorContext(
        internal=NetworkSet(cfg.network.internal),
        local_scope=NetworkSet(cfg.network.local_scope),
    )
    out = []
    for method, cls in DETECTORS:
        settings = cls.Settings.model_validate(cfg.detector_settings(method))
        if settings.enabled:
            out.append(cls(settings, context))
    return out


class DetectionEngine:
    """Feeds time-ordered flow batches to the detectors and collects their alarms."""

    def __init__(self, cfg: Config, store: StateStore, learn_only: bool = False):
        self.cfg = cfg
        self.store = store
        self.learn_only = learn_only
        self.meta: Meta = store.load_meta()
        self.detectors = build_detectors(cfg)
        for det in self.detectors:
            det.load_state(store.load_tables(det.method))
        self.flows_learned = 0
        self.flows_scored = 0

    @property
    def learning_until(self) -> datetime | None:
        return self.meta.learning_end()

    def process(self, flows: pl.DataFrame) -> pl.DataFrame:
        """Alarms for a batch of flows sorted by ``ts_start``."""
        if flows.height == 0:
            return empty_alarms()
        first = flows.get_column("ts_start").min()
        last = flows.get_column("ts_end").max()
        assert isinstance(first, datetime) and isinstance(last, datetime)
        if self.meta.first_event is None:
            self.meta.first_event = first.isoformat()
        if self.meta.last_event is None or last.isoformat() > self.meta.last_event:
            self.meta.last_event = last.isoformat()
        if self.meta.learning_until is None and not self.meta.learning_complete:
            start = datetime.fromisoformat(self.meta.first_event)
            self.meta.learning_until = (
                start + timedelta(seconds=self.cfg.learning.period)
            ).isoformat()
        if self.learn_only:
            learn, score = flows, flows.clear()
        elif self.meta.learning_complete:
            learn, score = flows.clear(), flows
        else:
            until = self.learning_until
            before = pl.col("ts_start") < pl.lit(until, dtype=flows.schema["ts_start"])
            learn, score = flows.filter(before), flows.filter(~before)
        alarms = []
        for det in self.detectors:
            if learn.height:
                det.learn(learn)
            if score.height:
                alarms.append(det.score(score))
        self.flows_learned += learn.height
        self.flows_scored += score.height
        if not alarms:
            return empty_alarms()
        return pl.concat(alarms, how="vertical")

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
        self.store.save(self.meta, components)
