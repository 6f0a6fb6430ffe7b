"""Shared text input of the flow-log readers (Zeek, nfdump, Argus, Suricata, CSV).

* :func:`iter_chunks` cuts a (possibly compressed) byte stream into chunks of whole
  lines (about 16 MiB) and knows the line number each chunk starts at; a truncated
  compressed stream is reported and what was decompressed is kept;
* :func:`read_block` parses delimited text with :mod:`pyarrow.csv`. It first asks
  pyarrow for typed columns (fast, no string arrays for numbers); only when a value
  does not convert does it re-read that block as strings and cast with polars
  (``strict=False``), so a bad value costs one block re-read and is reported with
  its line instead of failing the file. Rows with the wrong number of fields are
  reported through pyarrow's ``invalid_row_handler``;
* :func:`report` counts skipped records in :class:`~flowhawk.diagnostics.Diagnostics`,
  the first few one by one with their location.

Locations are physical line numbers (1-based, counting every line of the
decompressed file, blank ones too); record numbers (the ``flow_id`` of formats
without their own id) are 0-based and count data records only. Turning parsed
columns into raw flows is :mod:`flowhawk.sources.rawflows`.
"""

from __future__ import annotations

import io
import lzma
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from flowhawk.diagnostics import KEEP_FIRST, Diagnostics
from flowhawk.errors import InputError
from flowhawk.sources.base import open_maybe_compressed

#: Bytes of text parsed at a time (about 100k flow lines).
CHUNK_BYTES = 16 * 1024 * 1024
# Small reads keep what is lost small when a compressed stream turns out truncated.
_READ_PIECE = 1 << 20
# Bad values quoted in a message are cut to this many characters.
_SHOW_CHARS = 80

_PL_TYPES: dict[pa.DataType, pl.DataType] = {
    pa.float64(): pl.Float64(),
    pa.int64(): pl.Int64(),
    pa.int32(): pl.Int32(),
    pa.int16(): pl.Int16(),
}


def shorten(text: object) -> str:
    """``text`` as a quoted string cut to a readable length for messages."""
    s = str(text)
    return repr(s if len(s) <= _SHOW_CHARS else s[:_SHOW_CHARS] + "...")


# ---------------------------------------------------------------- chunked input


@dataclass
class TextChunk:
    """Whole lines of text and where they start: ``raw[:end]``, ending with a newline."""

    raw: bytes
    end: int  # raw may hold the start of the next line past end (plain files)
    first_line: int  # 1-based line number of the first line
    offset: int  # byte offset in the decompressed stream

    @property
    def data(self) -> bytes:
        """The lines as bytes (a copy when ``raw`` runs past ``end``)."""
        return self.raw if self.end == len(self.raw) else self.raw[: self.end]

    def buffer(self, start: int = 0, stop: int | None = None) -> pa.Buffer:
        """Lines ``raw[start:stop]`` (stop defaults to ``end``) without copying."""
        stop = self.end if stop is None else stop
        return pa.py_buffer(self.raw).slice(start, stop - start)


def open_input(path: Path, input_name: str) -> IO[bytes]:
    """Open ``path`` (decompressing), turning OS errors into :class:`InputError`."""
    try:
        return open_maybe_compressed(path)
    except OSError as exc:
        raise InputError(input_name, f"cannot open: {exc.strerror or exc}") from exc


def iter_chunks(
    fh: IO[bytes],
    input_name: str,
    diag: Diagnostics,
    chunk_bytes: int = CHUNK_BYTES,
    count_lines: bool = True,
) -> Iterator[TextChunk]:
    """Cut ``fh`` into chunks of whole lines; a truncated compressed stream is reported.

    The last line is returned even without its newline (one is added), so a file cut
    in the middle of a record still yields that partial record for the parser to
    report. With ``count_lines=False`` ``first_line`` is 0: the caller counts lines
    itself (the Zeek reader learns them from the parser, saving a pass over the text).
    """
    # Plain files are read a chunk at a time and the file position is moved back to
    # the start of the chunk's last partial line, so no byte is copied to complete
    # it. Compressed streams and pipes are read with read1(), one decompression step
    # at a time, so a truncated stream loses only its last step (read(n) would drop
    # everything decompressed in that call), then completed with readline().
    seekable = isinstance(fh, io.BufferedReader) and fh.seekable()
    plain = isinstance(fh, io.BufferedReader)
    read = fh.read if plain else getattr(fh, "read1", fh.read)
    piece_size = chunk_bytes if plain else _READ_PIECE
    line, offset = 1, 0
    eof = False
    while not eof:
        pieces: list[bytes] = []
        size = 0
        while size < chunk_bytes and not eof:
            piece = _guarded(read, piece_size, offset + size, plain, (input_name, diag))
            eof = not piece
            pieces.append(piece)
            size += len(piece)
        end = None
        if not eof and not pieces[-1].endswith(b"\n"):
            last = pieces[-1].rfind(b"\n")
            if seekable and len(pieces) == 1 and last >= 0:
                end = last + 1
                fh.seek(end - len(pieces[0]), io.SEEK_CUR)
                size = end
            else:
                rest = _guarded(fh.readline, -1, offset + size, plain, (input_name, diag))
                eof = not rest
                pieces.append(rest)
                size += len(rest)
        pieces = [p for p in pieces if p]
        if not pieces:
            break
        block = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if end is None and not block.endswith(b"\n"):
            block += b"\n"  # the file's last line lacked its newline
        yield TextChunk(
            block, len(block) if end is None else end, line if count_lines else 0, offset
        )
        if count_lines:
            line += block.count(b"\n", 0, end)
        offset += size


