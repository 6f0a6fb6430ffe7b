"""Columns to raw flows: protocol numbers, times, TCP flags, the final checks shared
by every flow-log reader (:func:`finish`) and regrouping into batches (:func:`rebatch`).

:func:`finish` is where a record becomes a flow or a counted drop: it reports rows
without a start time, without an address, with an unknown protocol, a port outside
0-65535, a negative counter or an end before the start, each with its line (or
record) number, then fills defaults and conforms to
:data:`flowhawk.schema.RAW_FLOW_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from flowhawk import schema
from flowhawk.diagnostics import KEEP_FIRST, Diagnostics
from flowhawk.sources.flowtext import report, shorten

#: Protocol names flow tools print beyond :data:`schema.PROTO_NUMBERS`: IANA keywords
#: and nfdump's abbreviations (``Rte6``, ``NOHE6``, ``UDP-L``...).
EXTRA_PROTO_NUMBERS: dict[str, int] = {
    "ggp": 3, "ipip": 4, "ipencap": 4, "st": 5, "cbt": 7, "igp": 9, "pup": 12,
    "hmp": 20, "rdp": 27, "dccp": 33, "xtp": 36, "ipv6-route": 43, "rte6": 43,
    "ipv6-frag": 44, "frag6": 44, "mobile": 55, "mobil": 55, "ipv6-nonxt": 59,
    "nohe6": 59, "ipv6-opts": 60, "opts6": 60, "etherip": 97, "ethip": 97, "encap": 98,
    "ipcomp": 108, "ipcmp": 108, "ipxip": 111, "pgm": 113, "isis4": 124, "udp-l": 136,
    "mpls-in-ip": 137, "mpls": 137,
}  # fmt: skip
_COUNTERS = ("src_pkts", "src_bytes", "dst_pkts", "dst_bytes")
# Scalars made once: building one from a Python value costs more than the kernel it feeds.
_MILLION = pa.scalar(1e6)
_I0 = pa.scalar(0, pa.int64())
_I1 = pa.scalar(1, pa.int64())
_PORT_MAX = pa.scalar(65535, pa.int64())
_EMPTY = pa.scalar(0, pa.int32())
_FALSE = pa.scalar(False)
# ---------------------------------------------------------------- conversions


def proto_numbers(names: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """IANA numbers for protocol names or numbers as text (``TCP``, ``ipv6-icmp``, ``47``)."""
    chunks = names.chunks if isinstance(names, pa.ChunkedArray) else [names]
    out = []
    for chunk in chunks:
        enc = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
        mapped = [proto_number(v) for v in enc.dictionary.to_pylist()]
        out.append(pa.array(mapped, pa.int16()).take(enc.indices))
    return pa.chunked_array(out, pa.int16())


def proto_number(name: str | None) -> int | None:
    """The IANA number of one protocol name (case-insensitive) or numeric text."""
    if name is None:
        return None
    key = name.strip().lower()
    if key.isdigit():
        value = int(key)
        return value if value < 256 else None
    return schema.PROTO_NUMBERS.get(key, EXTRA_PROTO_NUMBERS.get(key))


def seconds_to_us(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """Float seconds to int64 microseconds (rounded: float seconds carry ~0.2 µs noise)."""
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values])
    return pc.round(pc.multiply(values.cast(pa.float64()), _MILLION)).cast(pa.int64())


def us_to_ts(micros: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """int64 microseconds since the epoch as the schema's UTC timestamp type."""
    arr = micros.cast(pa.int64()).cast(schema.TS)
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])


def flag_bits(flags: pl.Expr) -> pl.Expr:
    """TCP flags printed as ``.AP.SF`` / ``......S.`` (one position per bit) as a number."""
    width = 8
    text = flags.str.strip_chars().str.pad_start(width, ".")
    bits = [
        pl.when(text.str.slice(i, 1).is_in([".", ""]).not_())
        .then(1 << (width - 1 - i))
        .otherwise(0)
        for i in range(width)
    ]
    return (
        pl.when(flags.is_null() | (flags.str.strip_chars() == ""))
        .then(None)
        .otherwise(pl.sum_horizontal(bits))
    )


