"""The contract every event sink follows.

A sink receives finished events (with their merged alarms and traffic) and the
individual alarms, and delivers them somewhere: a file, a database, later syslog
or webhooks. Sinks share one shape: settings, a constructor with explicit paths,
``start``/``write``/``stop``. They never decide what is an event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import polars as pl


@dataclass
class SinkPaths:
    """Where sinks write: ``out`` for this run's reports, ``data`` for lasting stores."""

    out: Path
    data: Path


class Sink(ABC):
    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, paths: SinkPaths, top: int = 250):
        self.paths = paths
        self.top = top

    def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources; called once before the first write."""

    @abstractmethod
    def write(self, events: pl.DataFrame, alarms: pl.DataFrame) -> None:
        """Deliver a batch of events (and the alarms they merge)."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Flush and close; called once at the end."""
