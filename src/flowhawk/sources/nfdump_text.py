"""nfdump's human-readable text output (``nfdump-text``): the default/``-o line``,
``-o long`` and ``-o extended`` formats as saved by users, e.g. the CTU samples.

The header line names the columns (``Date first seen  Duration Proto  Src IP
Addr:Port ...``); a regular expression for the data lines is built from it, so
columns may be separated by any run of blanks or tabs, and extra columns such as
the ``Label`` of netflowlabeler's ``*.labeled`` files are accepted. Lines are
matched with one polars regex per chunk (no Python loop per line).

Details of the format handled here:

* durations are seconds (``0.028``, nfdump 1.6) or ``[Nd ]HH:MM:SS.mmm`` (1.7);
* counters may carry a unit (``1.2 M``): nfdump scales by 1000, so the value is
  rounded back (precision is what nfdump printed);
* ``addr:port`` for IPv4, ``addr.port`` for IPv6, and ``type.code`` as the port
  of ICMP; IPv6 addresses shortened by nfdump (``2001:62..e0:fed5``, printed unless
  ``-o line6``/``long6``/``extended6`` is used) cannot be recovered and are reported;
* the summary nfdump prints at the end (``Summary: ...``, ``Time window: ...``) and
  repeated header lines are not records.

Records are unidirectional; see :mod:`flowhawk.sources.nfdump` for the shared
decisions (ICMP ports, flow ids, time zones).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk import schema
from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.sources import flowtext, rawflows
from flowhawk.sources.base import ReadContext

_DATE = r"\d{4}-\d{2}-\d{2}[ \t]+\d{1,2}:\d{2}:\d{2}(?:\.\d+)?"
_DURATION = r"(?:\d+d[ \t]+)?\d+:\d{2}:\d{2}(?:\.\d+)?|\d+(?:\.\d+)?"
_NUMBER = r"\d+(?:\.\d+)?(?:[ \t]+[KMGT]\b)?"
_WORD = r"\S+"

#: Header column -> (group name or None to skip, pattern of its values).
_COLUMNS: dict[str, tuple[str | None, str]] = {
    "Date first seen": ("start", _DATE),
    "Date flow start": ("start", _DATE),
    "Date last seen": ("end", _DATE),
    "Duration": ("dur", _DURATION),
    "Proto": ("proto", _WORD),
    "Src IP Addr:Port": ("src", _WORD),
    "Dst IP Addr:Port": ("dst", _WORD),
    "Src IP Addr": ("sa", _WORD),
    "Dst IP Addr": ("da", _WORD),
    "Src Pt": ("sp", _WORD),
    "Dst Pt": ("dp", _WORD),
    "Flags": ("flags", _WORD),
    "Packets": ("pkts", _NUMBER),
    "In Pkt": ("pkts", _NUMBER),
    "Out Pkt": ("opkts", _NUMBER),
    "Bytes": ("bytes", _NUMBER),
    "In Byte": ("bytes", _NUMBER),
    "Out Byte": ("obytes", _NUMBER),
    "Flows": ("flows", _NUMBER),
    "Router IP": ("ra", _WORD),
    "Label": ("label", r".*?"),
}
_SKIPPED = {"Tos": r"\d+", "STos": r"\d+", "DTos": r"\d+", "pps": _NUMBER, "bps": _NUMBER}
_SKIPPED |= {"Bpp": _NUMBER, "Src AS": _WORD, "Dst AS": _WORD, "Input": _WORD}
_SKIPPED |= {"Output": _WORD, "SVlan": _WORD, "DVlan": _WORD, "Exp ID": _WORD}
_NAMES = sorted([*_COLUMNS, *_SKIPPED], key=len, reverse=True)  # longest first
_HEADER_RE = re.compile(rb"^[ \t]*Date (first seen|flow start)[ \t]", re.M)
# Lines nfdump prints around the records.
_FOOTERS = ("Summary", "Time window", "Total flows", "Sys:", "No matching flows", "Aggregated")
_UNITS = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_ICMP = (1, 58)


def dst_port_expr(port: pl.Expr, proto: pl.Expr) -> pl.Expr:
    """A port as nfdump prints it (``53``, ICMP ``8.0`` or ``2048``) as a number."""
    parts = port.cast(pl.String).str.strip_chars().str.split_exact(".", 1)
    first = parts.struct.field("field_0").cast(pl.Int64, strict=False)
    second = parts.struct.field("field_1").cast(pl.Int64, strict=False)
    return (
        pl.when(second.is_not_null() & proto.is_in(_ICMP))
        .then(first * 256 + second)
        .when(second.is_null())
        .then(first)
    )


def _header_regex(header: str, input_name: str) -> str:
    """The data-line regex for a header line; unknown column names are an error."""
    text = " ".join(header.split())
    parts: list[str] = []
    while text:
        name = next((n for n in _NAMES if text == n or text.startswith(n + " ")), None)
        if name is None:
            raise InputError(
                input_name,
                f"nfdump text header column {flowtext.shorten(text.split()[0])} is not known;"
                " print the records with nfdump -o csv instead",
            )
        text = text[len(name) :].lstrip()
        group, pattern = _COLUMNS.get(name, (None, _SKIPPED.get(name, _WORD)))
        parts.append(f"(?P<{group}>{pattern})" if group else f"(?:{pattern})")
        if group in ("src", "sp"):
            parts[-1] += r"(?:[ \t]+<?->)?"  # the arrow between source and destination
    if "(?P<start>" not in "".join(parts) or "(?P<proto>" not in "".join(parts):
        raise InputError(input_name, "nfdump text header lacks the date or protocol column")
    return r"^[ \t]*" + r"[ \t]+".join(parts) + r"[ \t]*$"


def _number(col: pl.Expr) -> pl.Expr:
    """Counters with nfdump's unit suffix (``1.2 M``) as integers."""
    text = col.str.strip_chars()
    value = text.str.extract(r"^([\d.]+)").cast(pl.Float64, strict=False)
    unit = text.str.extract(r"([KMGT])$")
    scale = unit.replace_strict(_UNITS, default=1.0, return_dtype=pl.Float64)
    return (value * scale).round(0).cast(pl.Int64)