#: ISO 8601 spellings tried when no format is given. (polars cannot infer an offset-aware
#: format inside an expression: it must know the result type before seeing the data.)
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


def parse_times(
    values: pa.Array | pa.ChunkedArray, formats: Sequence[str | None], timezone: str = "UTC"
) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Time text to µs since the epoch, and the mask of values that did not parse.

    Each strftime ``format`` is tried in turn (None: the ISO 8601 forms in
    :data:`ISO_FORMATS`, with or without offset, ``T`` or space, fraction or none);
    times without an offset are taken in ``timezone`` (ambiguous local times at a
    DST change resolve to the earlier instant).
    """
    text = pl.from_arrow(values.cast(pa.string()))
    assert isinstance(text, pl.Series)
    text = text.str.strip_chars()
    frame = pl.DataFrame({"t": text})
    attempts = []
    expanded = [f for fmt in formats for f in (ISO_FORMATS if fmt is None else (fmt,))]
    for i, fmt in enumerate(expanded):
        parsed = frame.select(
            pl.col("t").str.to_datetime(format=fmt, strict=False, time_unit="us")
        ).to_series()
        if parsed.dtype.time_zone is None:  # type: ignore[union-attr]
            parsed = parsed.dt.replace_time_zone(
                timezone, ambiguous="earliest", non_existent="null"
            )
        attempts.append(parsed.dt.convert_time_zone("UTC").alias(f"a{i}"))
    merged = pl.DataFrame(attempts).select(pl.coalesce(pl.all())).to_series()
    bad = (merged.is_null() & text.is_not_null() & (text != "")).to_numpy()
    micros = merged.dt.epoch("us").to_arrow().cast(pa.int64())
    return pa.chunked_array([micros]), bad


def drop_rows(
    table: pa.Table,
    lines: np.ndarray,
    records: np.ndarray,
    bad: np.ndarray,
    report_as: tuple[Diagnostics, str, str, list[str]],
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Report the rows in ``bad`` as skipped and return the rest with their numbers.

    ``report_as`` is (diagnostics, input name, reason, details of the first rows).
    """
    if not bad.any():
        return table, lines, records
    diag, input_name, reason, details = report_as
    report(diag, input_name, reason, lines[bad], details)
    keep = ~bad
    return table.filter(pa.array(keep)), lines[keep], records[keep]


# ---------------------------------------------------------------- final checks


def _problems(table: pa.Table) -> list[tuple[str, pa.ChunkedArray, str]]:
    """(reason, row mask, column) for each kind of unusable value present in ``table``.

    Each test first asks a cheap aggregate (null count, min/max) so clean data costs
    a few passes over the numbers and none over the text.
    """
    found: list[tuple[str, pa.ChunkedArray, str]] = []
    if table["ts_start"].null_count:
        found.append(("missing timestamp", pc.is_null(table["ts_start"]), "ts_start"))
    for name in ("src_ip", "dst_ip"):
        col = table[name]
        empty = pc.equal(pc.binary_length(col), _EMPTY)
        if col.null_count or pc.any(empty).as_py():
            found.append(("missing address", pc.or_kleene(pc.is_null(col), empty), name))
    if table["proto"].null_count:
        found.append(("unknown protocol", pc.is_null(table["proto"]), "proto"))
    for name in ("src_port", "dst_port"):
        if name in table.column_names:
            lo_hi = pc.min_max(table[name]).as_py()
            if lo_hi["min"] is not None and (lo_hi["min"] < 0 or lo_hi["max"] > 65535):
                col = table[name]
                found.append(
                    (
                        "port out of range",
                        pc.or_(pc.less(col, _I0), pc.greater(col, _PORT_MAX)),
                        name,
                    )
                )
    for name in _COUNTERS:
        if name in table.column_names:
            low = pc.min(table[name]).as_py()
            if low is not None and low < 0:
                found.append(("negative counter", pc.less(table[name], _I0), name))
    if "ts_end" in table.column_names:
        backwards = pc.less(table["ts_end"], table["ts_start"])
        if pc.any(backwards).as_py():
            found.append(("end before start", backwards, "ts_end"))
    return found


