"""sFlow v5 decoder: real captures checked against tcpdump's and tshark's decodes, and
hand-built datagrams for the edge cases (builders below, reused by the fuzz tests)."""

from __future__ import annotations

import ipaddress
import random
import re
import shutil
import struct
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flowhawk import netaddr
from flowhawk.collect.decode import textcols
from flowhawk.collect.decode.base import DecodeResult, ExporterState
from flowhawk.collect.decode.dispatch import ExportDecoder
from flowhawk.collect.decode.sflow import COUNTER_SCHEMA, SFlowDecoder
from flowhawk.collect.encode.sflow import encode_sflow
from flowhawk.schema import RAW_FLOW_SCHEMA
from tests.sources.pcap import ACK, ETH_IP6, PSH, SYN, eth, icmp, ip4, ip6, tcp, udp

TCPDUMP = "conformance/tcpdump_sflow_dns"
NDPI = "conformance/ndpi_pcaps/pcap/sflow.pcap"
T0 = 1_700_000_000_000_000

# --- builders: sFlow v5 structures with struct (XDR: big-endian, 4-byte aligned) ---------


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def record(fmt: int, body: bytes, enterprise: int = 0) -> bytes:
    """A flow or counter record: data format (enterprise << 12 | format), length, body."""
    body = _pad(body)
    return struct.pack("!II", (enterprise << 12) | fmt, len(body)) + body


def raw_header(packet: bytes, proto: int = 1, frame: int | None = None, stripped: int = 4):
    """Raw packet header record (0/1); ``frame`` defaults to the packet plus the FCS."""
    frame = len(packet) + 4 if frame is None else frame
    return record(1, struct.pack("!IIII", proto, frame, stripped, len(packet)) + packet)


def sampled_ipv4(src, dst, proto, sport=0, dport=0, length=100, flags=0) -> bytes:
    a, b = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    return record(3, struct.pack("!II4s4sIIII", length, proto, a, b, sport, dport, flags, 0))


def sampled_ipv6(src, dst, proto, sport=0, dport=0, length=100, flags=0) -> bytes:
    a, b = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    return record(4, struct.pack("!II16s16sIIII", length, proto, a, b, sport, dport, flags, 0))


def sampled_ethernet(src: bytes, dst: bytes, length=100, etype=0x0800) -> bytes:
    return record(2, struct.pack("!I", length) + _pad(src) + _pad(dst) + struct.pack("!I", etype))


def ext_switch(src_vlan: int, dst_vlan: int) -> bytes:
    return record(1001, struct.pack("!IIII", src_vlan, 0, dst_vlan, 0))


def flow_sample(
    records, seq=1, source=(0, 7), rate=1, pool=0, drops=0, expanded=False, count=None
) -> bytes:
    """Flow sample (0/1) or expanded flow sample (0/3); ``count`` overrides the record count."""
    n = len(records) if count is None else count
    stype, sidx = source
    if expanded:
        head = struct.pack("!IIIIIIIIIII", seq, stype, sidx, rate, pool, drops, 0, 1, 0, 2, n)
    else:
        head = struct.pack("!IIIIIIII", seq, (stype << 24) | sidx, rate, pool, drops, 1, 2, n)
    return record(3 if expanded else 1, head + b"".join(records))


def generic_counters(if_index=1, values=None) -> bytes:
    """Generic interface counters (0/1); ``values`` overrides fields by COUNTER_SCHEMA name."""
    v = {
        "if_type": 6,
        "if_speed": 10**9,
        "if_direction": 1,
        "if_status": 3,
        "in_octets": 1000,
        "in_ucast": 10,
        "in_mcast": 2,
        "in_bcast": 1,
        "in_discards": 0,
        "in_errors": 0,
        "in_unknown": 0,
        "out_octets": 5000,
        "out_ucast": 20,
        "out_mcast": 3,
        "out_bcast": 4,
        "out_discards": 5,
        "out_errors": 6,
        "promiscuous": 2,
    } | (values or {})
    body = struct.pack(
        "!IIQIIQIIIIIIQIIIIII",
        if_index,
        *(v[k] for k in list(v)[:6]),
        *(v[k] for k in list(v)[6:]),
    )
    return record(1, body)


def counter_sample(records, seq=1, source=(0, 1), expanded=False, count=None) -> bytes:
    n = len(records) if count is None else count
    stype, sidx = source
    if expanded:
        head = struct.pack("!IIII", seq, stype, sidx, n)
    else:
        head = struct.pack("!III", seq, (stype << 24) | sidx, n)
    return record(4 if expanded else 2, head + b"".join(records))


