"""Zeek conn.log readers (TSV and JSON) on real logs and on corrupted copies of them."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.schema import RAW_FLOW_SCHEMA
from flowhawk.sources import detect_format
from flowhawk.sources.base import ReadContext, read_head
from flowhawk.sources.zeek import ZeekJsonSource, ZeekTsvSource

EXAMPLES = "conformance/flow_text_formats/examples"
SCENARIOS = "labeled/stratosphere_scenarios"
SLIPS = "labeled/slips_dataset/dataset_HEAD"


def read(source, path: Path, **ctx_args) -> tuple[pa.Table, Diagnostics]:
    diag = Diagnostics()
    tables = list(source.read(path, ReadContext(diag, **ctx_args)))
    for table in tables:
        assert table.schema == RAW_FLOW_SCHEMA
    table = pa.concat_tables(tables) if tables else RAW_FLOW_SCHEMA.empty_table()
    return table, diag


def stats(diag: Diagnostics, path: Path):
    return diag.stats(str(path))


def row(table: pa.Table, flow_id: str) -> dict:
    rows = [r for r in table.to_pylist() if r["flow_id"] == flow_id]
    assert len(rows) == 1, flow_id
    return rows[0]


def data_lines(path: Path) -> int:
    return sum(
        1 for x in path.read_bytes().split(b"\n") if x.strip() and not x.lstrip().startswith(b"#")
    )


def ts(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------- TSV


def test_conn_tab_log_values(shared_data: Path) -> None:
    path = shared_data / EXAMPLES / "conn.tab.log"
    table, diag = read(ZeekTsvSource(), path)
    assert table.num_rows == 92 == data_lines(path)
    assert diag.total_skipped == 0
    first = row(table, "CtQjy42V2Sc6pX6qf8")
    assert first["ts_start"] == ts(1970, 1, 1, 0, 0, 11, 537757)
    assert first["ts_end"] == first["ts_start"]  # duration unset ("-")
    assert (first["src_ip"], first["src_port"], first["dst_ip"], first["dst_port"]) == (
        "10.0.2.106",
        62364,
        "8.8.8.8",
        53,
    )
    assert first["proto"] == 17
    assert (first["src_pkts"], first["src_bytes"], first["dst_pkts"], first["dst_bytes"]) == (
        1,
        62,
        0,
        0,
    )
    assert (first["service"], first["state"], first["orient"], first["uni"]) == (
        "dns",
        "S0",
        "start",
        False,
    )
    assert first["sampling"] == 1 and first["input"] == str(path)
    second = row(table, "CFA2c43lsoIjrvaurg")
    assert second["ts_end"] == ts(1970, 1, 1, 0, 0, 12, 535122)  # 12.533697 + 0.001425
    assert (second["src_bytes"], second["dst_bytes"]) == (62, 78)  # IP bytes, not payload 34/50
    http = row(table, "CvCAkc3TRsm2WYnoS8")
    assert (http["proto"], http["service"], http["dst_pkts"], http["dst_bytes"]) == (
        6,
        "http",
        504,
        513304,
    )


def test_icmp_type_and_code(shared_data: Path) -> None:
    table, _ = read(ZeekTsvSource(), shared_data / EXAMPLES / "conn.tab.log")
    # ICMPv6 neighbour solicitation: resp_p 136 is the counterpart type, so code 0.
    ns = row(table, "CBVDtj4QMqiJgZauUk")
    assert (ns["proto"], ns["src_port"], ns["dst_port"]) == (58, 0, 135 * 256)
    mld = row(table, "CTXTq947RkciXQljGf")  # type 143, resp_p 0 is the code
    assert (mld["proto"], mld["dst_port"]) == (58, 143 * 256)
    json_table, _ = read(
        ZeekJsonSource(), shared_data / SLIPS / "test13-malicious-dhcpscan-zeek-dir/conn.log"
    )
    exceeded = row(json_table, "C6VlUE4fyYvUJHu3ei")  # IPv4 time exceeded, type 11 code 0
    assert (exceeded["proto"], exceeded["src_port"], exceeded["dst_port"]) == (1, 0, 11 * 256)


def test_labeled_file_extra_columns(shared_data: Path) -> None:
    path = shared_data / SCENARIOS / "008-zeek-mixed/data/conn.log.labeled"
    table, diag = read(ZeekTsvSource(), path)
    assert table.num_rows == 5663 == data_lines(path) and diag.total_skipped == 0
    rec = row(table, "CEL3aLvvNGvO6Ecoa")
    assert rec["ts_start"] == ts(2022, 6, 12, 22, 0, 31, 749548)
    assert rec["ts_end"] == ts(2022, 6, 12, 22, 0, 31, 749558)
    assert (rec["src_ip"], rec["src_port"], rec["dst_ip"], rec["dst_port"], rec["proto"]) == (
        "193.201.9.232",
        46563,
        "147.32.81.167",
        3933,
        6,
    )
    assert (rec["src_pkts"], rec["src_bytes"], rec["state"], rec["service"]) == (2, 80, "S0", None)


def test_labels_do_not_change_flows(shared_data: Path) -> None:
    plain, _ = read(
        ZeekTsvSource(), shared_data / SCENARIOS / "001-zeek-scenario-malicious/conn.log"
    )
    labeled, _ = read(
        ZeekTsvSource(), shared_data / SCENARIOS / "001-zeek-scenario-malicious/labeled-conn.log"
    )
    assert plain.num_rows == labeled.num_rows == 992
    assert plain.drop_columns(["input"]).equals(labeled.drop_columns(["input"]))


@pytest.mark.parametrize(
    "relative, rows",
    [
        (f"{SLIPS}/test10-mixed-zeek-dir/conn.log", 141),  # indented first header, #close
        (f"{SLIPS}/test18-malicious-ctu-sme-11-win/zeek-labeled/conn.log.labeled", 766),
        (f"{SCENARIOS}/010-zeek-mixed/data/conn.log.labeled", None),
        (f"{SCENARIOS}/006-zeek-scenario-ssh/conn.log", 18),
        (f"{SLIPS}/port-scans/horizontal/conn.log", None),
    ],
)
def test_real_tsv_logs(shared_data: Path, relative: str, rows: int | None) -> None:
    path = shared_data / relative
    assert ZeekTsvSource.sniff(read_head(path), path) >= 90
    assert detect_format(path) == "zeek"
    table, diag = read(ZeekTsvSource(), path)
    assert table.num_rows == (rows if rows is not None else data_lines(path))
    assert diag.total_skipped == 0
    assert table.column("flow_id").null_count == 0


def test_other_zeek_logs_are_not_conn(shared_data: Path) -> None:
    for relative in (
        f"{SCENARIOS}/008-zeek-mixed/data/http.log.labeled",
        f"{SLIPS}/test10-mixed-zeek-dir/dns.log",
        f"{SCENARIOS}/006-zeek-scenario-ssh/ssh.log",
        f"{SLIPS}/test9-mixed-zeek-dir/dns.log",
        f"{SLIPS}/test9-mixed-zeek-dir/http.log",
    ):
        path = shared_data / relative
        head = read_head(path)
        assert ZeekTsvSource.sniff(head, path) == 0, relative
        assert ZeekJsonSource.sniff(head, path) == 0, relative
    with pytest.raises(InputError, match="'dns' log, not a conn log"):
        read(ZeekTsvSource(), shared_data / SLIPS / "test10-mixed-zeek-dir/dns.log")
    with pytest.raises(InputError, match="not a Zeek conn log in JSON"):
        read(ZeekJsonSource(), shared_data / SLIPS / "test9-mixed-zeek-dir/dns.log")


def test_wrong_format_forced(shared_data: Path) -> None:
    with pytest.raises(InputError, match="not a Zeek TSV log"):
        read(ZeekTsvSource(), shared_data / EXAMPLES / "test.binetflow")
    with pytest.raises(InputError, match="not a Zeek TSV log"):
        read(ZeekTsvSource(), shared_data / EXAMPLES / "conn.json.log")
    with pytest.raises(InputError, match="not a Zeek conn log in JSON"):
        read(ZeekJsonSource(), shared_data / EXAMPLES / "conn.tab.log")
    with pytest.raises(InputError):
        read(ZeekJsonSource(), shared_data / SLIPS / "test1-malicious.nfdump")


# ---------------------------------------------------------------- TSV, damaged copies


def tsv_lines(shared_data: Path) -> list[bytes]:
    return (shared_data / EXAMPLES / "conn.tab.log").read_bytes().split(b"\n")


def write(tmp_path: Path, name: str, lines: list[bytes]) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines))
    return path


def test_garbage_and_wrong_field_count(shared_data: Path, tmp_path: Path) -> None:
    lines = tsv_lines(shared_data)
    lines.insert(20, b"this is not a zeek record")  # becomes line 21
    lines.insert(30, b"1.0\tCshort\t1.2.3.4")  # line 31, three fields
    path = write(tmp_path, "garbage.log", lines)
    table, diag = read(ZeekTsvSource(), path)
    assert table.num_rows == 92
    assert stats(diag, path).skipped == {"wrong field count": 2}
    locations = [i.location for i in diag.issues]
    assert locations == ["line 21", "line 31"]
    assert "expected 21 fields, found 1" in diag.issues[0].detail
    assert str(path) in str(diag.issues[0])


def test_bad_values_are_located(shared_data: Path, tmp_path: Path) -> None:
    lines = tsv_lines(shared_data)
    fields = lines[10].split(b"\t")  # line 11: ts of a record
    fields[0] = b"yesterday"
    lines[10] = b"\t".join(fields)
    fields = lines[12].split(b"\t")  # line 13: orig_pkts
    fields[16] = b"many"
    lines[12] = b"\t".join(fields)
    fields = lines[14].split(b"\t")  # line 15: empty originator address
    fields[2] = b"-"
    lines[14] = b"\t".join(fields)
    path = write(tmp_path, "values.log", lines)
    table, diag = read(ZeekTsvSource(), path)
    st = stats(diag, path)
    assert st.skipped == {"bad value": 2, "missing address": 1}
    assert table.num_rows + st.skipped_total == 92
    by_line = {i.location: i for i in diag.issues}
    assert "ts='yesterday' is not a number" in by_line["line 11"].detail
    assert "orig_pkts='many'" in by_line["line 13"].detail
    assert by_line["line 15"].reason == "missing address"
    # The rest of the chunk that held the bad values is still read, with its values.
    assert row(table, "CvCAkc3TRsm2WYnoS8")["dst_bytes"] == 513304


def test_truncated_last_line(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / EXAMPLES / "conn.tab.log").read_bytes()
    path = tmp_path / "cut.log"
    path.write_bytes(data[: len(data) - 60])  # cut inside the last record
    table, diag = read(ZeekTsvSource(), path)
    assert table.num_rows == 91
    assert stats(diag, path).skipped == {"wrong field count": 1}
    assert diag.issues[0].location == "line 100"


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open])
def test_compressed(shared_data: Path, tmp_path: Path, opener) -> None:
    src = shared_data / EXAMPLES / "conn.tab.log"
    path = tmp_path / "conn.log.z"
    with opener(path, "wb") as fh:
        fh.write(src.read_bytes())
    plain, _ = read(ZeekTsvSource(), src)
    packed, diag = read(ZeekTsvSource(), path)
    assert ZeekTsvSource.sniff(read_head(path), path) == 95
    assert packed.drop_columns(["input"]).equals(plain.drop_columns(["input"]))
    assert diag.total_skipped == 0


def test_truncated_gzip(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / SCENARIOS / "008-zeek-mixed/data/conn.log.labeled"
    packed = gzip.compress(src.read_bytes())
    path = tmp_path / "cut.log.gz"
    path.write_bytes(packed[: len(packed) // 2])
    table, diag = read(ZeekTsvSource(), path)
    st = stats(diag, path)
    assert 0 < table.num_rows < 5663
    assert st.skipped["truncated compressed data"] == 1
    assert any(
        "offset" in i.location and i.reason == "truncated compressed data" for i in diag.issues
    )


def test_empty_and_header_only(shared_data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read(ZeekTsvSource(), empty)
    header = write(tmp_path, "header.log", tsv_lines(shared_data)[:8])
    table, diag = read(ZeekTsvSource(), header)
    assert table.num_rows == 0 and diag.total_skipped == 0


def test_rotated_logs_concatenated(shared_data: Path, tmp_path: Path) -> None:
    first = (shared_data / EXAMPLES / "conn.tab.log").read_bytes()
    second = (shared_data / SCENARIOS / "008-zeek-mixed/data/conn.log.labeled").read_bytes()
    dns = (shared_data / SLIPS / "test10-mixed-zeek-dir/dns.log").read_bytes()
    path = tmp_path / "joined.log"
    path.write_bytes(first + b"\n" + dns + second + b"\n\n")
    table, diag = read(ZeekTsvSource(), path)
    assert table.num_rows == 92 + 5663
    assert row(table, "CEL3aLvvNGvO6Ecoa")["src_bytes"] == 80  # fields of the second header
    st = stats(diag, path)
    assert st.skipped_total == 0
    assert st.ignored == {
        "Zeek dns log lines": data_lines(shared_data / SLIPS / "test10-mixed-zeek-dir/dns.log")
    }


def test_blank_lines_keep_line_numbers(shared_data: Path, tmp_path: Path) -> None:
    lines = tsv_lines(shared_data)
    lines[20:20] = [b"", b"", b"   "]  # lines 21-23 blank
    lines.insert(40, b"garbage")  # line 41
    path = write(tmp_path, "blank.log", lines)
    table, diag = read(ZeekTsvSource(), path)
    assert table.num_rows == 92
    assert [i.location for i in diag.issues] == ["line 41"]


def test_batches(shared_data: Path) -> None:
    path = shared_data / SCENARIOS / "008-zeek-mixed/data/conn.log.labeled"
    diag = Diagnostics()
    sizes = [t.num_rows for t in ZeekTsvSource().read(path, ReadContext(diag, batch_rows=1000))]
    assert sizes == [1000] * 5 + [663]


# ---------------------------------------------------------------- JSON


def test_conn_json_values(shared_data: Path) -> None:
    path = shared_data / EXAMPLES / "conn.json.log"
    assert detect_format(path) == "zeek-json"
    table, diag = read(ZeekJsonSource(), path)
    assert table.num_rows == 1000 and diag.total_skipped == 0
    rec = row(table, "C3WyfA1myV4y2yDfi3")
    assert rec["ts_start"] == ts(2021, 7, 14, 17, 43, 45, 656299)
    assert rec["ts_end"] == ts(2021, 7, 14, 17, 43, 45, 894103)  # + 0.23780393600463868
    assert (rec["src_ip"], rec["src_port"], rec["dst_ip"], rec["dst_port"], rec["proto"]) == (
        "192.168.1.128",
        59241,
        "172.217.23.206",
        443,
        6,
    )
    assert (rec["src_pkts"], rec["src_bytes"], rec["dst_pkts"], rec["dst_bytes"]) == (
        15,
        2519,
        14,
        9556,
    )
    assert (rec["service"], rec["state"], rec["orient"]) == ("ssl", "SF", "start")
    small, _ = read(ZeekJsonSource(), shared_data / EXAMPLES / "conn.json.small.log")
    assert small.num_rows == 100
    assert small.drop_columns(["input"]).equals(table.slice(0, 100).drop_columns(["input"]))


@pytest.mark.parametrize(
    "relative, rows",
    [
        (f"{SCENARIOS}/002-zeek-scenario-port-scanning/conn.log", 4504),
        (f"{SLIPS}/test9-mixed-zeek-dir/conn.log", 576),
        (f"{SLIPS}/port-scans/vertical/conn.log", None),
    ],
)
def test_real_json_logs(shared_data: Path, relative: str, rows: int | None) -> None:
    path = shared_data / relative
    assert detect_format(path) == "zeek-json"
    table, diag = read(ZeekJsonSource(), path)
    assert table.num_rows == (rows or data_lines(path)) and diag.total_skipped == 0


def test_json_macs(shared_data: Path) -> None:
    table, _ = read(ZeekJsonSource(), shared_data / SLIPS / "test14-malicious-zeek-dir/conn.log")
    assert table.num_rows == 5
    first = table.to_pylist()[0]
    assert (first["src_mac"], first["dst_mac"], first["state"]) == (
        "08:00:27:ef:ee:34",
        "33:33:00:01:00:02",
        "REJ",
    )


def json_lines(shared_data: Path) -> list[bytes]:
    return (shared_data / EXAMPLES / "conn.json.small.log").read_bytes().rstrip(b"\n").split(b"\n")


def test_json_garbage_lines(shared_data: Path, tmp_path: Path) -> None:
    lines = json_lines(shared_data)
    lines.insert(10, b"garbage that is not json")  # line 11
    lines.insert(50, b'{"ts": 1626284618.1, "uid": "Cbad", "id.orig_h"')  # line 51, cut
    lines.insert(60, b"[1, 2, 3]")  # line 61
    bad_type = json.loads(lines[70])
    bad_type["orig_pkts"] = "lots"
    lines[70] = json.dumps(bad_type).encode()  # line 71
    lines.append(lines[5][:40])  # truncated last line: line 104
    path = write(tmp_path, "conn.json", lines)
    table, diag = read(ZeekJsonSource(), path)
    st = stats(diag, path)
    assert st.skipped == {"bad JSON": 4, "bad value": 1}
    assert table.num_rows == 99 and table.num_rows + st.skipped_total == 104
    by_line = {i.location: i for i in diag.issues}
    assert set(by_line) == {"line 11", "line 51", "line 61", "line 71", "line 104"}
    assert by_line["line 71"].reason == "bad value" and "orig_pkts" in by_line["line 71"].detail
    assert "not a JSON object" in by_line["line 61"].detail


def test_json_layout_variants(shared_data: Path, tmp_path: Path) -> None:
    """Nested ids, ISO 8601 times and other _path records give the same flows."""
    lines = json_lines(shared_data)
    variants = []
    for text in lines:
        rec = json.loads(text)
        rec["id"] = {k: rec.pop(f"id.{k}") for k in ("orig_h", "orig_p", "resp_h", "resp_p")}
        when = datetime.fromtimestamp(rec["ts"], UTC)
        rec["ts"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rec["_path"] = "conn"
        variants.append(json.dumps(rec).encode())
    variants.insert(
        3, b'{"_path": "dns", "ts": "2021-07-14T17:43:38Z", "uid": "Cdns", "query": "x"}'
    )
    path = write(tmp_path, "nested.json", [*variants, b""])
    table, diag = read(ZeekJsonSource(), path)
    plain, _ = read(ZeekJsonSource(), shared_data / EXAMPLES / "conn.json.small.log")
    assert table.drop_columns(["input"]).equals(plain.drop_columns(["input"]))
    assert stats(diag, path).ignored == {"Zeek dns records": 1}


def test_json_compressed_and_empty(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / EXAMPLES / "conn.json.log"
    path = tmp_path / "conn.json.gz"
    path.write_bytes(gzip.compress(src.read_bytes()))
    assert detect_format(path) == "zeek-json"
    table, _ = read(ZeekJsonSource(), path)
    assert table.num_rows == 1000
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    table, diag = read(ZeekJsonSource(), cut)
    assert 0 < table.num_rows < 1000
    assert stats(diag, cut).skipped["truncated compressed data"] == 1
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"\n")
    with pytest.raises(InputError, match="empty"):
        read(ZeekJsonSource(), empty)
