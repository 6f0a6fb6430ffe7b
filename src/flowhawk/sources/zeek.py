"""Zeek conn.log readers: tab-separated (``zeek``) here, JSON lines (``zeek-json``) in
:mod:`flowhawk.sources.zeek_json`.

The TSV reader follows the log's own header: ``#separator``, ``#unset_field``
(``-`` by default, read as missing), ``#path`` and ``#fields``. Extra columns
(the ``label``/``detailedlabel`` of Stratosphere's ``*.labeled`` files, or any
policy script's) are ignored; columns are found by name. A header may appear again
mid-file (rotated logs concatenated); rows then follow the new ``#fields``.
``#close`` and other comment lines are skipped. Data lines under a ``#path`` other
than ``conn`` (logs of other kinds concatenated in) are counted as ignored.

Speed: pyarrow parses only the needed columns, straight to numbers (see
:func:`flowhawk.sources.flowtext.read_block`); nothing is done per row in Python.
How records become flows is in :mod:`flowhawk.sources.zeek_conn`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.sources import flowtext, rawflows, zeek_conn
from flowhawk.sources.base import ReadContext
from flowhawk.sources.zeek_json import ZeekJsonSource

__all__ = ["ZeekJsonSource", "ZeekTsvSource"]

_PATH_RE = re.compile(rb"^[ \t]*#path[ \t]+(\S+)", re.M)
_FIELDS_RE = re.compile(rb"^[ \t]*#fields[ \t](.*)$", re.M)


class ZeekTsvSource:
    """Zeek conn.log in Zeek's tab-separated format."""

    name: ClassVar[str] = "zeek"
    description: ClassVar[str] = "Zeek conn.log, tab-separated with #fields header (*.labeled too)"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        paths = _PATH_RE.findall(head)
        if paths:
            return 95 if paths[0] == b"conn" else 0
        fields = _FIELDS_RE.search(head)
        if fields is None:
            return 0
        names = fields.group(1).decode("utf-8", "replace").split()
        required = all(f in names for f in zeek_conn.REQUIRED_FIELDS)
        return 85 if required and any(f in names for f in zeek_conn.CONN_ONLY_FIELDS) else 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        reader = _TsvReader(input_name, ctx.diagnostics)
        with flowtext.open_input(path, input_name) as fh:
            chunks = flowtext.iter_chunks(fh, input_name, ctx.diagnostics, count_lines=False)
            yield from rawflows.rebatch(reader.tables(chunks), ctx.batch_rows)
        if reader.chunks_seen == 0:
            raise InputError(input_name, "is empty: no Zeek header or records")


class _TsvReader:
    """State of one TSV log: the header in force and the records seen so far."""

    def __init__(self, input_name: str, diag: Diagnostics):
        self.input = input_name
        self.diag = diag
        self.separator = "\t"
        self.unset = "-"
        self.path: str | None = None
        self.layout: flowtext.CsvLayout | None = None
        self.records = 0
        self.chunks_seen = 0

    def tables(self, chunks: Iterator[flowtext.TextChunk]) -> Iterator[pa.Table]:
        line = 1  # counted here from what the parser consumed: no extra pass over the text
        for chunk in chunks:
            raw, end = chunk.raw, chunk.end
            self.chunks_seen += 1
            pos = 0
            while pos < end:
                comment = self._next_comment(raw, pos, end)
                if comment > pos:
                    table, n_lines = self._rows(chunk, pos, comment, line)
                    if table is not None:
                        yield table
                    line += n_lines
                if comment >= end:
                    break
                stop = raw.index(b"\n", comment) + 1
                self._header_line(raw[comment:stop], line)
                line += 1
                pos = stop

    def _next_comment(self, data: bytes, pos: int, end: int) -> int:
        """Start of the next line beginning with ``#`` (``end`` if none)."""
        if self.layout is None:
            # Before the first header tolerate indentation (seen in the wild: "\t#separator").
            stripped = data[pos : min(pos + 64, end)].lstrip(b" \t")
            if stripped.startswith(b"#"):
                return pos
        # '#' is rare in conn data: a one-byte search is far faster than one for "\n#".
        found = data.find(b"#", pos, end)
        while found > 0 and data[found - 1] != 10:
            found = data.find(b"#", found + 1, end)
        return end if found < 0 else found

    def _header_line(self, raw: bytes, line: int) -> None:
        text = raw.decode("utf-8", "replace").strip(" \t\r\n")
        if text.startswith("#separator"):
            value = text[len("#separator") :].strip()
            self.separator = value.encode("ascii", "replace").decode("unicode_escape") or "\t"
            return
        key, *values = text.split(self.separator)
        if key == "#path":
            self.path = values[0] if values else ""
            if self.path != "conn" and self.layout is None:
                raise InputError(
                    self.input, f"is a Zeek '{self.path}' log, not a conn log (line {line})"
                )
        elif key == "#unset_field" and values:
            self.unset = values[0]
        elif key == "#fields":
            self._set_fields(values, line)

    def _set_fields(self, fields: list[str], line: int) -> None:
        missing = [f for f in zeek_conn.REQUIRED_FIELDS if f not in fields]
        if missing:
            message = f"#fields at line {line} lacks {', '.join(missing)}: not a Zeek conn log"
            if self.layout is None:
                raise InputError(self.input, message)
            self.diag.skip(self.input, f"line {line}", "header without conn fields", message)
            self.path = "(not conn)"
            return
        self.layout = flowtext.CsvLayout(
            names=fields,
            types=zeek_conn.wanted_types(fields),
            delimiter=self.separator,
            null_values=[self.unset],
        )

    def _rows(
        self, chunk: flowtext.TextChunk, start: int, stop: int, line: int
    ) -> tuple[pa.Table | None, int]:
        """Flows of the data lines ``chunk.raw[start:stop]`` and how many lines they held."""
        if self.layout is None or self.path not in (None, "conn"):
            segment = chunk.raw[start:stop]
            if self.layout is None:
                if not segment.strip():
                    return None, segment.count(b"\n")
                raise InputError(
                    self.input,
                    f"line {line}: data before any '#fields' header; not a Zeek TSV log"
                    " (or its header is missing)",
                )
            lines = sum(1 for x in segment.split(b"\n") if x.strip())
            self.diag.ignore(self.input, f"Zeek {self.path} log lines", lines)
            return None, segment.count(b"\n")
        data = chunk.buffer(start, stop)
        block = flowtext.read_block(data, line, self.records, self.layout, self.input, self.diag)
        self.records += block.n_records
        table = zeek_conn.to_raw(block.table, block.lines, block.records, self.input, self.diag)
        return table, block.n_lines