def _duration_us(col: pl.Expr) -> pl.Expr:
    text = col.str.strip_chars()
    clock = text.str.extract_groups(r"^(?:(?P<d>\d+)d\s+)?(?P<h>\d+):(?P<m>\d{2}):(?P<s>[\d.]+)$")
    seconds = (
        clock.struct.field("d").cast(pl.Float64).fill_null(0) * 86400
        + clock.struct.field("h").cast(pl.Float64) * 3600
        + clock.struct.field("m").cast(pl.Float64) * 60
        + clock.struct.field("s").cast(pl.Float64)
    )
    seconds = pl.coalesce(seconds, text.cast(pl.Float64, strict=False))
    return (seconds * 1e6).round(0).cast(pl.Int64)


def _address(token: pl.Expr, is_icmp: pl.Expr, name: str) -> list[pl.Expr]:
    """``addr:port`` (IPv4) / ``addr.port`` (IPv6) split into address and port text.

    A dotted quad followed by more ``:x`` parts (``10.0.0.150:0:0``, written by
    netflowlabeler for IGMP) keeps its first port.
    """
    v4 = token.str.contains(r"^\d{1,3}(?:\.\d{1,3}){3}(?::|$)")
    v6_port = (
        pl.when(is_icmp)
        .then(token.str.extract(r"^(.*)\.(\d+\.\d+)$", 2))
        .otherwise(token.str.extract(r"^(.*)\.(\d+)$", 2))
    )
    v6_addr = (
        pl.when(is_icmp)
        .then(token.str.extract(r"^(.*)\.\d+\.\d+$", 1))
        .otherwise(token.str.extract(r"^(.*)\.\d+$", 1))
    )
    addr = pl.when(v4).then(token.str.extract(r"^([\d.]+)", 1)).otherwise(v6_addr)
    port = pl.when(v4).then(token.str.extract(r"^[\d.]+:([^:]*)", 1)).otherwise(v6_port)
    return [addr.alias(f"{name}_ip"), port.alias(f"{name}_port_text")]


