"""Packet decoding: link types, encapsulations, IPv4/IPv6, ports, status codes."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowhawk.sources.pcap.capfile import RecordScanner
from flowhawk.sources.pcap.decode import (
    NO_MAC,
    NO_VLAN,
    ST_BAD_HEADER,
    ST_BAD_RECORD,
    ST_NOT_IP,
    ST_OK,
    ST_TRUNCATED,
    ST_UNSUPPORTED_LINK,
    Packets,
    decode,
)
from tests.sources.pcap import (
    ACK,
    ETH_IP6,
    MAC_A,
    MAC_B,
    PSH,
    SYN,
    as_buf,
    eth,
    ext6,
    frag6,
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


def decode_bytes(data: bytes) -> Packets:
    buf = as_buf(data)
    sc = RecordScanner(data)
    recs, _, _ = sc.scan(buf, sc.start, len(buf), 10_000)
    return decode(buf, recs)


def one(frame: bytes, linktype: int = 1, caplen: int | None = None) -> dict:
    p = decode_bytes(pcap([(1.0, frame)], linktype, caplen=caplen))
    return {f: getattr(p, f)[0].item() for f in Packets._fields}


def addr(hi: int, lo: int) -> str:
    value = (hi << 64) | lo
    if hi == 0 and lo >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address(value))


def mac_int(mac: bytes) -> int:
    return int.from_bytes(mac, "big")


V4_TCP = ip4("10.1.2.3", "192.168.0.9", 6, tcp(40000, 443, SYN | ACK, b"hello"))


def test_ethernet_ipv4_tcp_all_fields() -> None:
    p = one(eth(V4_TCP))
    assert p["status"] == ST_OK
    assert addr(p["src_hi"], p["src_lo"]) == "10.1.2.3"
    assert addr(p["dst_hi"], p["dst_lo"]) == "192.168.0.9"
    assert p["src_lo"] == 0xFFFF_0A01_0203 and p["src_hi"] == 0  # IPv4-mapped
    assert (p["sport"], p["dport"], p["proto"], p["tcp_flags"]) == (40000, 443, 6, SYN | ACK)
    assert p["ip_len"] == 20 + 20 + 5
    assert (p["src_mac"], p["dst_mac"]) == (mac_int(MAC_A), mac_int(MAC_B))
    assert p["vlan"] == NO_VLAN and p["ts_us"] == 1_000_000


def test_ip_length_comes_from_the_header_not_the_capture() -> None:
    frame = eth(V4_TCP) + bytes(20)  # Ethernet padding after the datagram
    assert one(frame)["ip_len"] == 45
    snapped = one(eth(ip4("1.1.1.1", "2.2.2.2", 17, udp(1, 2, bytes(1000)))), caplen=14 + 28)
    assert (snapped["status"], snapped["ip_len"], snapped["dport"]) == (ST_OK, 1028, 2)


def test_tso_zero_total_length_counts_the_captured_bytes() -> None:
    p = one(eth(ip4("1.1.1.1", "2.2.2.2", 6, tcp(1, 2, ACK, bytes(3000)), total=0)))
    assert (p["status"], p["ip_len"]) == (ST_OK, 3040)


@pytest.mark.parametrize(
    ("tags", "vid"),
    [
        ([(0x8100, 42)], 42),
        ([(0x88A8, 100), (0x8100, 7)], 7),  # QinQ: the inner (customer) VLAN
        ([(0x9100, 300), (0x8100, 0)], 300),  # a priority-only inner tag is not a VLAN
        ([(0x8100, 0x2000 | 5)], 5),  # PCP bits are not part of the VID
    ],
)
def test_vlan_tags(tags: list[tuple[int, int]], vid: int) -> None:
    p = one(eth(V4_TCP, vlans=tags))
    assert (p["status"], p["vlan"], p["dport"]) == (ST_OK, vid, 443)


def test_ipv6_extension_headers_are_walked() -> None:
    payload = ext6(60, 1) + ext6(44) + frag6(6, 0, more=True) + tcp(5, 80, PSH)
    p = one(eth(ip6("2001:db8::1", "2001:db8::2", 0, payload), ETH_IP6))
    assert (p["status"], p["proto"], p["sport"], p["dport"]) == (ST_OK, 6, 5, 80)
    assert p["tcp_flags"] == PSH
    assert p["ip_len"] == 40 + len(payload)
    assert addr(p["src_hi"], p["src_lo"]) == "2001:db8::1"
    assert addr(p["dst_hi"], p["dst_lo"]) == "2001:db8::2"


def test_non_first_fragments_have_ports_zero() -> None:
    p6 = one(eth(ip6("::1", "::2", 44, frag6(17, 185) + bytes(100)), ETH_IP6))
    assert (p6["status"], p6["proto"], p6["sport"], p6["dport"]) == (ST_OK, 17, 0, 0)
    p4 = one(eth(ip4("1.1.1.1", "2.2.2.2", 17, bytes(100), frag=185)))
    assert (p4["status"], p4["proto"], p4["sport"], p4["dport"]) == (ST_OK, 17, 0, 0)
    assert p4["ip_len"] == 120
    first = one(eth(ip4("1.1.1.1", "2.2.2.2", 17, udp(53, 999, bytes(50)), frag=0x2000)))
    assert (first["sport"], first["dport"]) == (53, 999)


def test_icmp_type_and_code_go_in_dport() -> None:
    p = one(eth(ip4("1.1.1.1", "2.2.2.2", 1, icmp(3, 13))))
    assert (p["proto"], p["sport"], p["dport"]) == (1, 0, 3 * 256 + 13)
    p6 = one(eth(ip6("::1", "::2", 58, icmp(128, 0)), ETH_IP6))
    assert (p6["proto"], p6["sport"], p6["dport"]) == (58, 0, 128 * 256)


def test_other_protocols_have_no_ports() -> None:
    p = one(eth(ip4("1.1.1.1", "2.2.2.2", 47, bytes(40))))  # GRE: not opened
    assert (p["status"], p["proto"], p["sport"], p["dport"], p["ip_len"]) == (ST_OK, 47, 0, 0, 60)
    sctp = one(eth(ip4("1.1.1.1", "2.2.2.2", 132, struct.pack("!HH", 2905, 3868) + bytes(8))))
    assert (sctp["sport"], sctp["dport"]) == (2905, 3868)


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        (eth(bytes(28), 0x0806), ST_NOT_IP),  # ARP
        (eth(bytes(40), 0x88CC), ST_NOT_IP),  # LLDP
        (eth(b"\x42\x42\x03" + bytes(40), 0x0026), ST_NOT_IP),  # 802.3 + STP LLC
        (MAC_B + MAC_A, ST_TRUNCATED),  # no ethertype
        (eth(V4_TCP[:19]), ST_TRUNCATED),  # IPv4 header cut
        (eth(V4_TCP[:30]), ST_TRUNCATED),  # TCP header cut: no ports
        (eth(ip6("::1", "::2", 6, b"")[:39], ETH_IP6), ST_TRUNCATED),
        (eth(b"\x65" + V4_TCP[1:]), ST_BAD_HEADER),  # version 6 in an IPv4 ethertype
        (eth(b"\x44" + V4_TCP[1:]), ST_BAD_HEADER),  # IHL 4
        (eth(ip4("1.1.1.1", "2.2.2.2", 6, tcp(1, 2, 0), total=15)), ST_BAD_HEADER),
        (eth(ip4("1.1.1.1", "2.2.2.2", 6, tcp(1, 2, 0), total=30)), ST_BAD_HEADER),  # TCP beyond it
    ],
)
def test_status_codes(frame: bytes, status: int) -> None:
    assert one(frame)["status"] == status


def test_llc_snap_pppoe_and_mpls_carry_ip() -> None:
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + V4_TCP
    assert one(eth(snap, len(snap)))["dport"] == 443
    pppoe = struct.pack("!BBHHH", 0x11, 0, 1, len(V4_TCP) + 2, 0x0021) + V4_TCP
    assert one(eth(pppoe, 0x8864))["dport"] == 443
    mpls = struct.pack("!I", (100 << 12) | 64) + struct.pack("!I", (200 << 12) | 0x100 | 64)
    assert one(eth(mpls + V4_TCP, 0x8847))["dport"] == 443


SLL_HEAD = struct.pack("!HHH", 0, 1, 6) + MAC_A + b"\x00\x00"
SLL2_HEAD = struct.pack("!HHIHBB", 0x0800, 0, 2, 1, 0, 6) + MAC_A + b"\x00\x00"


@pytest.mark.parametrize(
    ("linktype", "frame", "src_mac"),
    [
        (101, V4_TCP, NO_MAC),
        (12, V4_TCP, NO_MAC),
        (14, V4_TCP, NO_MAC),
        (228, V4_TCP, NO_MAC),
        (0, struct.pack("<I", 2) + V4_TCP, NO_MAC),  # NULL, little-endian host
        (0, struct.pack(">I", 2) + V4_TCP, NO_MAC),  # NULL, big-endian host
        (108, struct.pack(">I", 2) + V4_TCP, NO_MAC),  # OpenBSD LOOP
        (113, SLL_HEAD + struct.pack("!H", 0x0800) + V4_TCP, mac_int(MAC_A)),
        (113, SLL_HEAD + struct.pack("!HHH", 0x8100, 9, 0x0800) + V4_TCP, mac_int(MAC_A)),
        (276, SLL2_HEAD + V4_TCP, mac_int(MAC_A)),
        (9, b"\xff\x03\x00\x21" + V4_TCP, NO_MAC),  # PPP in HDLC framing
        (9, b"\x21" + V4_TCP, NO_MAC),  # PPP, compressed protocol field
        (104, b"\x0f\x00\x08\x00" + V4_TCP, NO_MAC),  # Cisco HDLC
        (192, struct.pack("<BBHI", 0, 0, 8, 1) + eth(V4_TCP), mac_int(MAC_A)),  # PPI + Ethernet
    ],
)
def test_link_types(linktype: int, frame: bytes, src_mac: int) -> None:
    p = one(frame, linktype)
    assert (p["status"], p["dport"], p["ip_len"]) == (ST_OK, 443, 45)
    assert p["src_mac"] == src_mac
    if linktype != 192:
        assert p["dst_mac"] == NO_MAC


@pytest.mark.parametrize("af", [10, 24, 28, 30])
def test_loopback_ipv6_address_families(af: int) -> None:
    p = one(struct.pack("<I", af) + ip6("::1", "::1", 17, udp(1, 2)), 0)
    assert (p["status"], p["proto"], p["dport"]) == (ST_OK, 17, 2)
    assert one(struct.pack("<I", 7) + V4_TCP, 0)["status"] == ST_NOT_IP


def test_ipv6_link_type_and_unsupported_links() -> None:
    assert one(ip6("::1", "::2", 17, udp(1, 2)), 229)["dport"] == 2
    assert one(bytes(64), 105)["status"] == ST_UNSUPPORTED_LINK  # 802.11


def test_unknown_pcapng_interface_is_a_bad_record() -> None:
    data = ng_shb() + ng_idb(1) + ng_epb(0, 1, eth(V4_TCP)) + ng_epb(3, 2, eth(V4_TCP))
    assert decode_bytes(data).status.tolist() == [ST_OK, ST_BAD_RECORD]


def _tshark(path: Path) -> list[list[str]]:
    fields = [
        "frame.number",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "ip.len",
        "ipv6.plen",
        "tcp.flags",
        "vlan.id",
        "eth.src",
        "eth.dst",
        "sll.src.eth",
        "sll.hatype",
        "ip.proto",
        "ipv6.nxt",
    ]
    cmd = ["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def _mac(text: str) -> int:
    return int(text.replace(":", ""), 16) if text else int(NO_MAC)


@pytest.mark.parametrize(
    "name",
    [
        "labeled/slips_dataset/dataset_HEAD/test-cc/test-cc-capture-2.pcap",
        "conformance/ndpi_pcaps/pcap/http_ipv6.pcap",
        "conformance/ndpi_pcaps/pcap/ultrasurf.pcap",  # VLAN
        "conformance/ndpi_pcaps/pcap/KakaoTalk_chat.pcap",  # Linux cooked
        "conformance/ndpi_pcaps/pcap/tls_heur__vmess-tcp.pcapng",  # pcapng, cooked, IPv4 + IPv6
    ],
)
def test_fields_agree_with_tshark(shared_data: Path, name: str) -> None:
    path = shared_data / name
    p = decode_bytes(path.read_bytes())
    rows = _tshark(path)
    assert len(rows) == len(p.status)
    checked = 0
    for i, r in enumerate(rows):
        (
            _,
            s4,
            d4,
            s6,
            d6,
            tsp,
            tdp,
            usp,
            udp_,
            ilen,
            plen,
            flags,
            vid,
            esrc,
            edst,
            ssrc,
            hatype,
            proto4,
            proto6,
        ) = r
        if p.status[i] != ST_OK:
            continue
        assert p.proto[i] == int(proto4 or proto6)
        assert addr(int(p.src_hi[i]), int(p.src_lo[i])) == (s4 or str(ipaddress.ip_address(s6)))
        assert addr(int(p.dst_hi[i]), int(p.dst_lo[i])) == (d4 or str(ipaddress.ip_address(d6)))
        if p.proto[i] in (6, 17):  # (ICMP errors quote a UDP header tshark would report)
            assert (p.sport[i], p.dport[i]) == (int(tsp or usp), int(tdp or udp_))
        assert p.tcp_flags[i] == (int(flags, 16) & 0xFF if flags else 0)
        assert p.ip_len[i] == (int(ilen) if ilen else int(plen) + 40)
        assert p.vlan[i] == (int(vid) if vid else NO_VLAN)
        sll_mac = ssrc if hatype == "1" else ""  # cooked captures of loopback have none
        assert p.src_mac[i] == _mac(esrc or sll_mac) and p.dst_mac[i] == _mac(edst)
        checked += 1
    assert checked > 0.9 * len(rows)
    assert np.all(p.status[p.status != ST_OK] == ST_NOT_IP)
