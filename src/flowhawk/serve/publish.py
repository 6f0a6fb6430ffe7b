"""From stored events to everyone who follows them: outputs and the live stream.

Live detection stores an event as soon as its window has an alarm and again each time
the window grows. Receivers want to hear about an event when it appears and when it
gets worse, not at every flow: an event is published when it is new to this process,
its risk rose by at least ``RISK_STEP``, or a method joined it. Every publication
carries the event's stable ``id`` and a ``revision`` (1, 2, ...) so receivers keep the
latest and deduplicate (delivery is at least once; after a restart the first
publication of an event starts again at revision 1 of this process).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from prometheus_client import CollectorRegistry, Counter

from flowhawk.serve.eventdb import EventDB
from flowhawk.serve.stream import Broadcaster
from flowhawk.sinks.format import event_documents

log = logging.getLogger("flowhawk.serve")

RISK_STEP = 1.0
#: Events whose window ended this long before the newest are forgotten (a growing
#: window is at most ``live.KEEP`` behind).
FORGET = timedelta(days=2)


class Publisher:
    """Decides which stored events are news and hands them to delivery and the stream."""

    def __init__(
        self,
        db: EventDB,
        stream: Broadcaster,
        delivery: Any | None,
        registry: CollectorRegistry,
    ):
        self.db = db
        self.stream = stream
        self.delivery = delivery
        self._seen: dict[str, tuple[float, frozenset[str], int, datetime]] = {}
        self._lock = threading.Lock()
        self.published = Counter(
            "flowhawk_events_published",
            "Event publications (new or grown events) to outputs and the stream, by method.",
            ["method"],
            registry=registry,
        )

    def __call__(self, events: pl.DataFrame) -> None:
        docs = self.news(event_documents(events).to_dicts())
        if not docs:
            return
        for doc in docs:
            for method in doc.get("methods") or ():
                self.published.labels(method).inc()
        if self.delivery is not None:
            self.delivery.publish(docs)
        self.stream.publish(docs)

    def news(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents worth publishing, with their workflow state and revision."""
        workflow = self.db.workflow([d["id"] for d in docs])
        out = []
        with self._lock:
            for doc in docs:
                risk = float(doc.get("risk") or 0.0)
                methods = frozenset(doc.get("methods") or ())
                end = datetime.fromisoformat(doc["ts_end"].replace("Z", "+00:00"))
                seen = self._seen.get(doc["id"])
                if seen is not None and risk < seen[0] + RISK_STEP and methods <= seen[1]:
                    continue
                revision = 1 if seen is None else seen[2] + 1
                self._seen[doc["id"]] = (
                    max(risk, seen[0]) if seen else risk,
                    methods | (seen[1] if seen else frozenset()),
                    revision,
                    end,
                )
                status, verdict = workflow.get(doc["id"], ("new", None))
                out.append({**doc, "status": status, "verdict": verdict, "revision": revision})
            self._forget()
        return out

    def _forget(self) -> None:
        if len(self._seen) < 10_000:
            return
        newest = max(v[3] for v in self._seen.values())
        self._seen = {k: v for k, v in self._seen.items() if v[3] >= newest - FORGET}