def datagram(samples, agent="192.0.2.1", sub=0, seq=1, uptime=1000, count=None) -> bytes:
    if agent is None:
        addr = struct.pack("!I", 0)
    else:
        ip = ipaddress.ip_address(agent)
        addr = struct.pack("!I", 1 if ip.version == 4 else 2) + ip.packed
    n = len(samples) if count is None else count
    return (
        struct.pack("!I", 5) + addr + struct.pack("!IIII", sub, seq, uptime, n) + b"".join(samples)
    )


def tcp_frame(src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=443, flags=SYN, vlans=()):
    return eth(ip4(src, dst, 6, tcp(sport, dport, flags, b"x" * 20)), vlans=vlans)


def decode(datagrams, exporter="192.0.2.1", state=None, t0=T0) -> DecodeResult:
    state = ExporterState(exporter) if state is None else state
    times = [t0 + i * 1000 for i in range(len(datagrams))]
    res = SFlowDecoder().decode(list(datagrams), times, state)
    assert res.flows.schema == RAW_FLOW_SCHEMA
    if res.counters is not None:
        assert res.counters.schema == COUNTER_SCHEMA
    return res


def rows(res: DecodeResult) -> list[dict]:
    return res.flows.to_pylist()


# --- real captures -------------------------------------------------------------------


def udp_payloads(path: Path) -> list[tuple[int, str, bytes]]:
    """(receive time µs, UDP source address, payload) of each UDP packet of a classic pcap
    of Ethernet frames; the payload is what the UDP length says, as a socket would give."""
    data = path.read_bytes()
    e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, cap, _ = struct.unpack(e + "IIII", data[pos : pos + 16])
        pkt = data[pos + 16 : pos + 16 + cap]
        pos += 16 + cap
        p, etype = 14, struct.unpack("!H", pkt[12:14])[0]
        while etype in (0x8100, 0x88A8):
            etype, p = struct.unpack("!H", pkt[p + 2 : p + 4])[0], p + 4
        if etype == 0x0800:
            proto, src, u = (
                pkt[p + 9],
                ipaddress.IPv4Address(pkt[p + 12 : p + 16]),
                p + (pkt[p] & 15) * 4,
            )
        elif etype == ETH_IP6:
            proto, src, u = pkt[p + 6], ipaddress.IPv6Address(pkt[p + 8 : p + 24]), p + 40
        else:
            continue
        if proto == 17:
            ulen = struct.unpack("!H", pkt[u + 4 : u + 6])[0]
            out.append((sec * 1_000_000 + usec, str(src), pkt[u + 8 : u + max(ulen, 8)]))
    return out


def decode_capture(
    path: Path, exporter: str = "198.51.100.1"
) -> tuple[DecodeResult, ExporterState]:
    """All datagrams of a capture in one batch, with one state."""
    pkts = udp_payloads(path)
    state = ExporterState(exporter)
    res = SFlowDecoder().decode([p for _, _, p in pkts], [t for t, _, _ in pkts], state)
    return res, state


_GENERIC = re.compile(
    r"ifindex (\d+), iftype (\d+), ifspeed (\d+), ifdirection (\d+).*\n"
    r"\s*ifstatus (\d+).*\n"
    r"\s*In octets (\d+), unicast pkts (\d+), multicast pkts (\d+), broadcast pkts (\d+), "
    r"discards (\d+)\n"
    r"\s*In errors (\d+), unknown protos (\d+)\n"
    r"\s*Out octets (\d+), unicast pkts (\d+), multicast pkts (\d+), broadcast pkts (\d+), "
    r"discards (\d+)\n"
    r"\s*Out errors (\d+), promisc mode (\d+)"
)
_HEADER = re.compile(r"agent (\S+), agent-id (\d+), seqnum (\d+), uptime (\d+), samples (\d+)")
_FLOW = re.compile(
    r"flow sample \(\d\), length \d+, seqnum (\d+), type (\d+), idx (\d+), rate (\d+)"
)
_COUNTER = re.compile(r"counter sample \(\d\), length \d+, seqnum (\d+), type (\d+), idx (\d+)")