class NfdumpTextSource:
    """nfdump's text output (line, long, extended formats)."""

    name: ClassVar[str] = "nfdump-text"
    description: ClassVar[str] = "nfdump text output (-o line/long/extended), e.g. nfcapd.sample"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        match = _HEADER_RE.search(head[:4096])
        return 90 if match and b"Proto" in head[:4096] and b"Addr" in head[:4096] else 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        yield from rawflows.rebatch(self._tables(path, input_name, ctx), ctx.batch_rows)

    def _tables(self, path: Path, input_name: str, ctx: ReadContext) -> Iterator[pa.Table]:
        diag = ctx.diagnostics
        layout = flowtext.CsvLayout(["line"], {"line": pa.string()}, "\x01", [])
        regex: str | None = None
        records = 0
        with flowtext.open_input(path, input_name) as fh:
            for chunk in flowtext.iter_chunks(fh, input_name, diag):
                data, first_line = chunk.data, chunk.first_line
                if regex is None:
                    header, _, data = data.partition(b"\n")
                    text = header.decode("utf-8", "replace")
                    if not _HEADER_RE.match(header):
                        raise InputError(
                            input_name,
                            f"line 1 is not an nfdump text header: {flowtext.shorten(text)}",
                        )
                    regex = _header_regex(text, input_name)
                    first_line += 1
                block = flowtext.read_block(data, first_line, 0, layout, input_name, diag)
                table, used = _convert(block, regex, records, input_name, diag, ctx)
                records += used
                yield table
        if regex is None:
            raise InputError(input_name, "is empty: no nfdump text header")


