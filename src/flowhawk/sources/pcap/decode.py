"""Packet decoding: capture records to packet columns (addresses, ports, flags, lengths).

A pure numba kernel from bytes to columns: no I/O, no exceptions on bad input. Each
packet gets a status code; only ``ST_OK`` packets carry a flow key. Conventions,
shared with the flow meter and with NetFlow exporters:

- addresses are 128 bits in two ``uint64`` columns; IPv4 is IPv4-mapped
  (``hi = 0``, ``lo = 0xffff_0000_0000 | v4``), as in :mod:`flowhawk.netaddr`;
- ``ip_len`` is the IP-layer length: IPv4 total length, IPv6 payload length + 40
  (captured bytes from the IP header on when the header says 0: TSO or jumbogram);
- ICMP and ICMPv6 put ``type * 256 + code`` in ``dport`` with ``sport`` 0;
- a non-first IP fragment has no transport header: ports (and TCP flags) are 0 and
  the protocol is kept, as softflowd and nfpcapd do;
- ``vlan`` is the VID of the innermost 802.1Q / 802.1ad (QinQ) tag with a non-zero
  VID, -1 without one: the inner (customer) tag names the network the hosts are in,
  which is what a behavioral model wants to separate; a priority-only tag (VID 0)
  is not a VLAN;
- MACs are 48-bit values in ``uint64``, :data:`NO_MAC` where the link has none
  (raw IP, loopback; Linux cooked captures carry only the sender's).

Link types: EN10MB (1), RAW (101, 12, 14), IPV4 (228), IPV6 (229), NULL (0),
LOOP (108), LINUX_SLL (113), LINUX_SLL2 (276), PPP (9, 50), C_HDLC (104) and PPI
(192) wrapping one of these. Inside Ethernet-like links: VLAN tags, LLC/SNAP,
PPPoE sessions and MPLS label stacks. IPv6 hop-by-hop, routing, fragment and
destination-options headers are walked. Tunnels are not opened: GRE, IP-in-IP,
ESP... are flows of the outer protocol, with ports 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from flowhawk.jit import numba
from flowhawk.sources.pcap.capfile import LT_BAD_RECORD, Records

# Per-packet status codes.
ST_OK = 0
ST_NOT_IP = 1  # ARP, LLDP, STP...: not an error, counted as ignored
ST_TRUNCATED = 2  # the capture ends before the headers the flow key needs
ST_BAD_HEADER = 3  # an IP header that cannot be right (version, lengths)
ST_UNSUPPORTED_LINK = 4  # a link type this decoder does not read
ST_BAD_RECORD = 5  # the capture record itself is unusable (unknown pcapng interface)

#: Reason strings for diagnostics, per status that counts as a skipped record.
SKIP_REASONS: dict[int, str] = {
    ST_TRUNCATED: "truncated packet",
    ST_BAD_HEADER: "bad IP header",
    ST_UNSUPPORTED_LINK: "unsupported link type",
    ST_BAD_RECORD: "bad capture record",
}

NO_MAC = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
NO_VLAN = -1

_V4_MAPPED = np.uint64(0xFFFF_0000_0000)
_AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, macOS


class Packets(NamedTuple):
    """Packet columns; rows whose ``status`` is not ``ST_OK`` carry no flow key."""

    ts_us: np.ndarray  # int64
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray  # uint64
    dst_hi: np.ndarray  # uint64
    dst_lo: np.ndarray  # uint64
    sport: np.ndarray  # uint16
    dport: np.ndarray  # uint16
    proto: np.ndarray  # uint8
    tcp_flags: np.ndarray  # uint8
    ip_len: np.ndarray  # int64
    vlan: np.ndarray  # int16, NO_VLAN when untagged
    src_mac: np.ndarray  # uint64, NO_MAC when unknown
    dst_mac: np.ndarray  # uint64
    status: np.ndarray  # uint8, ST_*


def decode(buf: np.ndarray, records: Records) -> Packets:
    """Decode the packets that ``records`` locate in ``buf`` into columns."""
    n = len(records.offset)
    cols = Packets(
        records.ts_us,
        np.empty(n, np.uint64),
        np.empty(n, np.uint64),
        np.empty(n, np.uint64),
        np.empty(n, np.uint64),
        np.empty(n, np.uint16),
        np.empty(n, np.uint16),
        np.empty(n, np.uint8),
        np.empty(n, np.uint8),
        np.empty(n, np.int64),
        np.empty(n, np.int16),
        np.empty(n, np.uint64),
        np.empty(n, np.uint64),
        np.empty(n, np.uint8),
    )
    _decode_all(buf, records.offset, records.caplen, records.linktype, *cols[1:])
    return cols


# The kernels pass only scalars between functions and write the output arrays in one
# place: handing arrays to a helper per packet costs numba a reference-count update
# per array and call, which made decoding several times slower.


@numba.njit(cache=True, nogil=True, inline="always")
def _be16(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@numba.njit(cache=True, nogil=True, inline="always")
def _be32(buf, p):
    return (_be16(buf, p) << 16) | _be16(buf, p + 2)


@numba.njit(cache=True, nogil=True, inline="always")
def _be64u(buf, p):
    return (np.uint64(_be32(buf, p)) << np.uint64(32)) | np.uint64(_be32(buf, p + 4))


@numba.njit(cache=True, nogil=True, inline="always")
def _mac(buf, p):
    return (np.uint64(_be16(buf, p)) << np.uint64(32)) | np.uint64(_be32(buf, p + 2))


@numba.njit(cache=True, nogil=True)
def _decode_all(
    buf,
    offs,
    caps,
    lts,
    shi,
    slo,
    dhi,
    dlo,
    sport,
    dport,
    proto,
    flags,
    iplen,
    vlan,
    smac,
    dmac,
    status,
):
    for i in range(offs.shape[0]):
        p = offs[i]
        st, et, q, vid, sm, dm = _link(buf, p, p + caps[i], lts[i])
        vlan[i] = vid
        smac[i] = sm
        dmac[i] = dm
        if st == ST_OK:
            if et == 0x0800:
                st, a, b, c, d, sp, dp, pr, fl, ln = _ipv4(buf, q, p + caps[i])
            elif et == 0x86DD:
                st, a, b, c, d, sp, dp, pr, fl, ln = _ipv6(buf, q, p + caps[i])
            else:
                st, a, b, c, d, sp, dp, pr, fl, ln = _no_ip(ST_NOT_IP)
        else:
            st, a, b, c, d, sp, dp, pr, fl, ln = _no_ip(st)
        status[i] = st
        shi[i] = a
        slo[i] = b
        dhi[i] = c
        dlo[i] = d
        sport[i] = sp
        dport[i] = dp
        proto[i] = pr
        flags[i] = fl
        iplen[i] = ln


@numba.njit(cache=True, nogil=True, inline="always")
def _no_ip(st):
    z = np.uint64(0)
    return np.int64(st), z, z, z, z, np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0)


@numba.njit(cache=True, nogil=True, inline="always")
def _link(buf, p, end, lt):
    """(status, ethertype, offset of the network header, VLAN, source MAC, destination MAC)."""
    vid = np.int64(NO_VLAN)
    sm = NO_MAC
    dm = NO_MAC
    et = np.int64(-1)
    if lt == LT_BAD_RECORD:
        return np.int64(ST_BAD_RECORD), et, p, vid, sm, dm
    if lt == 192:  # PPI: a header naming the inner link type
        if p + 8 > end:
            return np.int64(ST_TRUNCATED), et, p, vid, sm, dm
        plen = np.int64(buf[p + 2]) | (np.int64(buf[p + 3]) << 8)
        lt = (
            np.int64(buf[p + 4])
            | (np.int64(buf[p + 5]) << 8)
            | (np.int64(buf[p + 6]) << 16)
            | (np.int64(buf[p + 7]) << 24)
        )
        p += plen
    q = p  # start of what follows the link header
    ether = False
    if lt == 1:  # Ethernet
        if p + 14 > end:
            return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
        dm = _mac(buf, p)
        sm = _mac(buf, p + 6)
        et = _be16(buf, p + 12)
        q = p + 14
        ether = True
    elif lt == 101 or lt == 12 or lt == 14 or lt == 228 or lt == 229:  # raw IP
        if q >= end:
            return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
        et = np.int64(0x0800) if (buf[q] >> 4) == 4 else np.int64(0x86DD)
    elif lt == 0 or lt == 108:  # BSD loopback: address family, host or network order
        if p + 4 > end:
            return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
        af = _be32(buf, p)
        if lt == 0 and af > 0xFFFF:
            af = (
                np.int64(buf[p])
                | (np.int64(buf[p + 1]) << 8)
                | (np.int64(buf[p + 2]) << 16)
                | (np.int64(buf[p + 3]) << 24)
            )
        q = p + 4
        if af == 2:
            et = np.int64(0x0800)
        elif af == 10 or af == 24 or af == 28 or af == 30:
            et = np.int64(0x86DD)
        else:
            return np.int64(ST_NOT_IP), et, q, vid, sm, dm
    elif lt == 113:  # Linux cooked v1
        if p + 16 > end:
            return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
        if _be16(buf, p + 2) == 1 and _be16(buf, p + 4) == 6:
            sm = _mac(buf, p + 6)
        et = _be16(buf, p + 14)
        q = p + 16
    elif lt == 276:  # Linux cooked v2
        if p + 20 > end:
            return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
        if _be16(buf, p + 8) == 1 and buf[p + 11] == 6:
            sm = _mac(buf, p + 12)
        et = _be16(buf, p)
        q = p + 20
    elif lt == 104:  # Cisco HDLC
        if p + 4 > end:
            return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
        et = _be16(buf, p + 2)
        q = p + 4
    elif lt == 9 or lt == 50:  # PPP, PPP in HDLC framing
        if q + 2 <= end and buf[q] == 0xFF and buf[q + 1] == 0x03:
            q += 2
        if q + 1 > end:
            return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
        if buf[q] & 1:  # protocol field compressed to one byte
            pp = np.int64(buf[q])
            q += 1
        else:
            if q + 2 > end:
                return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
            pp = _be16(buf, q)
            q += 2
        if pp == 0x21:
            et = np.int64(0x0800)
        elif pp == 0x57:
            et = np.int64(0x86DD)
        else:
            return np.int64(ST_NOT_IP), et, q, vid, sm, dm
    else:
        return np.int64(ST_UNSUPPORTED_LINK), et, q, vid, sm, dm

    # Encapsulations inside Ethernet-like links, outermost first.
    for _ in range(16):
        if et == 0x8100 or et == 0x88A8 or et == 0x9100:
            if q + 4 > end:
                return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
            tag = _be16(buf, q) & 0xFFF
            if tag != 0:
                vid = tag
            et = _be16(buf, q + 2)
            q += 4
        elif et < 0x0600 and ether:  # 802.3 length field: only LLC/SNAP can carry IP
            if q + 8 <= end and buf[q] == 0xAA and buf[q + 1] == 0xAA and buf[q + 2] == 0x03:
                et = _be16(buf, q + 6)
                q += 8
                ether = False
            else:
                return np.int64(ST_NOT_IP), et, q, vid, sm, dm
        elif et == 0x8864:  # PPPoE session
            if q + 8 > end:
                return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
            pp = _be16(buf, q + 6)
            q += 8
            if pp == 0x21:
                et = np.int64(0x0800)
            elif pp == 0x57:
                et = np.int64(0x86DD)
            else:
                return np.int64(ST_NOT_IP), et, q, vid, sm, dm
        elif et == 0x8847:  # MPLS unicast: pop to the bottom of the stack
            while True:
                if q + 4 > end:
                    return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
                bottom = buf[q + 2] & 1
                q += 4
                if bottom:
                    break
            if q >= end:
                return np.int64(ST_TRUNCATED), et, q, vid, sm, dm
            v = buf[q] >> 4
            if v == 4:
                et = np.int64(0x0800)
            elif v == 6:
                et = np.int64(0x86DD)
            else:
                return np.int64(ST_NOT_IP), et, q, vid, sm, dm
        else:
            break
    return np.int64(ST_OK), et, q, vid, sm, dm


@numba.njit(cache=True, nogil=True, inline="always")
def _ipv4(buf, q, end):
    if q + 20 > end:
        return _no_ip(ST_TRUNCATED)
    if (buf[q] >> 4) != 4:
        return _no_ip(ST_BAD_HEADER)
    ihl = np.int64(buf[q] & 0x0F) * 4
    if ihl < 20:
        return _no_ip(ST_BAD_HEADER)
    total = _be16(buf, q + 2)
    if total == 0:  # segmentation offload captured on the sending host
        total = end - q
    elif total < ihl:
        return _no_ip(ST_BAD_HEADER)
    if q + ihl > end:
        return _no_ip(ST_TRUNCATED)
    z = np.uint64(0)
    s_lo = _V4_MAPPED | np.uint64(_be32(buf, q + 12))
    d_lo = _V4_MAPPED | np.uint64(_be32(buf, q + 16))
    pr = np.int64(buf[q + 9])
    if _be16(buf, q + 6) & 0x1FFF:  # non-first fragment: no transport header
        return np.int64(ST_OK), z, s_lo, z, d_lo, np.int64(0), np.int64(0), pr, np.int64(0), total
    st, sp, dp, fl = _transport(buf, q + ihl, end, q + total, pr)
    return st, z, s_lo, z, d_lo, sp, dp, pr, fl, total


@numba.njit(cache=True, nogil=True, inline="always")
def _ipv6(buf, q, end):
    if q + 40 > end:
        return _no_ip(ST_TRUNCATED)
    if (buf[q] >> 4) != 6:
        return _no_ip(ST_BAD_HEADER)
    total = _be16(buf, q + 4) + 40
    if total == 40:  # jumbogram or offload: the header does not say
        total = max(end - q, np.int64(40))
    s_hi, s_lo = _be64u(buf, q + 8), _be64u(buf, q + 16)
    d_hi, d_lo = _be64u(buf, q + 24), _be64u(buf, q + 32)
    ip_end = q + total
    limit = min(end, ip_end)
    nh = np.int64(buf[q + 6])
    l4 = q + 40
    zero = np.int64(0)
    for _ in range(16):
        if nh == 0 or nh == 43 or nh == 60:  # hop-by-hop, routing, destination options
            if l4 + 2 > limit:
                st = ST_TRUNCATED if l4 + 2 > end else ST_BAD_HEADER
                return np.int64(st), s_hi, s_lo, d_hi, d_lo, zero, zero, nh, zero, total
            nxt = np.int64(buf[l4])
            l4 += (np.int64(buf[l4 + 1]) + 1) * 8
            nh = nxt
        elif nh == 44:  # fragment header
            if l4 + 8 > limit:
                st = ST_TRUNCATED if l4 + 8 > end else ST_BAD_HEADER
                return np.int64(st), s_hi, s_lo, d_hi, d_lo, zero, zero, nh, zero, total
            nxt = np.int64(buf[l4])
            offset = _be16(buf, l4 + 2) >> 3
            l4 += 8
            nh = nxt
            if offset != 0:  # non-first fragment: no transport header
                return np.int64(ST_OK), s_hi, s_lo, d_hi, d_lo, zero, zero, nh, zero, total
        else:
            break
    st, sp, dp, fl = _transport(buf, l4, end, ip_end, nh)
    return st, s_hi, s_lo, d_hi, d_lo, sp, dp, nh, fl, total


@numba.njit(cache=True, nogil=True, inline="always")
def _transport(buf, l4, end, ip_end, pr):
    """(status, ports or ICMP type/code, TCP flags); the header must lie in the capture
    and inside the IP length."""
    zero = np.int64(0)
    if pr == 6:
        need = 14
    elif pr == 17 or pr == 132 or pr == 136 or pr == 33:  # UDP, SCTP, UDP-Lite, DCCP
        need = 4
    elif pr == 1 or pr == 58:
        need = 2
    else:
        return np.int64(ST_OK), zero, zero, zero
    if l4 + need > end:
        return np.int64(ST_TRUNCATED), zero, zero, zero
    if l4 + need > ip_end:  # the IP length says the header is not there
        return np.int64(ST_BAD_HEADER), zero, zero, zero
    if need == 2:
        return np.int64(ST_OK), zero, _be16(buf, l4), zero
    fl = np.int64(buf[l4 + 13]) if pr == 6 else zero
    return np.int64(ST_OK), _be16(buf, l4), _be16(buf, l4 + 2), fl