def check_counters_against_tcpdump(res: DecodeResult, out_text: str) -> None:
    """Every generic counter record tcpdump printed, in order, with the same values."""
    expected = [tuple(int(x) for x in m) for m in _GENERIC.findall(out_text)]
    names = [f.name for f in COUNTER_SCHEMA][7:]
    got = list(zip(*(res.counters.column(n).to_pylist() for n in names), strict=True))
    assert got == expected
    # The counter sample each record came from (sequence, source type, source index).
    samples = out_text.split("counter sample (")[1:]
    with_generic = [_COUNTER.search("counter sample (" + s) for s in samples if "Generic" in s]
    want = [tuple(int(x) for x in m.groups()) for m in with_generic]
    cols = ("sequence", "source_id_type", "source_id")
    assert list(zip(*(res.counters.column(c).to_pylist() for c in cols), strict=True)) == want


def test_tcpdump_ipv6_agent_flows_and_counters(shared_data: Path) -> None:
    """sflow-print-v6: IPv6 agent, counter samples and flow samples with raw Ethernet
    headers and extended switch records (tcpdump -vvv)."""
    res, state = decode_capture(shared_data / TCPDUMP / "sflow-print-v6.pcap")
    out = (shared_data / TCPDUMP / "sflow-print-v6.out").read_text()
    assert not res.errors
    headers = _HEADER.findall(out)
    assert len(headers) == 25 and {h[0] for h in headers} == {"30::1:1:1"}
    flows_out = _FLOW.findall(out)
    assert res.flows.num_rows == len(flows_out) == 13
    got = rows(res)
    assert [r["sampling"] for r in got] == [int(f[3]) for f in flows_out]
    assert {(r["src_ip"], r["dst_ip"], r["proto"], r["vlan"]) for r in got} == {
        ("10.10.10.2", "50.1.1.2", 63, 10)  # VLAN from the extended switch record
    }
    assert [r["src_bytes"] for r in got][:3] == [46, 232, 482]  # IPv4 total lengths
    assert {r["exporter"] for r in got} == {"30::1:1:1"}
    assert {r["input"] for r in got} == {"sflow5://30::1:1:1"}
    assert got[0]["flow_id"] == "0:112:3"  # sub-agent, datagram seqnum 112, 4th sample
    assert got[0]["src_mac"] == "00:11:11:11:11:03"
    assert all(r["uni"] and r["orient"] is None for r in got)
    assert res.flows.column("ts_start") == res.flows.column("ts_end")
    check_counters_against_tcpdump(res, out)
    assert res.ignored == {"counter record format not decoded": out.count("Ethernet counter")}
    dom = state.domains["sflow5/30::1:1:1/0"]
    assert dom.packets == 25 and dom.flows == 13 and dom.errors == 0
    assert dom.next_sequence == int(headers[-1][2]) + 1
    assert dom.sequence_gaps == 0 and dom.lost == 0 and dom.sampling == 1
    # Flow sample seqnums 3..15 of source 0:7001 are contiguous.
    assert state.options["sflow5/30::1:1:1/0/sources"] == {"0:7001": [16, 0]}


def test_tcpdump_expanded_flow_sample(shared_data: Path) -> None:
    res, state = decode_capture(shared_data / TCPDUMP / "sflow_expanded.pcap", "49.49.49.49")
    assert not res.errors and res.counters is None
    (r,) = rows(res)
    assert (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["proto"]) == (
        "52.52.52.52",
        22,
        "53.53.53.53",
        52237,
        6,
    )
    assert r["src_tcp_flags"] == PSH | ACK and r["vlan"] == 809
    assert (r["src_pkts"], r["src_bytes"], r["sampling"]) == (1000, 104 * 1000, 1000)
    assert (r["dst_pkts"], r["dst_bytes"], r["dst_tcp_flags"]) == (0, 0, None)
    assert (r["src_mac"], r["dst_mac"]) == ("94:8e:d3:0a:71:3b", "22:42:1f:4a:9f:cd")
    assert r["exporter"] == "49.49.49.49" and r["flow_id"] == "0:115694180:0"
    dom = state.domains["sflow5/0"]  # the agent is the exporter: key by sub-agent alone
    assert (dom.packets, dom.flows, dom.next_sequence, dom.sampling) == (1, 1, 115694181, 1000)


