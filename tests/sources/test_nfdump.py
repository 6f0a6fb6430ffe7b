"""nfdump readers: binary nfcapd files through the real nfdump program, its csv and
text outputs (produced here by the same program from real captures), and damaged
copies of them."""

from __future__ import annotations

import bz2
import gzip
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError, MissingToolError
from flowhawk.schema import RAW_FLOW_SCHEMA
from flowhawk.sources import detect_format
from flowhawk.sources.base import ReadContext, read_head
from flowhawk.sources.nfdump import NfdumpBinarySource, NfdumpCsvSource, NfdumpTextSource

EXAMPLES = "conformance/flow_text_formats/examples"
NFCAPD = "labeled/slips_dataset/dataset_HEAD/test1-malicious.nfdump"
ALL = (NfdumpBinarySource, NfdumpCsvSource, NfdumpTextSource)


def read(source, path: Path, **ctx_args) -> tuple[pa.Table, Diagnostics]:
    diag = Diagnostics()
    tables = list(source.read(path, ReadContext(diag, **ctx_args)))
    for table in tables:
        assert table.schema == RAW_FLOW_SCHEMA
    return (pa.concat_tables(tables) if tables else RAW_FLOW_SCHEMA.empty_table()), diag


def nfdump(tmp_path: Path, name: str, *args: str) -> Path:
    """Save what the installed nfdump prints (times in UTC) to a file."""
    out = tmp_path / name
    env = {"TZ": "UTC", "PATH": "/usr/bin:/bin"}
    out.write_bytes(
        subprocess.run(["nfdump", *args], check=True, capture_output=True, env=env).stdout
    )
    return out


def capture(tmp_path: Path, pcap: Path) -> Path:
    """An nfcapd file made by nfpcapd from a real capture."""
    out = tmp_path / pcap.stem
    out.mkdir()
    subprocess.run(["nfpcapd", "-r", str(pcap), "-w", str(out)], check=True, capture_output=True)
    files = sorted(p for p in out.iterdir() if p.name.startswith("nfcapd."))
    return max(files, key=lambda p: p.stat().st_size)


