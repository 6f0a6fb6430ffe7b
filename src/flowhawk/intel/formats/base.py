"""What every feed parser shares: its context, its output, and the step to indicators.

A parser turns the bytes of one feed (a file or a download: the same path) into
:class:`Entries`: the raw value of every entry with its line or item number and
whatever the format says about it (category, family, times, confidence, the type the
value must have). It never raises on a bad entry, only on an input that is unusable
as a whole (:class:`~flowhawk.errors.InputError`).

:func:`finish` turns the entries of one feed or of many at once into indicator
tables (:mod:`flowhawk.intel.schema`): it classifies every value
(:func:`flowhawk.intel.tokens.classify`), counts each entry that is not an indicator
in :class:`~flowhawk.diagnostics.Diagnostics` per feed and reason (the first few
with their line), and reads the times. Finishing many feeds in one call matters: a
folder of three thousand small trail files is then classified in one vectorized
pass instead of paying the fixed cost of a query three thousand times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from flowhawk.diagnostics import Diagnostics
from flowhawk.intel.schema import INDICATOR_SCHEMA, empty_indicators
from flowhawk.intel.tokens import classify
from flowhawk.sources.flowtext import report, shorten
from flowhawk.sources.rawflows import parse_times

#: Bytes of an input format detection looks at.
SNIFF_BYTES = 1024

#: Indicator types a declared type admits (a Zeek ``Intel::URL`` without a path names
#: its host; a ``SUBNET`` of host length is an address).
DECLARED_OK: dict[str, tuple[str, ...]] = {
    "ip": ("ip",),
    "cidr": ("cidr", "ip"),
    "domain": ("domain",),
    "url": ("url", "domain", "ip"),
}


@dataclass
class ParseContext:
    """One feed being parsed: its name in messages, where problems are counted, options."""

    input: str  # the file or URL, as messages name it
    diagnostics: Diagnostics
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    options: dict[str, Any] = field(default_factory=dict)
    path_parts: tuple[str, ...] = ()  # folders and file name (maltrail reads them)

    def ignore(self, reason: str, count: int = 1) -> None:
        self.diagnostics.ignore(self.input, reason, count)

    def skip(self, location: str, reason: str, detail: str = "") -> None:
        self.diagnostics.skip(self.input, location, reason, detail)


def decode_text(data: bytes) -> str:
    """Feed bytes as text: UTF-8 (with or without BOM); bad bytes become U+FFFD, so the
    lines holding them are reported as bad values instead of failing the file."""
    return data.decode("utf-8-sig", errors="replace")


def parse_dates(values: Sequence[Any] | pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Times as UTC datetimes from ISO 8601 text (any spelling, no offset = UTC) or
    epoch seconds (numbers or digit strings; milliseconds when above 1e11).

    Returns the column and the mask of values present but not understood.
    """
    text = pl.Series("t", values, dtype=pl.String, strict=False)
    if len(text) == 0:
        return pl.Series("t", [], dtype=INDICATOR_SCHEMA["first_seen"]), np.zeros(0, bool)
    epoch = text.str.strip_chars().cast(pl.Float64, strict=False)
    micros = (
        pl.DataFrame({"e": epoch})
        .select(
            pl.when(pl.col("e").abs() > 1e11).then(pl.col("e") * 1e3).otherwise(pl.col("e") * 1e6)
        )
        .to_series()
        .cast(pl.Int64, strict=False)
    )
    iso, bad = parse_times(text.to_arrow(), [None])
    iso_us = pl.from_arrow(iso)
    assert isinstance(iso_us, pl.Series)
    merged = micros.fill_null(iso_us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    bad = bad & epoch.is_null().to_numpy()
    return merged, bad


#: Columns of :class:`Entries` and their types (dates stay text until :func:`finish`).
ENTRY_SCHEMA: dict[str, pl.DataType] = {
    "raw": pl.String(),
    "source_line": pl.Int64(),
    "declared": pl.String(),
    "category": pl.String(),
    "family": pl.String(),
    "first_seen": pl.String(),
    "last_seen": pl.String(),
    "confidence": pl.Float64(),
}
_META = ("category", "family", "first_seen", "last_seen", "confidence")


@dataclass
class Entries:
    """What a parser read from one feed, before classification: ``frame`` has ``raw``,
    ``source_line`` and any other column of :data:`ENTRY_SCHEMA` that varies by entry;
    ``constants`` the columns that hold one value for the whole feed."""

    frame: pl.DataFrame
    unit: str = "line"  # what ``source_line`` counts, for messages
    constants: dict[str, Any] = field(default_factory=dict)


def _column(name: str, value: Any) -> pl.Series:
    dtype = ENTRY_SCHEMA[name]
    if isinstance(value, pl.Series):
        return value.cast(dtype, strict=False).alias(name)
    if dtype == pl.String():
        value = [None if v is None else str(v) for v in value]
    return pl.Series(name, value, dtype=dtype, strict=False)


def entries(
    values: Sequence[Any] | pl.Series,
    lines: Sequence[int] | np.ndarray,
    meta: dict[str, Any] | None = None,
    declared: Sequence[str | None] | None = None,
    unit: str = "line",
) -> Entries:
    """Entries from raw ``values`` and their line (or item) numbers.

    ``meta`` holds any of ``category``, ``family``, ``first_seen``, ``last_seen``
    (ISO 8601 text or epoch seconds) and ``confidence`` (0-100), each a column aligned
    with ``values`` or one value for all. ``declared`` is the type each value must
    have (``ip``, ``cidr``, ``domain``, ``url``) or None.
    """
    given = {**(meta or {}), "declared": declared}
    columns = [
        _column("raw", values if isinstance(values, pl.Series) else list(values)),
        pl.Series("source_line", np.asarray(lines, dtype=np.int64)),
    ]
    constants = {}
    for name, value in given.items():
        if value is None or isinstance(value, str | int | float):
            constants[name] = value
        else:
            columns.append(_column(name, value if isinstance(value, pl.Series) else list(value)))
    return Entries(pl.DataFrame(columns), unit, constants)


def no_entries(unit: str = "line") -> Entries:
    return Entries(pl.DataFrame(schema=ENTRY_SCHEMA), unit)


class Gathered:
    """Entries of a structured feed (JSON items), gathered one value at a time: each
    value with the type it must have, its item's number and its item's metadata."""

    META = ("category", "family", "first_seen", "last_seen", "confidence")

    def __init__(self, unit: str):
        self.unit = unit
        self.values: list[str] = []
        self.declared: list[str | None] = []
        self.items: list[int] = []
        self.meta: dict[str, list[Any]] = {k: [] for k in self.META}

    def add(self, value: str, declared: str | None, item: int, row: dict[str, Any]) -> None:
        self.values.append(value)
        self.declared.append(declared)
        self.items.append(item)
        for key, column in self.meta.items():
            column.append(row[key])

    def entries(self) -> Entries:
        if not self.values:
            return no_entries(self.unit)
        return entries(self.values, self.items, self.meta, self.declared, self.unit)


def _gather(batch: Sequence[tuple[ParseContext, Entries]]) -> pl.DataFrame:
    """All entries of a batch in one frame of :data:`ENTRY_SCHEMA` plus ``feed`` (the
    position in the batch); constant columns filled in with one join."""
    frames = [
        e.frame.hstack([pl.Series("feed", np.full(e.frame.height, i, dtype=np.uint32))])
        for i, (_, e) in enumerate(batch)
        if e.frame.height
    ]
    frame = pl.concat(frames, how="diagonal_relaxed")
    constants = [
        {"feed": i, **e.constants}
        for i, (_, e) in enumerate(batch)
        if e.constants and e.frame.height
    ]
    if constants:
        table = pl.DataFrame(constants, schema_overrides={"feed": pl.UInt32}, strict=False)
        table = table.rename({c: f"{c}_constant" for c in table.columns if c != "feed"})
        frame = frame.join(table, on="feed", how="left", maintain_order="left")
    return frame.select(
        pl.coalesce(
            [pl.col(n) for n in (n, f"{n}_constant") if n in frame.columns] or [pl.lit(None)]
        )
        .cast(t)
        .alias(n)
        for n, t in {**ENTRY_SCHEMA, "feed": pl.UInt32()}.items()
    )


def finish(batch: Sequence[tuple[ParseContext, Entries]]) -> list[pl.DataFrame]:
    """The indicator table of each feed's entries, problems reported to its context."""
    if not any(e.frame.height for _, e in batch):
        return [empty_indicators() for _ in batch]
    frame = _gather(batch)
    frame = _check_declared(pl.concat([frame, classify(frame.get_column("raw"))], how="horizontal"))
    _report(frame, batch)
    good = frame.filter(pl.col("type").is_not_null())
    dates = {}
    for name in ("first_seen", "last_seen"):
        column = good.get_column(name)
        if column.null_count() == len(column):
            continue
        dates[name], bad = parse_dates(column)
        if bad.any():
            feeds = good.get_column("feed").filter(pl.Series(bad)).value_counts()
            for i, count in feeds.iter_rows():
                batch[i][0].ignore(f"unreadable {name} (indicator kept undated)", count)
    good = good.with_columns(confidence=pl.col("confidence").clip(0, 100).round(0), **dates).select(
        *INDICATOR_SCHEMA, "feed"
    )
    parts = good.partition_by("feed", as_dict=True, include_key=False)
    return [conform(parts.get((i,), empty_indicators())) for i in range(len(batch))]


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every schema column (missing ones null) in schema order and types."""
    return frame.select(
        [
            (pl.col(n) if n in frame.columns else pl.lit(None)).cast(t).alias(n)
            for n, t in INDICATOR_SCHEMA.items()
        ]
    )


def _check_declared(frame: pl.DataFrame) -> pl.DataFrame:
    admitted = pl.col("declared").replace_strict(
        {k: list(v) for k, v in DECLARED_OK.items()}, default=None, return_dtype=pl.List(pl.String)
    )
    mismatch = (
        pl.col("declared").is_not_null()
        & pl.col("type").is_not_null()
        & ~admitted.list.contains(pl.col("type")).fill_null(False)
    )
    return frame.with_columns(
        type=pl.when(mismatch).then(None).otherwise(pl.col("type")),
        value=pl.when(mismatch).then(None).otherwise(pl.col("value")),
        reason=pl.when(mismatch)
        .then(pl.lit("value does not match its declared type"))
        .otherwise(pl.col("reason")),
        ignored=pl.when(mismatch).then(False).otherwise(pl.col("ignored")),
    )


def _report(frame: pl.DataFrame, batch: Sequence[tuple[ParseContext, Entries]]) -> None:
    problems = frame.filter(pl.col("reason").is_not_null())
    if problems.height == 0:
        return
    keys = ["feed", "reason", "ignored"]
    for (i, reason, ignored), group in problems.group_by(keys, maintain_order=True):
        ctx, found = batch[int(i)]  # type: ignore[call-overload]
        if ignored:
            ctx.ignore(str(reason), group.height)
            continue
        lines = group.get_column("source_line").to_numpy()
        details = [shorten(v) for v in group.get_column("raw").head(5).to_list()]
        report(ctx.diagnostics, ctx.input, str(reason), lines, details, unit=found.unit)