def test_tcpdump_30_counter_pdus(shared_data: Path) -> None:
    """Expanded counter samples from several agents; 5 NetFlow v5 datagrams sent to the
    sFlow port are not sFlow. Per UDP source, as the collector would batch them."""
    path = shared_data / TCPDUMP / "sflow_multiple_counter_30_pdus.pcap"
    out = (shared_data / TCPDUMP / "sflow_multiple_counter_30_pdus.out").read_text()
    res, _ = decode_capture(path)
    assert res.errors == {"not sFlow version 5": 5}
    assert res.flows.num_rows == 0 and res.counters.num_rows == 142
    check_counters_against_tcpdump(res, out)
    assert res.ignored == {"counter record format not decoded": 142 + 12}

    by_source = defaultdict(list)
    for t, src, payload in udp_payloads(path):
        by_source[src].append((t, payload))
    states = {}
    for src, pkts in by_source.items():
        states[src] = ExporterState(src)
        SFlowDecoder().decode([p for _, p in pkts], [t for t, _ in pkts], states[src])
    domains = [d for st in states.values() for d in st.domains.values()]
    headers = _HEADER.findall(out)
    assert len(domains) == len({(agent, sub) for agent, sub, *_ in headers}) == 7
    assert sum(d.packets for d in domains) == len(headers) == 25
    assert all(d.sequence_gaps == 0 and d.errors == 0 and d.lost == 0 for d in domains)
    assert states["15.184.1.195"].domains["sflow5/1"].packets == 10
    assert states["15.184.1.195"].domains["sflow5/1"].next_sequence == 10499692
    assert states["168.87.240.3"].domains["sflow5/15.184.1.129/6"].next_sequence == 444100
    assert states["15.184.3.1"].domains["sflow5/15.184.1.129/2"].packets == 2


def test_tcpdump_malformed_is_counted(shared_data: Path) -> None:
    """sflow_print-segv: an 8-byte datagram (tcpdump: "[length 8 < 28] (invalid)")."""
    res, state = decode_capture(shared_data / TCPDUMP / "sflow_print-segv.pcap")
    assert res.errors == {"datagram shorter than its header": 1}
    assert res.flows.num_rows == 0 and not state.domains
    # The bytes the frame carries past the UDP length, read as if they were the datagram.
    raw = (shared_data / TCPDUMP / "sflow_print-segv.pcap").read_bytes()[24 + 16 + 42 :]
    res = decode([raw, raw[:100], raw[:28]])
    assert sum(res.errors.values()) == 3


