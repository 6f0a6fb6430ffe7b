"""Delivery: routes events to outputs and delivers them reliably, one thread per output.

:meth:`Delivery.publish` is called by whoever produces events (the detection thread). It
routes the documents (:mod:`flowhawk.outputs.routing`), appends each output's share to
the persistent outbox (:mod:`flowhawk.outputs.outbox`, ``DATA/outbox.sqlite``) and
wakes the outputs' threads. It never talks to a receiver, so a receiver that is down
or slow never blocks detection or the other outputs.

Each output has a thread of its own that takes up to ``batch`` of its oldest queued
documents, sends them (:meth:`flowhawk.outputs.base.Output.send`) and deletes them
from the outbox once the send returned. A failed send (any exception) is counted and
logged with the output's name; the output is closed (reopened before the next try) and
the same documents are tried again after a wait that doubles from ``retry_min`` up to
``retry_max``, each wait drawn between half and all of that bound (jitter, so outputs
that failed together do not retry in lockstep). The thread never dies of a failure.

Guarantees and limits:

- Delivery is at least once. Documents are deleted only after the output confirmed
  them, so a crash or a stop in the middle of a send leads to that batch being sent
  again; receivers deduplicate on the event ``id``.
- A restart loses nothing that was enqueued: :meth:`Delivery.start` delivers what the
  outbox kept from the previous run first (oldest first, per output). Queued events of
  outputs that are no longer configured are kept (and reported in the log) until an
  output of that name returns or :meth:`Delivery.remove_output` deletes them.
- Each output's backlog is bounded by its ``max_backlog``: when exceeded, its oldest
  documents are deleted and counted as dropped (reason ``backlog``).
- :meth:`Delivery.stop` lets every thread drain its backlog for up to ``timeout``
  (an output waiting to retry tries once more at once), then halts the threads; a send
  in progress finishes or fails within the output's own ``timeout``. What was not
  delivered stays in the outbox for the next start. A stopped :class:`Delivery` is not
  started again.

Metrics (Prometheus, in the given registry or a new one; one :class:`Delivery` per
registry): ``flowhawk_output_delivered_events_total{output}``,
``flowhawk_output_failures_total{output}`` (failed delivery attempts),
``flowhawk_output_dropped_events_total{output,reason}`` and the gauge
``flowhawk_output_backlog_events{output}``. An output's series are removed with it.

Outputs added at run time (:meth:`Delivery.add_output`, e.g. webhook subscriptions) may
bring their own routes, which then replace the configured routes for that output.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from flowhawk.errors import ConfigError, StateError
from flowhawk.outputs.base import Document, Output
from flowhawk.outputs.outbox import Outbox
from flowhawk.outputs.routing import route

if TYPE_CHECKING:
    from flowhawk.config import Route

log = logging.getLogger(__name__)

#: The outbox file inside the data directory.
OUTBOX_FILE = "outbox.sqlite"


def backoff(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempt``-th consecutive failure (1, 2, ...).

    The bound doubles from ``low`` per failure up to ``high``; the wait is drawn
    uniformly between half the bound and the bound."""
    bound = min(high, low * 2 ** min(max(attempt - 1, 0), 62))
    bound = max(bound, 0.0)
    return (rng or random).uniform(bound / 2, bound)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(eq=False)
class _Worker:
    """One output, its routes (``None``: the configured routes) and its thread's state."""

    output: Output
    routes: list[Route] | None
    wake: threading.Event = field(default_factory=threading.Event)
    nudge: threading.Event = field(default_factory=threading.Event)
    halt: threading.Event = field(default_factory=threading.Event)
    flushing: bool = False
    thread: threading.Thread | None = None
    delivered: int = 0
    failures: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_success: float | None = None
    next_retry: float | None = None

    @property
    def name(self) -> str:
        return self.output.name

    def signal_stop(self) -> None:
        self.halt.set()
        self.nudge.set()
        self.wake.set()


@dataclass
class _ThreadState:
    opened: bool = False
    streak: int = 0  # consecutive failed attempts


