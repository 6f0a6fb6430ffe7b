"""Suricata EVE JSON (``suricata``): ``eve.json``, one event per line.

Only flow events become flows:

* ``event_type: flow`` records are biflows (``uni=False``): ``src`` is Suricata's
  client (``src_ip``/``src_port``), counters ``pkts_toserver``/``bytes_toserver``
  (``src_*``) and ``pkts_toclient``/``bytes_toclient`` (``dst_*``); ``orient`` is
  ``start``; ``service`` is ``app_proto`` (Suricata's "failed" means no protocol
  was recognised and is dropped); ``state`` is ``flow.state``; TCP flags
  ``tcp.tcp_flags_ts``/``_tc`` (hex) become ``src_tcp_flags``/``dst_tcp_flags``.
* ``event_type: netflow`` records are unidirectional halves (``uni=True``), counters
  in ``netflow.pkts``/``netflow.bytes``; ``orient`` is left to the normalizer.
* every other event type (alert, dns, http, tls, stats, ...) is counted as ignored.

Times: ``flow.start``/``flow.end`` (``netflow.*`` for netflow), ISO 8601 with the
sensor's UTC offset, converted to UTC. ICMP has no ports in EVE: ``icmp_type`` and
``icmp_code`` give ``dst_port = type*256 + code``. Bytes are as Suricata counts
them: whole packets including the link-layer header. ``flow_id`` is Suricata's
``flow_id`` (shared by the two netflow halves of one flow, which helps stitching);
``vlan`` is the outer VLAN id. Lines that are not JSON are reported with their line
number and the rest of the file is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from flowhawk import schema
from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.sources import flowtext, jsonlines, rawflows
from flowhawk.sources.base import ReadContext, read_head

_FLOW = pa.struct(
    [
        ("pkts_toserver", pa.int64()),
        ("pkts_toclient", pa.int64()),
        ("bytes_toserver", pa.int64()),
        ("bytes_toclient", pa.int64()),
        ("start", pa.string()),
        ("end", pa.string()),
        ("state", pa.string()),
    ]
)
_NETFLOW = pa.struct(
    [("pkts", pa.int64()), ("bytes", pa.int64()), ("start", pa.string()), ("end", pa.string())]
)
_TCP = pa.struct([("tcp_flags_ts", pa.string()), ("tcp_flags_tc", pa.string())])
SCHEMA = pa.schema(
    [
        ("event_type", pa.string()),
        ("timestamp", pa.string()),
        ("flow_id", pa.int64()),
        ("src_ip", pa.string()),
        ("src_port", pa.int64()),
        ("dest_ip", pa.string()),
        ("dest_port", pa.int64()),
        ("proto", pa.string()),
        ("app_proto", pa.string()),
        ("icmp_type", pa.int64()),
        ("icmp_code", pa.int64()),
        ("vlan", pa.list_(pa.int64())),
        ("flow", _FLOW),
        ("netflow", _NETFLOW),
        ("tcp", _TCP),
    ]
)
_FLOW_EVENTS = ("flow", "netflow")
_ICMP = (1, 58)
_TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%.f%z", None]


def _ignore(obj: object) -> str | None:
    """Lines that are JSON but do not fit the flow schema: other event types are ignored."""
    if isinstance(obj, dict) and obj.get("event_type") not in _FLOW_EVENTS:
        return f"suricata {obj.get('event_type')} events"
    return None


class SuricataEveSource:
    """Suricata eve.json flow and netflow events."""

    name: ClassVar[str] = "suricata"
    description: ClassVar[str] = "Suricata eve.json (flow and netflow events)"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        obj = jsonlines.first_object(head)
        if obj is None or "event_type" not in obj:
            return 0
        return 90 if "timestamp" in obj and ("flow_id" in obj or "src_ip" in obj) else 60

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        head = read_head(path)
        if not head.strip():
            raise InputError(input_name, "is empty: no Suricata events")
        first = jsonlines.first_object(head)
        if first is None or "event_type" not in first:
            raise InputError(
                input_name,
                "is not Suricata EVE JSON: its first line is not a JSON object with event_type",
            )
        yield from rawflows.rebatch(self._tables(path, input_name, ctx), ctx.batch_rows)

    def _tables(self, path: Path, input_name: str, ctx: ReadContext) -> Iterator[pa.Table]:
        diag = ctx.diagnostics
        records = 0
        with flowtext.open_input(path, input_name) as fh:
            for chunk in flowtext.iter_chunks(fh, input_name, diag):
                block = jsonlines.read_json_block(
                    chunk.data, chunk.first_line, records, SCHEMA, input_name, diag, _ignore
                )
                records += block.n_records
                yield _convert(block, input_name, diag)


def _convert(block: jsonlines.JsonBlock, input_name: str, diag: Diagnostics) -> pa.Table:
    table, lines, records = block.table, block.lines, block.records
    if table.num_rows == 0:
        return schema.empty_raw()
    kind = table["event_type"]
    is_flow = pc.fill_null(pc.is_in(kind, value_set=pa.array(_FLOW_EVENTS)), False)
    other = pc.invert(is_flow)
    if pc.any(other).as_py():
        for item in pc.value_counts(pc.fill_null(kind.filter(other), "(none)")).to_pylist():
            diag.ignore(input_name, f"suricata {item['values']} events", item["counts"])
        mask = is_flow.to_numpy(zero_copy_only=False)
        table, lines, records = table.filter(is_flow), lines[mask], records[mask]
        if table.num_rows == 0:
            return schema.empty_raw()

    frame = pl.from_arrow(table.drop_columns(["src_ip", "dest_ip"]))
    assert isinstance(frame, pl.DataFrame)
    uni = pl.col("event_type") == "netflow"
    flow, net = pl.col("flow").struct, pl.col("netflow").struct
    values = frame.select(
        start=pl.when(uni).then(net.field("start")).otherwise(flow.field("start")),
        end=pl.when(uni).then(net.field("end")).otherwise(flow.field("end")),
        uni=uni,
        src_pkts=pl.when(uni).then(net.field("pkts")).otherwise(flow.field("pkts_toserver")),
        src_bytes=pl.when(uni).then(net.field("bytes")).otherwise(flow.field("bytes_toserver")),
        dst_pkts=pl.when(uni).then(0).otherwise(flow.field("pkts_toclient")),
        dst_bytes=pl.when(uni).then(0).otherwise(flow.field("bytes_toclient")),
        state=flow.field("state"),
        service=pl.when(pl.col("app_proto") == "failed").then(None).otherwise(pl.col("app_proto")),
        src_tcp_flags=pl.col("tcp")
        .struct.field("tcp_flags_ts")
        .str.to_integer(base=16, strict=False),
        dst_tcp_flags=pl.when(uni)
        .then(None)
        .otherwise(
            pl.col("tcp").struct.field("tcp_flags_tc").str.to_integer(base=16, strict=False)
        ),
        orient=pl.when(uni).then(None).otherwise(pl.lit(schema.ORIENT_START)),
        vlan=pl.col("vlan").list.first(),
        flow_id=pl.col("flow_id").cast(pl.String),
    )
    start, bad_start = rawflows.parse_times(values["start"].to_arrow(), _TIME_FORMATS)
    end, bad_end = rawflows.parse_times(values["end"].to_arrow(), _TIME_FORMATS)
    bad = bad_start | bad_end
    if bad.any():
        rows = np.flatnonzero(bad)
        start_text, end_text = values["start"], values["end"]
        details = [
            f"start={flowtext.shorten(start_text[int(r)])} end={flowtext.shorten(end_text[int(r)])}"
            for r in rows[:5]
        ]
        flowtext.report(diag, input_name, "bad timestamp", lines[rows], details)

    proto = rawflows.proto_numbers(table["proto"])
    ports = pl.DataFrame(
        {
            "proto": pl.from_arrow(proto.combine_chunks()),
            "sp": frame["src_port"],
            "dp": frame["dest_port"],
            "t": frame["icmp_type"],
            "c": frame["icmp_code"],
        }
    ).select(
        src_port=pl.when(pl.col("proto").is_in(_ICMP)).then(0).otherwise(pl.col("sp")),
        dst_port=pl.when(pl.col("proto").is_in(_ICMP))
        .then(pl.col("t").fill_null(0) * 256 + pl.col("c").fill_null(0))
        .otherwise(pl.col("dp")),
    )
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "ts_start": rawflows.us_to_ts(start),
        "ts_end": rawflows.us_to_ts(end),
        "src_ip": table["src_ip"],
        "dst_ip": table["dest_ip"],
        "proto": proto,
    }
    cols.update({c: ports[c].to_arrow() for c in ports.columns})
    cols.update({c: values[c].to_arrow() for c in values.columns if c not in ("start", "end")})
    if bad.any():
        keep = pa.array(~bad)
        cols = {k: v.filter(keep) for k, v in cols.items()}
        lines, records = lines[~bad], records[~bad]
    return rawflows.finish(
        cols,
        input_name=input_name,
        diag=diag,
        locations=lines,
        records=records,
        uni=False,
        proto_text=table["proto"].filter(pa.array(~bad)) if bad.any() else table["proto"],
    )