def _convert(
    block: flowtext.Block,
    regex: str,
    first_record: int,
    input_name: str,
    diag: Diagnostics,
    ctx: ReadContext,
) -> tuple[pa.Table, int]:
    """Flows of one chunk of lines, and how many data records it held."""
    lines = pl.from_arrow(block.table["line"])
    assert isinstance(lines, pl.Series)
    parts = (
        pl.DataFrame({"line": lines})
        .select(pl.col("line"), pl.col("line").str.extract_groups(regex).alias("g"))
        .unnest("g")
    )
    stripped = parts["line"].str.strip_chars()
    matched = parts["start"].is_not_null().to_numpy()
    footer = (~matched) & (
        stripped.str.starts_with("Date ").to_numpy()
        | np.logical_or.reduce([stripped.str.starts_with(f).to_numpy() for f in _FOOTERS])
    )
    is_record = ~footer
    numbers = np.cumsum(is_record) - 1 + first_record
    bad = (~matched) & is_record
    if bad.any():
        rows = np.flatnonzero(bad)
        details = [
            f"not a record of this layout: {flowtext.shorten(lines[int(r)])}" for r in rows[:5]
        ]
        flowtext.report(diag, input_name, "unparseable line", block.lines[rows], details)
    parts = parts.filter(pl.Series(matched))
    line_no, records = block.lines[matched], numbers[matched]
    if parts.height == 0:
        return schema.empty_raw(), int(is_record.sum())

    proto = rawflows.proto_numbers(parts["proto"].to_arrow())
    frame = parts.with_columns(proto=pl.from_arrow(proto.combine_chunks()))
    is_icmp = pl.col("proto").is_in(_ICMP)
    exprs = [pl.col("start")]
    if "src" in frame.columns:
        exprs += _address(pl.col("src"), is_icmp, "src") + _address(pl.col("dst"), is_icmp, "dst")
    else:
        exprs += [pl.col("sa").alias("src_ip"), pl.col("da").alias("dst_ip")]
        exprs += [pl.col("sp").alias("src_port_text"), pl.col("dp").alias("dst_port_text")]
    split = frame.select(exprs)
    short = (
        split["src_ip"].str.contains("..", literal=True)
        | split["dst_ip"].str.contains("..", literal=True)
    ).fill_null(False)
    unsplit = (split["src_ip"].is_null() | split["dst_ip"].is_null()).to_numpy()
    values = frame.select(
        dur_us=_duration_us(pl.col("dur")) if "dur" in frame.columns else pl.lit(0, pl.Int64),
        src_port=split["src_port_text"].str.extract(r"^(\d+)", 1).cast(pl.Int64, strict=False),
        dst_port=dst_port_expr(split["dst_port_text"], pl.col("proto")),
        src_pkts=_number(pl.col("pkts")),
        src_bytes=_number(pl.col("bytes")),
        dst_pkts=_number(pl.col("opkts")) if "opkts" in frame.columns else pl.lit(0, pl.Int64),
        dst_bytes=_number(pl.col("obytes")) if "obytes" in frame.columns else pl.lit(0, pl.Int64),
        flags=pl.when(pl.col("proto") == 6).then(rawflows.flag_bits(pl.col("flags")))
        if "flags" in frame.columns
        else pl.lit(None, pl.Int64),
    )
    timezone = ctx.option("timezone") or "UTC"
    start, bad_time = rawflows.parse_times(
        split["start"].to_arrow(), ["%Y-%m-%d %H:%M:%S%.f"], timezone
    )
    short_np = short.to_numpy()
    drop = short_np | bad_time | unsplit
    if drop.any():
        tokens = (
            frame.select(pl.format("{} -> {}", "src", "dst")).to_series()
            if "src" in frame.columns
            else None
        )
        for mask, reason, detail in (
            (unsplit, "bad address", "not addr:port or addr.port"),
            (short_np & ~unsplit, "abbreviated IPv6 address",
             "nfdump shortened the address; print with -o line6, long6 or extended6"),
            (bad_time & ~short_np & ~unsplit, "bad timestamp", "date and time do not parse"),
        ):  # fmt: skip
            rows = np.flatnonzero(mask)
            details = [
                f"{detail}: {flowtext.shorten(tokens[int(r)])}" if tokens is not None else detail
                for r in rows[:5]
            ]
            flowtext.report(diag, input_name, reason, line_no[rows], details)
    keep = ~drop
    end_us = pa.chunked_array(
        [(pl.from_arrow(start.combine_chunks()) + values["dur_us"]).to_arrow()]
    )
    cols = {
        "ts_start": rawflows.us_to_ts(start),
        "ts_end": rawflows.us_to_ts(end_us),
        "src_ip": split["src_ip"].to_arrow(),
        "dst_ip": split["dst_ip"].to_arrow(),
        "proto": proto,
        "src_tcp_flags": values["flags"].to_arrow(),
        "exporter": frame["ra"].to_arrow() if "ra" in frame.columns else None,
    }
    for name in ("src_port", "dst_port", "src_pkts", "src_bytes", "dst_pkts", "dst_bytes"):
        cols[name] = values[name].to_arrow()
    cols["uni"] = pa.array(
        ~((values["dst_pkts"] > 0) | (values["dst_bytes"] > 0)).fill_null(False).to_numpy()
    )
    keep_arr = pa.array(keep)
    cols = {k: v.filter(keep_arr) for k, v in cols.items() if v is not None}
    table = rawflows.finish(
        cols,
        input_name=input_name,
        diag=diag,
        locations=line_no[keep],
        records=records[keep],
        uni=True,
        proto_text=parts["proto"].to_arrow().filter(keep_arr),
    )
    return table, int(is_record.sum())