def _guarded(read, size: int, offset: int, plain: bool, where: tuple[str, Diagnostics]) -> bytes:
    """``read(size)``; a damaged stream is reported and ends the input."""
    try:
        return read(size)  # type: ignore[no-any-return]
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        input_name, diag = where
        if plain:
            diag.skip(input_name, f"offset {offset}", "read error", f"{exc}; rest lost")
        else:
            location = f"offset {offset} of the decompressed data"
            diag.skip(input_name, location, "truncated compressed data", f"{exc}; rest lost")
        return b""


# ---------------------------------------------------------------- CSV blocks


@dataclass
class CsvLayout:
    """How to parse one delimited text layout."""

    names: list[str]  # every column of the file, in order
    types: dict[str, pa.DataType]  # the columns to keep and their types
    delimiter: str = ","
    null_values: Sequence[str] = ("",)
    quoted: bool = False  # fields may be "quoted" (generic CSV); flow logs never quote


@dataclass
class Block:
    """Parsed rows of a chunk, with the line and record number of each row."""

    table: pa.Table
    lines: np.ndarray  # physical line of each row
    records: np.ndarray  # 0-based data record number of each row
    n_lines: int  # lines the chunk held (blank ones included)
    n_records: int  # data records in the chunk (bad ones included, blank lines not)


@dataclass
class _Rejects:
    rows: list[tuple[int | None, str, int, int]] = field(default_factory=list)

    def __call__(self, row: pacsv.InvalidRow) -> str:
        self.rows.append((row.number, row.text, row.actual_columns, row.expected_columns))
        return "skip"