def finish(
    columns: dict[str, pa.Array | pa.ChunkedArray],
    *,
    input_name: str,
    diag: Diagnostics,
    locations: np.ndarray | None,
    records: np.ndarray,
    uni: bool,
    unit: str = "line",
    proto_text: pa.Array | pa.ChunkedArray | None = None,
) -> pa.Table:
    """Check canonical columns, report and drop unusable rows, fill defaults, conform.

    ``locations`` are the line numbers (or record numbers with ``unit="record"``) used
    in messages; ``records`` give the default ``flow_id``. ``proto_text`` is the
    protocol as the input spelled it, quoted when it is unknown.
    """
    table = pa.table(columns)
    bad_any = None
    for reason, mask, name in _problems(table):
        mask = pc.fill_null(mask, _FALSE)
        if bad_any is not None:
            mask = pc.and_(mask, pc.invert(bad_any))  # one reason per row
        rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if rows.size == 0:
            continue
        details = [_detail(table, int(r), reason, name, proto_text) for r in rows[:KEEP_FIRST]]
        if locations is not None:
            report(diag, input_name, reason, locations[rows], details, unit=unit)
        else:
            report(diag, input_name, reason, records[rows], details, unit="record")
        bad_any = mask if bad_any is None else pc.or_(bad_any, mask)
    if bad_any is not None:
        keep = pc.invert(bad_any)
        table = table.filter(keep)
        records = records[keep.to_numpy(zero_copy_only=False)]

    n = table.num_rows
    out: dict[str, pa.Array | pa.ChunkedArray] = {c: table[c] for c in table.column_names}
    out["ts_end"] = _coalesce(out.get("ts_end"), table["ts_start"])
    for name in ("src_port", "dst_port", *_COUNTERS):
        out[name] = _coalesce(out.get(name), _I0, n)
    if "uni" not in out:
        out["uni"] = pa.repeat(pa.scalar(uni, pa.bool_()), n)
    out["sampling"] = _coalesce(out.get("sampling"), _I1, n)
    out["input"] = pa.repeat(pa.scalar(input_name), n)
    flow_id = out.get("flow_id")
    if flow_id is None or flow_id.null_count:
        out["flow_id"] = _coalesce(flow_id, pa.array(records, pa.int64()).cast(pa.string()))
    return schema.conform(pa.table(out))


def _coalesce(column, fallback, n: int = 0):
    """``column`` with nulls replaced from ``fallback`` (a column, or a scalar for all)."""
    if column is None:
        return pa.repeat(fallback, n) if isinstance(fallback, pa.Scalar) else fallback
    if column.null_count == 0:
        return column
    return pc.coalesce(column, fallback)


def _detail(table: pa.Table, row: int, reason: str, name: str, proto_text) -> str:
    if reason == "unknown protocol":
        if proto_text is None:
            return "no protocol"
        return f"protocol {shorten(proto_text[row].as_py())} is not an IP protocol name or number"
    if reason == "missing address":
        return f"{name} is empty"
    if reason == "missing timestamp":
        return "no start time"
    if reason == "end before start":
        return f"ts_end {table['ts_end'][row]} is before ts_start {table['ts_start'][row]}"
    return f"{name}={table[name][row].as_py()}"


# ---------------------------------------------------------------- batching


def rebatch(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Regroup tables into tables of ``rows`` rows (the last one may be shorter)."""
    rows = max(1, rows)
    pending: list[pa.Table] = []
    count = 0
    for table in tables:
        if table.num_rows == 0:
            continue
        pending.append(table)
        count += table.num_rows
        while count >= rows:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, rows)
            rest = joined.slice(rows)
            pending = [rest] if rest.num_rows else []
            count = rest.num_rows
    if count:
        yield pa.concat_tables(pending)