def ts(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------- binary


def test_binary_values(shared_data: Path) -> None:
    path = shared_data / NFCAPD
    assert [c.sniff(read_head(path), path) for c in ALL] == [100, 0, 0]
    assert detect_format(path) == "nfdump"
    table, diag = read(NfdumpBinarySource(), path)
    # nfdump's own summary for this file: 4593 flows, 241025 bytes, 4652 packets.
    assert table.num_rows == 4593 and diag.total_skipped == 0
    assert pc.sum(table["src_bytes"]).as_py() == 241025
    assert pc.sum(table["src_pkts"]).as_py() == 4652
    first, second = table.slice(0, 2).to_pylist()
    assert first["ts_start"] == first["ts_end"] == ts(2018, 1, 12, 15, 37, 30, 942000)
    assert (
        first["src_ip"],
        first["src_port"],
        first["dst_ip"],
        first["dst_port"],
        first["proto"],
    ) == ("147.32.80.119", 52324, "147.32.82.62", 902, 6)
    assert (first["src_pkts"], first["src_bytes"], first["dst_pkts"], first["dst_bytes"]) == (
        1,
        60,
        0,
        0,
    )
    assert first["src_tcp_flags"] == 0x02 and second["src_tcp_flags"] == 0x14  # SYN; ACK+RST
    assert (first["uni"], first["orient"], first["exporter"], first["flow_id"]) == (
        True,
        None,
        "147.32.82.62",
        "0",
    )
    assert second["flow_id"] == "1"


def test_binary_icmp_and_ipv6(shared_data: Path, tmp_path: Path) -> None:
    icmp_file = capture(tmp_path, shared_data / "conformance/dpkt_pcaps/dns_icmp.pcap")
    table, _ = read(NfdumpBinarySource(), icmp_file)
    echo = [r for r in table.to_pylist() if r["proto"] == 1]
    assert {(r["src_port"], r["dst_port"]) for r in echo} == {
        (0, 8 * 256),
        (0, 0),
    }  # request, reply
    assert echo[0]["ts_start"] == ts(2013, 5, 30, 22, 45, 17, 283000)
    v6_file = capture(tmp_path, shared_data / "conformance/ndpi_pcaps/pcap/http_ipv6.pcap")
    table, diag = read(NfdumpBinarySource(), v6_file)
    assert diag.total_skipped == 0
    assert (
        "2a00:d40:1:3:7aac:c0ff:fea7:d4c" in table["dst_ip"].to_pylist()
    )  # full, not "2a00:d4..ea7:d4c"


def test_binary_compressed(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "capture.nfcapd.gz"
    path.write_bytes(gzip.compress((shared_data / NFCAPD).read_bytes()))
    assert detect_format(path) == "nfdump"
    table, _ = read(NfdumpBinarySource(), path)
    plain, _ = read(NfdumpBinarySource(), shared_data / NFCAPD)
    assert table.drop_columns(["input"]).equals(plain.drop_columns(["input"]))


def test_binary_damaged(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / NFCAPD).read_bytes()
    cut = tmp_path / "cut.nfcapd"
    cut.write_bytes(data[:200_000])  # the file's one data block is cut short
    with pytest.raises(InputError, match=r"nfdump could not read it: .*Short read"):
        read(NfdumpBinarySource(), cut)
    header_only = tmp_path / "header.nfcapd"
    header_only.write_bytes(data[:300] + bytes(range(256)) * 8)
    with pytest.raises(InputError, match="nfdump could not read it"):
        read(NfdumpBinarySource(), header_only)
    with pytest.raises(InputError, match="not an nfdump capture file"):
        read(NfdumpBinarySource(), shared_data / EXAMPLES / "nfcapd.sample1")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="not an nfdump capture file"):
        read(NfdumpBinarySource(), empty)


def test_binary_needs_nfdump(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError, match="apt-get install nfdump"):
        read(NfdumpBinarySource(), shared_data / NFCAPD)


# ---------------------------------------------------------------- csv


def test_csv_values(shared_data: Path, tmp_path: Path) -> None:
    path = nfdump(tmp_path, "flows.csv", "-r", str(shared_data / NFCAPD), "-o", "csv")
    assert [c.sniff(read_head(path), path) for c in ALL] == [0, 95, 0]
    table, diag = read(NfdumpCsvSource(), path)
    assert table.num_rows == 4593 and diag.total_skipped == 0  # the Summary trailer is no record
    assert pc.sum(table["src_bytes"]).as_py() == 241025
    first = table.to_pylist()[0]
    assert first["ts_start"] == ts(2018, 1, 12, 15, 37, 30)  # nfdump 1.7 csv: whole seconds
    assert (first["src_ip"], first["dst_port"], first["proto"], first["src_tcp_flags"]) == (
        "147.32.80.119",
        902,
        6,
        2,
    )
    assert (first["exporter"], first["uni"], first["flow_id"]) == ("147.32.82.62", True, "0")
    local, _ = read(NfdumpCsvSource(), path, options={"timezone": "Europe/Prague"})
    assert local.to_pylist()[0]["ts_start"] == ts(2018, 1, 12, 14, 37, 30)


def test_csv_icmp(shared_data: Path, tmp_path: Path) -> None:
    icmp_file = capture(tmp_path, shared_data / "conformance/dpkt_pcaps/dns_icmp.pcap")
    path = nfdump(tmp_path, "icmp.csv", "-r", str(icmp_file), "-o", "csv")
    table, _ = read(NfdumpCsvSource(), path)
    echo = [r for r in table.to_pylist() if r["proto"] == 1]
    assert {(r["src_port"], r["dst_port"]) for r in echo} == {(0, 2048), (0, 0)}


def test_csv_damaged(shared_data: Path, tmp_path: Path) -> None:
    lines = (
        nfdump(tmp_path, "f.csv", "-r", str(shared_data / NFCAPD), "-o", "csv")
        .read_bytes()
        .split(b"\n")
    )
    lines[5] = b"garbage"  # line 6
    fields = lines[9].split(b",")  # line 10
    fields[0] = b"2018-13-45 99:00:00"
    lines[9] = b",".join(fields)
    fields = lines[11].split(b",")  # line 12: ipkt
    fields[11] = b"one"
    lines[11] = b",".join(fields)
    path = tmp_path / "damaged.csv"
    path.write_bytes(b"\n".join(lines[:-5]) + b"\n" + lines[-5][:30])  # last record cut, no summary
    table, diag = read(NfdumpCsvSource(), path)
    st = diag.stats(str(path))
    assert st.skipped == {"wrong field count": 2, "bad timestamp": 1, "bad value": 1}
    assert table.num_rows + st.skipped_total == 4593
    assert {i.location for i in diag.issues} == {
        "line 6",
        "line 10",
        "line 12",
        f"line {len(lines) - 4}",
    }
    gz = tmp_path / "damaged.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read(NfdumpCsvSource(), gz)[0].num_rows == table.num_rows
    quiet = nfdump(tmp_path, "q.csv", "-q", "-r", str(shared_data / NFCAPD), "-o", "csv")
    with pytest.raises(InputError, match="line 1 is not an nfdump csv header"):
        read(NfdumpCsvSource(), quiet)
    with pytest.raises(InputError, match="not an nfdump csv header"):
        read(NfdumpCsvSource(), shared_data / EXAMPLES / "test.binetflow")


# ---------------------------------------------------------------- text


def test_text_samples(shared_data: Path) -> None:
    path = shared_data / EXAMPLES / "nfcapd.sample1"
    assert [c.sniff(read_head(path), path) for c in ALL] == [0, 0, 90]
    assert detect_format(path) == "nfdump-text"
    table, diag = read(NfdumpTextSource(), path)
    assert table.num_rows == 35 and diag.total_skipped == 0
    first = table.to_pylist()[0]
    assert first["ts_start"] == ts(2013, 7, 9, 1, 0, 23, 40000)
    assert first["ts_end"] == ts(2013, 7, 9, 1, 0, 23, 68000)  # + 0.028 s
    assert (
        first["src_ip"],
        first["src_port"],
        first["dst_ip"],
        first["dst_port"],
        first["proto"],
    ) == ("8.8.8.8", 53, "10.0.0.150", 49058, 17)
    assert (first["src_pkts"], first["src_bytes"], first["uni"], first["flow_id"]) == (
        1,
        126,
        True,
        "0",
    )
    tcp = next(r for r in table.to_pylist() if r["proto"] == 6)
    assert tcp["src_tcp_flags"] == 0x1B  # ".AP.SF"
    labeled, diag = read(NfdumpTextSource(), shared_data / EXAMPLES / "nfcapd.sample1.labeled")
    assert diag.total_skipped == 0
    # Same flows (the labeler wrote IGMP addresses as 10.0.0.150:0:0, read as port 0).
    assert labeled.drop_columns(["input"]).equals(table.drop_columns(["input"]))
    sample2, diag = read(NfdumpTextSource(), shared_data / EXAMPLES / "nfcapd.sample2")
    assert sample2.num_rows == 167 and diag.total_skipped == 0
    assert sample2.to_pylist()[0]["src_tcp_flags"] == 0x1E  # ".APRS."


@pytest.mark.parametrize("fmt", ["line", "long", "extended"])
def test_text_from_nfdump_matches_binary(shared_data: Path, tmp_path: Path, fmt: str) -> None:
    path = nfdump(tmp_path, f"{fmt}.txt", "-r", str(shared_data / NFCAPD), "-o", fmt)
    assert detect_format(path) == "nfdump-text"
    table, diag = read(NfdumpTextSource(), path)
    binary, _ = read(NfdumpBinarySource(), shared_data / NFCAPD)
    assert diag.total_skipped == 0
    same = [
        "ts_start",
        "ts_end",
        "src_ip",
        "dst_ip",
        "src_port",
        "dst_port",
        "proto",
        "src_bytes",
        "flow_id",
    ]
    assert table.select(same).equals(binary.select(same))


def test_text_units_days_and_ipv6(shared_data: Path, tmp_path: Path) -> None:
    big = capture(tmp_path, shared_data / "conformance/ndpi_pcaps/pcap/1kxun.pcap").parent
    agg = nfdump(tmp_path, "agg.txt", "-R", str(big), "-a", "-A", "proto", "-o", "line")
    table, diag = read(NfdumpTextSource(), agg)
    tcp = next(r for r in table.to_pylist() if r["proto"] == 6)
    assert tcp["src_bytes"] == 2_400_000  # printed "2.4 M"
    assert (tcp["ts_end"] - tcp["ts_start"]).days == 2132  # printed "2132d 21:07:41.068"
    v6 = capture(tmp_path, shared_data / "conformance/ndpi_pcaps/pcap/http_ipv6.pcap")
    short = nfdump(tmp_path, "v6.txt", "-r", str(v6), "-o", "line")
    table, diag = read(NfdumpTextSource(), short)
    st = diag.stats(str(short))
    assert table.num_rows == 0 and st.skipped == {"abbreviated IPv6 address": 30}
    assert "-o line6" in diag.issues[0].detail
    full = nfdump(tmp_path, "v6full.txt", "-r", str(v6), "-o", "line6")
    table, diag = read(NfdumpTextSource(), full)
    binary, _ = read(NfdumpBinarySource(), v6)
    assert table.num_rows == 30 and table["src_ip"].equals(binary["src_ip"])


def test_text_damaged(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / EXAMPLES / "nfcapd.sample2").read_bytes().split(b"\n")
    lines.insert(10, b"garbage here")  # line 11
    lines[20] = lines[20].replace(b"2013-07-09", b"2013-19-09")  # line 21
    lines.append(lines[5][:30])  # truncated record at the end
    path = tmp_path / "sample.txt"
    path.write_bytes(b"\n".join(lines))
    table, diag = read(NfdumpTextSource(), path)
    st = diag.stats(str(path))
    assert st.skipped == {"unparseable line": 2, "bad timestamp": 1}
    assert table.num_rows + st.skipped_total == 167 + 2
    assert [i.location for i in diag.issues][:2] == ["line 11", f"line {len(lines)}"]
    bz = tmp_path / "sample.txt.bz2"
    bz.write_bytes(bz2.compress(path.read_bytes()))
    assert read(NfdumpTextSource(), bz)[0].num_rows == table.num_rows
    header = tmp_path / "header.txt"
    header.write_bytes(lines[0] + b"\n")
    assert read(NfdumpTextSource(), header)[0].num_rows == 0
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read(NfdumpTextSource(), empty)
    with pytest.raises(InputError, match="not an nfdump text header"):
        read(NfdumpTextSource(), shared_data / EXAMPLES / "conn.tab.log")