def _parse(
    data: bytes | pa.Buffer, layout: CsvLayout, types: dict[str, pa.DataType], rejects: _Rejects
) -> pa.Table:
    return pacsv.read_csv(
        data if isinstance(data, pa.Buffer) else pa.py_buffer(data),
        read_options=pacsv.ReadOptions(
            column_names=layout.names, use_threads=False, block_size=1 << 21
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=layout.delimiter,
            quote_char='"' if layout.quoted else False,
            double_quote=layout.quoted,
            escape_char=False,
            invalid_row_handler=rejects,
            # Empty lines become all-null rows (dropped below): that keeps pyarrow's
            # row numbers physical, so no pass over the text is needed to count lines.
            ignore_empty_lines=False,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            include_columns=list(types),
            null_values=[*layout.null_values, ""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def read_block(
    data: bytes | pa.Buffer,
    first_line: int,
    first_record: int,
    layout: CsvLayout,
    input_name: str,
    diag: Diagnostics,
    unit: str = "line",
) -> Block:
    """Parse ``data`` (whole lines) with ``layout``; report and drop unusable rows.

    ``first_line`` numbers the first line in messages, which say "``unit`` N".
    """
    if len(data) == 0:
        empty = pa.schema([(n, t) for n, t in layout.types.items()]).empty_table()
        nothing = np.zeros(0, dtype=np.int64)
        return Block(empty, nothing, nothing, 0, 0)
    rejects = _Rejects()
    checked = {n: t for n, t in layout.types.items() if t in _PL_TYPES}
    bad_rows = np.zeros(0, dtype=np.int64)
    bad_details: list[str] = []
    try:
        table = _parse(data, layout, layout.types, rejects)
    except pa.ArrowInvalid:
        # A value did not convert: read this block again as text and find the rows.
        rejects.rows.clear()
        as_text = {n: (pa.string() if n in checked else t) for n, t in layout.types.items()}
        table, bad_rows, bad_details = _cast_checked(
            _parse(data, layout, as_text, rejects), checked
        )
    n_lines = table.num_rows + bad_rows.size + len(rejects.rows)
    line_pos = np.arange(n_lines, dtype=np.int64)  # 0-based line of each parsed row
    is_record = None
    if rejects.rows:
        line_pos = np.delete(line_pos, [number - 1 for number, *_ in _numbered(rejects)])
        blanks = [number - 1 for number, text, *_ in rejects.rows if not text.strip()]
        if blanks:
            is_record = np.ones(n_lines, dtype=bool)
            is_record[blanks] = False
    _report_rejects(rejects, first_line, input_name, diag, unit)
    if bad_rows.size:
        lines = line_pos[bad_rows] + first_line
        report(diag, input_name, "bad value", lines, bad_details, unit=unit)
        line_pos = np.delete(line_pos, bad_rows)
    blank_rows = _blank_rows(table)
    if blank_rows is not None:
        if is_record is None:
            is_record = np.ones(n_lines, dtype=bool)
        is_record[line_pos[blank_rows]] = False
        keep = ~blank_rows
        table, line_pos = table.filter(pa.array(keep)), line_pos[keep]
    if is_record is None:
        records, n_records = line_pos + first_record, n_lines
    else:
        numbers = np.cumsum(is_record) - 1 + first_record
        records, n_records = numbers[line_pos], int(is_record.sum())
    return Block(table, line_pos + first_line, records, n_lines, n_records)


def _numbered(rejects: _Rejects) -> list[tuple[int, str, int, int]]:
    out = []
    for number, text, actual, expected in rejects.rows:
        if number is None:  # only with threads, which read_block never uses
            raise RuntimeError("pyarrow did not report the row number of an invalid row")
        out.append((number, text, actual, expected))
    return out


def _blank_rows(table: pa.Table) -> np.ndarray | None:
    """Mask of rows that came from empty lines (every column null), or None if none."""
    if table.num_rows == 0 or table.num_columns == 0 or table.column(0).null_count == 0:
        return None
    mask = pc.is_null(table.column(0))
    for col in table.columns[1:]:
        mask = pc.and_(mask, pc.is_null(col))
    blank = mask.to_numpy(zero_copy_only=False)
    return blank if blank.any() else None


def _report_rejects(
    rejects: _Rejects, first_line: int, input_name: str, diag: Diagnostics, unit: str
) -> None:
    """Report rows with the wrong field count (lines of blanks are no records)."""
    lines: list[int] = []
    details: list[str] = []
    for number, text, actual, expected in _numbered(rejects):
        if text.strip():
            lines.append(number - 1 + first_line)
            details.append(f"expected {expected} fields, found {actual}: {shorten(text)}")
    report(diag, input_name, "wrong field count", lines, details, unit=unit)


def _cast_checked(
    table: pa.Table, checked: dict[str, pa.DataType]
) -> tuple[pa.Table, np.ndarray, list[str]]:
    """Cast text columns to their types; rows with values that do not convert are bad."""
    frame = pl.from_arrow(table.select(list(checked)))
    assert isinstance(frame, pl.DataFrame)
    casts = [pl.col(n).cast(_PL_TYPES[t], strict=False).alias(n) for n, t in checked.items()]
    flags = [
        (pl.col(n).is_not_null() & pl.col(n).cast(_PL_TYPES[t], strict=False).is_null()).alias(n)
        for n, t in checked.items()
    ]
    cast = frame.select(casts)
    flagged = frame.select(flags)
    bad = flagged.select(pl.any_horizontal(pl.all())).to_series()
    bad_rows = np.flatnonzero(bad.to_numpy())
    details = []
    for row in bad_rows[:KEEP_FIRST]:
        cols = [n for n in checked if flagged[n][int(row)]]
        details.append(
            ", ".join(f"{n}={shorten(frame[n][int(row)])} is not a number" for n in cols)
        )
    keep = pa.array(~bad.to_numpy())
    columns = {}
    for name in table.column_names:
        if name in checked:
            columns[name] = cast[name].to_arrow().cast(checked[name])
        else:
            columns[name] = table.column(name)
    return pa.table(columns).filter(keep), bad_rows, details


# ---------------------------------------------------------------- reporting


def report(
    diag: Diagnostics,
    input_name: str,
    reason: str,
    lines: Sequence[int] | np.ndarray,
    details: Sequence[str],
    unit: str = "line",
) -> None:
    """Count ``len(lines)`` skipped records; the first few are reported one by one."""
    n = len(lines)
    if n == 0:
        return
    for i in range(min(n, KEEP_FIRST)):
        diag.skip(
            input_name, f"{unit} {int(lines[i])}", reason, details[i] if i < len(details) else ""
        )
    if n > KEEP_FIRST:
        rest = n - KEEP_FIRST
        where = f"{unit} {int(lines[KEEP_FIRST])}" + (f" and {rest - 1} more" if rest > 1 else "")
        diag.skip(input_name, where, reason, "", count=rest)


def decompress_to(path: Path, directory: Path, input_name: str, diag: Diagnostics) -> Path:
    """Write the decompressed content of ``path`` into ``directory`` (for tools and
    formats that need a seekable file); a damaged stream is reported and what was
    recovered is kept."""
    target = directory / "decompressed"
    with open_input(path, input_name) as src, open(target, "wb") as dst:
        read = getattr(src, "read1", src.read)  # one step at a time: keep all that decodes
        offset = 0
        while True:
            try:
                piece = read(_READ_PIECE)
            except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
                where = f"offset {offset} of the decompressed data"
                diag.skip(input_name, where, "truncated compressed data", f"{exc}; rest lost")
                break
            if not piece:
                break
            dst.write(piece)
            offset += len(piece)
    return target
