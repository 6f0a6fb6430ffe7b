"""File sinks for one run's reports: ``events.jsonl`` and ``suspicious.csv``."""

from __future__ import annotations

import polars as pl

from flowhawk.sinks.base import Sink
from flowhawk.sinks.format import event_documents, suspicious_rows


class EventsJsonl(Sink):
    """One JSON document per event, newest run only (``<out>/events.jsonl``)."""

    name = "events-jsonl"
    description = "events as JSON lines in the output directory"

    def start(self) -> None:
        self.paths.out.mkdir(parents=True, exist_ok=True)
        self.path = self.paths.out / "events.jsonl"
        self._fh = open(self.path, "wb")  # noqa: SIM115 - held open across write() calls

    def write(self, events: pl.DataFrame, alarms: pl.DataFrame) -> None:
        if events.height:
            event_documents(events).write_ndjson(self._fh)

    def stop(self) -> None:
        self._fh.close()


class SuspiciousCsv(Sink):
    """The top events as Apache Spot-style suspicious connects (``<out>/suspicious.csv``)."""

    name = "suspicious-csv"
    description = "top communications in Apache Spot's suspicious-connects layout"

    def start(self) -> None:
        self.paths.out.mkdir(parents=True, exist_ok=True)
        self.path = self.paths.out / "suspicious.csv"
        self._events: list[pl.DataFrame] = []

    def write(self, events: pl.DataFrame, alarms: pl.DataFrame) -> None:
        if events.height:
            self._events.append(events)

    def stop(self) -> None:
        from flowhawk.events import empty_events

        events = pl.concat(self._events, how="diagonal_relaxed") if self._events else None
        if events is None:
            events = empty_events().with_columns(
                src_port=pl.lit(None, pl.Int32),
                flows=pl.lit(0, pl.UInt32),
                src_pkts=pl.lit(0, pl.Int64),
                src_bytes=pl.lit(0, pl.Int64),
                dst_pkts=pl.lit(0, pl.Int64),
                dst_bytes=pl.lit(0, pl.Int64),
            )
        suspicious_rows(events, self.top).write_csv(self.path)
