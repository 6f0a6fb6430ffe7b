"""Synthetic packet headers for sFlow samples: Ethernet + IPv4/IPv6 + TCP/UDP/ICMP.

Built for many packets at once in a (packets, snaplen) byte matrix: every field is
written with one vectorized assignment at per-row offsets (a VLAN tag or an IPv6
header shifts what follows). Lengths are realistic (the IP total length is the
flow's average packet size in that direction), the IPv4 header checksum is right,
TCP flags follow the flow's (SYN first, FIN or RST last, ACK/PSH between); payload
bytes are zeros, L4 checksums are 0 (a truncated header cannot be summed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ETH_MIN_FRAME = 64  # bytes, FCS included
FCS = 4
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass
class PacketSpec:
    """One row per packet to synthesize."""

    is_v6: np.ndarray  # bool
    src: np.ndarray  # (n, 16) uint8 addresses; IPv4 in the last 4 bytes
    dst: np.ndarray
    src_port: np.ndarray  # uint16 (ICMP: 0)
    dst_port: np.ndarray  # uint16 (ICMP: type*256+code)
    proto: np.ndarray  # uint8
    ip_len: np.ndarray  # int64 wanted IP total length
    tcp_flags: np.ndarray  # uint8
    vlan: np.ndarray  # uint16, 0 = untagged
    src_mac: np.ndarray  # (n, 6) uint8
    dst_mac: np.ndarray
    ident: np.ndarray  # uint32: IPv4 id / TCP sequence seed


def l4_header_len(proto: np.ndarray) -> np.ndarray:
    return np.select([proto == 6, (proto == 17) | (proto == 1) | (proto == 58)], [20, 8], 0)


def min_ip_len(is_v6: np.ndarray, proto: np.ndarray) -> np.ndarray:
    return np.where(is_v6, 40, 20) + l4_header_len(proto)


def frame_lengths(spec: PacketSpec) -> np.ndarray:
    """Frame length on the wire (Ethernet header, VLAN tag and FCS included, >= 64)."""
    ip_len = np.clip(spec.ip_len, min_ip_len(spec.is_v6, spec.proto), 65535)
    return np.maximum(14 + np.where(spec.vlan > 0, 4, 0) + ip_len + FCS, ETH_MIN_FRAME)


_ETH = [("dmac", "u1", (6,)), ("smac", "u1", (6,))]
_VLAN = [("tpid", ">u2"), ("tci", ">u2")]
_IP4 = [
    ("vihl", "u1"), ("tos", "u1"), ("len", ">u2"), ("id", ">u2"), ("frag", ">u2"),
    ("ttl", "u1"), ("proto", "u1"), ("csum", ">u2"), ("src", "u1", (4,)), ("dst", "u1", (4,)),
]  # fmt: skip
_IP6 = [
    ("vtf", ">u4"), ("plen", ">u2"), ("proto", "u1"), ("hlim", "u1"),
    ("src", "u1", (16,)), ("dst", "u1", (16,)),
]  # fmt: skip
_L4 = {
    "tcp": [
        ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("off", "u1"),
        ("flags", "u1"), ("win", ">u2"), ("l4sum", ">u2"), ("urg", ">u2"),
    ],
    "udp": [("sport", ">u2"), ("dport", ">u2"), ("ulen", ">u2"), ("l4sum", ">u2")],
    "icmp": [("itype", "u1"), ("icode", "u1"), ("l4sum", ">u2"), ("rest", ">u4")],
    "other": [],
}  # fmt: skip


def _layout(v6: bool, tagged: bool, l4: str) -> np.dtype:
    return np.dtype(
        _ETH + (_VLAN if tagged else []) + [("etype", ">u2")] + (_IP6 if v6 else _IP4) + _L4[l4]
    )


def _ipv4_checksum(r: np.ndarray) -> np.ndarray:
    def word(a: np.ndarray, i: int) -> np.ndarray:
        return a[:, i].astype(np.uint32) << 8 | a[:, i + 1]

    total = (
        (r["vihl"].astype(np.uint32) << 8 | r["tos"])
        + r["len"] + r["id"] + r["frag"]
        + (r["ttl"].astype(np.uint32) << 8 | r["proto"])
        + word(r["src"], 0) + word(r["src"], 2) + word(r["dst"], 0) + word(r["dst"], 2)
    )  # fmt: skip
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def build_headers(spec: PacketSpec, snaplen: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(headers (n, snaplen) uint8, captured length per row) for the packets of ``spec``.

    The captured length is what an sFlow agent copies: the frame without FCS, cut
    at ``snaplen``. Rows are built per header layout (family, VLAN tag, transport),
    each layout a numpy structured array filled column by column.
    """
    n = len(spec.is_v6)
    width = max(snaplen, 14 + 4 + 40 + 20)
    h = np.zeros((n, width), dtype=np.uint8)
    ip_len = np.clip(spec.ip_len, min_ip_len(spec.is_v6, spec.proto), 65535)
    tagged = spec.vlan > 0
    kind = np.select(
        [spec.proto == 6, spec.proto == 17, (spec.proto == 1) | (spec.proto == 58)],
        [0, 1, 2],
        3,
    )
    for v6 in (False, True):
        for tag in (False, True):
            for k, l4 in enumerate(("tcp", "udp", "icmp", "other")):
                rows = np.flatnonzero((spec.is_v6 == v6) & (tagged == tag) & (kind == k))
                if len(rows):
                    r = _fill(np.zeros(len(rows), _layout(v6, tag, l4)), spec, rows, ip_len, l4)
                    h[rows, : r.dtype.itemsize] = r.view(np.uint8).reshape(len(rows), -1)
    frame = np.maximum(14 + np.where(tagged, 4, 0) + ip_len + FCS, ETH_MIN_FRAME)
    captured = np.minimum(frame - FCS, snaplen)
    return h[:, :snaplen], captured


