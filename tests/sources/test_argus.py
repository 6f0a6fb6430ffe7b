"""Argus / Stratosphere binetflow reader on real files and on damaged copies of them."""

from __future__ import annotations

import gzip
import lzma
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.schema import RAW_FLOW_SCHEMA
from flowhawk.sources import detect_format
from flowhawk.sources.argus import ArgusSource
from flowhawk.sources.base import ReadContext, read_head

EXAMPLES = "conformance/flow_text_formats/examples"
SLIPS = "labeled/slips_dataset/dataset_HEAD"
HISTORICAL = "labeled/slips_dataset/historical_43250dbc"


def read(path: Path, **ctx_args) -> tuple[pa.Table, Diagnostics]:
    diag = Diagnostics()
    tables = list(ArgusSource().read(path, ReadContext(diag, **ctx_args)))
    for table in tables:
        assert table.schema == RAW_FLOW_SCHEMA
    return (pa.concat_tables(tables) if tables else RAW_FLOW_SCHEMA.empty_table()), diag


def records(path: Path) -> int:
    return sum(1 for x in path.read_bytes().split(b"\n")[1:] if x.strip())


def ts(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def by_id(table: pa.Table, flow_id: int) -> dict:
    return next(r for r in table.to_pylist() if r["flow_id"] == str(flow_id))


def test_csv_binetflow_values(shared_data: Path) -> None:
    path = shared_data / EXAMPLES / "test.binetflow"
    assert ArgusSource.sniff(read_head(path), path) == 90
    assert detect_format(path) == "argus"
    table, diag = read(path)
    st = diag.stats(str(path))
    assert st.ignored == {"non-IP records (arp)": 6, "non-IP records (llc)": 2}
    assert st.skipped_total == 0 and table.num_rows + 8 == records(path) == 99
    dhcp6 = by_id(table, 3)  # record 3: the first IP record, after llc and two arp
    assert dhcp6["ts_start"] == ts(1970, 1, 1, 1, 0, 7, 312459)
    assert dhcp6["ts_end"] == ts(1970, 1, 1, 1, 0, 31, 356080)  # + 24.043621
    assert (
        dhcp6["src_ip"],
        dhcp6["src_port"],
        dhcp6["dst_ip"],
        dhcp6["dst_port"],
        dhcp6["proto"],
    ) == ("fe80::bd10:6b72:4b79:af3b", 546, "ff02::1:2", 547, 17)
    # No SrcPkts column: 9 packets, all 1460 bytes from the source.
    assert (dhcp6["src_pkts"], dhcp6["src_bytes"], dhcp6["dst_pkts"], dhcp6["dst_bytes"]) == (
        9,
        1460,
        0,
        0,
    )
    assert (dhcp6["orient"], dhcp6["state"], dhcp6["uni"]) == ("start", "INT", False)
    tls = next(r for r in table.to_pylist() if r["state"] == "FSPA_FSA")
    # 9 packets, 801 bytes, 555 from the source: packets split by bytes, round(9*555/801) = 6.
    assert (tls["src_pkts"], tls["src_bytes"], tls["dst_pkts"], tls["dst_bytes"]) == (
        6,
        555,
        3,
        246,
    )


def test_tab_separated(shared_data: Path) -> None:
    path = shared_data / EXAMPLES / "test5.tabs.binetflow"
    assert detect_format(path) == "argus"
    table, diag = read(path)
    st = diag.stats(str(path))
    assert st.ignored == {
        "non-IP records (man)": 1,
        "non-IP records (llc)": 1,
        "non-IP records (arp)": 2,
    }
    assert table.num_rows + 4 == records(path) == 6725 and st.skipped_total == 0
    dhcp = by_id(table, 3)
    assert (dhcp["src_ip"], dhcp["dst_ip"], dhcp["src_pkts"], dhcp["dst_pkts"]) == (
        "10.0.2.2",
        "10.0.2.15",
        3,
        0,
    )


def test_icmp_ports_and_direction(shared_data: Path) -> None:
    table, _ = read(shared_data / SLIPS / "test2-malicious.binetflow")
    frag = by_id(table, 30)  # line 32: icmp 0x0403 URF (type 3 code 4)
    assert (frag["proto"], frag["src_port"], frag["dst_port"], frag["state"]) == (
        1,
        0,
        3 * 256 + 4,
        "URF",
    )
    assert (frag["src_pkts"], frag["src_bytes"], frag["dst_pkts"]) == (96, 55296, 0)
    dns = by_id(table, 0)
    assert dns["orient"] == "start"  # "<->"
    assert (dns["src_pkts"], dns["src_bytes"], dns["dst_pkts"], dns["dst_bytes"]) == (1, 63, 1, 79)


def test_uncertain_direction_and_packet_split(shared_data: Path) -> None:
    table, diag = read(shared_data / SLIPS / "test4-malicious.binetflow")
    ssh = by_id(table, 0)  # "<?>": direction unknown, left to the normalizer
    assert ssh["orient"] is None
    assert ssh["ts_start"] == ts(2018, 9, 27, 22, 40, 52, 362768)
    # 35 packets, 3766 bytes, 1224 from the source: round(35 * 1224 / 3766) = 11.
    assert (ssh["src_pkts"], ssh["src_bytes"], ssh["dst_pkts"], ssh["dst_bytes"]) == (
        11,
        1224,
        24,
        2542,
    )
    assert diag.stats(str(shared_data / SLIPS / "test4-malicious.binetflow")).ignored == {
        "non-IP records (arp)": 2
    }


def test_no_source_counters(shared_data: Path) -> None:
    path = shared_data / HISTORICAL / "Normal/2013-10-21_capture-1.binetflow"
    table, _ = read(path)
    first = by_id(table, 0)  # TotPkts 448, TotBytes 49634, no split given: all to the source
    assert (first["src_pkts"], first["src_bytes"], first["dst_pkts"], first["dst_bytes"]) == (
        448,
        49634,
        0,
        0,
    )
    assert table.num_rows + 18 == records(path)


def test_corrupted_direction_field(shared_data: Path) -> None:
    table, diag = read(shared_data / SLIPS / "test3-mixed.binetflow")
    odd = by_id(table, 56)  # line 58: Dir is " get_message  ->"
    assert (odd["src_ip"], odd["dst_port"], odd["orient"]) == ("14.225.3.37", 23, "start")
    assert table.num_rows == 89 and diag.total_skipped == 0


@pytest.mark.parametrize(
    "relative",
    [
        f"{SLIPS}/test11-portscan.binetflow",
        f"{SLIPS}/test5-mixed.binetflow",
        f"{HISTORICAL}/test-sality.binetflow",
        f"{HISTORICAL}/Malicious/2016-09-09_win1.binetflow",
        f"{HISTORICAL}/Malicious/CTU-Malware-Capture-Botnet-207-1",
        f"{HISTORICAL}/Normal/2015-03-24_capture1-only-dns.binetflow",
        f"{HISTORICAL}/Normal/CTU-Normal-7-2013-13-07.binetflow",
    ],
)
def test_real_files_add_up(shared_data: Path, relative: str) -> None:
    path = shared_data / relative
    assert detect_format(path) == "argus"
    table, diag = read(path)
    st = diag.stats(str(path))
    assert st.skipped_total == 0
    assert table.num_rows + sum(st.ignored.values()) == records(path)
    assert table["flow_id"].null_count == 0


def lines_of(shared_data: Path) -> list[bytes]:
    return (shared_data / SLIPS / "test4-malicious.binetflow").read_bytes().split(b"\n")


def write(tmp_path: Path, lines: list[bytes], name: str = "f.binetflow") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines))
    return path


