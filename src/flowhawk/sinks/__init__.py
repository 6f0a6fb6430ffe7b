"""Event sinks: the registry of everywhere events can go.

Each sink is one class (see :mod:`flowhawk.sinks.base`). ``analyze`` uses all of
the ones below; later sinks (syslog, CEF, webhooks, ...) join this registry.
"""

from __future__ import annotations

from flowhawk.registry import Registry
from flowhawk.sinks.base import Sink
from flowhawk.sinks.files import EventsJsonl, SuspiciousCsv
from flowhawk.sinks.store import EventStore

SINKS: Registry[type[Sink]] = Registry(
    "sink", [(cls.name, cls) for cls in (EventsJsonl, SuspiciousCsv, EventStore)]
)