def _fill(
    r: np.ndarray, s: PacketSpec, rows: np.ndarray, ip_len: np.ndarray, l4: str
) -> np.ndarray:
    names = r.dtype.names or ()
    v6 = "vtf" in names
    r["dmac"], r["smac"] = s.dst_mac[rows], s.src_mac[rows]
    if "tpid" in names:
        r["tpid"], r["tci"] = 0x8100, s.vlan[rows] & 0x0FFF
    ln = ip_len[rows]
    if v6:
        r["etype"], r["vtf"], r["plen"], r["hlim"] = 0x86DD, 0x6000_0000, ln - 40, 64
        r["src"], r["dst"] = s.src[rows], s.dst[rows]
    else:
        r["etype"], r["vihl"], r["len"], r["ttl"] = 0x0800, 0x45, ln, 64
        r["id"], r["frag"] = s.ident[rows] & 0xFFFF, 0x4000  # don't fragment
        r["src"], r["dst"] = s.src[rows, 12:], s.dst[rows, 12:]
    r["proto"] = s.proto[rows]
    if not v6:
        r["csum"] = _ipv4_checksum(r)
    if l4 in ("tcp", "udp"):
        r["sport"], r["dport"] = s.src_port[rows], s.dst_port[rows]
    if l4 == "tcp":
        flags = s.tcp_flags[rows]
        ident = s.ident[rows].astype(np.uint64)
        r["seq"] = ident * 2654435761 & 0xFFFF_FFFF
        r["ack"] = np.where(flags & ACK, ident * 40503 & 0xFFFF_FFFF, 0)
        r["off"], r["flags"], r["win"] = 0x50, flags, 64240  # 5 words, no options
    elif l4 == "udp":
        r["ulen"] = ln - (40 if v6 else 20)
    elif l4 == "icmp":
        r["itype"], r["icode"] = s.dst_port[rows] >> 8, s.dst_port[rows] & 0xFF
    return r


def sample_flags(
    flow_flags: np.ndarray, reverse: np.ndarray, first: np.ndarray, last: np.ndarray
) -> np.ndarray:
    """Plausible TCP flags of one sampled packet, from its direction's cumulative flags.

    The first sampled packet is the SYN (SYN+ACK from the server) when the flow had
    one, the last the FIN or RST; the others ACK, with PSH when the flow pushed data.
    """
    f = flow_flags.astype(np.uint8)
    middle = np.where(
        f & ACK, ACK | (f & PSH), np.where(f == 0, ACK, f & np.uint8(0xFF ^ (FIN | RST)))
    )
    out = middle.astype(np.uint8)
    fin = last & ((f & FIN) > 0)
    rst = last & ((f & RST) > 0)
    out = np.where(fin, FIN | (f & ACK), out)
    out = np.where(rst & ~fin, RST | (f & ACK), out)
    syn = first & ((f & SYN) > 0)
    out = np.where(syn & ~reverse, SYN, out)
    out = np.where(syn & reverse, SYN | (f & ACK), out)
    return out.astype(np.uint8)
