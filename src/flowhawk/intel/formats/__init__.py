"""Feed formats: the registry of parsers and detection from content.

Each format has a sniffer (confidence 0-100 that the first KiB is this format) and a
parser (bytes of one feed -> :class:`~flowhawk.intel.formats.base.Entries`, which
:func:`~flowhawk.intel.formats.base.finish` turns into indicators). Detection asks every sniffer and
takes the most confident; ties go to the earlier entry. Explicit formats skip it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from flowhawk.errors import InputError
from flowhawk.intel.formats import csvfeed, lines, misp, stix, zeek
from flowhawk.intel.formats.base import SNIFF_BYTES, Entries, ParseContext, finish
from flowhawk.registry import Registry


@dataclass(frozen=True)
class Format:
    """One feed format."""

    sniff: Callable[[bytes], int]
    parse: Callable[[bytes, ParseContext], Entries]
    description: str


FORMATS: Registry[Format] = Registry(
    "intel feed format",
    [
        ("stix", Format(stix.sniff, stix.parse, "STIX 2.1/2.0 JSON (bundle or objects)")),
        ("misp", Format(misp.sniff, misp.parse, "MISP JSON events")),
        ("zeek", Format(zeek.sniff, zeek.parse, "Zeek intel framework file")),
        ("maltrail", Format(lines.sniff_maltrail, lines.parse_maltrail, "maltrail trail file")),
        ("csv", Format(csvfeed.sniff, csvfeed.parse, "CSV with a header")),
        ("plain", Format(lines.sniff_plain, lines.parse_plain, "one indicator per line")),
    ],
)


def detect(data: bytes, input_name: str) -> str:
    """The format of a feed from its first KiB; :class:`InputError` when none fits."""
    head = data[:SNIFF_BYTES]
    if not head.strip():
        raise InputError(input_name, "is empty: no indicators")
    best, score = "", 0
    for name, fmt in FORMATS:
        got = fmt.sniff(head)
        if got > score:
            best, score = name, got
    if not best:
        raise InputError(
            input_name,
            "format not recognised (expected one of: "
            + ", ".join(FORMATS.names())
            + "); name it with the feed's format option",
        )
    return best


def parse(data: bytes, fmt: str, ctx: ParseContext) -> Entries:
    """The raw entries of one feed's bytes in format ``fmt`` (see :func:`finish`)."""
    return FORMATS.get(fmt).parse(data, ctx)


def read(data: bytes, fmt: str, ctx: ParseContext) -> pl.DataFrame:
    """The indicators of one feed's bytes in format ``fmt``."""
    return finish([(ctx, parse(data, fmt, ctx))])[0]
