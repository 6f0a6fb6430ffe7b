"""Work that a group of behavior detectors does once per closed range of event time.

Several detectors read the same view and keep the same live state (M2-M9 the last
active bucket of regular keys, M10 and M18 the last vector of each communication).
Such a group shares one object in ``context.shared``; a :class:`RangeSteps` in it
runs the group's work for each closed range once, whichever member asks first, and
keeps the result until every member has asked for a later range. Live state advances
inside that work, so each member sees the state as it was before the range, as if it
kept its own, whatever order the engine calls the members in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from flowhawk.detectors.base import Batch

T = TypeVar("T")


class RangeSteps(Generic[T]):
    """Results of a group's work per closed range, kept until every member passed it."""

    def __init__(self, nothing: T):
        self.nothing = nothing  # the result for a batch without a closed range
        self._done: dict[tuple[datetime, datetime], T] = {}
        self._progress: dict[int, datetime | None] = {}

    def join(self, member: object) -> None:
        self._progress[id(member)] = None

    def once(self, member: object, batch: Batch, work: Callable[[], T]) -> T:
        """``work()`` for ``batch``'s closed range, done by the first member to ask."""
        if batch.closed_from is None or batch.closed_until is None:
            return self.nothing
        span = (batch.closed_from, batch.closed_until)
        if span not in self._done:
            self._done[span] = work()
        found = self._done[span]
        self._progress[id(member)] = batch.closed_until
        passed = [t for t in self._progress.values() if t is not None]
        if len(passed) == len(self._progress):
            # a member asks for a range again (detect, then observe) but never an older one
            low = min(passed)
            for old in [s for s in self._done if s[1] < low]:
                del self._done[old]
        return found
