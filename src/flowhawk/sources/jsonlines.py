"""Reading JSON-lines logs (Zeek JSON, Suricata eve.json) in columns, with located errors.

A chunk of lines is parsed by :func:`pyarrow.json.read_json` against an explicit
schema (only the fields a reader uses; others are ignored). pyarrow rejects the
whole chunk when one line is not JSON or has a value of the wrong type; the chunk
is then split in halves until the offending lines are isolated, so the good lines
are still read in bulk and every bad line is reported with its line number.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from flowhawk.diagnostics import Diagnostics
from flowhawk.sources import flowtext

#: Decides what a line that parses as JSON but does not fit the schema is:
#: a reason to *ignore* it (not an error, e.g. an event type a reader does not
#: use), or None to report it as a bad record.
IgnoreRule = Callable[[object], "str | None"]


@dataclass
class JsonBlock:
    table: pa.Table
    lines: np.ndarray  # physical line of each row
    records: np.ndarray  # 0-based record (non-blank line) number of each row
    n_records: int  # non-blank lines in the chunk, bad ones included


def _read(data: bytes, schema: pa.Schema) -> pa.Table:
    return pajson.read_json(
        pa.py_buffer(data),
        read_options=pajson.ReadOptions(use_threads=False, block_size=1 << 24),
        parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"
        ),
    )


def _nonblank_lines(data: bytes, first_line: int) -> np.ndarray:
    """Physical line numbers of the non-empty lines of ``data``."""
    if b"\n\n" not in data and not data.startswith(b"\n"):
        return np.arange(first_line, first_line + data.count(b"\n"), dtype=np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    return (np.flatnonzero(starts != ends) + first_line).astype(np.int64)


def read_json_block(
    data: bytes,
    first_line: int,
    first_record: int,
    schema: pa.Schema,
    input_name: str,
    diag: Diagnostics,
    ignore: IgnoreRule | None = None,
) -> JsonBlock:
    """Parse whole JSON lines; report bad lines and return the rows of the good ones."""
    try:
        table = _read(data, schema)
    except pa.ArrowInvalid:
        table = None
    if table is not None:
        phys = _nonblank_lines(data, first_line)
        if table.num_rows == phys.size:
            records = np.arange(first_record, first_record + phys.size, dtype=np.int64)
            return JsonBlock(table, phys, records, phys.size)
    # Slow path: a bad line, or whitespace-only lines that upset the line count.
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    numbered = [(first_line + i, text) for i, text in enumerate(lines) if text.strip()]
    good: list[pa.Table] = []
    good_lines: list[int] = []
    _bisect(numbered, schema, good, good_lines, input_name, diag, ignore)
    table = pa.concat_tables(good) if good else schema.empty_table()
    all_lines = np.array([n for n, _ in numbered], dtype=np.int64)
    kept = np.array(good_lines, dtype=np.int64)
    records = np.searchsorted(all_lines, kept) + first_record
    return JsonBlock(table, kept, records, len(numbered))


def _bisect(
    numbered: list[tuple[int, bytes]],
    schema: pa.Schema,
    good: list[pa.Table],
    good_lines: list[int],
    input_name: str,
    diag: Diagnostics,
    ignore: IgnoreRule | None,
) -> None:
    if not numbered:
        return
    try:
        table = _read(b"\n".join(text for _, text in numbered) + b"\n", schema)
    except pa.ArrowInvalid as exc:
        if len(numbered) == 1:
            _bad_line(numbered[0], str(exc), input_name, diag, ignore)
            return
        half = len(numbered) // 2
        _bisect(numbered[:half], schema, good, good_lines, input_name, diag, ignore)
        _bisect(numbered[half:], schema, good, good_lines, input_name, diag, ignore)
        return
    good.append(table)
    good_lines.extend(n for n, _ in numbered)


def _bad_line(
    numbered: tuple[int, bytes],
    arrow_message: str,
    input_name: str,
    diag: Diagnostics,
    ignore: IgnoreRule | None,
) -> None:
    number, text = numbered
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        detail = f"{exc}: {flowtext.shorten(text.decode('utf-8', 'replace'))}"
        diag.skip(input_name, f"line {number}", "bad JSON", detail)
        return
    if not isinstance(value, dict):
        detail = f"not a JSON object: {flowtext.shorten(text.decode('utf-8', 'replace'))}"
        diag.skip(input_name, f"line {number}", "bad JSON", detail)
        return
    reason = ignore(value) if ignore is not None else None
    if reason is not None:
        diag.ignore(input_name, reason)
        return
    message = arrow_message.split("\n")[0].replace("JSON parse error: ", "")
    diag.skip(input_name, f"line {number}", "bad value", f"a field has the wrong type ({message})")


def first_object(head: bytes, max_lines: int = 20) -> dict | None:
    """The first JSON object among the complete lines of ``head`` (None if none parses)."""
    lines = head.split(b"\n")
    if not head.endswith(b"\n"):
        lines = lines[:-1]  # the last line of a sniffed head may be cut
    for text in lines[:max_lines]:
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return None
        return value if isinstance(value, dict) else None
    return None
