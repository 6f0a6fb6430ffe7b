"""Zeek conn records as raw flows: the field types and the conversion shared by the
TSV (:mod:`flowhawk.sources.zeek`) and JSON (:mod:`flowhawk.sources.zeek_json`) readers.

Decisions (see also the reader docstrings):

* ``src`` is Zeek's originator, ``dst`` the responder; ``orient`` is ``start``
  except for TCP records in state ``OTH`` (no SYN seen, Zeek only guessed who
  started), which are left to the normalizer.
* Bytes are ``orig_ip_bytes`` / ``resp_ip_bytes`` (IP-layer, as the schema wants);
  a record without them (old Zeek, trimmed logs) falls back to the payload counters
  ``orig_bytes`` / ``resp_bytes``, which undercount by the headers.
* ``ts_end = ts + duration`` (no duration: ``ts_end = ts``).
* ICMP: Zeek logs the type in ``id.orig_p`` and in ``id.resp_p`` either the code
  or, for request/reply messages (echo, timestamp, router/neighbour discovery...),
  the type of the counterpart message, whose code is 0. ``dst_port`` becomes
  ``type * 256 + code``; ICMP over IPv6 (Zeek says ``icmp`` for both) is protocol 58.
* ``unknown_transport`` (IP protocols Zeek has no analyzer for; it does not log the
  number) becomes protocol 255 so the bytes are not lost.
* ``flow_id`` is Zeek's ``uid``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from flowhawk import schema
from flowhawk.diagnostics import Diagnostics
from flowhawk.sources import flowtext, rawflows

#: conn fields the readers use, with the type each is parsed as.
FIELD_TYPES: dict[str, pa.DataType] = {
    "ts": pa.float64(),
    "uid": pa.string(),
    "id.orig_h": pa.string(),
    "id.orig_p": pa.int64(),
    "id.resp_h": pa.string(),
    "id.resp_p": pa.int64(),
    "proto": pa.dictionary(pa.int32(), pa.string()),
    "service": pa.string(),
    "duration": pa.float64(),
    "conn_state": pa.string(),
    "orig_pkts": pa.int64(),
    "resp_pkts": pa.int64(),
    "orig_ip_bytes": pa.int64(),
    "resp_ip_bytes": pa.int64(),
    "orig_bytes": pa.int64(),
    "resp_bytes": pa.int64(),
    "orig_l2_addr": pa.string(),
    "resp_l2_addr": pa.string(),
    "vlan": pa.int64(),
}
#: Without these a log is not a conn log.
REQUIRED_FIELDS = ("ts", "id.orig_h", "id.resp_h")
#: Fields that only conn logs have (tell conn from dns/http/... logs).
CONN_ONLY_FIELDS = ("conn_state", "orig_pkts", "orig_ip_bytes", "resp_pkts", "missed_bytes")

_ZEEK_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "unknown_transport": 255}

# (type, counterpart type) pairs for which Zeek logs the counterpart in resp_p.
_ICMP_PAIRS = [(8, 0), (13, 14), (15, 16), (10, 9), (17, 18)]  # ICMPv4
_ICMP_PAIRS += [(128, 129), (133, 134), (135, 136), (130, 131), (139, 140), (144, 145)]  # v6
_PAIR_KEYS = pa.array(
    sorted({a * 256 + b for a, b in _ICMP_PAIRS} | {b * 256 + a for a, b in _ICMP_PAIRS}),
    pa.int64(),
)


# Scalars made once: building one from a Python value costs more than the kernel it feeds.
_ZERO = pa.scalar(0, pa.int64())
_256 = pa.scalar(256, pa.int64())
_ICMP = pa.scalar(1, pa.int16())
_ICMP6 = pa.scalar(58, pa.int16())
_TCP = pa.scalar(6, pa.int16())
_OTH = pa.scalar("OTH")
_START = pa.scalar(schema.ORIENT_START)
_NO_ORIENT = pa.scalar(None, pa.string())


def wanted_types(fields: list[str]) -> dict[str, pa.DataType]:
    """The subset of :data:`FIELD_TYPES` present in ``fields`` that the conversion needs."""
    types = {f: t for f, t in FIELD_TYPES.items() if f in fields}
    for side in ("orig", "resp"):
        if f"{side}_ip_bytes" in types:
            types.pop(f"{side}_bytes", None)  # payload bytes are only the fallback
    return types


def _col(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    return table[name] if name in table.column_names else None


def _flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (replace_with_mask does not take chunked input)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _coalesce(*cols: pa.ChunkedArray | None) -> pa.ChunkedArray | None:
    present = [c for c in cols if c is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else pc.coalesce(*present)


def _proto(names: pa.ChunkedArray) -> pa.ChunkedArray:
    chunks = []
    for chunk in names.chunks:
        enc = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
        values = enc.dictionary.to_pylist()
        mapped = [_ZEEK_PROTOS.get(v.strip().lower()) if v else None for v in values]
        mapped = [
            m if m is not None else rawflows.proto_number(v)
            for m, v in zip(mapped, values, strict=True)
        ]
        chunks.append(pa.array(mapped, pa.int16()).take(enc.indices))
    return pa.chunked_array(chunks, pa.int16())


def _timestamps_us(
    table: pa.Table, lines: np.ndarray, input_name: str, diag: Diagnostics, unit: str
) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Start times in µs, and the mask of rows whose time text did not parse."""
    ts = table["ts"]
    if pa.types.is_floating(ts.type) or pa.types.is_integer(ts.type):
        return rawflows.seconds_to_us(ts), np.zeros(table.num_rows, dtype=bool)
    # JSON logs written with LogAscii::json_timestamps=JSON::TS_ISO8601.
    text = pl.from_arrow(ts.cast(pa.string()))
    assert isinstance(text, pl.Series)
    parsed = text.str.to_datetime(strict=False, time_zone="UTC", time_unit="us")
    bad = (parsed.is_null() & text.is_not_null()).to_numpy()
    rows = np.flatnonzero(bad)
    details = [f"ts={flowtext.shorten(text[int(r)])} is not a time" for r in rows[:5]]
    flowtext.report(diag, input_name, "bad timestamp", lines[rows], details, unit=unit)
    micros = pa.chunked_array([parsed.dt.epoch("us").to_arrow().cast(pa.int64())])
    return micros, bad


