"""Zeek dns.log readers, tab-separated and JSON lines, to DNS transaction tables.

Both follow Zeek's field names (``ts``, ``uid``, ``id.orig_h`` ... ``answers``,
``TTLs``); extra columns (labels) are ignored and absent optional ones are null.

* TSV: the log's own header decides (``#separator``, ``#set_separator`` for the
  ``answers``/``TTLs`` vectors, ``#empty_field``, ``#unset_field``, ``#fields``), and
  a header may appear again mid-file (rotated logs concatenated). Chunks of lines
  are parsed by :func:`flowhawk.sources.flowtext.read_block` (pyarrow), bad rows
  reported with their line.
* JSON: :func:`flowhawk.sources.jsonlines.read_json_block`; ``ts`` as epoch seconds
  or ISO 8601 text; records whose ``_path`` is not ``dns`` are counted as ignored.

Both also parse a log a block of lines at a time, as it grows (the collector's
:mod:`flowhawk.collect.dnsfollow`): :class:`TsvState` keeps the header in force
between blocks (:meth:`TsvState.lines`; :meth:`TsvState.to_json` /
:meth:`TsvState.from_json` carry it over a restart) and :func:`parse_json` reads one
block of JSON lines.

Zeek does not log answer types: ``answer_types`` is inferred from the text (an IPv4
address is ``A``, an IPv6 address ``AAAA``, anything else null), which is what
passive DNS needs. Message sizes are unknown (null). A file whose header or first
record is not a dns.log raises :class:`~flowhawk.errors.InputError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import schema
from flowhawk.errors import InputError
from flowhawk.sources import flowtext, jsonlines, rawflows
from flowhawk.sources.base import read_head

#: dns.log fields read, with their parse type (TSV; vectors and flags as text).
FIELD_TYPES: dict[str, pa.DataType] = {
    "ts": pa.float64(),
    "uid": pa.string(),
    "id.orig_h": pa.string(),
    "id.orig_p": pa.int64(),
    "id.resp_h": pa.string(),
    "id.resp_p": pa.int64(),
    "proto": pa.string(),
    "trans_id": pa.int64(),
    "rtt": pa.float64(),
    "query": pa.string(),
    "qclass": pa.int64(),
    "qtype": pa.int64(),
    "qtype_name": pa.string(),
    "rcode": pa.int64(),
    "rcode_name": pa.string(),
    "AA": pa.string(),
    "TC": pa.string(),
    "RD": pa.string(),
    "RA": pa.string(),
    "answers": pa.string(),
    "TTLs": pa.string(),
}
#: Without these a log is not a dns.log.
REQUIRED_FIELDS = ("ts", "id.orig_h", "id.resp_h", "query")
_FLAGS = ("AA", "TC", "RD", "RA")
_COMMENT = re.compile(rb"^[ \t]*#[^\n]*\n", re.M)
_IPV4 = r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$"
_IPV6 = r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$"


def is_tsv(head: bytes) -> bool:
    """Whether ``head`` starts like a Zeek TSV log (a ``#`` header line)."""
    return head.lstrip(b" \t\r\n").startswith(b"#")


def read_tsv(path: Path, diag: Diagnostics) -> Iterator[pa.Table]:
    """Yield DNS tables of a Zeek dns.log in TSV."""
    name = str(path)
    state = TsvState(name, diag)
    with flowtext.open_input(path, name) as fh:
        for chunk in flowtext.iter_chunks(fh, name, diag):
            state.chunks += 1
            table = state.chunk(chunk)
            if table is not None and table.num_rows:
                yield table
    if state.layout is None:
        raise InputError(name, "is empty: no Zeek '#fields' header or records")


class TsvState:
    """The header in force while a TSV dns.log is read, and the records read so far."""

    def __init__(self, name: str, diag: Diagnostics):
        self.name, self.diag = name, diag
        self.separator, self.set_separator = "\t", ","
        self.unset, self.empty = "-", "(empty)"
        self.path: str | None = None
        self.layout: flowtext.CsvLayout | None = None
        self.records = 0
        self.chunks = 0

    def lines(self, data: bytes, first_line: int) -> pa.Table | None:
        """DNS rows of whole lines ``data`` (ending with a newline), the first being line
        ``first_line``; header lines among them change the state for what follows."""
        return self.chunk(flowtext.TextChunk(data, len(data), first_line, 0))

    def to_json(self) -> dict[str, object]:
        """The header in force and the record count, JSON-serializable."""
        return {
            "separator": self.separator,
            "set_separator": self.set_separator,
            "unset": self.unset,
            "empty": self.empty,
            "path": self.path,
            "fields": None if self.layout is None else list(self.layout.names),
            "records": self.records,
        }

    @classmethod
    def from_json(cls, name: str, diag: Diagnostics, doc: dict[str, Any]) -> TsvState:
        """The state :meth:`to_json` saved."""
        state = cls(name, diag)
        state.separator, state.set_separator = str(doc["separator"]), str(doc["set_separator"])
        state.unset, state.empty = str(doc["unset"]), str(doc["empty"])
        state.path = None if doc["path"] is None else str(doc["path"])
        state.records = int(doc["records"])
        fields = doc["fields"]
        if fields is not None:
            names = [str(f) for f in fields]
            types = {f: t for f, t in FIELD_TYPES.items() if f in names}
            state.layout = flowtext.CsvLayout(names, types, state.separator, [state.unset])
        return state

    def chunk(self, chunk: flowtext.TextChunk) -> pa.Table | None:
        raw, line, pos = chunk.raw, chunk.first_line, 0
        parts: list[pa.Table] = []
        for m in _COMMENT.finditer(raw, 0, chunk.end):
            if m.start() > pos:
                parts.append(self._rows(chunk, pos, m.start(), line))
                line += raw.count(b"\n", pos, m.start())
            self._header(m.group().decode("utf-8", "replace").strip(), line)
            line += 1
            pos = m.end()
        if pos < chunk.end:
            parts.append(self._rows(chunk, pos, chunk.end, line))
        parts = [p for p in parts if p.num_rows]
        return pa.concat_tables(parts) if parts else None

    def _header(self, text: str, line: int) -> None:
        if text.startswith("#separator"):
            value = text[len("#separator") :].strip()
            self.separator = value.encode("ascii", "replace").decode("unicode_escape") or "\t"
            return
        key, *values = text.split(self.separator)
        value = values[0] if values else ""
        if key == "#path":
            self.path = value
            if value != "dns" and self.layout is None:
                raise InputError(self.name, f"is a Zeek '{value}' log, not a dns log (line {line})")
        elif key == "#set_separator":
            self.set_separator = value or ","
        elif key == "#unset_field":
            self.unset = value
        elif key == "#empty_field":
            self.empty = value
        elif key == "#fields":
            missing = [f for f in REQUIRED_FIELDS if f not in values]
            if missing:
                message = f"#fields at line {line} lacks {', '.join(missing)}: not a Zeek dns log"
                if self.layout is None:
                    raise InputError(self.name, message)
                self.diag.skip(self.name, f"line {line}", "header without dns fields", message)
                self.path = "(not dns)"
                return
            types = {f: t for f, t in FIELD_TYPES.items() if f in values}
            self.layout = flowtext.CsvLayout(values, types, self.separator, [self.unset])

    def _rows(self, chunk: flowtext.TextChunk, start: int, stop: int, line: int) -> pa.Table:
        segment = chunk.raw[start:stop]
        if self.layout is None:
            if segment.strip():
                raise InputError(
                    self.name, f"line {line}: data before any '#fields' header; not a Zeek log"
                )
            return schema.empty()
        if self.path not in (None, "dns"):
            lines = sum(1 for x in segment.split(b"\n") if x.strip())
            self.diag.ignore(self.name, f"Zeek {self.path} log lines", lines)
            return schema.empty()
        block = flowtext.read_block(
            chunk.buffer(start, stop), line, self.records, self.layout, self.name, self.diag
        )
        self.records += block.n_records
        frame = pl.from_arrow(block.table)
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_columns(
            [_split(c, self.set_separator, self.empty) for c in ("answers", "TTLs") if c in frame]
        ).with_columns([(pl.col(f) == "T").alias(f) for f in _FLAGS if f in frame])
        return to_dns(frame, block.lines, self.name, self.diag)


def _split(column: str, separator: str, empty: str) -> pl.Expr:
    """A Zeek vector field to a list (the empty marker to an empty list)."""
    col = pl.col(column)
    parts = pl.when(col == empty).then(pl.lit("")).otherwise(col).str.split(separator)
    parts = parts.list.eval(pl.element().filter(pl.element() != "").str.replace_all(r"\\x2c", ","))
    return parts.alias(column)


def read_json(path: Path, diag: Diagnostics) -> Iterator[pa.Table]:
    """Yield DNS tables of a Zeek dns.log written as JSON lines."""
    name = str(path)
    head = read_head(path)
    if not head.strip():
        raise InputError(name, "is empty: no Zeek JSON records")
    first = jsonlines.first_object(head)
    if not is_dns_json(first):
        raise InputError(
            name, "is not a Zeek dns log in JSON: the first line lacks ts, id.orig_h or query"
        )
    assert first is not None
    ts_text = isinstance(first.get("ts"), str)
    records = 0
    with flowtext.open_input(path, name) as fh:
        for chunk in flowtext.iter_chunks(fh, name, diag):
            table, n = parse_json(chunk.data, chunk.first_line, records, name, diag, ts_text)
            records += n
            if table.num_rows:
                yield table


def is_dns_json(first: dict | None) -> bool:
    """Whether a JSON log's first record (:func:`jsonlines.first_object`) is a dns.log's."""
    return first is not None and all(f in first for f in ("ts", "id.orig_h", "query"))


def _json_schema(ts_text: bool) -> pa.Schema:
    types = dict(FIELD_TYPES)
    types.update({f: pa.bool_() for f in _FLAGS})
    types.update(answers=pa.list_(pa.string()), TTLs=pa.list_(pa.float64()), _path=pa.string())
    if ts_text:
        types["ts"] = pa.string()
    return pa.schema(list(types.items()))


def _other_log(obj: object) -> str | None:
    if isinstance(obj, dict) and obj.get("_path") not in (None, "dns"):
        return f"Zeek {obj.get('_path')} records"
    return None


def parse_json(
    data: bytes,
    first_line: int,
    first_record: int,
    name: str,
    diag: Diagnostics,
    ts_text: bool | None = None,
) -> tuple[pa.Table, int]:
    """DNS rows of whole JSON lines ``data`` and how many records (non-blank lines) it held.

    ``ts_text``: whether ``ts`` is ISO 8601 text rather than epoch seconds; None decides
    from the block's first record.
    """
    if ts_text is None:
        first = jsonlines.first_object(data)
        ts_text = first is not None and isinstance(first.get("ts"), str)
    block = jsonlines.read_json_block(
        data, first_line, first_record, _json_schema(ts_text), name, diag, _other_log
    )
    frame = pl.from_arrow(block.table)
    assert isinstance(frame, pl.DataFrame)
    other = frame.get_column("_path").is_not_null() & (frame.get_column("_path") != "dns")
    if other.any():
        for path_name, n in frame.filter(other).group_by("_path").len().iter_rows():
            diag.ignore(name, f"Zeek {path_name} records", n)
        frame, lines = frame.filter(~other), block.lines[~other.to_numpy()]
    else:
        lines = block.lines
    return to_dns(frame, lines, name, diag), block.n_records


def to_dns(frame: pl.DataFrame, lines: np.ndarray, input_name: str, diag: Diagnostics) -> pa.Table:
    """Zeek dns columns (named as Zeek names them) to a DNS_SCHEMA table."""
    if frame.height == 0:
        return schema.empty()
    ts = frame.get_column("ts")
    if ts.dtype == pl.String:
        micros, bad = rawflows.parse_times(ts.to_arrow(), [None])
        ts_us = pl.Series("ts", micros.combine_chunks(), dtype=pl.Int64)
        bad_ts = pl.Series(bad) | ts_us.is_null()
    else:
        ts_us = (ts * 1e6).round().cast(pl.Int64)
        bad_ts = ts_us.is_null()
    bad = bad_ts | frame.get_column("id.orig_h").is_null() | frame.get_column("id.resp_h").is_null()
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        details = ["no valid ts, id.orig_h or id.resp_h"] * min(len(rows), 5)
        flowtext.report(diag, input_name, "incomplete DNS record", lines[rows], details)
        frame, ts_us = frame.filter(~bad), ts_us.filter(~bad)

    def col(name: str, dtype: pl.DataType) -> pl.Expr:
        return pl.col(name).cast(dtype) if name in frame else pl.lit(None, dtype)

    answers = col("answers", pl.List(pl.String()))
    ip_type = (
        pl.when(pl.element().str.contains(_IPV4))
        .then(pl.lit("A"))
        .when(pl.element().str.contains(_IPV6))
        .then(pl.lit("AAAA"))
        .otherwise(None)
    )
    proto = col("proto", pl.String()).str.to_lowercase()
    query = col("query", pl.String()).str.to_lowercase().str.strip_suffix(".")
    out = frame.with_columns(_ts=ts_us).select(
        ts=pl.col("_ts").cast(pl.Datetime("us", "UTC")),
        src_ip=pl.col("id.orig_h"),
        src_port=col("id.orig_p", pl.Int32()),
        dst_ip=pl.col("id.resp_h"),
        dst_port=col("id.resp_p", pl.Int32()),
        proto=pl.when(proto == "udp").then(17).when(proto == "tcp").then(6).cast(pl.Int16),
        trans_id=col("trans_id", pl.Int32()),
        query=query,
        qclass=col("qclass", pl.Int32()),
        qtype=col("qtype", pl.Int32()),
        qtype_name=col("qtype_name", pl.String()),
        rcode=col("rcode", pl.Int16()),
        rcode_name=col("rcode_name", pl.String()),
        aa=col("AA", pl.Boolean()),
        tc=col("TC", pl.Boolean()),
        rd=col("RD", pl.Boolean()),
        ra=col("RA", pl.Boolean()),
        answers=answers,
        ttls=col("TTLs", pl.List(pl.Float64())),
        answer_types=answers.list.eval(ip_type),
        rtt=col("rtt", pl.Float64()),
        uid=col("uid", pl.String()),
        input=pl.lit(input_name),
    )
    return schema.conform(out.to_arrow())
