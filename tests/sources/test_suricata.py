"""Suricata EVE reader on real eve.json files and on damaged or reshaped copies."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.schema import RAW_FLOW_SCHEMA
from flowhawk.sources import detect_format
from flowhawk.sources.base import ReadContext, read_head
from flowhawk.sources.suricata import SuricataEveSource
from flowhawk.sources.zeek import ZeekJsonSource

EVE = "labeled/slips_dataset/dataset_HEAD/test6-malicious.suricata.json"
EXAMPLE = "conformance/flow_text_formats/examples/suricata.json"


def read(path: Path, **ctx_args) -> tuple[pa.Table, Diagnostics]:
    diag = Diagnostics()
    tables = list(SuricataEveSource().read(path, ReadContext(diag, **ctx_args)))
    for table in tables:
        assert table.schema == RAW_FLOW_SCHEMA
    return (pa.concat_tables(tables) if tables else RAW_FLOW_SCHEMA.empty_table()), diag


def flow(table: pa.Table, flow_id: int) -> dict:
    rows = [r for r in table.to_pylist() if r["flow_id"] == str(flow_id)]
    assert len(rows) == 1
    return rows[0]


def ts(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def eve_lines(shared_data: Path) -> list[bytes]:
    return (shared_data / EVE).read_bytes().rstrip(b"\n").split(b"\n")


def test_flows_and_ignored_events(shared_data: Path) -> None:
    path = shared_data / EVE
    assert SuricataEveSource.sniff(read_head(path), path) == 90
    assert ZeekJsonSource.sniff(read_head(path), path) == 0
    assert detect_format(path) == "suricata"
    table, diag = read(path)
    kinds = Counter(json.loads(x)["event_type"] for x in eve_lines(shared_data))
    st = diag.stats(str(path))
    assert table.num_rows == kinds["flow"] == 3512
    assert st.ignored == {f"suricata {k} events": n for k, n in kinds.items() if k != "flow"}
    assert st.skipped_total == 0
    syn = flow(table, 2232403389523415)  # line 120
    assert syn["ts_start"] == ts(2021, 6, 6, 15, 34, 31, 140759)  # 17:34:31.140759+0200
    assert syn["ts_end"] == ts(2021, 6, 6, 15, 34, 31, 141012)
    assert (syn["src_ip"], syn["src_port"], syn["dst_ip"], syn["dst_port"], syn["proto"]) == (
        "91.238.203.56",
        48938,
        "192.168.1.129",
        445,
        6,
    )
    assert (syn["src_pkts"], syn["src_bytes"], syn["dst_pkts"], syn["dst_bytes"]) == (
        2,
        120,
        2,
        120,
    )
    assert (syn["src_tcp_flags"], syn["dst_tcp_flags"]) == (0x02, 0x14)
    assert (syn["state"], syn["service"], syn["orient"], syn["uni"]) == (
        "closed",
        None,
        "start",
        False,
    )
    http = flow(table, 1300129227356448)  # line 687
    assert (http["service"], http["state"], http["src_bytes"], http["dst_bytes"]) == (
        "http",
        "established",
        3724,
        888,
    )
    udp = flow(table, 445348883402532)  # app_proto "failed": no service
    assert (udp["proto"], udp["service"], udp["dst_pkts"]) == (17, None, 0)


def test_alert_only_file(shared_data: Path) -> None:
    path = shared_data / EXAMPLE
    assert detect_format(path) == "suricata"
    table, diag = read(path)
    assert table.num_rows == 0
    assert diag.stats(str(path)).ignored == {"suricata alert events": 13}


def test_netflow_and_icmp_records(shared_data: Path, tmp_path: Path) -> None:
    """netflow halves and ICMP flows, built from real flow events the way Suricata writes them."""
    src = [json.loads(x) for x in eve_lines(shared_data) if b'"event_type":"flow"' in x][:50]
    out = []
    for rec in src:
        f = rec["flow"]
        base = {k: v for k, v in rec.items() if k not in ("flow", "tcp", "app_proto")}
        times = {"start": f["start"], "end": f["end"], "age": f["age"]}
        half = dict(base, event_type="netflow")
        half["netflow"] = dict(times, pkts=f["pkts_toserver"], bytes=f["bytes_toserver"])
        back = dict(half, src_ip=rec["dest_ip"], dest_ip=rec["src_ip"])
        back.update(src_port=rec["dest_port"], dest_port=rec["src_port"])
        back["netflow"] = dict(times, pkts=f["pkts_toclient"], bytes=f["bytes_toclient"])
        out += [json.dumps(half), json.dumps(back)]
    icmp = {k: v for k, v in src[0].items() if k not in ("src_port", "dest_port", "app_proto")}
    icmp.update(proto="ICMP", icmp_type=8, icmp_code=0, response_icmp_type=0, response_icmp_code=0)
    icmp["flow"] = dict(src[0]["flow"], pkts_toclient=12, bytes_toclient=4056)
    icmp6 = dict(icmp, proto="IPv6-ICMP", icmp_type=135, src_ip="fe80::1", dest_ip="ff02::1:ff00:1")
    icmp6["flow_id"] = 7
    out += [json.dumps(icmp), json.dumps(icmp6)]
    path = tmp_path / "eve.json"
    path.write_text("\n".join(out) + "\n")
    table, diag = read(path)
    assert table.num_rows == 102 and diag.total_skipped == 0
    rows = table.to_pylist()
    assert all(r["uni"] and r["orient"] is None for r in rows[:100])
    assert rows[0]["flow_id"] == rows[1]["flow_id"]  # both halves carry Suricata's flow_id
    assert (rows[0]["src_pkts"], rows[0]["src_bytes"], rows[0]["dst_pkts"]) == (12, 4056, 0)
    assert (rows[1]["src_ip"], rows[1]["dst_ip"]) == (rows[0]["dst_ip"], rows[0]["src_ip"])
    assert rows[0]["ts_start"] == ts(2021, 6, 6, 14, 38, 55, 855844)
    assert (rows[100]["proto"], rows[100]["src_port"], rows[100]["dst_port"]) == (1, 0, 8 * 256)
    assert (rows[100]["uni"], rows[100]["dst_pkts"]) == (False, 12)
    assert (rows[101]["proto"], rows[101]["dst_port"]) == (58, 135 * 256)


def test_damaged_lines(shared_data: Path, tmp_path: Path) -> None:
    lines = eve_lines(shared_data)
    bad = json.loads(lines[119])  # line 120, the flow with id 2232403389523415
    bad["flow"]["pkts_toserver"] = "two"
    lines[119] = json.dumps(bad).encode()
    bad_time = json.loads(lines[686])  # line 687, the http flow
    bad_time["flow"]["start"] = "yesterday"
    lines[686] = json.dumps(bad_time).encode()
    odd = json.loads(lines[40])  # line 41: an alert with a field of another type is still ignored
    odd["flow_id"] = "not a number"
    lines[40] = json.dumps(odd).encode()
    lines.insert(99, b"{not json at all")  # line 100; the records after it move down one line
    lines.append(lines[95][:70])  # a truncated last line (line 5002)
    path = tmp_path / "eve.json"
    path.write_bytes(b"\n".join(lines))
    table, diag = read(path)
    st = diag.stats(str(path))
    assert st.skipped == {"bad JSON": 2, "bad value": 1, "bad timestamp": 1}
    assert table.num_rows == 3510
    assert table.num_rows + st.skipped_total + sum(st.ignored.values()) == 5002
    assert {i.location: i.reason for i in diag.issues} == {
        "line 100": "bad JSON",
        "line 121": "bad value",
        "line 688": "bad timestamp",
        "line 5002": "bad JSON",
    }


def test_compressed_empty_and_foreign(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "eve.json.gz"
    path.write_bytes(gzip.compress((shared_data / EVE).read_bytes()))
    assert detect_format(path) == "suricata"
    assert read(path)[0].num_rows == 3512
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read(empty)
    with pytest.raises(InputError, match="not Suricata EVE JSON"):
        read(shared_data / "conformance/flow_text_formats/examples/conn.json.log")
    with pytest.raises(InputError, match="not Suricata EVE JSON"):
        read(shared_data / "conformance/flow_text_formats/examples/test.binetflow")
