"""Argus flow records (``argus``): ``ra`` output with a title line, as in
Stratosphere's ``*.binetflow`` files, comma- or tab-separated.

Columns are found by their Argus titles (``StartTime, Dur, Proto, SrcAddr, Sport,
Dir, DstAddr, Dport, State, TotPkts, TotBytes, SrcBytes, SrcPkts, Label, ...``);
only ``StartTime``, ``Proto``, ``SrcAddr`` and ``DstAddr`` are required.

Decisions:

* Records are biflows (``uni=False``); ``src`` is Argus' source.
* ``Dir`` gives the orientation: ``->`` and ``<->`` mean Argus saw the source
  start, so ``orient="start"``; ``<-`` means the traffic went from the destination,
  so the two sides are swapped (addresses, ports, counters) and ``orient="start"``;
  uncertain directions (``<?>``, ``?>``, ``<?``, the latter swapped) and ``who``
  (ARP) leave ``orient`` null for the normalizer. Only the arrow at the end of the
  field counts (a corrupted ``" get_message  ->"`` reads as ``->``).
* Counters: ``src_bytes = SrcBytes``, ``dst_bytes = TotBytes - SrcBytes`` (or
  ``DstBytes``). Without ``SrcPkts``/``DstPkts`` the packet split is unknown:
  ``TotPkts`` is apportioned by the byte split (rounded, at least one packet on a
  side that sent bytes). Without ``SrcBytes`` all counters go to the source side.
  Bytes are as Argus counted them: on Ethernet captures they include the link
  header (a 40-byte TCP ACK counts 54 or 60).
* ICMP: Argus prints ``Sport`` as hex ``0xCCTT`` (code, type) and the ICMP id as
  ``Dport``; ``dst_port = type*256 + code``, ``src_port = 0``. Other ports are
  decimal (hex accepted).
* Rows of non-IP protocols (``arp``, ``llc``, ``man``, ... or MAC addresses / ``0``
  in the address columns) are counted as ignored, not as errors.
* ``StartTime`` as in the files (``2019/04/04 16:24:47.672448``), with ``-`` or
  ``/`` in the date, or epoch seconds; ``ctx.options["time_format"]`` adds a
  strftime format. Argus prints local time: times are read as UTC unless
  ``ctx.options["timezone"]`` names the sensor's zone (the CTU captures were taken
  in Europe/Prague). ``ts_end`` is ``LastTime`` or ``StartTime + Dur``.
* ``flow_id`` is the 0-based record number (title line not counted).
"""

from __future__ import annotations

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

#: Argus title -> (our column name, parse type).
_COLUMNS: dict[str, tuple[str, pa.DataType]] = {
    "StartTime": ("start", pa.string()),
    "LastTime": ("last", pa.string()),
    "Dur": ("dur", pa.float64()),
    "Proto": ("proto", pa.string()),
    "SrcAddr": ("sa", pa.string()),
    "Sport": ("sp", pa.string()),
    "Dir": ("dir", pa.string()),
    "DstAddr": ("da", pa.string()),
    "Dport": ("dp", pa.string()),
    "State": ("state", pa.string()),
    "TotPkts": ("pkts", pa.int64()),
    "TotBytes": ("bytes", pa.int64()),
    "SrcPkts": ("spkts", pa.int64()),
    "DstPkts": ("dpkts", pa.int64()),
    "SrcBytes": ("sbytes", pa.int64()),
    "DstBytes": ("dbytes", pa.int64()),
    "sVlan": ("vlan", pa.int64()),
    "SrcMac": ("smac", pa.string()),
    "DstMac": ("dmac", pa.string()),
}
_REQUIRED = ("StartTime", "Proto", "SrcAddr", "DstAddr")
_TIME_FORMATS = ["%Y/%m/%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y/%m/%d.%H:%M:%S%.f"]
_NON_IP = {"arp", "rarp", "llc", "man", "lldp", "stp", "ipx", "lat", "rrcp", "ppp", "isis", "esmc"}
# Argus' names for UDP flows it recognised as RTP/RTCP/UDT.
_ARGUS_PROTOS_TEXT = {"rtp": "17", "rtcp": "17", "udt": "17"}
_ICMP = (1, 58)
_MAC = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"


