"""Record scanning: classic pcap and pcapng, from literal bytes and real captures."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowhawk.sources.pcap.capfile import (
    LT_BAD_RECORD,
    SCAN_CORRUPT,
    SCAN_FULL,
    SCAN_NEED_MORE,
    RecordScanner,
    capture_kind,
)
from flowhawk.sources.pcap.source import sniff_kind
from tests.sources.pcap import (
    as_buf,
    ng_block,
    ng_epb,
    ng_idb,
    ng_pb,
    ng_shb,
    ng_spb,
    pcap,
)

PKTS = [(1_700_000_000.25, b"\x01" * 60), (1_700_000_001.5, b"\x02" * 7), (1_700_000_002.0, b"")]


def scan_all(data: bytes, max_records: int = 1000) -> tuple:
    buf = as_buf(data)
    sc = RecordScanner(data[:64])
    recs, pos, code = sc.scan(buf, sc.start, len(buf), max_records)
    return sc, recs, pos, code


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("nanos", [False, True])
def test_classic_pcap_byte_orders_and_resolutions(big: bool, nanos: bool) -> None:
    data = pcap(PKTS, linktype=101, big=big, nanos=nanos)
    _, recs, pos, code = scan_all(data)
    assert capture_kind(data) == sniff_kind(data) == "pcap"
    assert (code, pos) == (SCAN_NEED_MORE, len(data))
    s = 1_700_000_000_000_000
    assert recs.ts_us.tolist() == [s + 250_000, s + 1_500_000, s + 2_000_000]
    assert recs.caplen.tolist() == [60, 7, 0]
    assert recs.linktype.tolist() == [101] * 3
    assert recs.offset.tolist() == [24 + 16, 24 + 16 + 60 + 16, 24 + 16 + 60 + 16 + 7 + 16]
    assert bytes(as_buf(data)[recs.offset[1] : recs.offset[1] + 7]) == b"\x02" * 7


def test_pcap_snaplen_keeps_original_length_and_fcs_bits_are_masked() -> None:
    data = bytearray(pcap(PKTS[:1], caplen=20))
    data[20:24] = struct.pack("<I", 0x4000_0001)  # FCS length bits set on top of EN10MB
    _, recs, _, _ = scan_all(bytes(data))
    assert (recs.caplen[0], recs.origlen[0], recs.linktype[0]) == (20, 60, 1)


def test_modified_pcap_has_24_byte_record_headers() -> None:
    head = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack("<IIII", 10, 5, 4, 4) + bytes(8) + b"abcd"
    _, recs, pos, _ = scan_all(head + rec)
    assert recs.offset.tolist() == [24 + 24] and recs.ts_us.tolist() == [10_000_005]
    assert pos == len(head + rec)


def test_windows_stop_before_an_incomplete_record_and_resume() -> None:
    data = pcap(PKTS)
    buf = as_buf(data)
    sc = RecordScanner(data)
    cut = 24 + 16 + 30  # in the middle of the first packet
    recs, pos, code = sc.scan(buf, sc.start, cut, 100)
    assert (len(recs.offset), pos, code) == (0, 24, SCAN_NEED_MORE)
    recs, pos, code = sc.scan(buf, pos, len(buf), 2)
    assert (len(recs.offset), code) == (2, SCAN_FULL)
    recs, pos, code = sc.scan(buf, pos, len(buf), 2)
    assert (len(recs.offset), pos, code) == (1, len(buf), SCAN_NEED_MORE)


def test_absurd_caplen_is_corrupt_not_a_huge_read() -> None:
    data = bytearray(pcap(PKTS))
    struct.pack_into("<I", data, 24 + 16 + 60 + 8, 0x7FFF_FFFF)  # second record's caplen
    _, recs, pos, code = scan_all(bytes(data))
    assert (len(recs.offset), pos, code) == (1, 24 + 16 + 60, SCAN_CORRUPT)


def test_not_a_capture() -> None:
    for head in (b"", b"hello world" * 4, b"\x0a\x0d\x0d\x0a" + bytes(20)):
        assert capture_kind(head) is None and sniff_kind(head) is None
    with pytest.raises(ValueError):
        RecordScanner(b"#fields\tts\tuid" + bytes(20))


@pytest.mark.parametrize("e", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_block_kinds(e: str) -> None:
    t = 1_700_000_000
    data = b"".join(
        [
            ng_shb(e),
            ng_idb(1, e),  # 0: Ethernet, default microseconds
            ng_idb(101, e, tsresol=9),  # 1: raw IP, nanoseconds
            ng_idb(113, e, tsresol=0x80 | 10, tsoffset=100),  # 2: SLL, 2^-10 s, +100 s
            ng_block(5, b"\x00" * 16, e),  # interface statistics: skipped
            ng_epb(0, t * 1_000_000 + 7, b"a" * 14, e),
            ng_epb(1, t * 1_000_000_000 + 123_456_789, b"b" * 5, e, origlen=1500),
            ng_epb(2, (t << 10) + 512, b"c" * 16, e),
            ng_spb(b"d" * 9, e),
            ng_pb(1, t * 1_000_000_000 + 2_000, b"e" * 3, e),
            ng_epb(7, 0, b"f", e),  # interface never described
        ]
    )
    assert capture_kind(data) == sniff_kind(data) == "pcapng"
    _, recs, pos, code = scan_all(data)
    assert (pos, code) == (len(data), SCAN_NEED_MORE)
    assert recs.linktype.tolist() == [1, 101, 113, 1, 101, LT_BAD_RECORD]
    assert recs.caplen.tolist() == [14, 5, 16, 9, 3, 1]
    assert recs.origlen.tolist()[:2] == [14, 1500]
    us = t * 1_000_000
    # The SPB has no timestamp: it reuses the previous packet's; so does the bad record.
    assert recs.ts_us.tolist() == [
        us + 7,
        us + 123_456,
        us + 100_000_000 + 500_000,
        us + 100_000_000 + 500_000,
        us + 2,
        us + 2,
    ]
    buf = as_buf(data)
    assert bytes(buf[recs.offset[3] : recs.offset[3] + 9]) == b"d" * 9


def test_pcapng_new_section_restarts_interface_numbering_and_byte_order() -> None:
    data = (
        ng_shb("<")
        + ng_idb(1, "<")
        + ng_epb(0, 5, b"x" * 20, "<")
        + ng_shb(">")
        + ng_idb(229, ">")
        + ng_epb(0, 6, b"y" * 40, ">")
    )
    _, recs, _, _ = scan_all(data)
    assert recs.linktype.tolist() == [1, 229] and recs.ts_us.tolist() == [5, 6]


def test_pcapng_blocks_split_across_windows() -> None:
    data = ng_shb() + ng_idb(1) + b"".join(ng_epb(0, i, bytes(50 + i)) for i in range(20))
    buf = as_buf(data)
    sc = RecordScanner(data)
    pos, got = 0, []
    for end in [*range(40, len(data), 97), len(data)]:  # the window grows by odd steps
        recs, pos, code = sc.scan(buf, pos, end, 1000)
        assert code == SCAN_NEED_MORE
        got += recs.caplen.tolist()
    assert got == [50 + i for i in range(20)] and pos == len(data)


def test_pcapng_bad_block_length_is_corrupt() -> None:
    good = ng_shb() + ng_idb(1) + ng_epb(0, 1, b"x" * 20)
    bad = bytearray(ng_epb(0, 2, b"y" * 20))
    struct.pack_into("<I", bad, len(bad) - 4, 9999)  # trailing length disagrees
    _, recs, pos, code = scan_all(good + bytes(bad) + ng_epb(0, 3, b"z"))
    assert (len(recs.offset), pos, code) == (1, len(good), SCAN_CORRUPT)
    epb_too_long = bytearray(ng_epb(0, 2, b"y" * 20))
    struct.pack_into("<I", epb_too_long, 20, 500)  # caplen beyond the block
    _, recs, pos, code = scan_all(good + bytes(epb_too_long))
    assert (len(recs.offset), code) == (1, SCAN_CORRUPT)


def capinfos_count(path: Path) -> int:
    out = subprocess.run(
        ["capinfos", "-T", "-r", "-c", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split("\t")[-1])


@pytest.mark.parametrize(
    "name",
    [
        "quic_interop_V.pcapng",  # pcapng, Ethernet
        "tls_heur__vmess-tcp.pcapng",  # pcapng, Linux cooked
        "pgsql2.pcapng",  # pcapng, BSD loopback
        "nfsv3.pcap",  # big-endian classic pcap
        "someip_sd_sample.pcap",  # nanosecond classic pcap, PPI
    ],
)
def test_real_captures_record_counts_and_time_order(shared_data: Path, name: str) -> None:
    path = shared_data / "conformance/ndpi_pcaps/pcap" / name
    data = path.read_bytes()
    _, recs, pos, code = scan_all(data, 1 << 20)
    assert (pos, code) == (len(data), SCAN_NEED_MORE)
    assert len(recs.offset) == capinfos_count(path)
    assert (recs.offset + recs.caplen <= len(data)).all()
    first = subprocess.run(
        ["tshark", "-r", str(path), "-c", "1", "-T", "fields", "-e", "frame.time_epoch"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert recs.ts_us[0] == pytest.approx(float(first) * 1e6, abs=1)
    assert np.all(recs.caplen >= 0)