class Delivery:
    """Routes events to outputs and delivers them from the outbox, one thread per output."""

    def __init__(
        self,
        outputs: list[Output],
        routes: list[Route],
        data_dir: Path,
        registry: CollectorRegistry | None = None,
    ):
        self._workers: dict[str, _Worker] = {}
        for output in outputs:
            if output.name in self._workers:
                raise ConfigError(f"output name {output.name!r} is used twice")
            self._workers[output.name] = _Worker(output, None)
        self._lock = threading.RLock()
        self._routes: list[Route] = list(routes)
        self._started = False
        self._stopped = False
        self.outbox = Outbox(Path(data_dir) / OUTBOX_FILE)
        self.registry = registry if registry is not None else CollectorRegistry()
        self._delivered = Counter(
            "flowhawk_output_delivered_events",
            "Events delivered by each output.",
            ["output"],
            registry=self.registry,
        )
        self._failures = Counter(
            "flowhawk_output_failures",
            "Failed delivery attempts of each output (each retry counts).",
            ["output"],
            registry=self.registry,
        )
        self._dropped = Counter(
            "flowhawk_output_dropped_events",
            "Events dropped before delivery (reason backlog: max_backlog was exceeded).",
            ["output", "reason"],
            registry=self.registry,
        )
        self._backlog = Gauge(
            "flowhawk_output_backlog_events",
            "Events waiting in the outbox for each output.",
            ["output"],
            registry=self.registry,
        )

    # -- configuration -------------------------------------------------------------

    @property
    def routes(self) -> list[Route]:
        """The configured routes (outputs with their own routes do not use them)."""
        with self._lock:
            return list(self._routes)

    def names(self) -> list[str]:
        """Names of the outputs, in the order they were added."""
        with self._lock:
            return list(self._workers)

    def set_routes(self, routes: list[Route]) -> None:
        """Replace the configured routes; applies to events published from now on."""
        with self._lock:
            self._routes = list(routes)

    def add_output(self, output: Output, routes: list[Route] | None = None) -> None:
        """Add an output at run time. With ``routes`` (a list, empty = every event) it is
        routed by those only; with ``None`` by the configured routes."""
        with self._lock:
            if output.name in self._workers:
                raise ConfigError(f"an output named {output.name!r} exists already")
            worker = _Worker(output, None if routes is None else list(routes))
            self._workers[output.name] = worker
            if self._started and not self._stopped:
                self._launch(worker)

    def remove_output(self, name: str) -> None:
        """Stop the output's thread, close it and delete its backlog and its metrics."""
        with self._lock:
            worker = self._workers.pop(name, None)
            if worker is None:
                raise KeyError(f"no output named {name!r}")
        worker.signal_stop()
        if worker.thread is not None:
            worker.thread.join(worker.output.settings.timeout + 1.0)
            if worker.thread.is_alive():
                log.warning("output %s: its thread is still sending; it ends after it", name)
        else:
            _close(worker.output)
        deleted = self.outbox.drop(name)
        if deleted:
            log.info("output %s removed with %d undelivered events", name, deleted)
        for metric, labels in (
            (self._delivered, (name,)),
            (self._failures, (name,)),
            (self._dropped, (name, "backlog")),
            (self._backlog, (name,)),
        ):
            with contextlib.suppress(KeyError):
                metric.remove(*labels)

    # -- running -------------------------------------------------------------------

    def start(self) -> None:
        """Start one delivery thread per output; each delivers its old backlog first."""
        with self._lock:
            if self._started:
                return
            self._started = True
            orphans = [n for n in self.outbox.outputs() if n not in self._workers]
            for name in orphans:
                log.warning(
                    "the outbox holds %d events for output %s, which is not configured; "
                    "they are kept until it is configured again",
                    self.outbox.backlog(name),
                    name,
                )
            for worker in self._workers.values():
                self._launch(worker)

    def publish(self, docs: Sequence[Document]) -> None:
        """Route ``docs`` and enqueue each output's share durably, then wake the threads.

        Returns once the outbox committed; never waits for a receiver."""
        if not docs:
            return
        docs = list(docs)
        with self._lock:
            workers = list(self._workers.values())
            plain = [w.name for w in workers if w.routes is None]
            shares = route(docs, self._routes, plain) if plain else {}
            for w in workers:
                if w.routes is not None:
                    shares.update(route(docs, w.routes, [w.name]))
            for w in workers:
                share = shares.get(w.name)
                if not share:
                    continue
                dropped = self.outbox.put(w.name, share, w.output.settings.max_backlog)
                if dropped:
                    w.dropped += dropped
                    self._dropped.labels(w.name, "backlog").inc(dropped)
                    log.warning(
                        "output %s: backlog above max_backlog=%d, dropped the %d oldest events",
                        w.name,
                        w.output.settings.max_backlog,
                        dropped,
                    )
                self._backlog.labels(w.name).set(self.outbox.backlog(w.name))
                w.wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Let the threads drain for up to ``timeout`` seconds, then halt them and close
        the outbox; undelivered events stay in it for the next start."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            workers = list(self._workers.values())
        deadline = time.monotonic() + max(timeout, 0.0)
        for w in workers:
            w.flushing = True
            w.nudge.set()
            w.wake.set()
        for w in workers:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - time.monotonic()))
        for w in workers:
            w.signal_stop()
        alive = []
        for w in workers:
            if w.thread is None:
                _close(w.output)
                continue
            w.thread.join(w.output.settings.timeout + 1.0)
            if w.thread.is_alive():
                alive.append(w.name)
        if alive:
            log.warning("outputs still sending at stop (left running): %s", ", ".join(alive))
        else:
            self.outbox.close()

    def status(self) -> list[dict[str, Any]]:
        """Per output: name, type, backlog (None once stopped), delivered, failures,
        dropped, last_error, last_success and next_retry (UTC ISO times or None)."""
        with self._lock:
            workers = list(self._workers.values())
            out = []
            for w in workers:
                out.append(
                    {
                        "name": w.name,
                        "type": w.output.type,
                        "backlog": self._backlog_of(w.name),
                        "delivered": w.delivered,
                        "failures": w.failures,
                        "dropped": w.dropped,
                        "last_error": w.last_error,
                        "last_success": _iso(w.last_success),
                        "next_retry": _iso(w.next_retry),
                    }
                )
            return out

    def _backlog_of(self, name: str) -> int | None:
        try:
            return self.outbox.backlog(name)
        except StateError:  # stopped: the outbox is closed
            return None

    # -- the delivery threads --------------------------------------------------------

    def _launch(self, worker: _Worker) -> None:
        name = worker.name
        self._delivered.labels(name)  # every series exists from the start, at 0
        self._failures.labels(name)
        self._dropped.labels(name, "backlog")
        self._backlog.labels(name).set(self.outbox.backlog(name))
        worker.thread = threading.Thread(
            target=self._run, args=(worker,), name=f"output-{worker.name}", daemon=True
        )
        worker.thread.start()

    def _run(self, w: _Worker) -> None:
        state = _ThreadState()
        try:
            while not w.halt.is_set():
                try:
                    if not self._step(w, state):
                        break
                except Exception:  # a bug must not end delivery: log it, go on
                    log.exception("output %s: unexpected error in delivery", w.name)
                    w.halt.wait(1.0)
        finally:
            if state.opened:
                _close(w.output)

    def _step(self, w: _Worker, state: _ThreadState) -> bool:
        """One batch (or one wait); False when the thread should end."""
        settings = w.output.settings
        w.wake.clear()
        try:
            batch = self.outbox.take(w.name, settings.batch)
        except Exception as exc:
            log.error("output %s: cannot read the outbox: %s", w.name, exc)
            w.halt.wait(1.0)
            return True
        if not batch:
            if w.flushing:
                return False
            w.wake.wait()
            return True
        try:
            if not state.opened:
                w.output.open()
                state.opened = True
            w.output.send([doc for _, doc in batch])
        except Exception as exc:
            state.streak += 1
            self._failed(w, exc, state.streak, len(batch))
            _close(w.output)
            state.opened = False
            delay = backoff(state.streak, settings.retry_min, settings.retry_max)
            w.next_retry = time.time() + delay
            if w.nudge.wait(delay):
                w.nudge.clear()
            w.next_retry = None
            return True
        if state.streak:
            log.info("output %s: delivering again after %d failures", w.name, state.streak)
        state.streak = 0
        self._succeeded(w, [i for i, _ in batch])
        return True

    def _failed(self, w: _Worker, exc: Exception, streak: int, size: int) -> None:
        w.failures += 1
        w.last_error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if self._workers.get(w.name) is w:
                self._failures.labels(w.name).inc()
        log.warning(
            "output %s: delivery of %d events failed (attempt %d): %s",
            w.name,
            size,
            streak,
            w.last_error,
        )

    def _succeeded(self, w: _Worker, ids: list[int]) -> None:
        try:
            self.outbox.done(w.name, ids)
        except Exception as exc:
            log.error("output %s: delivered, but the outbox was not updated: %s", w.name, exc)
            return
        w.delivered += len(ids)
        w.last_success = time.time()
        with self._lock:
            if self._workers.get(w.name) is not w:  # removed meanwhile: keep no series
                return
        self._delivered.labels(w.name).inc(len(ids))
        self._backlog.labels(w.name).set(self.outbox.backlog(w.name))


def _close(output: Output) -> None:
    try:
        output.close()
    except Exception as exc:  # close() should never raise; keep the thread alive if it does
        log.warning("output %s: close failed: %s", output.name, exc)
