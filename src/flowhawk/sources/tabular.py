"""Generic CSV (``csv``) and Parquet (``parquet``) flow tables, read through a column
mapping given in the configuration (``[input.csv]`` / ``[input.parquet]``)::

    [input.csv]
    time_unit = "s"          # numeric times: s, ms, us or ns (durations too,
                             # unless duration_unit says otherwise)
    time_format = "%Y/%m/%d %H:%M:%S%.f"   # text times; absent: ISO 8601
    timezone = "UTC"         # zone of times written without an offset
    delimiter = ","
    proto_names = true       # the protocol column may hold names (tcp, udp, ...)
    uni = false              # records are unidirectional (NetFlow-style)

    [input.csv.mapping]      # canonical column = column in the file
    ts_start = "StartTime"
    duration = "Dur"         # or ts_end = "EndTime"
    src_ip = "SrcAddr"
    dst_ip = "DstAddr"

``ts_start``, ``src_ip``, ``dst_ip`` and one of ``ts_end``/``duration`` must be
mapped; every other canonical column of :data:`flowhawk.schema.RAW_FLOW_SCHEMA`
may be, and defaults otherwise (ports and counters 0, ``proto`` 0 meaning unknown,
``uni`` from the option, ``flow_id`` the 0-based data row number). Detection gives
these formats a low confidence so that any specific format wins.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from flowhawk import schema
from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import ConfigError, InputError
from flowhawk.sources import flowtext, rawflows
from flowhawk.sources.base import ReadContext, is_compressed

_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
_NUMERIC = {"src_port", "dst_port", "proto", "src_pkts", "src_bytes", "dst_pkts", "dst_bytes"}
_NUMERIC |= {"src_tcp_flags", "dst_tcp_flags", "vlan", "sampling"}
_MAPPABLE = (set(schema.RAW_COLUMNS) - {"input"}) | {"duration"}
_REQUIRED = ("ts_start", "src_ip", "dst_ip")
_OPTIONS = {"mapping", "time_unit", "duration_unit", "time_format", "timezone", "delimiter"}
_OPTIONS |= {"proto_names", "uni"}
_HINT = (
    'set [input.{fmt}.mapping] in the configuration, e.g. ts_start = "StartTime",'
    ' duration = "Dur" (or ts_end = ...), src_ip = "SrcAddr", dst_ip = "DstAddr",'
    " and optionally src_port, dst_port, proto, src_pkts, src_bytes, dst_pkts, dst_bytes;"
    " numeric times need time_unit (s, ms, us, ns), text times time_format (default ISO 8601)"
)


def _settings(ctx: ReadContext, fmt: str, input_name: str) -> dict[str, Any]:
    """Validated options; a missing mapping is an :class:`InputError` saying what to set."""
    unknown = set(ctx.options) - _OPTIONS
    if unknown:
        raise ConfigError(
            f"[input.{fmt}]: unknown keys {sorted(unknown)}; known: {sorted(_OPTIONS)}"
        )
    mapping = ctx.option("mapping")
    if not mapping:
        raise InputError(
            input_name, f"reading a {fmt} file needs a column mapping: " + _HINT.format(fmt=fmt)
        )
    wrong = set(mapping) - _MAPPABLE
    if wrong:
        raise ConfigError(
            f"[input.{fmt}.mapping]: unknown canonical columns {sorted(wrong)};"
            f" known: {sorted(_MAPPABLE)}"
        )
    missing = [c for c in _REQUIRED if c not in mapping]
    if "ts_end" not in mapping and "duration" not in mapping:
        missing.append("ts_end or duration")
    if missing:
        raise InputError(
            input_name,
            f"[input.{fmt}.mapping] lacks {', '.join(missing)}: " + _HINT.format(fmt=fmt),
        )

    def option(key: str, default: Any) -> Any:
        value = ctx.option(key)
        return default if value is None else value  # the config writes unset keys as None

    settings = {
        "mapping": dict(mapping),
        "time_unit": option("time_unit", "s"),
        "time_format": ctx.option("time_format"),
        "timezone": option("timezone", "UTC"),
        "delimiter": option("delimiter", ","),
        "proto_names": bool(option("proto_names", True)),
        "uni": bool(option("uni", False)),
    }
    settings["duration_unit"] = option("duration_unit", settings["time_unit"])
    for key in ("time_unit", "duration_unit"):
        if settings[key] not in _UNITS:
            raise ConfigError(f"[input.{fmt}] {key} = {settings[key]!r}; use one of s, ms, us, ns")
    return settings


class CsvSource:
    """Any delimited text table of flows, read through a column mapping."""

    name: ClassVar[str] = "csv"
    description: ClassVar[str] = "any CSV of flows, with a column mapping in the configuration"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        first = head.split(b"\n", 1)[0]
        try:
            text = first.decode("utf-8")
        except UnicodeDecodeError:
            return 0
        if text.lstrip().startswith(("{", "[", "#")):
            return 0  # JSON lines or a commented log, not a table
        return 5 if any(text.count(d) >= 2 for d in (",", "\t", ";")) else 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        settings = _settings(ctx, "csv", input_name)
        yield from rawflows.rebatch(self._tables(path, input_name, settings, ctx), ctx.batch_rows)

    def _tables(
        self, path: Path, input_name: str, settings: dict[str, Any], ctx: ReadContext
    ) -> Iterator[pa.Table]:
        diag = ctx.diagnostics
        layout = None
        records = 0
        with flowtext.open_input(path, input_name) as fh:
            for chunk in flowtext.iter_chunks(fh, input_name, diag):
                data, first_line = chunk.data, chunk.first_line
                if layout is None:
                    header, _, data = data.partition(b"\n")
                    layout = _layout(header.decode("utf-8", "replace"), settings, input_name)
                    first_line += 1
                block = flowtext.read_block(data, first_line, records, layout, input_name, diag)
                records += block.n_records
                frame = pl.from_arrow(block.table)
                assert isinstance(frame, pl.DataFrame)
                where = (block.lines, block.records, "line")
                yield _convert(frame, where, settings, input_name, diag)
        if layout is None:
            raise InputError(input_name, "is empty: no CSV header line")


def _layout(header: str, settings: dict[str, Any], input_name: str) -> flowtext.CsvLayout:
    names = [n.strip().strip('"') for n in header.rstrip("\r").split(settings["delimiter"])]
    _check_columns(names, settings["mapping"], input_name)
    types = {}
    for canonical, column in settings["mapping"].items():
        numeric = canonical in _NUMERIC and not (canonical == "proto" and settings["proto_names"])
        types[column] = pa.float64() if numeric else pa.string()
    return flowtext.CsvLayout(names, types, settings["delimiter"], [], quoted=True)


def _check_columns(names: list[str], mapping: dict[str, str], input_name: str) -> None:
    absent = {k: v for k, v in mapping.items() if v not in names}
    if absent:
        wanted = ", ".join(f"{v!r} (for {k})" for k, v in absent.items())
        raise InputError(
            input_name, f"has no column {wanted}; its columns are: {', '.join(names[:40])}"
        )


class ParquetSource:
    """Any Parquet table of flows, read through a column mapping."""

    name: ClassVar[str] = "parquet"
    description: ClassVar[str] = "any Parquet table of flows, with a column mapping"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        return 5 if head.startswith(b"PAR1") else 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        settings = _settings(ctx, "parquet", input_name)
        with tempfile.TemporaryDirectory(prefix="flowhawk-parquet-") as tmp:
            source = path
            if is_compressed(path):  # Parquet needs random access
                source = flowtext.decompress_to(path, Path(tmp), input_name, ctx.diagnostics)
            try:
                reader = pq.ParquetFile(source)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(input_name, f"is not a readable Parquet file: {exc}") from exc
            _check_columns(reader.schema_arrow.names, settings["mapping"], input_name)
            columns = sorted(set(settings["mapping"].values()))
            yield from rawflows.rebatch(
                self._tables(reader, columns, input_name, settings, ctx), ctx.batch_rows
            )

    def _tables(
        self,
        reader: pq.ParquetFile,
        columns: list[str],
        input_name: str,
        settings: dict[str, Any],
        ctx: ReadContext,
    ) -> Iterator[pa.Table]:
        row = 0
        try:
            for batch in reader.iter_batches(batch_size=max(ctx.batch_rows, 1), columns=columns):
                frame = pl.from_arrow(pa.Table.from_batches([batch]))
                assert isinstance(frame, pl.DataFrame)
                numbers = np.arange(row, row + batch.num_rows, dtype=np.int64)
                row += batch.num_rows
                yield _convert(
                    frame, (numbers, numbers, "row"), settings, input_name, ctx.diagnostics
                )
        except (pa.ArrowInvalid, OSError) as exc:
            ctx.diagnostics.skip(
                input_name, f"row {row}", "unreadable Parquet data", f"{exc}; rest lost"
            )


def _convert(
    frame: pl.DataFrame,
    where: tuple[np.ndarray, np.ndarray, str],
    settings: dict[str, Any],
    input_name: str,
    diag: Diagnostics,
) -> pa.Table:
    """Mapped columns (named as in the file) to a raw flow table."""
    lines, records, unit = where
    if frame.height == 0:
        return schema.empty_raw()
    mapping: dict[str, str] = settings["mapping"]
    start = _time_us(frame[mapping["ts_start"]], settings)
    bad = start.is_null() & frame[mapping["ts_start"]].is_not_null()
    if "ts_end" in mapping:
        end = _time_us(frame[mapping["ts_end"]], settings)
        bad = bad | (end.is_null() & frame[mapping["ts_end"]].is_not_null())
    else:
        raw = frame[mapping["duration"]]
        dur = _number(raw) * _UNITS[settings["duration_unit"]]
        bad = bad | (dur.is_null() & raw.is_not_null() & (raw.cast(pl.String) != ""))
        end = start + dur.fill_null(0).round(0).cast(pl.Int64)
    bad_np = bad.to_numpy()
    if bad_np.any():
        rows = np.flatnonzero(bad_np)
        details = [f"{_row_text(frame, mapping, int(r))} is not a time" for r in rows[:5]]
        flowtext.report(diag, input_name, "bad timestamp", lines[rows], details, unit=unit)
    cols: dict[str, Any] = {
        "ts_start": rawflows.us_to_ts(start.to_arrow()),
        "ts_end": rawflows.us_to_ts(end.to_arrow()),
    }
    proto_text = None
    for canonical, column in mapping.items():
        if canonical in ("ts_start", "ts_end", "duration"):
            continue
        values = frame[column]
        if canonical == "proto":
            proto_text = values.cast(pl.String).to_arrow()
            cols["proto"] = rawflows.proto_numbers(proto_text)
        elif canonical in _NUMERIC:
            cols[canonical] = _number(values).round(0).cast(pl.Int64).to_arrow()
        elif canonical == "uni":
            cols["uni"] = (
                values.cast(pl.Boolean, strict=False).fill_null(settings["uni"]).to_arrow()
            )
        else:
            cols[canonical] = values.cast(pl.String).to_arrow()
    if "proto" not in cols:  # unmapped: 0, "unknown", rather than refusing the file
        cols["proto"] = pa.repeat(pa.scalar(0, pa.int16()), frame.height)
    if bad_np.any():
        keep = pa.array(~bad_np)
        cols = {k: v.filter(keep) for k, v in cols.items()}
        proto_text = proto_text.filter(keep) if proto_text is not None else None
        lines, records = lines[~bad_np], records[~bad_np]
    return rawflows.finish(
        cols,
        input_name=input_name,
        diag=diag,
        locations=lines,
        records=records,
        uni=settings["uni"],
        unit=unit,
        proto_text=proto_text,
    )


def _row_text(frame: pl.DataFrame, mapping: dict[str, str], row: int) -> str:
    keys = [k for k in ("ts_start", "ts_end", "duration") if k in mapping]
    return " ".join(f"{mapping[k]}={flowtext.shorten(frame[mapping[k]][row])}" for k in keys)


def _number(values: pl.Series) -> pl.Series:
    if values.dtype.is_numeric():
        return values.cast(pl.Float64)
    return values.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)


def _time_us(values: pl.Series, settings: dict[str, Any]) -> pl.Series:
    """A time column (datetime, epoch number or text) as µs since the epoch (UTC)."""
    dtype = values.dtype
    if dtype == pl.Date:
        values = values.cast(pl.Datetime("us"))
        dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            values = values.dt.replace_time_zone(settings["timezone"], ambiguous="earliest")
        return values.dt.epoch("us")
    if dtype.is_numeric():
        return (values.cast(pl.Float64) * _UNITS[settings["time_unit"]]).round(0).cast(pl.Int64)
    text = values.cast(pl.String).str.strip_chars()
    numeric = text.cast(pl.Float64, strict=False)
    if settings["time_format"] is None and numeric.null_count() == text.null_count():
        return (numeric * _UNITS[settings["time_unit"]]).round(0).cast(pl.Int64)
    micros, _ = rawflows.parse_times(
        text.to_arrow(), [settings["time_format"]], settings["timezone"]
    )
    result = pl.from_arrow(micros.combine_chunks())
    assert isinstance(result, pl.Series)
    return result
