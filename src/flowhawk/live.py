"""Detection on a live stream of flows (the collector's), with the same results as files.

:class:`LiveDetection` runs the :class:`~flowhawk.engine.DetectionEngine` in its own
thread over the flows the collector archives at each rollover, so decoding never
waits for a model to train. Alarms are merged into events exactly as ``analyze``
merges them (one event per communication and window, :func:`flowhawk.events.build_events`):
the alarms of every window that can still change are kept, and after each batch the
events of those windows are rebuilt and upserted into the event store
(``DATA/events.duckdb``, by their stable ids), so an event grows while its window is
open and reads the same as the file run's once it closed. A window is final when the
behavioral log has closed every bucket before its end.

:meth:`LiveDetection.stop` closes the open buckets (like the end of an ``analyze``
run), publishes and checkpoints the engine with the rest of the state (also done every
``[collect] checkpoint`` between batches); a restart continues with every model.
Errors in detection are logged and counted, never lost silently: the flows are in the
archive and can be analyzed again. A ``listener`` (the service's publisher) is told of
every event after it is stored. The events' documents are written to
``DATA/unpublished.jsonl`` before the store and the file is removed once the listener
returned, so a crash between the two loses no publication: the service hands the
stored ones to its outputs at the next start (:func:`take_unpublished`).

A batch may carry DNS transactions (the collector's followed dns.logs) beside its
flows, or instead of them: they reach the DNS detectors (N4, N5) sorted by ``ts``, as
``analyze`` replays them, and grow the passive DNS that detectors and event context
read (in memory; the collector saves what it read to ``DATA/pdns``).

The queue between the collector and detection is bounded in flows
(``max_queued_flows``): a rollover arriving while detection is that far behind (input
faster than detection for long) is not detected but counted
(``LiveTotals.skipped_flows``, with a warning), so memory stays bounded and the
collector never waits; its flows are archived like every other.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from flowhawk import intelstore
from flowhawk.behavior.log import LogStore
from flowhawk.config import Config
from flowhawk.context.attach import EventContext
from flowhawk.detectors.base import ALARM_SCHEMA, empty_alarms
from flowhawk.engine import DetectionEngine
from flowhawk.events import build_events, with_window
from flowhawk.intel import IntelSet
from flowhawk.sinks.base import SinkPaths
from flowhawk.sinks.format import event_documents
from flowhawk.sinks.store import EventStore, connect, store_path
from flowhawk.state import StateStore

log = logging.getLogger("flowhawk.live")

#: How long after its end a window's alarms are kept to merge late alarms into it.
KEEP = timedelta(days=1)
#: Flows waiting for detection at most: about 250 MB of memory, 100 s of a network
#: exporting 10,000 flows/s (retraining models stalls detection for seconds).
MAX_QUEUED_FLOWS = 1_000_000
#: Documents of the events being stored, until the listener was told of them.
UNPUBLISHED = "unpublished.jsonl"


def take_unpublished(data_dir: Path) -> list[dict[str, Any]]:
    """Documents of events a crash may have kept from the listener (stored or not: the
    caller checks; a line the crash cut is skipped). :func:`forget_unpublished` after."""
    path = data_dir / UNPUBLISHED
    if not path.exists():
        return []
    docs = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            docs.append(json.loads(line))
        except ValueError:
            continue
    return [d for d in docs if isinstance(d, dict) and "id" in d]


def forget_unpublished(data_dir: Path) -> None:
    (data_dir / UNPUBLISHED).unlink(missing_ok=True)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


@dataclass
class LiveTotals:
    """What live detection did since it started."""

    batches: int = 0
    flows: int = 0
    dns: int = 0  # DNS transactions
    alarms: int = 0
    events_published: int = 0
    errors: int = 0
    late_flows: int = 0  # arrived after their bucket closed: scored, not in the log
    skipped_flows: int = 0  # not detected: the queue was full (they are archived)
    newest_flow: datetime | None = None  # end of the newest flow processed (lag)


class LiveDetection:
    """Detects on flow batches submitted in arrival order; publishes events as it goes."""

    def __init__(
        self,
        cfg: Config,
        data_dir: Path,
        run_id: str,
        listener: Callable[[pl.DataFrame], None] | None = None,
        intel: Sequence[str | Path] = (),
        max_queued_flows: int = MAX_QUEUED_FLOWS,
    ):
        self.cfg = cfg
        self.max_queued_flows = max_queued_flows
        self.listener = listener  # told of every event stored (new or grown), after the store
        self.data_dir = data_dir
        self.logs = LogStore(data_dir / "behavior", run_id, cfg.archive.compression)
        self.context = EventContext(cfg, data_dir)
        self.intel = intelstore.for_run(cfg, data_dir, intel)
        self.engine = DetectionEngine(
            cfg,
            StateStore(data_dir),
            log_store=self.logs,
            intel=self.intel,
            passive_dns=self.context.passive_dns(),
        )
        self.window = timedelta(seconds=cfg.events.window)
        self.totals = LiveTotals()
        self._open = self._stored_open()  # alarms of windows that can still change
        self._queue: queue.Queue[tuple[pa.Table, pa.Table | None] | None] = queue.Queue()
        self._queued_flows = 0  # flows in the queue (guarded by _queued_lock)
        self._queued_lock = threading.Lock()
        self._lock = threading.Lock()  # the engine: its thread, or checkpoint()
        self._thread: threading.Thread | None = None

    def _stored_open(self) -> pl.DataFrame:
        """After a restart: the stored alarms of windows that can still change, so an alarm
        joining such a window rebuilds its event with the earlier alarms too."""
        closed = self.engine.buffer.closed_until
        if closed is None or not store_path(self.data_dir).exists():
            return empty_alarms()
        since = closed - KEEP - self.window
        con = connect(self.data_dir)
        try:
            table = con.sql(
                f"SELECT {', '.join('a.' + c for c in ALARM_SCHEMA)} FROM alarms a "
                "JOIN events e ON a.event_id = e.id WHERE e.window_start >= ?",
                params=[since],
            ).to_arrow_table()
        finally:
            con.close()
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        if df.height == 0:
            return empty_alarms()
        return df.with_columns(pl.col("ts", "ts_end").dt.convert_time_zone("UTC")).cast(
            ALARM_SCHEMA  # type: ignore[arg-type]
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flowhawk-detect", daemon=True)
        self._thread.start()

    def submit(self, flows: pa.Table, dns: pa.Table | None = None) -> None:
        """Queue canonical flows (one rollover) and DNS transactions for detection."""
        if flows.num_rows or (dns is not None and dns.num_rows):
            with self._queued_lock:
                waiting = self._queued_flows
                if waiting and waiting + flows.num_rows > self.max_queued_flows:
                    self.totals.skipped_flows += flows.num_rows
                    log.warning(
                        "detection is %d flows behind (at most %d wait): %d flows of this "
                        "rollover are archived but not detected",
                        waiting,
                        self.max_queued_flows,
                        flows.num_rows,
                    )
                    return
                self._queued_flows += flows.num_rows
            self._queue.put((flows, dns))

    def stop(self) -> None:
        """Detect on everything queued, close open buckets, publish, checkpoint."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        else:  # never started: work through the queue here
            while not self._queue.empty():
                item = self._queue.get()
                if item is not None:
                    self._taken(item[0])
                    self._guarded(self.process, *item)
        with self._lock:
            self._guarded(self._finish)
            self._guarded(self.engine.checkpoint, {"run": self.logs.run_id, "live": True})
        self.context.close()

    def set_intel(self, intel: IntelSet | None) -> None:
        """Detect with a new intelligence version from the next batch on."""
        with self._lock:
            self.intel = intel
            self.engine.set_intel(intel)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def queued_flows(self) -> int:
        return self._queued_flows

    def _taken(self, flows: pa.Table) -> None:
        with self._queued_lock:
            self._queued_flows -= flows.num_rows

    # -- work --------------------------------------------------------------------------

    def _run(self) -> None:
        last = time.monotonic()
        while (item := self._queue.get()) is not None:
            self._taken(item[0])
            with self._lock:
                self._guarded(self.process, *item)
                if time.monotonic() - last >= self.cfg.collect.checkpoint:
                    self._guarded(self.engine.checkpoint)
                    last = time.monotonic()

    def _guarded(self, fn, *args) -> bool:  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except Exception:  # a failed batch must not stop collection
            self.totals.errors += 1
            log.exception("live detection failed on a batch (its flows are archived)")
            return False
        return True

    def process(self, flows: pa.Table, dns: pa.Table | None = None) -> None:
        """Detect on one batch (flows, DNS transactions) and publish the events it changed."""
        df = pl.from_arrow(flows)
        assert isinstance(df, pl.DataFrame)
        df = df.sort("ts_start", maintain_order=True)
        dns_df = None
        if dns is not None and dns.num_rows:
            dns_df = pl.from_arrow(dns)
            assert isinstance(dns_df, pl.DataFrame)
            dns_df = dns_df.sort("ts", maintain_order=True)
            pdns = self.context.passive_dns()
            if pdns is not None:
                pdns.update(dns_df)
            self.totals.dns += dns_df.height
        late = self.engine.buffer.late
        alarms = self.engine.process(df, dns_df)
        self.totals.batches += 1
        self.totals.flows += df.height
        newest = df.get_column("ts_end").max()
        if isinstance(newest, datetime) and (
            self.totals.newest_flow is None or newest > self.totals.newest_flow
        ):
            self.totals.newest_flow = newest
        if self.engine.buffer.late > late:
            self.totals.late_flows += self.engine.buffer.late - late
            log.warning(
                "%d flows arrived after their %d s bucket closed ([behavior] lateness %g s): "
                "scored by flow methods, left out of the behavioral log",
                self.engine.buffer.late - late,
                self.engine.bucket,
                self.cfg.behavior.lateness,
            )
        self._publish(alarms, final=False)

    def _finish(self) -> None:
        self._publish(self.engine.finish(), final=True)

    def _publish(self, alarms: pl.DataFrame, final: bool) -> None:
        self.totals.alarms += alarms.height
        if alarms.height:
            self._open = pl.concat([self._open, alarms], how="vertical")
            touched = self._windows(alarms).unique().implode()
            opened = self._open.filter(self._windows(self._open).is_in(touched))
            events, merged = build_events(opened, self.cfg)
            events = self.context.attach(events)
            if events.height:
                self._write_unpublished(events)
                sink = EventStore(SinkPaths(out=self.data_dir, data=self.data_dir))
                sink.start()
                try:
                    sink.write(events, merged)
                finally:
                    sink.stop()
                self.totals.events_published += events.height
                if self.listener is not None and self._guarded(self.listener, events):
                    forget_unpublished(self.data_dir)
        self._forget(final)

    def _write_unpublished(self, events: pl.DataFrame) -> None:
        """The documents of ``events``, on disk before they are stored (see UNPUBLISHED)."""
        if self.listener is None:
            return
        with open(self.data_dir / UNPUBLISHED, "w") as fh:
            for doc in event_documents(events).to_dicts():
                fh.write(json.dumps(doc, separators=(",", ":"), default=_json_value) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _forget(self, final: bool) -> None:
        """Drop the alarms of windows that ended ``KEEP`` before the log's closed time.

        Flow detectors can still alarm on a late flow (a long one exported when it
        ended), so a window is kept well past its end; one older than that receiving an
        alarm would be published with only its new alarms."""
        closed = self.engine.buffer.closed_until
        if final:
            self._open = self._open.clear()
        elif closed is not None and self._open.height:
            end = self._windows(self._open) + self.window
            self._open = self._open.filter(end + KEEP > closed)

    def _windows(self, alarms: pl.DataFrame) -> pl.Series:
        """The event window of each alarm (as :func:`flowhawk.events.build_events` cuts)."""
        return with_window(alarms, self.cfg.events.window, "ts").get_column("window_start")