def test_ndpi_capture_against_tshark(shared_data: Path) -> None:
    res, state = decode_capture(shared_data / NDPI, "172.21.35.17")
    assert not res.errors
    (r,) = rows(res)  # ICMP echo request in 802.1Q VLAN 32, 1 in 2048
    assert (r["src_ip"], r["dst_ip"], r["proto"], r["src_port"], r["dst_port"]) == (
        "172.21.32.254",
        "172.21.32.241",
        1,
        0,
        8 * 256,
    )
    assert (r["vlan"], r["src_pkts"], r["src_bytes"], r["sampling"]) == (32, 2048, 60 * 2048, 2048)
    assert r["flow_id"] == "1:418:0" and r["src_tcp_flags"] is None
    assert res.counters.num_rows == 8
    assert res.counters.column("if_index").to_pylist()[:2] == [1036, 1043]
    assert res.counters.column("in_octets").to_pylist()[:2] == [25963724, 50956132]
    dom = state.domains["sflow5/1"]
    assert (dom.packets, dom.flows, dom.next_sequence, dom.sampling) == (9, 1, 424, 2048)
    if shutil.which("tshark") is None:
        return
    text = subprocess.run(
        ["tshark", "-r", str(shared_data / NDPI), "-d", "udp.port==6343,sflow", "-V"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert res.flows.num_rows == len(re.findall(r"^    Flow sample, seq", text, re.M))
    assert res.counters.num_rows == len(re.findall(r"^    Counters sample, seq", text, re.M))
    assert re.findall(r"Sampling rate: 1 out of (\d+)", text) == ["2048"]


def test_through_the_dispatcher(shared_data: Path) -> None:
    pkts = udp_payloads(shared_data / TCPDUMP / "sflow-print-v6.pcap")
    res = ExportDecoder().decode(
        [p for _, _, p in pkts], [t for t, _, _ in pkts], ExporterState("30::1:1:1")
    )
    assert res.flows.num_rows == 13 and res.counters.num_rows == 48 and not res.errors


# --- hand-built datagrams ---------------------------------------------------------------


def test_ipv6_agent_expanded_sample_ipv6_tcp_in_vlan() -> None:
    pkt = eth(
        ip6("2001:db8::1", "2001:db8::2", 6, tcp(5000, 80, SYN)), ETH_IP6, vlans=[(0x8100, 42)]
    )
    d = datagram(
        [flow_sample([raw_header(pkt)], rate=512, source=(0, 9), expanded=True)],
        agent="2001:db8::ff",
        sub=3,
        seq=77,
    )
    res = decode([d], exporter="2001:db8::ff")
    (r,) = rows(res)
    assert (r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"]) == (
        "2001:db8::1",
        "2001:db8::2",
        5000,
        80,
    )
    assert (r["vlan"], r["src_tcp_flags"], r["src_pkts"], r["src_bytes"]) == (
        42,
        SYN,
        512,
        60 * 512,
    )
    assert (r["exporter"], r["flow_id"]) == ("2001:db8::ff", "3:77:0")


def test_raw_ip_header_protocols_and_icmp() -> None:
    v4 = ip4("10.1.1.1", "10.2.2.2", 1, icmp(8, 0, b"ping"))
    v6 = ip6("fe80::1", "fe80::2", 58, icmp(128, 0))
    d = datagram(
        [
            flow_sample([raw_header(v4, proto=11, stripped=0)], seq=1),
            flow_sample([raw_header(v6, proto=12, stripped=0)], seq=2),
        ]
    )
    a, b = rows(decode([d]))
    assert (a["proto"], a["src_port"], a["dst_port"], a["src_mac"]) == (1, 0, 8 * 256, None)
    assert a["src_bytes"] == len(v4) and a["vlan"] is None
    assert (b["proto"], b["dst_port"], b["src_ip"], b["src_bytes"]) == (
        58,
        128 * 256,
        "fe80::1",
        48,
    )


def test_sampled_ip_records_without_header() -> None:
    d = datagram(
        [
            flow_sample(
                [
                    sampled_ethernet(b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"),
                    sampled_ipv4("192.0.2.5", "198.51.100.7", 17, 5353, 53, length=80),
                    ext_switch(100, 200),
                ],
                rate=10,
            ),
            flow_sample([sampled_ipv6("2001:db8::5", "2001:db8::6", 6, 1, 2, 1500, SYN | ACK)]),
            flow_sample([sampled_ipv4("192.0.2.5", "198.51.100.7", 1, 3, 1, length=56)]),
            flow_sample([ext_switch(0, 300), sampled_ipv4("192.0.2.5", "192.0.2.6", 6, 1, 2)]),
        ]
    )
    a, b, c, e = rows(decode([d]))
    assert (a["src_ip"], a["dst_ip"], a["src_port"], a["dst_port"], a["proto"]) == (
        "192.0.2.5",
        "198.51.100.7",
        5353,
        53,
        17,
    )
    assert (a["src_pkts"], a["src_bytes"], a["vlan"]) == (10, 800, 100)
    assert (a["src_mac"], a["dst_mac"]) == ("02:00:00:00:00:0a", "02:00:00:00:00:0b")
    assert (b["src_ip"], b["src_tcp_flags"], b["src_bytes"], b["vlan"]) == (
        "2001:db8::5",
        SYN | ACK,
        1500,
        None,
    )
    assert (c["src_port"], c["dst_port"]) == (0, 3 * 256 + 1)  # ICMP type 3 code 1
    assert e["vlan"] == 300  # no source VLAN: the destination VLAN


def test_raw_header_wins_over_sampled_ip_and_rescues_nothing_more() -> None:
    hdr = raw_header(tcp_frame(vlans=[(0x8100, 7)]))
    d = datagram(
        [
            flow_sample([sampled_ipv4("1.1.1.1", "2.2.2.2", 17), hdr, ext_switch(9, 9)]),
            # A truncated header is rescued by the sampled IPv4 record beside it.
            flow_sample([raw_header(tcp_frame()[:20]), sampled_ipv4("1.1.1.1", "2.2.2.2", 17)]),
        ]
    )
    res = decode([d])
    a, b = rows(res)
    assert (a["src_ip"], a["vlan"]) == ("10.0.0.1", 7)  # the header's tag before the switch's
    assert b["src_ip"] == "1.1.1.1"
    assert not res.errors


def test_unknown_formats_are_ignored_not_errors() -> None:
    d = datagram(
        [
            record(1, b"\x00" * 12, enterprise=4413),  # vendor sample
            record(9, b""),  # unknown standard sample format
            flow_sample(
                [
                    record(1002, b"\x00" * 16),  # extended router: skipped
                    record(7, b"\x01\x02\x03\x04", enterprise=9),
                    raw_header(tcp_frame()),
                ]
            ),
            counter_sample(
                [record(2, b"\x00" * 52), record(1001, b"\x00" * 28), generic_counters(5)],
                expanded=True,
                source=(0, 5),
            ),
        ]
    )
    res = decode([d])
    assert not res.errors
    assert res.flows.num_rows == 1 and res.counters.num_rows == 1
    assert res.ignored == {"sample format not decoded": 2, "counter record format not decoded": 2}
    assert res.flows.column("flow_id").to_pylist() == ["0:1:2"]


def test_counter_values() -> None:
    big = {"in_octets": 2**63 + 5, "if_speed": 400 * 10**9, "in_ucast": 2**32 - 1}
    d = datagram([counter_sample([generic_counters(17, big)], seq=9, source=(0, 17))], sub=4)
    c = decode([d]).counters.to_pylist()[0]
    assert (c["if_index"], c["sequence"], c["sub_agent"], c["agent"]) == (17, 9, 4, "192.0.2.1")
    assert (c["in_octets"], c["if_speed"], c["in_ucast"]) == (2**63 + 5, 400 * 10**9, 2**32 - 1)
    assert (c["out_errors"], c["promiscuous"], c["if_status"], c["uptime_ms"]) == (6, 2, 3, 1000)


def test_malformed_datagrams_keep_what_is_readable() -> None:
    s1 = flow_sample([raw_header(tcp_frame(sport=1))], seq=1)
    s2 = flow_sample([raw_header(tcp_frame(sport=2))], seq=2)
    good = datagram([s1, s2])
    cases = {
        "sample overruns datagram": good[:-10],
        "sample count exceeds datagram": datagram([s1, s2], count=3),
        "bytes after the last sample": datagram([s1, s2], count=1),
        "bad agent address type": good[:4] + struct.pack("!I", 3) + good[8:],
        "not sFlow version 5": struct.pack("!I", 4) + good[4:],
        "datagram shorter than its header": good[:27],
        "record count exceeds sample": datagram(
            [s1, flow_sample([raw_header(tcp_frame())], count=2)]
        ),
        "bytes after the last record": datagram(
            [s1, flow_sample([raw_header(tcp_frame())], count=0)]
        ),
        "sample shorter than its fields": datagram([s1, record(1, b"\x00" * 20)]),
        "record shorter than its format": datagram([s1, flow_sample([record(3, b"\x00" * 8)])]),
        "sampled header overruns its record": datagram(
            [s1, flow_sample([record(1, struct.pack("!IIII", 1, 64, 4, 999) + bytes(8))])]
        ),
    }
    kept = {}
    for reason, d in cases.items():
        res = decode([d])
        assert res.errors == {reason: 1}, reason
        kept[reason] = [r["src_port"] for r in rows(res)]
    assert kept["sample overruns datagram"] == [1]
    assert kept["sample count exceeds datagram"] == [1, 2]
    assert kept["bytes after the last sample"] == [1]
    assert kept["bad agent address type"] == [] and kept["not sFlow version 5"] == []
    assert kept["record count exceeds sample"] == [1, 40000]
    # A record overrunning its sample, which is framed correctly: later samples survive.
    bad = record(1, struct.pack("!IIIIIIII", 1, 7, 1, 0, 0, 1, 2, 1) + struct.pack("!II", 1, 500))
    res = decode([datagram([s1, bad, s2])])
    assert res.errors == {"record overruns sample": 1}
    assert [r["src_port"] for r in rows(res)] == [1, 2]


def test_sampled_packets_that_give_no_flow() -> None:
    arp = eth(bytes(28), 0x0806)
    d = datagram(
        [
            flow_sample([raw_header(arp)]),
            flow_sample([raw_header(tcp_frame()[:30])]),  # IP header cut
            flow_sample([raw_header(eth(ip4("1.1.1.1", "2.2.2.2", 6, b"", total=10)))]),
            flow_sample([raw_header(tcp_frame(), proto=2)]),  # token bus
            flow_sample([ext_switch(5, 5)]),
            flow_sample([raw_header(tcp_frame())]),
        ]
    )
    res = decode([d])
    assert res.flows.num_rows == 1
    assert res.errors == {"sampled packet truncated": 1, "sampled packet has a bad IP header": 1}
    assert res.ignored == {
        "sampled packet not IP": 1,
        "sampled header protocol not decoded": 1,
        "flow sample without packet data": 1,
    }


def test_ip_length_from_frame_when_the_header_says_nothing() -> None:
    pkt = eth(ip4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"z" * 100), total=0))
    res = decode([datagram([flow_sample([raw_header(pkt[:128], frame=1518)], rate=2)])])
    assert rows(res)[0]["src_bytes"] == (1518 - 4 - 14) * 2
    v6 = eth(ip6("::1", "::2", 17, udp(1, 2, b"z" * 100), plen=0), ETH_IP6)
    res = decode([datagram([flow_sample([raw_header(v6, frame=9000)])])])
    assert rows(res)[0]["src_bytes"] == 9000 - 4 - 14


def test_sampling_rate_zero_and_huge() -> None:
    d = datagram(
        [
            flow_sample([raw_header(tcp_frame())], rate=0, seq=1),
            flow_sample([raw_header(tcp_frame())], rate=2**32 - 1, seq=2),
        ]
    )
    a, b = rows(decode([d]))
    assert (a["sampling"], a["src_pkts"]) == (1, 1)
    assert (b["sampling"], b["src_pkts"]) == (2**31 - 1, 2**32 - 1)


def test_sequences_gaps_drops_and_restart() -> None:
    state = ExporterState("192.0.2.1")

    def dg(seq, samples):
        fs = [flow_sample([raw_header(tcp_frame())], seq=s, drops=dr) for s, dr in samples]
        return datagram(fs, seq=seq)

    decode([dg(1000, [(5000, 0)]), dg(1001, [(5001, 0)]), dg(1004, [(5004, 3)])], state=state)
    dom = state.domains["sflow5/0"]
    assert (dom.packets, dom.flows, dom.sequence_gaps, dom.next_sequence) == (3, 3, 1, 1005)
    assert dom.lost == 2 + 3  # samples 5002, 5003 and three drops reported by the agent
    # The state survives a JSON round trip; the next batch continues from it.
    state = ExporterState.from_json(state.to_json())
    decode([dg(1005, [(5005, 3), (5006, 4)])], state=state)
    dom = state.domains["sflow5/0"]
    assert (dom.sequence_gaps, dom.lost, dom.next_sequence, dom.flows) == (1, 6, 1006, 5)
    # Agent restart: sequence numbers start again; no gap, no loss.
    decode([dg(1, [(1, 0)])], state=state)
    dom = state.domains["sflow5/0"]
    assert (dom.sequence_gaps, dom.lost, dom.next_sequence) == (1, 6, 2)
    # A late sample does not move the expected number back (its gap stays counted).
    decode([dg(2, [(3, 0)]), dg(3, [(2, 0)]), dg(4, [(4, 0)])], state=state)
    dom = state.domains["sflow5/0"]
    assert (dom.sequence_gaps, dom.lost, dom.next_sequence) == (1, 7, 5)
    assert state.options["sflow5/0/sources"] == {"0:7": [5, 0]}


def test_domains_per_agent_and_sub_agent() -> None:
    state = ExporterState("192.0.2.1:6343")
    f = [flow_sample([raw_header(tcp_frame())])]
    res = decode(
        [
            datagram(f, sub=0),
            datagram(f, sub=1),
            datagram(f, agent="203.0.113.9"),
            datagram(f, agent=None),
        ],
        state=state,
    )
    assert set(state.domains) == {"sflow5/0", "sflow5/1", "sflow5/203.0.113.9/0"}
    assert state.domains["sflow5/0"].packets == 2  # address type 0: the UDP source
    assert res.flows.column("exporter").to_pylist() == [
        "192.0.2.1",
        "192.0.2.1",
        "203.0.113.9",
        "192.0.2.1",
    ]


def test_empty_batch_and_empty_datagrams() -> None:
    assert decode([]).flows.num_rows == 0
    res = decode([b"", b"\x00\x00\x00\x05"])
    assert res.errors == {"datagram shorter than its header": 2}


def test_ppp_header() -> None:
    ppp = b"\xff\x03\x00\x21" + ip4("10.9.9.9", "10.8.8.8", 17, udp(53, 999))
    (r,) = rows(decode([datagram([flow_sample([raw_header(ppp, proto=7)])])]))
    assert (r["src_ip"], r["src_port"], r["dst_port"]) == ("10.9.9.9", 53, 999)


@pytest.mark.parametrize("expanded", [False, True])
def test_counter_sample_damage(expanded: bool) -> None:
    good = counter_sample([generic_counters(1)], expanded=expanded)
    short = counter_sample([record(1, bytes(40))], expanded=expanded)
    res = decode([datagram([good, short])])
    assert res.errors == {"record shorter than its format": 1} and res.counters.num_rows == 1


def test_text_columns_match_ipaddress() -> None:
    """The numba formatters spell addresses as flowhawk.netaddr (and ipaddress) do."""
    rng = random.Random(5)
    values = [0, 1, (0xFFFF << 32) | 0x0A000001, (0xFFFF << 32), 2**128 - 1, 1 << 112]
    for _ in range(3000):  # groups drawn from {0, 1, random} to make runs of zeros
        groups = [rng.choice([0, 0, 1, rng.getrandbits(16)]) for _ in range(8)]
        values.append(int("".join(f"{g:04x}" for g in groups), 16))
    hi = np.array([v >> 64 for v in values], np.uint64)
    lo = np.array([v & (2**64 - 1) for v in values], np.uint64)
    got = textcols.ip_strings(hi, lo).to_pylist()
    assert got == netaddr.format(hi, lo).to_list()
    assert got[2] == "10.0.0.1" and got[0] == "::" and got[5] == "1::"
    macs = np.array([0x0123456789AB, 0, 2**64 - 1], np.uint64)
    assert textcols.mac_strings(macs, np.uint64(2**64 - 1)).to_pylist() == [
        "01:23:45:67:89:ab",
        "00:00:00:00:00:00",
        None,
    ]
    nums = np.array([0, 9, 10, 2**32 - 1, 2**63 + 7], np.uint64)
    assert textcols.joined_numbers(nums, nums[::-1], nums).to_pylist() == [
        f"{a}:{b}:{a}" for a, b in zip(nums.tolist(), nums[::-1].tolist(), strict=True)
    ]


def test_round_trip_with_the_encoder() -> None:
    """Datagrams from flowhawk's own sFlow encoder (written apart from this decoder)."""
    t = pa.array([T0, T0 + 10**6], pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {
            "ts_start": t,
            "ts_end": t,
            "src_ip": ["10.0.0.1", "2001:db8::1"],
            "dst_ip": ["192.0.2.1", "2001:db8::53"],
            "src_port": pa.array([40000, 40001], pa.int32()),
            "dst_port": pa.array([443, 53], pa.int32()),
            "proto": pa.array([6, 17], pa.int16()),
            "src_pkts": [25, 1],
            "src_bytes": [2500, 80],
            "dst_pkts": [10, 1],
            "dst_bytes": [15000, 200],
            "vlan": pa.array([12, None], pa.int32()),
        }
    )
    enc = encode_sflow(
        table, rate=10, sequence=7, agent="192.0.2.254", sub_agent=3, counter_every=1
    )
    state = ExporterState("192.0.2.254")
    res = decode(enc.datagrams, state=state)
    assert not res.errors and res.flows.num_rows == enc.records == 6
    got = rows(res)
    assert sum(r["src_pkts"] for r in got) == 10 * enc.records
    assert {(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["proto"]) for r in got} == {
        ("10.0.0.1", "192.0.2.1", 40000, 443, 6),
        ("192.0.2.1", "10.0.0.1", 443, 40000, 6),
        ("2001:db8::1", "2001:db8::53", 40001, 53, 17),
        ("2001:db8::53", "2001:db8::1", 53, 40001, 17),
    }
    assert {r["vlan"] for r in got if r["proto"] == 6} == {12}
    assert {r["sampling"] for r in got} == {10} and {r["exporter"] for r in got} == {"192.0.2.254"}
    dom = state.domains["sflow5/3"]
    assert (dom.packets, dom.sequence_gaps, dom.lost, dom.next_sequence) == (
        len(enc.datagrams),
        0,
        0,
        8 + len(enc.datagrams),
    )
    assert set(res.counters.column("if_index").to_pylist()) == {1, 2}


def test_byte_counts_never_overflow() -> None:
    big = sampled_ipv4("1.1.1.1", "2.2.2.2", 17, length=2**32 - 1)
    (r,) = rows(decode([datagram([flow_sample([big], rate=2**32 - 1)])]))
    assert r["src_bytes"] == (2**31 - 1) * (2**32 - 1)
