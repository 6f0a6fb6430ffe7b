"""CSV feeds with a header (``csv``), such as abuse.ch's ThreatFox, Feodo Tracker and
URLhaus exports.

The header is the first line that is not a comment, or, as abuse.ch writes it, the
last comment line before the data when it reads as a header (``# "first_seen_utc",
"ioc_id","ioc_value",...``). Columns are chosen by :class:`CsvMapping` where set, and
otherwise by the first common name present (:data:`AUTO`). The separator is the one
of ``,``, tab, ``;`` and ``|`` that splits the header into the most fields. Quoted
fields and a space after the separator (ThreatFox) are understood.

A type column, when there is one, sorts rows: network types are checked against the
value (a ``domain`` row must hold a domain), other types (hashes, e-mail addresses)
are counted as ignored by type. A threat-type column is read as free text
(``botnet_cc`` -> ``c2``, ``payload_delivery`` -> ``malware``); rows it calls benign
are ignored. Rows with fewer fields than the value column needs are reported.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator

import polars as pl

from flowhawk.errors import InputError
from flowhawk.intel.formats.base import Entries, ParseContext, decode_text, entries, no_entries
from flowhawk.intel.schema import category_from_text
from flowhawk.intel.settings import CsvMapping

#: Header names tried, in order, for each mapped column (compared lowercased).
AUTO: dict[str, tuple[str, ...]] = {
    "value": (
        "ioc_value", "ioc", "indicator", "value", "ip_address", "ipaddress", "ip",
        "dst_ip", "url", "domain", "hostname", "host", "fqdn", "address", "src_ip",
    ),
    "type": ("ioc_type", "indicator_type", "type"),
    "category": ("threat_type", "threat", "category", "classification"),
    "family": ("malware_printable", "malware", "malware_family", "family"),
    "first_seen": (
        "first_seen_utc", "first_seen", "firstseen", "dateadded", "date_added", "created",
        "date",
    ),
    "last_seen": ("last_seen_utc", "last_seen", "lastseen", "last_online", "updated"),
    "confidence": ("confidence_level", "confidence"),
}  # fmt: skip
#: Declared types of a type column that are network indicators, and what they must be.
NETWORK_TYPES: dict[str, str | None] = {
    **dict.fromkeys(
        ("ip", "ip:port", "ipv4", "ipv6", "ip-dst", "ip-src", "ipv4-addr", "ipv6-addr",
         "ip_address", "ipaddress", "address", "addr", "cidr", "subnet", "netblock",
         "network"),
        None,
    ),
    **dict.fromkeys(("domain", "hostname", "fqdn", "domain-name", "host"), "domain"),
    **dict.fromkeys(("url", "link"), "url"),
}  # fmt: skip
_DELIMITERS = (",", "\t", ";", "|")
_NO_FAMILY = {"", "none", "null", "unknown", "n/a", "-"}


def _split(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])


def _header(lines: list[str], mapping: CsvMapping) -> tuple[int, str, list[str]] | None:
    """(line index, delimiter, lowercased names) of the header, or None."""
    wanted = {n.lower() for n in AUTO["value"]}
    if mapping.value:
        wanted = {mapping.value.lower()}
    last_comment: tuple[int, str] | None = None
    for i, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            body = text.lstrip("#").strip()
            if body:
                last_comment = (i, body)
            continue
        candidates = [(i, text)] + ([last_comment] if last_comment else [])
        for index, body in candidates:
            delimiter = mapping.delimiter or max(_DELIMITERS, key=body.count)
            names = [n.strip().lower() for n in _split(body, delimiter)]
            if len(names) >= 2 and wanted & set(names):
                return index, delimiter, names
        return None
    return None


def sniff(head: bytes) -> int:
    text = decode_text(head)
    return 70 if _header(text.splitlines()[:-1] or [text], CsvMapping()) is not None else 0


def _column(names: list[str], mapping: CsvMapping, key: str) -> int | None:
    chosen = getattr(mapping, key)
    if chosen:
        return names.index(chosen.lower()) if chosen.lower() in names else -1
    for candidate in AUTO[key]:
        if candidate in names:
            return names.index(candidate)
    return None


def parse(data: bytes, ctx: ParseContext) -> Entries:
    mapping = ctx.options.get("csv") or CsvMapping()
    lines = decode_text(data).splitlines()
    found = _header(lines, mapping)
    if found is None:
        what = f"column {mapping.value!r}" if mapping.value else "a known indicator column"
        raise InputError(ctx.input, f"no CSV header with {what} (map it with csv.value)")
    start, delimiter, names = found
    cols = {key: _column(names, mapping, key) for key in AUTO}
    missing = [getattr(mapping, k) for k, v in cols.items() if v == -1]
    if missing:
        raise InputError(ctx.input, f"mapped CSV columns not in the header: {missing}")
    needed = max(v for v in cols.values() if v is not None) + 1
    rows: dict[str, list[str | None]] = {key: [] for key in cols}
    numbers: list[int] = []
    for number, fields in _rows(lines, start, delimiter, ctx):
        if len(fields) < needed:
            ctx.skip(f"line {number}", "too few fields", f"{len(fields)} of {needed}")
            continue
        numbers.append(number)
        for key, index in cols.items():
            rows[key].append(fields[index].strip() if index is not None else None)
    if not numbers:
        return no_entries()
    frame = pl.DataFrame(rows, schema={k: pl.String for k in rows}).with_columns(
        line=pl.Series(numbers)
    )
    frame = _sort_types(frame, ctx)
    categories = [category_from_text(v) for v in frame.get_column("category").to_list()]
    frame = frame.with_columns(category=pl.Series(categories, dtype=pl.String))
    benign = frame.get_column("category") == "benign"
    if benign.any():
        ctx.ignore("rows of a benign threat type", int(benign.sum()))
        frame = frame.filter(~benign)
    family = pl.col("family").str.strip_chars()
    frame = frame.with_columns(
        family=pl.when(family.str.to_lowercase().is_in(list(_NO_FAMILY)))
        .then(None)
        .otherwise(family)
    )
    meta = {k: frame.get_column(k) for k in AUTO if k not in ("value", "type")}
    return entries(
        frame.get_column("value"),
        frame.get_column("line").to_numpy(),
        meta=meta,
        declared=frame.get_column("declared").to_list(),
    )


def _rows(
    lines: list[str], start: int, delimiter: str, ctx: ParseContext
) -> Iterator[tuple[int, list[str]]]:
    """Parsed data rows after the header, each with its (last) physical line number."""
    current = [0]

    def data() -> Iterator[str]:
        for i in range(start + 1, len(lines)):
            line = lines[i]
            if line.strip() and not line.lstrip().startswith("#"):
                current[0] = i + 1
                yield line

    reader = csv.reader(data(), delimiter=delimiter, skipinitialspace=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            ctx.skip(f"line {current[0]}", "unreadable CSV row", str(exc))
            continue
        yield current[0], fields


def _sort_types(frame: pl.DataFrame, ctx: ParseContext) -> pl.DataFrame:
    """Keep network rows (with the type each must be); count the others by type."""
    declared_text = frame.get_column("type").str.strip_chars().str.to_lowercase()
    known = declared_text.is_null() | (declared_text == "") | declared_text.is_in(NETWORK_TYPES)
    other = frame.filter(~known).get_column("type").str.to_lowercase()
    for kind, count in other.value_counts(sort=True).iter_rows():
        ctx.ignore(f"{re.sub(r'[^a-z0-9:_-]', '', kind) or 'unnamed'} indicators", count)
    mapped = declared_text.replace_strict(NETWORK_TYPES, default=None, return_dtype=pl.String)
    return frame.with_columns(declared=mapped).filter(known)
