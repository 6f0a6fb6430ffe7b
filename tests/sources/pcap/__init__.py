"""Tests of the pcap flow meter, and helpers that build packets and captures from bytes.

The builders write real wire formats with :mod:`struct` (no packet library), so the
tests say exactly which bytes go in.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable

import numpy as np

ETH_IP4 = 0x0800
ETH_IP6 = 0x86DD
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def ip4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    frag: int = 0,
    total: int | None = None,
    ident: int = 1,
    options: bytes = b"",
) -> bytes:
    """An IPv4 header (+ options) and payload; ``frag`` is the flags/offset field."""
    ihl = 5 + len(options) // 4
    tl = 4 * ihl + len(payload) if total is None else total
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, tl, ident, frag, 64, proto, 0, _addr(src), _addr(dst)
    )
    return head + options + payload


def ip6(src: str, dst: str, nh: int, payload: bytes, *, plen: int | None = None) -> bytes:
    length = len(payload) if plen is None else plen
    return struct.pack("!IHBB16s16s", 6 << 28, length, nh, 64, _addr(src), _addr(dst)) + payload


def ext6(nh: int, body_len8: int = 0) -> bytes:
    """A hop-by-hop / routing / destination-options header of (body_len8 + 1) * 8 bytes."""
    return bytes([nh, body_len8]) + bytes(6 + 8 * body_len8)


def frag6(nh: int, offset8: int, more: bool = False) -> bytes:
    return struct.pack("!BBHI", nh, 0, (offset8 << 3) | int(more), 0x1234)


def tcp(sport: int, dport: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + data


def udp(sport: int, dport: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def icmp(typ: int, code: int, data: bytes = b"") -> bytes:
    return struct.pack("!BBHI", typ, code, 0, 0) + data


def eth(
    payload: bytes,
    ethertype: int = ETH_IP4,
    src: bytes = MAC_A,
    dst: bytes = MAC_B,
    vlans: Iterable[tuple[int, int]] = (),
) -> bytes:
    """An Ethernet frame; ``vlans`` are (TPID, VID) tags, outermost first."""
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in vlans)
    return dst + src + tags + struct.pack("!H", ethertype) + payload


def pcap(
    packets: Iterable[tuple[float, bytes]],
    linktype: int = 1,
    *,
    big: bool = False,
    nanos: bool = False,
    caplen: int | None = None,
) -> bytes:
    """A classic pcap file; ``caplen`` truncates every record (snaplen)."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for ts, data in packets:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nanos else 1e6))
        cap = data if caplen is None else data[:caplen]
        out.append(struct.pack(e + "IIII", sec, frac, len(cap), len(data)) + cap)
    return b"".join(out)


def ng_block(btype: int, body: bytes, e: str = "<") -> bytes:
    body += bytes(-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def ng_shb(e: str = "<") -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)


def ng_idb(
    linktype: int, e: str = "<", tsresol: int | None = None, tsoffset: int | None = None
) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(e + "HH", 9, 1) + bytes([tsresol, 0, 0, 0])
    if tsoffset is not None:
        opts += struct.pack(e + "HHq", 14, 8, tsoffset)
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return ng_block(1, struct.pack(e + "HHI", linktype, 0, 0) + opts, e)


def ng_epb(ifid: int, ticks: int, data: bytes, e: str = "<", origlen: int | None = None) -> bytes:
    olen = len(data) if origlen is None else origlen
    head = struct.pack(e + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), olen)
    return ng_block(6, head + data, e)


def ng_spb(data: bytes, e: str = "<") -> bytes:
    return ng_block(3, struct.pack(e + "I", len(data)) + data, e)


def ng_pb(ifid: int, ticks: int, data: bytes, e: str = "<") -> bytes:
    head = struct.pack(e + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return ng_block(2, head + data, e)


def as_buf(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()