class ArgusSource:
    """Argus ra output / Stratosphere binetflow files."""

    name: ClassVar[str] = "argus"
    description: ClassVar[str] = "Argus ra output with a title line (*.binetflow), CSV or TSV"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        first = head.split(b"\n", 1)[0]
        titles = first.replace(b"\t", b",").strip().split(b",")
        return (
            90 if titles[0] == b"StartTime" and b"SrcAddr" in titles and b"DstAddr" in titles else 0
        )

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        yield from rawflows.rebatch(self._tables(path, input_name, ctx), ctx.batch_rows)

    def _tables(self, path: Path, input_name: str, ctx: ReadContext) -> Iterator[pa.Table]:
        diag = ctx.diagnostics
        layout = None
        records = 0
        with flowtext.open_input(path, input_name) as fh:
            for chunk in flowtext.iter_chunks(fh, input_name, diag):
                data, first_line = chunk.data, chunk.first_line
                if layout is None:
                    header, _, data = data.partition(b"\n")
                    layout = _layout(header.decode("utf-8", "replace").rstrip("\r"), input_name)
                    first_line += 1
                block = flowtext.read_block(data, first_line, records, layout, input_name, diag)
                records += block.n_records
                yield _convert(block, input_name, diag, ctx)
        if layout is None:
            raise InputError(input_name, "is empty: no Argus title line")


def _layout(header: str, input_name: str) -> flowtext.CsvLayout:
    delimiter = "\t" if "\t" in header else ","
    titles = [t.strip() for t in header.split(delimiter)]
    missing = [t for t in _REQUIRED if t not in titles]
    if missing:
        raise InputError(
            input_name,
            f"line 1 is not an Argus title line (no {', '.join(missing)}):"
            f" {flowtext.shorten(header)}",
        )
    names = [_COLUMNS[t][0] if t in _COLUMNS else f"_{i}" for i, t in enumerate(titles)]
    types = {_COLUMNS[t][0]: _COLUMNS[t][1] for t in titles if t in _COLUMNS}
    return flowtext.CsvLayout(names, types, delimiter, [])


def _port(text: pl.Expr) -> pl.Expr:
    """Argus ports: decimal, or hex with 0x (ICMP); empty is 0."""
    text = text.str.strip_chars()
    is_hex = text.str.starts_with("0x")
    hex_value = text.str.strip_prefix("0x").str.to_integer(base=16, strict=False)
    return pl.when(is_hex).then(hex_value).otherwise(text.cast(pl.Int64, strict=False))


def _not_ip(address: pl.Expr) -> pl.Expr:
    """MAC addresses or bare numbers where an IP address should be."""
    text = address.str.strip_chars()
    return text.str.contains(_MAC) | ~(text.str.contains(r"\.") | text.str.contains(":"))


def _convert(
    block: flowtext.Block, input_name: str, diag: Diagnostics, ctx: ReadContext
) -> pa.Table:
    table, lines, records = block.table, block.lines, block.records
    if table.num_rows == 0:
        return schema.empty_raw()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    proto_name = pl.col("proto").str.strip_chars().str.to_lowercase()
    non_ip = frame.select(
        (proto_name.is_in(list(_NON_IP)) | _not_ip(pl.col("sa")) | _not_ip(pl.col("da"))).fill_null(
            False
        )
    ).to_series()
    if non_ip.any():
        kinds = frame.filter(non_ip).select(proto_name.fill_null("?")).to_series()
        for kind, count in kinds.value_counts().iter_rows():
            diag.ignore(input_name, f"non-IP records ({kind})", int(count))
        keep = ~non_ip.to_numpy()
        frame, lines, records = frame.filter(~non_ip), lines[keep], records[keep]
        if frame.height == 0:
            return schema.empty_raw()

    formats = [ctx.option("time_format")] if ctx.option("time_format") else []
    timezone = ctx.option("timezone") or "UTC"
    start, bad = _times(frame["start"], [*formats, *_TIME_FORMATS], timezone)
    if "last" in frame.columns:
        end, bad_end = _times(frame["last"], [*formats, *_TIME_FORMATS], timezone)
        bad = bad | bad_end
    else:
        dur_us = frame.select(
            (pl.col("dur").fill_null(0) * 1e6).round(0).cast(pl.Int64)
        ).to_series()
        end = start + dur_us
    if bad.any():
        rows = np.flatnonzero(bad)
        details = [f"{flowtext.shorten(frame['start'][int(r)])} is not a time" for r in rows[:5]]
        flowtext.report(diag, input_name, "bad timestamp", lines[rows], details)

    names = frame.select(proto_name.replace(_ARGUS_PROTOS_TEXT)).to_series()
    proto = rawflows.proto_numbers(names.to_arrow())
    frame = frame.with_columns(
        proto_text=pl.col("proto"),
        proto=pl.from_arrow(proto.combine_chunks()),
        _start=start,
        _end=end,
    )
    cols = frame.select(_derived_columns(frame.columns))
    cols = cols.filter(pl.Series(~bad))
    out = {c: cols[c].to_arrow() for c in cols.columns}
    out["ts_start"] = rawflows.us_to_ts(out.pop("_start"))
    out["ts_end"] = rawflows.us_to_ts(out.pop("_end"))
    return rawflows.finish(
        out,
        input_name=input_name,
        diag=diag,
        locations=lines[~bad],
        records=records[~bad],
        uni=False,
        proto_text=frame["proto_text"].filter(pl.Series(~bad)).to_arrow(),
    )


