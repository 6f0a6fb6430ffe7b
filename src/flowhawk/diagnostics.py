"""Counting and reporting bad input without stopping.

Readers never raise on a bad record: they call :meth:`Diagnostics.skip` with the
input, a location (line number or byte offset) and what is wrong. Every skip is
counted per input and reason; the first few of each kind are logged in full and
later ones at a sampled rate so a corrupt file cannot flood the log.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("flowhawk.input")

#: Messages kept (and logged) per input and reason before sampling starts.
KEEP_FIRST = 5
#: After that, one in this many is logged.
LOG_EVERY = 1000


@dataclass
class Issue:
    """One problem with an input, located as precisely as the format allows."""

    input: str
    location: str  # "line 12", "offset 4096", "record 7", or "" for the whole input
    reason: str  # short category, e.g. "truncated packet", "bad timestamp"
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.input}" + (f" at {self.location}" if self.location else "")
        return f"{where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class InputStats:
    """What happened to one input."""

    name: str
    format: str = ""
    records: int = 0  # records read successfully (rows a reader yielded; counted by the pipeline)
    flows: int = 0  # flows after normalization and stitching (counted by the normalizer)
    packets: int = 0  # packets metered into flows (captures only; counted by the reader)
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    ignored: Counter = field(default_factory=Counter)  # not errors: e.g. non-flow events
    failed: str = ""  # set when the input could not be read at all

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


class Diagnostics:
    """Collects per-input statistics and issues for one run."""

    def __init__(self) -> None:
        self.inputs: dict[str, InputStats] = {}
        self.issues: list[Issue] = []

    def stats(self, input_name: str) -> InputStats:
        if input_name not in self.inputs:
            self.inputs[input_name] = InputStats(input_name)
        return self.inputs[input_name]

    def skip(
        self, input_name: str, location: str, reason: str, detail: str = "", count: int = 1
    ) -> None:
        """Record ``count`` skipped records of one kind."""
        if count <= 0:
            return
        st = self.stats(input_name)
        before = st.skipped[reason]
        st.skipped[reason] += count
        issue = Issue(input_name, location, reason, detail)
        if before < KEEP_FIRST:
            self.issues.append(issue)
            log.warning("skipped %s", issue)
        elif (before // LOG_EVERY) != ((before + count) // LOG_EVERY):
            log.warning("skipped %s (%d so far for this reason)", issue, before + count)

    def ignore(self, input_name: str, reason: str, count: int = 1) -> None:
        """Count records deliberately not used (not an error, e.g. alert events)."""
        if count > 0:
            self.stats(input_name).ignored[reason] += count

    def fail(self, input_name: str, message: str) -> None:
        """The input could not be read at all."""
        st = self.stats(input_name)
        st.failed = message
        self.issues.append(Issue(input_name, "", "unreadable", message))
        log.warning("%s: %s", input_name, message)

    @property
    def total_skipped(self) -> int:
        return sum(s.skipped_total for s in self.inputs.values())

    @property
    def total_records(self) -> int:
        return sum(s.records for s in self.inputs.values())
