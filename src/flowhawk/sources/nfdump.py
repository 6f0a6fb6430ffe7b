"""nfdump readers: binary nfcapd files (``nfdump``), the CSV nfdump prints with
``-o csv`` (``nfdump-csv``), and its text output (``nfdump-text``, in
:mod:`flowhawk.sources.nfdump_text`).

Decisions:

* Binary files are read by the installed ``nfdump`` program, its output streamed.
  Not with ``-o csv``: nfdump 1.7.1's csv prints start and end times in whole
  seconds. The command is ``nfdump -q -N -6 -r FILE -o fmt:...`` under ``TZ=UTC``:
  ``%tsr`` gives the start in epoch seconds with milliseconds, ``-N`` plain numbers
  (duration in seconds, protocol numbers, no "1.2 M"), ``-6`` full IPv6 addresses
  (otherwise shortened to "2001:62..e0:fed5"). gzip/bz2/xz-compressed capture files
  are decompressed to a temporary file first (nfdump needs a seekable file).
* Records are unidirectional (``uni=True``) unless they carry out counters (NSEL or
  ``nfdump -b`` bidirectional records): ``src_*`` are the in counters, ``dst_*``
  the out counters. ``orient`` is left to the normalizer: NetFlow does not say who
  started a conversation.
* ICMP: nfdump puts ``type.code`` (text) or ``type*256+code`` (csv) in the
  destination port; both become ``dst_port = type*256 + code``.
* ``exporter``: the router address (``ra``) when set, else ``exid:N`` (the
  exporter's sysid in the file). ``flow_id``: the 0-based record number in
  nfdump's output order. TCP flags (``......S.``) become ``src_tcp_flags``.
* Text output (csv, text) holds times in the timezone of whoever ran nfdump; they
  are read as UTC unless ``ctx.options["timezone"]`` names another zone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError, MissingToolError
from flowhawk.sources import flowtext, rawflows
from flowhawk.sources.base import ReadContext, is_compressed, read_head
from flowhawk.sources.nfdump_text import NfdumpTextSource, dst_port_expr

__all__ = ["NfdumpBinarySource", "NfdumpCsvSource", "NfdumpTextSource"]

#: nfcapd file magic (0xA50C, little-endian) and the layout versions nfdump writes.
_MAGIC = b"\x0c\xa5"
_LAYOUTS = (1, 2)
#: Columns asked of nfdump for binary files, named as in its csv output where one exists.
_FMT_FIELDS = [
    ("tsr", "%tsr"), ("td", "%td"), ("pr", "%pr"), ("sa", "%sa"), ("sp", "%sp"),
    ("da", "%da"), ("dp", "%dp"), ("ipkt", "%ipkt"), ("ibyt", "%ibyt"), ("opkt", "%opkt"),
    ("obyt", "%obyt"), ("flg", "%flg"), ("ra", "%ra"), ("exid", "%exp"), ("svln", "%svln"),
    ("ismc", "%ismc"), ("idmc", "%idmc"),
]  # fmt: skip
_TYPES: dict[str, pa.DataType] = {
    "ts": pa.string(), "te": pa.string(), "tsr": pa.float64(), "td": pa.float64(),
    "pr": pa.string(), "sa": pa.string(), "sp": pa.int64(), "da": pa.string(),
    "dp": pa.string(), "ipkt": pa.int64(), "ibyt": pa.int64(), "opkt": pa.int64(),
    "obyt": pa.int64(), "flg": pa.string(), "ra": pa.string(), "exid": pa.int64(),
    "svln": pa.int64(), "ismc": pa.string(), "idmc": pa.string(),
}  # fmt: skip
_CSV_REQUIRED = ("ts", "sa", "da", "pr")
_TIME_FORMATS = ["%Y-%m-%d %H:%M:%S%.f"]
_NO_FLOWS = b"No matching flows"
_ZERO_ADDRESSES = ["0.0.0.0", "::", ""]
_ZERO_MAC = "00:00:00:00:00:00"


def to_raw(
    table: pa.Table,
    start_us: pa.ChunkedArray,
    end_us: pa.ChunkedArray,
    block: tuple[np.ndarray, np.ndarray, str],
    input_name: str,
    diag: Diagnostics,
) -> pa.Table:
    """Convert nfdump columns (csv names) with their times to a raw flow table.

    ``block`` is (line or record number of each row, record numbers, location unit).
    """
    lines, records, unit = block
    n = table.num_rows
    names = table.column_names
    small = pl.from_arrow(table.select([c for c in ("pr", "dp", "flg") if c in names]))
    assert isinstance(small, pl.DataFrame)
    proto = rawflows.proto_numbers(table["pr"])
    frame = small.with_columns(proto=pl.from_arrow(proto.combine_chunks()))
    exprs = [dst_port_expr(pl.col("dp"), pl.col("proto")).alias("dst_port")]
    if "flg" in names:
        tcp = pl.col("proto") == 6
        exprs.append(pl.when(tcp).then(rawflows.flag_bits(pl.col("flg"))).alias("flags"))
    derived = frame.select(exprs)
    bad_port = (derived["dst_port"].is_null() & frame["dp"].is_not_null()).to_numpy()
    out_pkts = _col(table, "opkt", n)
    out_bytes = _col(table, "obyt", n)
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "ts_start": rawflows.us_to_ts(start_us),
        "ts_end": rawflows.us_to_ts(end_us),
        "src_ip": table["sa"],
        "dst_ip": table["da"],
        "src_port": _col(table, "sp", n),
        "dst_port": derived["dst_port"].to_arrow(),
        "proto": proto,
        "src_pkts": _col(table, "ipkt", n),
        "src_bytes": _col(table, "ibyt", n),
        "dst_pkts": out_pkts,
        "dst_bytes": out_bytes,
        "uni": pc.invert(pc.or_(pc.greater(out_pkts, 0), pc.greater(out_bytes, 0))),
        "exporter": _exporter(table, n),
    }
    if "flags" in derived.columns:
        cols["src_tcp_flags"] = derived["flags"].to_arrow()
    if "svln" in names:
        cols["vlan"] = pc.if_else(pc.greater(table["svln"], 0), table["svln"], None)
    for src, out in (("ismc", "src_mac"), ("idmc", "dst_mac")):
        if src in names:
            cols[out] = pc.if_else(pc.equal(table[src], _ZERO_MAC), None, table[src])
    if bad_port.any():
        rows = np.flatnonzero(bad_port)
        details = [f"dp={flowtext.shorten(frame['dp'][int(r)])} is not a port" for r in rows[:5]]
        flowtext.report(diag, input_name, "bad value", lines[rows], details, unit=unit)
        keep = pa.array(~bad_port)
        cols = {k: v.filter(keep) for k, v in cols.items()}
        lines, records = lines[~bad_port], records[~bad_port]
    return rawflows.finish(
        cols,
        input_name=input_name,
        diag=diag,
        locations=lines,
        records=records,
        uni=True,
        unit=unit,
        proto_text=table["pr"] if not bad_port.any() else table["pr"].filter(pa.array(~bad_port)),
    )


def _col(table: pa.Table, name: str, n: int) -> pa.ChunkedArray:
    if name in table.column_names:
        return pc.fill_null(table[name], 0)
    return pa.chunked_array([pa.repeat(pa.scalar(0, pa.int64()), n)])


def _exporter(table: pa.Table, n: int) -> pa.ChunkedArray:
    ra = table["ra"] if "ra" in table.column_names else None
    exid = table["exid"] if "exid" in table.column_names else None
    by_id = (
        pc.if_else(
            pc.greater(exid, 0),
            pc.binary_join_element_wise("exid:", exid.cast(pa.string()), ""),
            None,
        )
        if exid is not None
        else pa.chunked_array([pa.nulls(n, pa.string())])
    )
    if ra is None:
        return by_id
    return pc.if_else(pc.is_in(ra, value_set=pa.array(_ZERO_ADDRESSES)), by_id, ra)


class NfdumpBinarySource:
    """Binary nfcapd files, read through the nfdump program."""

    name: ClassVar[str] = "nfdump"
    description: ClassVar[str] = "nfdump/nfcapd binary capture files (needs the nfdump program)"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        if len(head) >= 4 and head.startswith(_MAGIC) and head[2] in _LAYOUTS and head[3] == 0:
            return 100
        return 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        exe = shutil.which("nfdump")
        if exe is None:
            raise MissingToolError("nfdump", "nfdump capture files", "apt-get install nfdump")
        if not path.is_file():
            raise InputError(input_name, "is not a file")
        head = read_head(path, 4)
        if not self.sniff(head, path):
            raise InputError(input_name, "is not an nfdump capture file (no nfcapd file header)")
        with tempfile.TemporaryDirectory(prefix="flowhawk-nfdump-") as tmp:
            source = path
            if is_compressed(path):
                source = flowtext.decompress_to(path, Path(tmp), input_name, ctx.diagnostics)
            yield from rawflows.rebatch(self._run(exe, source, input_name, ctx), ctx.batch_rows)

    def _run(self, exe: str, source: Path, input_name: str, ctx: ReadContext) -> Iterator[pa.Table]:
        diag = ctx.diagnostics
        fmt = "fmt:" + ",".join(token for _, token in _FMT_FIELDS)
        names = [name for name, _ in _FMT_FIELDS]
        layout = flowtext.CsvLayout(names, {n: _TYPES[n] for n in names}, ",", [])
        cmd = [exe, "-q", "-N", "-6", "-r", str(source), "-o", fmt]
        rows = records = 0
        with tempfile.TemporaryFile() as errors:
            env = {**os.environ, "TZ": "UTC"}
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env)
            assert proc.stdout is not None
            try:
                for chunk in flowtext.iter_chunks(proc.stdout, input_name, diag):
                    data = chunk.data
                    if data.startswith(_NO_FLOWS):
                        continue
                    # fmt pads fields with blanks; none of these fields holds a blank.
                    data = data.replace(b" ", b"")
                    block = flowtext.read_block(
                        data, records, records, layout, input_name, diag, "record"
                    )
                    records += block.n_records
                    table = block.table
                    start = rawflows.seconds_to_us(table["tsr"])
                    end = pc.add(start, pc.fill_null(rawflows.seconds_to_us(table["td"]), 0))
                    where = (block.records, block.records, "record")
                    out = to_raw(table, start, end, where, input_name, diag)
                    rows += out.num_rows
                    yield out
            finally:
                proc.stdout.close()
                status = proc.wait()
            errors.seek(0)
            message = errors.read().decode("utf-8", "replace").strip()
        _check_status(status, message, records, input_name, diag)


def _check_status(
    status: int, message: str, records: int, input_name: str, diag: Diagnostics
) -> None:
    first = message.splitlines()[0] if message else ""
    if records == 0 and (status != 0 or message):
        raise InputError(
            input_name, f"nfdump could not read it: {first or f'exit status {status}'}"
        )
    if status != 0 or message:
        detail = f"nfdump stopped: {first or f'exit status {status}'}; later records are lost"
        diag.skip(input_name, f"record {records}", "truncated or corrupt nfdump data", detail)


class NfdumpCsvSource:
    """The CSV that ``nfdump -o csv`` prints (header line, records, Summary trailer)."""

    name: ClassVar[str] = "nfdump-csv"
    description: ClassVar[str] = "nfdump -o csv output saved to a file"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        first = head.split(b"\n", 1)[0].strip()
        return 95 if first.startswith(b"ts,te,td,sa,da,sp,dp,pr") else 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        yield from rawflows.rebatch(self._tables(path, input_name, ctx), ctx.batch_rows)

    def _tables(self, path: Path, input_name: str, ctx: ReadContext) -> Iterator[pa.Table]:
        diag = ctx.diagnostics
        timezone = ctx.option("timezone") or "UTC"
        layout = None
        records = 0
        in_summary = False
        with flowtext.open_input(path, input_name) as fh:
            for chunk in flowtext.iter_chunks(fh, input_name, diag):
                data, first_line = chunk.data, chunk.first_line
                if layout is None:
                    header, _, data = data.partition(b"\n")
                    layout = _csv_layout(header, input_name)
                    first_line += 1
                if in_summary:
                    continue
                # nfdump ends its csv with "Summary" and a statistics table: not records.
                cut = data.find(b"\nSummary\n")
                if data.startswith(b"Summary\n"):
                    cut = -1
                    in_summary = True
                    data = b""
                elif cut >= 0:
                    data = data[: cut + 1]
                    in_summary = True
                if not data:
                    continue
                block = flowtext.read_block(data, first_line, records, layout, input_name, diag)
                records += block.n_records
                table = block.table
                start, bad_start = rawflows.parse_times(table["ts"], _TIME_FORMATS, timezone)
                if "te" in table.column_names:
                    end, bad_end = rawflows.parse_times(table["te"], _TIME_FORMATS, timezone)
                else:
                    end, bad_end = start, np.zeros(table.num_rows, dtype=bool)
                bad = bad_start | bad_end
                lines, recs = block.lines, block.records
                if bad.any():
                    details = [_time_detail(table, int(r)) for r in np.flatnonzero(bad)[:5]]
                    table, lines, recs = rawflows.drop_rows(
                        table, lines, recs, bad, (diag, input_name, "bad timestamp", details)
                    )
                    keep = pa.array(~bad)
                    start, end = start.filter(keep), end.filter(keep)
                yield to_raw(table, start, end, (lines, recs, "line"), input_name, diag)
        if layout is None:
            raise InputError(input_name, "is empty: no nfdump csv header")


def _time_detail(table: pa.Table, row: int) -> str:
    names = [n for n in ("ts", "te") if n in table.column_names]
    return (
        " ".join(f"{n}={flowtext.shorten(table[n][row].as_py())}" for n in names) + " is not a time"
    )


def _csv_layout(header: bytes, input_name: str) -> flowtext.CsvLayout:
    names = header.decode("utf-8", "replace").strip().split(",")
    missing = [c for c in _CSV_REQUIRED if c not in names]
    if missing:
        raise InputError(
            input_name,
            f"line 1 is not an nfdump csv header (no {', '.join(missing)} column):"
            f" {flowtext.shorten(header.decode('utf-8', 'replace'))}",
        )
    types = {n: t for n, t in _TYPES.items() if n in names}
    return flowtext.CsvLayout(names, types, ",", [])