def test_reversed_direction_swaps(shared_data: Path, tmp_path: Path) -> None:
    lines = lines_of(shared_data)
    lines[2] = lines[2].replace(b"  <->", b"   <-")  # record 1: udp 192.168.2.12 -> .1:53
    table, _ = read(write(tmp_path, lines))
    rec = by_id(table, 1)
    assert (rec["src_ip"], rec["src_port"], rec["dst_ip"], rec["dst_port"]) == (
        "192.168.2.1",
        53,
        "192.168.2.12",
        56343,
    )
    assert (rec["src_bytes"], rec["dst_bytes"], rec["orient"]) == (136, 72, "start")


def test_damaged_copy(shared_data: Path, tmp_path: Path) -> None:
    lines = lines_of(shared_data)
    lines[4] = b"not,an,argus,record"  # line 5
    lines[6] = lines[6].replace(b"2018/09/27", b"2018/27/09")  # line 7
    fields = lines[8].split(b",")  # line 9: TotBytes
    fields[12] = b"lots"
    lines[8] = b",".join(fields)
    fields = lines[10].split(b",")  # line 11: no source address
    fields[3] = b""
    lines[10] = b",".join(fields)
    lines[-2] = lines[-2][:25]  # the last record cut short (line 395)
    path = write(tmp_path, lines)
    table, diag = read(path)
    st = diag.stats(str(path))
    assert st.skipped == {
        "wrong field count": 2,
        "bad timestamp": 1,
        "bad value": 1,
        "missing address": 1,
    }
    assert table.num_rows + st.skipped_total + sum(st.ignored.values()) == 394
    where = {i.location: i.reason for i in diag.issues}
    assert where == {
        "line 5": "wrong field count",
        "line 7": "bad timestamp",
        "line 9": "bad value",
        "line 11": "missing address",
        "line 395": "wrong field count",
    }


def test_compressed_timezone_and_formats(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / SLIPS / "test4-malicious.binetflow"
    plain, _ = read(src)
    for name, pack in (("f.gz", gzip.compress), ("f.xz", lzma.compress)):
        path = tmp_path / name
        path.write_bytes(pack(src.read_bytes()))
        assert detect_format(path) == "argus"
        assert read(path)[0].drop_columns(["input"]).equals(plain.drop_columns(["input"]))
    prague, _ = read(src, options={"timezone": "Europe/Prague"})
    assert by_id(prague, 0)["ts_start"] == ts(2018, 9, 27, 20, 40, 52, 362768)  # CEST = UTC+2
    lines = src.read_bytes().split(b"\n")
    epoch = [lines[0]] + [epoch_line(x) for x in lines[1:6]]  # as "ra -u" prints them
    table, diag = read(write(tmp_path, epoch, "epoch.binetflow"))
    assert diag.total_skipped == 0 and by_id(table, 0)["ts_start"] == by_id(plain, 0)["ts_start"]


def epoch_line(line: bytes) -> bytes:
    start, rest = line.split(b",", 1)
    when = datetime.strptime(start.decode(), "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=UTC)
    return f"{when.timestamp():.6f}".encode() + b"," + rest


def test_not_argus(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an Argus title line"):
        read(shared_data / EXAMPLES / "conn.tab.log")
    empty = tmp_path / "empty.binetflow"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read(empty)
    header = write(tmp_path, lines_of(shared_data)[:1], "header.binetflow")
    table, diag = read(header)
    assert table.num_rows == 0 and diag.total_skipped == 0
    assert ArgusSource.sniff(read_head(shared_data / EXAMPLES / "nfcapd.sample1"), Path("x")) == 0
