"""Fixed windows of event time that a detector fills and judges once they are over.

A window ``[end - window, end)`` closes when a flow starting at or after ``end``
arrives (or the input ends), so the same flows close the same windows however they are
batched. Windows that nothing falls in are skipped, not closed one by one: a log from
1970 analyzed beside a capture from 2016 is a few windows, not hundreds of thousands.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import polars as pl
import pyarrow as pa

US = 1_000_000


def micros(t: datetime | None) -> int | None:
    """Epoch microseconds of an aware time (None stays None)."""
    return None if t is None else int(t.timestamp() * US)


class WindowClock:
    """Where the open window ends, advanced as event time passes window ends."""

    def __init__(self, window: float):
        self.window_us = int(window * US)
        self.next_close: int | None = None  # end of the open window, epoch microseconds

    def split(
        self, first: int, last: int, frames: Sequence[tuple[pl.DataFrame, str]]
    ) -> Iterator[tuple[list[pl.DataFrame], int | None]]:
        """Cut ``frames`` (each with its epoch-microsecond time column) at the window ends
        a batch whose flows start from ``first`` to ``last`` passes: each piece with the
        end of the window it completes, then the rest (the open window) with None."""
        w = self.window_us
        if self.next_close is None:
            self.next_close = (first // w + 1) * w
        rest = [frame for frame, _ in frames]
        cols = [pl.col(c) for _, c in frames]
        while last >= self.next_close:
            end = self.next_close
            yield [f.filter(c < end) for f, c in zip(rest, cols, strict=True)], end
            rest = [f.filter(c >= end) for f, c in zip(rest, cols, strict=True)]
            upcoming = [f.select(c.min()).item() for f, c in zip(rest, cols, strict=True)]
            soonest = min([t for t in upcoming if t is not None], default=last)
            self.next_close = max(end + w, (soonest // w + 1) * w)
        yield rest, None

    def close_open(self) -> int | None:
        """The end of the open window, now closed (the input ended); None before any flow."""
        end = self.next_close
        if end is not None:
            self.next_close = end + self.window_us
        return end

    def state(self) -> pa.Table:
        return pa.table({"next_close": pa.array([self.next_close], pa.int64())})

    def load(self, table: pa.Table | None) -> None:
        self.next_close = None
        if table is not None and table.num_rows:
            self.next_close = table.column("next_close")[0].as_py()
