"""The pcap/pcapng sources: the Source contract, tables, diagnostics, windows, real captures."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import ConfigError, InputError
from flowhawk.schema import RAW_FLOW_SCHEMA
from flowhawk.sources import load_source
from flowhawk.sources.base import ReadContext
from flowhawk.sources.pcap.source import PcapngSource, PcapSource, read_capture
from tests.sources.pcap import (
    ACK,
    FIN,
    SYN,
    eth,
    icmp,
    ip4,
    ip6,
    ng_epb,
    ng_idb,
    ng_shb,
    pcap,
    tcp,
    udp,
)

NDPI = "conformance/ndpi_pcaps/pcap"
SLIPS = "labeled/slips_dataset/dataset_HEAD"


def read(
    path: Path, options: dict | None = None, window: int | None = None, batch_rows: int = 1_000_000
) -> tuple[pa.Table, Diagnostics]:
    ctx = ReadContext(Diagnostics(), options=options or {}, batch_rows=batch_rows)
    if window is None:
        tables = list(PcapSource().read(path, ctx))
    else:
        tables = list(read_capture(path, ctx, "pcap", window=window))
    for t in tables:
        assert t.schema == RAW_FLOW_SCHEMA
    table = pa.concat_tables(tables) if tables else RAW_FLOW_SCHEMA.empty_table()
    return table, ctx.diagnostics


def handshake_capture() -> bytes:
    c, s = "192.0.2.1", "198.51.100.7"
    return pcap(
        [
            (10.0, eth(ip4(c, s, 6, tcp(40000, 80, SYN)))),
            (10.1, eth(ip4(s, c, 6, tcp(80, 40000, SYN | ACK)))),
            (10.2, eth(ip4(c, s, 6, tcp(40000, 80, ACK | FIN, b"x" * 10)))),
            (10.3, eth(ip4(s, c, 6, tcp(80, 40000, ACK | FIN)))),
            (11.0, eth(ip4(s, c, 6, tcp(80, 40001, ACK)))),  # mid-connection: no start seen
            (12.0, eth(ip4("10.0.0.1", "10.0.0.2", 17, udp(5353, 53, b"q")), vlans=[(0x8100, 12)])),
            (12.5, eth(ip6("2001:db8::1", "2001:db8::2", 58, icmp(128, 0)), 0x86DD)),
            (13.0, eth(b"\x00" * 28, 0x0806)),  # ARP: ignored
        ]
    )


def test_registry_and_sniff(tmp_path: Path) -> None:
    assert load_source("pcap") is PcapSource and load_source("pcapng") is PcapngSource
    f = tmp_path / "x.cap"
    ng = ng_shb() + ng_idb(1)
    assert PcapSource.sniff(handshake_capture()[:64], f) == 100
    assert PcapSource.sniff(ng, f) == 0 and PcapngSource.sniff(ng, f) == 100
    assert PcapngSource.sniff(handshake_capture(), f) == 0
    assert PcapSource.sniff(b"ts,te,sa,da\n", f) == PcapngSource.sniff(b"", f) == 0


def test_flow_table_columns(tmp_path: Path) -> None:
    path = tmp_path / "hs.pcap"
    path.write_bytes(handshake_capture())
    table, diag = read(path)
    rows = table.to_pylist()
    assert [r["flow_id"] for r in rows] == [str(i) for i in range(len(rows))]
    by_port = {r["dst_port"]: r for r in rows}
    web = by_port[80]
    assert (web["src_ip"], web["dst_ip"], web["src_port"], web["proto"]) == (
        "192.0.2.1",
        "198.51.100.7",
        40000,
        6,
    )
    assert (web["src_pkts"], web["src_bytes"], web["dst_pkts"], web["dst_bytes"]) == (2, 90, 2, 80)
    assert (web["src_tcp_flags"], web["dst_tcp_flags"]) == (SYN | ACK | FIN, SYN | ACK | FIN)
    assert web["orient"] == "start" and web["vlan"] is None
    assert (web["src_mac"], web["dst_mac"]) == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    assert web["ts_start"].timestamp() == 10.0 and web["ts_end"].timestamp() == pytest.approx(10.3)
    mid = by_port[40001]  # first sender kept as src, orientation left to the normalizer
    assert (mid["src_ip"], mid["src_port"], mid["orient"]) == ("198.51.100.7", 80, None)
    dns = by_port[53]
    assert (dns["vlan"], dns["src_tcp_flags"], dns["orient"]) == (12, None, "start")
    assert dns["src_bytes"] == 29
    ping = by_port[128 * 256]
    assert (ping["src_ip"], ping["src_port"], ping["proto"]) == ("2001:db8::1", 0, 58)
    assert all(r["uni"] is False and r["sampling"] == 1 and r["input"] == str(path) for r in rows)
    stats = diag.inputs[str(path)]
    assert (stats.format, stats.packets) == ("pcap", 7)
    assert stats.ignored == {"non-IP packet": 1} and stats.skipped_total == 0


def test_timeouts_come_from_options(tmp_path: Path) -> None:
    path = tmp_path / "u.pcap"
    frame = eth(ip4("1.1.1.1", "2.2.2.2", 17, udp(1, 2)))
    path.write_bytes(pcap([(t, frame) for t in (0, 20, 50)]))
    assert read(path)[0].num_rows == 1
    assert read(path, {"idle_timeout": 25})[0].num_rows == 2
    assert read(path, {"idle_timeout": "10", "active_timeout": 5.5})[0].num_rows == 3
    for bad in ({"idle_timeout": 0}, {"tcp_idle_timeout": "soon"}):
        with pytest.raises(ConfigError):
            read(path, bad)


def test_not_a_capture_or_missing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("not a capture at all, really\n")
    with pytest.raises(InputError, match="not a pcap"):
        read(tmp_path / "a.txt")
    (tmp_path / "empty.pcap").write_bytes(b"")
    with pytest.raises(InputError):
        read(tmp_path / "empty.pcap")
    with pytest.raises(InputError, match="cannot open"):
        read(tmp_path / "missing.pcap")


def test_header_only_capture_has_no_flows(tmp_path: Path) -> None:
    (tmp_path / "h.pcap").write_bytes(pcap([]))
    table, diag = read(tmp_path / "h.pcap")
    assert table.num_rows == 0 and diag.total_skipped == 0


def test_corrupt_record_keeps_what_came_before(tmp_path: Path) -> None:
    good = pcap([(1.0, eth(ip4("1.1.1.1", "2.2.2.2", 17, udp(1, 2))))])
    path = tmp_path / "c.pcap"
    path.write_bytes(good + b"\xff" * 16 + bytes(100))
    table, diag = read(path)
    assert table.num_rows == 1
    (issue,) = diag.issues
    assert (issue.location, issue.reason) == (f"offset {len(good)}", "corrupt capture record")


def test_bad_packets_are_counted_with_their_offset(tmp_path: Path) -> None:
    ok = eth(ip4("1.1.1.1", "2.2.2.2", 17, udp(1, 2)))
    path = tmp_path / "b.pcap"
    path.write_bytes(pcap([(1.0, ok), (2.0, ok[:20]), (3.0, ok[:20]), (4.0, b"\x00" * 40)], 1))
    _, diag = read(path)
    stats = diag.inputs[str(path)]
    assert stats.packets == 1 and stats.skipped == {"truncated packet": 2}
    assert stats.ignored == {"non-IP packet": 1}
    assert diag.issues[0].location == f"offset {24 + 16 + len(ok) + 16}"


def test_pcapng_file(tmp_path: Path) -> None:
    frame = eth(ip4("1.1.1.1", "2.2.2.2", 17, udp(1, 2)))
    path = tmp_path / "n.pcapng"
    path.write_bytes(
        ng_shb()
        + ng_idb(1)
        + ng_idb(101)
        + ng_epb(0, 5_000_000, frame)
        + ng_epb(1, 6_000_000, frame[14:])
        + ng_epb(9, 7_000_000, frame)
    )
    ctx = ReadContext(Diagnostics())
    (table,) = list(PcapngSource().read(path, ctx))
    assert table.to_pylist()[0]["src_pkts"] == 2
    assert ctx.diagnostics.inputs[str(path)].skipped == {"bad capture record": 1}


@pytest.mark.parametrize(
    "name", [f"{SLIPS}/test-cc/test-cc-capture-1.pcap", f"{NDPI}/quic_interop_V.pcapng"]
)
def test_small_windows_and_gzip_give_the_same_flows(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    path = shared_data / name
    whole, _ = read(path)
    small, _ = read(path, window=4096)  # records up to 1514 bytes: many slides
    tiny, _ = read(path, window=100)  # smaller than one record: the window grows
    assert whole.equals(small) and whole.equals(tiny)
    gz = tmp_path / "c.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    zipped, _ = read(gz)
    assert zipped.drop_columns(["input"]).equals(whole.drop_columns(["input"]))
    batched, _ = read(path, batch_rows=50)
    assert batched.equals(whole)


@pytest.mark.parametrize("name", ["truncated_dns.pcap", "truncated_dns_2.pcap"])
def test_truncated_captures_report_and_keep_the_rest(shared_data: Path, name: str) -> None:
    path = shared_data / "conformance/dpkt_pcaps" / name
    table, diag = read(path)
    stats = diag.inputs[str(path)]
    assert table.num_rows == 1 and stats.packets == 1
    if name == "truncated_dns_2.pcap":  # cut inside the second record's header
        assert stats.skipped == {"truncated record": 1}
        assert diag.issues[0].location == f"offset {path.stat().st_size - 7}"
    else:  # a snaplen-shortened packet: its headers are all there
        assert stats.skipped_total == 0
        assert table["src_bytes"][0].as_py() == 224  # the IP length, not the 200 captured


def _capinfos_counts(paths: list[Path]) -> dict[str, int]:
    out = subprocess.run(
        ["capinfos", "-T", "-r", "-c", *map(str, paths)], capture_output=True, text=True
    ).stdout
    counts = {}
    for line in out.splitlines():
        name, n = line.rsplit("\t", 1)
        counts[name] = int(n)
    return counts


def test_every_ndpi_capture_reads_with_sane_totals(shared_data: Path) -> None:
    suffixes = (".pcap", ".pcapng", ".cap")
    paths = sorted(p for p in (shared_data / NDPI).iterdir() if p.suffix in suffixes)
    paths += sorted((shared_data / SLIPS / "test-cc").glob("*.pcap"))
    paths += [shared_data / SLIPS / f"test{i}-malicious.pcap" for i in (7, 8)]
    assert len(paths) > 540
    expected = _capinfos_counts(paths)
    diag = Diagnostics()
    flows = 0
    for path in paths:
        ctx = ReadContext(diag)
        n_flows = sum(t.num_rows for t in read_capture(path, ctx, "pcap"))
        flows += n_flows
        st = diag.inputs[str(path)]
        # Every packet capinfos counts is a metered packet, a skipped or an ignored one
        # (capinfos counts the cut-short last record of fuzz-2021-10-13.pcap too).
        assert st.packets + st.skipped_total + sum(st.ignored.values()) == expected[str(path)], path
        assert n_flows <= st.packets and (n_flows > 0) == (st.packets > 0)
    packets = sum(st.packets for st in diag.inputs.values())
    assert packets > 100_000 and flows > 10_000
    skipped = sum(st.skipped_total for st in diag.inputs.values())
    assert skipped < 0.001 * packets  # real captures are almost all usable