def _times(values: pl.Series, formats: list[str], timezone: str) -> tuple[pl.Series, np.ndarray]:
    """Argus times (µs): formatted text, or epoch seconds (``ra -u``)."""
    parsed, bad = rawflows.parse_times(values.to_arrow(), formats, timezone)
    micros = pl.from_arrow(parsed.combine_chunks())
    assert isinstance(micros, pl.Series)
    if not bad.any():
        return micros, bad
    text = values.str.strip_chars()
    epoch = (text.cast(pl.Float64, strict=False) * 1e6).round(0).cast(pl.Int64)
    merged = pl.select(pl.coalesce(micros, epoch)).to_series()
    bad = (merged.is_null() & text.is_not_null() & (text != "")).to_numpy()
    return merged, bad


def _derived_columns(names: list[str]) -> list[pl.Expr]:
    """Ports, per-side counters, orientation and swap flag from Argus columns."""
    zero = pl.lit(0, pl.Int64)
    icmp = pl.col("proto").is_in(_ICMP)
    sport = _port(pl.col("sp")) if "sp" in names else zero
    dport = _port(pl.col("dp")) if "dp" in names else zero
    icmp_port = (sport % 256) * 256 + (sport // 256) % 256
    pkts = pl.col("pkts").fill_null(0) if "pkts" in names else zero
    total = pl.col("bytes").fill_null(0) if "bytes" in names else zero
    if "sbytes" in names:
        src_bytes = pl.col("sbytes").fill_null(0)
        dst_bytes = pl.col("dbytes").fill_null(0) if "dbytes" in names else total - src_bytes
    else:
        src_bytes, dst_bytes = total, zero
    if "spkts" in names:
        src_pkts = pl.col("spkts").fill_null(0)
    elif "dpkts" in names:
        src_pkts = pkts - pl.col("dpkts").fill_null(0)
    else:  # apportion packets by the byte split
        share = pl.when(total > 0).then(src_bytes / total).otherwise(1.0)
        guess = (pkts * share).round(0).cast(pl.Int64)
        low = pl.when((src_bytes > 0) & (pkts > 0)).then(1).otherwise(0)
        high = pl.when((dst_bytes > 0) & (pkts > 0)).then(pkts - 1).otherwise(pkts)
        src_pkts = pl.min_horizontal(pl.max_horizontal(guess, low), high)
    dst_pkts = pl.col("dpkts").fill_null(0) if "dpkts" in names else pkts - src_pkts
    arrow = (
        pl.col("dir").str.strip_chars().str.split(" ").list.last() if "dir" in names else pl.lit("")
    )
    swap = arrow.is_in(["<-", "<?"]).fill_null(False)
    sides = {
        "ip": (pl.col("sa"), pl.col("da")),
        "port": (
            pl.when(icmp).then(0).otherwise(sport),
            pl.when(icmp).then(icmp_port).otherwise(dport),
        ),
        "pkts": (src_pkts, dst_pkts),
        "bytes": (src_bytes, dst_bytes),
    }
    if "smac" in names and "dmac" in names:
        sides["mac"] = (pl.col("smac"), pl.col("dmac"))
    exprs = [pl.col("_start"), pl.col("_end"), pl.col("proto")]
    for name, (src, dst) in sides.items():
        exprs.append(pl.when(swap).then(dst).otherwise(src).alias(f"src_{name}"))
        exprs.append(pl.when(swap).then(src).otherwise(dst).alias(f"dst_{name}"))
    orient = pl.when(arrow.is_in(["->", "<->", "<-"])).then(pl.lit(schema.ORIENT_START))
    exprs.append(orient.otherwise(pl.lit(None, pl.String)).alias("orient"))
    if "state" in names:
        exprs.append(pl.col("state").str.strip_chars().alias("state"))
    if "vlan" in names:
        exprs.append(pl.col("vlan").alias("vlan"))
    return exprs