def to_raw(
    table: pa.Table,
    lines: np.ndarray,
    records: np.ndarray,
    input_name: str,
    diag: Diagnostics,
    unit: str = "line",
) -> pa.Table:
    """Convert parsed conn columns (named as in Zeek) to a raw flow table."""
    if table.num_rows == 0:
        return schema.empty_raw()
    start_us, bad_time = _timestamps_us(table, lines, input_name, diag, unit)
    if bad_time.any():
        keep = pa.array(~bad_time)
        table, start_us = table.filter(keep), start_us.filter(keep)
        lines, records = lines[~bad_time], records[~bad_time]
    duration = _col(table, "duration")
    if duration is not None:
        end_us = pc.add(start_us, pc.fill_null(rawflows.seconds_to_us(duration), _ZERO))
    else:
        end_us = start_us
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "ts_start": rawflows.us_to_ts(start_us),
        "ts_end": rawflows.us_to_ts(end_us),
        "src_ip": table["id.orig_h"],
        "dst_ip": table["id.resp_h"],
    }
    proto_text = _col(table, "proto")
    if proto_text is None:
        proto_text = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    proto = _proto(proto_text)
    n = table.num_rows
    orig_p, resp_p = _col(table, "id.orig_p"), _col(table, "id.resp_p")
    src_port = orig_p if orig_p is not None else pa.repeat(_ZERO, n)
    dst_port = resp_p if resp_p is not None else pa.repeat(_ZERO, n)
    is_icmp = pc.fill_null(pc.equal(proto, _ICMP), False)
    if pc.any(is_icmp).as_py():
        # Only the ICMP rows are looked at: their addresses and "ports" are rewritten.
        is_icmp, proto = _flat(is_icmp), _flat(proto)
        src_port, dst_port = _flat(src_port), _flat(dst_port)
        v6 = pc.match_substring(_flat(table["id.orig_h"].filter(is_icmp)), ":")
        proto = pc.replace_with_mask(
            proto, is_icmp, pc.if_else(pc.fill_null(v6, False), _ICMP6, _ICMP)
        )
        icmp_type = pc.fill_null(src_port.filter(is_icmp), _ZERO)
        second = pc.fill_null(dst_port.filter(is_icmp), _ZERO)
        key = pc.add(pc.multiply(icmp_type, _256), second)
        code = pc.if_else(pc.is_in(key, value_set=_PAIR_KEYS), _ZERO, second)
        dst_port = pc.replace_with_mask(
            dst_port, is_icmp, pc.add(pc.multiply(icmp_type, _256), code)
        )
        src_port = pc.replace_with_mask(src_port, is_icmp, pa.repeat(_ZERO, len(icmp_type)))
    cols.update(proto=proto, src_port=src_port, dst_port=dst_port)
    for side, out in (("orig", "src"), ("resp", "dst")):
        pkts = _col(table, f"{side}_pkts")
        octets = _coalesce(_col(table, f"{side}_ip_bytes"), _col(table, f"{side}_bytes"))
        cols[f"{out}_pkts"] = pkts if pkts is not None else pa.repeat(_ZERO, n)
        cols[f"{out}_bytes"] = octets if octets is not None else pa.repeat(_ZERO, n)
    orient = pa.repeat(_START, n)
    state = _col(table, "conn_state")
    if state is not None:
        cols["state"] = state
        guessed = pc.and_(pc.equal(proto, _TCP), pc.equal(state, _OTH))
        if pc.any(guessed).as_py():
            orient = pc.if_else(pc.fill_null(guessed, False), _NO_ORIENT, orient)
    cols["orient"] = orient
    for src, out in (
        ("service", "service"),
        ("orig_l2_addr", "src_mac"),
        ("resp_l2_addr", "dst_mac"),
        ("vlan", "vlan"),
        ("uid", "flow_id"),
    ):
        value = _col(table, src)
        if value is not None:
            cols[out] = value
    return rawflows.finish(
        cols,
        input_name=input_name,
        diag=diag,
        locations=lines,
        records=records,
        uni=False,
        unit=unit,
        proto_text=proto_text,
    )
