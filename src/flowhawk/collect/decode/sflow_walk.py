"""The sFlow v5 datagram walker: one numba kernel from datagram bytes to sample arrays.

:func:`walk` reads a batch of datagrams laid end to end in one ``uint8`` buffer and
fills preallocated field-major 2-D arrays: one row per field (the ``D_*``, ``F_*``,
``A_*`` and ``C_*`` constants), one column per datagram, flow sample and generic
interface counter record. It does not parse sampled packet headers: it records where each
raw header is (offset, length, link type), so that the caller decodes all of them in
one call of the pcap packet decoder (:func:`flowhawk.sources.pcap.decode.decode`).

Every read is checked against the end of its datagram, sample or record (the
enclosing length fields are never trusted past the datagram). A datagram gets one
error code, the first damage found (``E_*``, :data:`REASONS`); whatever was readable
before it is kept, and samples whose own length is intact are read even after a
damaged one, since the sample length fields still frame them. Formats this decoder
does not use are counted in ``ignored`` (``I_*``, :data:`IGNORED`).
"""

from __future__ import annotations

import numpy as np

from flowhawk.jit import numba
from flowhawk.sources.pcap.decode import NO_MAC

# Datagram fields (int64).
D_ERR, D_HDR, D_ATYPE, D_SUB, D_SEQ, D_UPTIME, D_NCLAIM, D_NREAD = range(8)
N_D = 8
# Flow sample fields (int64). F_LT is LT_NONE without a raw header; F_IPV is 0, 4 or 6
# when a sampled IPv4 / IPv6 record was read; F_VIN / F_VOUT are -1 without a VLAN.
F_DG, F_IDX, F_SEQ, F_STYPE, F_SIDX, F_RATE, F_POOL, F_DROPS = range(8)
F_HOFF, F_HLEN, F_LT, F_FRAME, F_STRIP = range(8, 13)  # raw packet header
F_IPV, F_IPLEN, F_PROTO, F_SPORT, F_DPORT, F_FLAGS = range(13, 19)  # sampled IPv4 / IPv6
F_VIN, F_VOUT = range(19, 21)  # extended switch
N_F = 21
# Flow sample addresses and MACs (uint64): from sampled IPv4/IPv6 and Ethernet records.
A_SHI, A_SLO, A_DHI, A_DLO, A_SMAC, A_DMAC = range(6)
N_A = 6
# Generic interface counter fields (uint64): sample fields, then the record's in its order.
C_DG, C_SEQ, C_STYPE, C_SIDX = range(4)
C_IFINDEX, C_IFTYPE, C_SPEED, C_DIRECTION, C_STATUS = range(4, 9)
C_IN_OCTETS, C_IN_UCAST, C_IN_MCAST, C_IN_BCAST, C_IN_DISCARDS = range(9, 14)
C_IN_ERRORS, C_IN_UNKNOWN = range(14, 16)
C_OUT_OCTETS, C_OUT_UCAST, C_OUT_MCAST, C_OUT_BCAST, C_OUT_DISCARDS = range(16, 21)
C_OUT_ERRORS, C_PROMISC = range(21, 23)
N_C = 23

LT_NONE = -2  # no raw header, or a header protocol the packet decoder cannot read

# Datagram error codes: the first damage found in a datagram.
E_OK = 0
E_SHORT = 1
E_VERSION = 2
E_ADDR_TYPE = 3
E_COUNT_HIGH = 4
E_SAMPLE_OVERRUN = 5
E_COUNT_LOW = 6
E_SAMPLE_SHORT = 7
E_REC_COUNT_HIGH = 8
E_REC_OVERRUN = 9
E_REC_COUNT_LOW = 10
E_REC_SHORT = 11
E_HDR_OVERRUN = 12

REASONS: dict[int, str] = {
    E_SHORT: "datagram shorter than its header",
    E_VERSION: "not sFlow version 5",
    E_ADDR_TYPE: "bad agent address type",
    E_COUNT_HIGH: "sample count exceeds datagram",
    E_SAMPLE_OVERRUN: "sample overruns datagram",
    E_COUNT_LOW: "bytes after the last sample",
    E_SAMPLE_SHORT: "sample shorter than its fields",
    E_REC_COUNT_HIGH: "record count exceeds sample",
    E_REC_OVERRUN: "record overruns sample",
    E_REC_COUNT_LOW: "bytes after the last record",
    E_REC_SHORT: "record shorter than its format",
    E_HDR_OVERRUN: "sampled header overruns its record",
}

# Ignored (not errors): counted per occurrence.
I_SAMPLE_FORMAT, I_COUNTER_FORMAT = 0, 1
IGNORED: dict[int, str] = {
    I_SAMPLE_FORMAT: "sample format not decoded",
    I_COUNTER_FORMAT: "counter record format not decoded",
}
N_I = 2

_V4_MAPPED = np.uint64(0xFFFF_0000_0000)


@numba.njit(cache=True, nogil=True, inline="always")
def _be32(buf, p):
    return (
        (np.int64(buf[p]) << 24)
        | (np.int64(buf[p + 1]) << 16)
        | (np.int64(buf[p + 2]) << 8)
        | np.int64(buf[p + 3])
    )


@numba.njit(cache=True, nogil=True, inline="always")
def _u64(buf, p):
    return (np.uint64(_be32(buf, p)) << np.uint64(32)) | np.uint64(_be32(buf, p + 4))


@numba.njit(cache=True, nogil=True, inline="always")
def _mac(buf, p):
    return (np.uint64(_be32(buf, p)) << np.uint64(16)) | np.uint64(
        (np.int64(buf[p + 4]) << 8) | np.int64(buf[p + 5])
    )


@numba.njit(cache=True, nogil=True, inline="always")
def _link_type(header_protocol):
    """Pcap link type for an sFlow header protocol (Ethernet, IPv4, IPv6, PPP, POS)."""
    if header_protocol == 1:
        return 1
    if header_protocol == 11:
        return 228
    if header_protocol == 12:
        return 229
    if header_protocol == 7:
        return 9
    if header_protocol == 14:
        return 50
    return LT_NONE


@numba.njit(cache=True, nogil=True, inline="always")
def _vlan(v):
    return v if 0 < v < 4095 else np.int64(-1)


@numba.njit(cache=True, nogil=True)
def walk(buf, dg_off, dg_len, di, da, fi, fa, ci, ign):
    """Fill ``di``/``da`` per datagram; return the numbers of flow samples and counter records."""
    nf = 0
    nc = 0
    for d in range(dg_off.shape[0]):
        p = dg_off[d]
        end = p + dg_len[d]
        for c in range(N_D):
            di[c, d] = 0
        da[0, d] = 0
        da[1, d] = 0
        if p + 8 > end:
            di[D_ERR, d] = E_SHORT
            continue
        if _be32(buf, p) != 5:
            di[D_ERR, d] = E_VERSION
            continue
        atype = _be32(buf, p + 4)
        if atype == 1:
            alen = 4
        elif atype == 2:
            alen = 16
        elif atype == 0:  # "unknown": no address follows
            alen = 0
        else:
            di[D_ERR, d] = E_ADDR_TYPE
            continue
        q = p + 8 + alen
        if q + 16 > end:
            di[D_ERR, d] = E_SHORT
            continue
        if atype == 1:
            da[1, d] = _V4_MAPPED | np.uint64(_be32(buf, p + 8))
        elif atype == 2:
            da[0, d] = _u64(buf, p + 8)
            da[1, d] = _u64(buf, p + 16)
        nclaim = _be32(buf, q + 12)
        di[D_HDR, d] = 1
        di[D_ATYPE, d] = atype
        di[D_SUB, d] = _be32(buf, q)
        di[D_SEQ, d] = _be32(buf, q + 4)
        di[D_UPTIME, d] = _be32(buf, q + 8)
        di[D_NCLAIM, d] = nclaim
        q += 16
        err = E_OK
        k = 0
        while k < nclaim:
            if q == end:
                err = E_COUNT_HIGH
                break
            if q + 8 > end:
                err = E_SAMPLE_OVERRUN
                break
            fmt = _be32(buf, q)
            s = q + 8
            se = s + _be32(buf, q + 4)
            if se > end:
                err = E_SAMPLE_OVERRUN
                break
            e = E_OK
            if fmt == 1 or fmt == 3:  # flow sample, expanded flow sample (enterprise 0)
                r = s + (44 if fmt == 3 else 32)
                if r > se:
                    e = E_SAMPLE_SHORT
                else:
                    row = nf
                    nf += 1
                    fi[F_DG, row] = d
                    fi[F_IDX, row] = k
                    fi[F_SEQ, row] = _be32(buf, s)
                    if fmt == 3:
                        fi[F_STYPE, row] = _be32(buf, s + 4)
                        fi[F_SIDX, row] = _be32(buf, s + 8)
                        w = s + 12
                    else:
                        src = _be32(buf, s + 4)
                        fi[F_STYPE, row] = src >> 24
                        fi[F_SIDX, row] = src & 0xFFFFFF
                        w = s + 8
                    fi[F_RATE, row] = _be32(buf, w)
                    fi[F_POOL, row] = _be32(buf, w + 4)
                    fi[F_DROPS, row] = _be32(buf, w + 8)
                    nrec = _be32(buf, r - 4)
                    for c in range(F_HOFF, N_F):
                        fi[c, row] = 0
                    fi[F_LT, row] = LT_NONE
                    fi[F_VIN, row] = -1
                    fi[F_VOUT, row] = -1
                    for c in range(N_A):
                        fa[c, row] = 0
                    fa[A_SMAC, row] = NO_MAC
                    fa[A_DMAC, row] = NO_MAC
                    have_hdr = False
                    j = 0
                    while j < nrec:
                        if r == se:
                            e = E_REC_COUNT_HIGH
                            break
                        if r + 8 > se:
                            e = E_REC_OVERRUN
                            break
                        rf = _be32(buf, r)
                        rs = r + 8
                        re = rs + _be32(buf, r + 4)
                        if re > se:
                            e = E_REC_OVERRUN
                            break
                        rl = re - rs
                        if rf == 1:  # raw packet header
                            if rl < 16:
                                e = E_REC_SHORT if e == E_OK else e
                            elif rs + 16 + _be32(buf, rs + 12) > re:
                                e = E_HDR_OVERRUN if e == E_OK else e
                            elif not have_hdr:
                                have_hdr = True
                                fi[F_LT, row] = _link_type(_be32(buf, rs))
                                fi[F_FRAME, row] = _be32(buf, rs + 4)
                                fi[F_STRIP, row] = _be32(buf, rs + 8)
                                fi[F_HLEN, row] = _be32(buf, rs + 12)
                                fi[F_HOFF, row] = rs + 16
                        elif rf == 2:  # sampled Ethernet: length, src MAC, dst MAC, type
                            if rl < 24:
                                e = E_REC_SHORT if e == E_OK else e
                            else:
                                fa[A_SMAC, row] = _mac(buf, rs + 4)
                                fa[A_DMAC, row] = _mac(buf, rs + 12)
                        elif rf == 3 or rf == 4:  # sampled IPv4 / IPv6
                            alen = 4 if rf == 3 else 16
                            if rl < 24 + 2 * alen:
                                e = E_REC_SHORT if e == E_OK else e
                            else:
                                fi[F_IPV, row] = 4 if rf == 3 else 6
                                fi[F_IPLEN, row] = _be32(buf, rs)
                                fi[F_PROTO, row] = _be32(buf, rs + 4)
                                a = rs + 8
                                if rf == 3:
                                    fa[A_SHI, row] = 0
                                    fa[A_SLO, row] = _V4_MAPPED | np.uint64(_be32(buf, a))
                                    fa[A_DHI, row] = 0
                                    fa[A_DLO, row] = _V4_MAPPED | np.uint64(_be32(buf, a + 4))
                                else:
                                    fa[A_SHI, row] = _u64(buf, a)
                                    fa[A_SLO, row] = _u64(buf, a + 8)
                                    fa[A_DHI, row] = _u64(buf, a + 16)
                                    fa[A_DLO, row] = _u64(buf, a + 24)
                                a += 2 * alen
                                fi[F_SPORT, row] = _be32(buf, a)
                                fi[F_DPORT, row] = _be32(buf, a + 4)
                                fi[F_FLAGS, row] = _be32(buf, a + 8)
                        elif rf == 1001:  # extended switch: src VLAN, priority, dst VLAN, ...
                            if rl < 16:
                                e = E_REC_SHORT if e == E_OK else e
                            else:
                                fi[F_VIN, row] = _vlan(_be32(buf, rs))
                                fi[F_VOUT, row] = _vlan(_be32(buf, rs + 8))
                        r = re
                        j += 1
                    if e == E_OK and r < se:
                        e = E_REC_COUNT_LOW
            elif fmt == 2 or fmt == 4:  # counter sample, expanded counter sample
                r = s + (16 if fmt == 4 else 12)
                if r > se:
                    e = E_SAMPLE_SHORT
                else:
                    cseq = _be32(buf, s)
                    if fmt == 4:
                        stype = _be32(buf, s + 4)
                        sidx = _be32(buf, s + 8)
                    else:
                        stype = _be32(buf, s + 4) >> 24
                        sidx = _be32(buf, s + 4) & 0xFFFFFF
                    nrec = _be32(buf, r - 4)
                    j = 0
                    while j < nrec:
                        if r == se:
                            e = E_REC_COUNT_HIGH
                            break
                        if r + 8 > se:
                            e = E_REC_OVERRUN
                            break
                        rf = _be32(buf, r)
                        rs = r + 8
                        re = rs + _be32(buf, r + 4)
                        if re > se:
                            e = E_REC_OVERRUN
                            break
                        if rf != 1:
                            ign[I_COUNTER_FORMAT] += 1
                        elif re - rs < 88:
                            e = E_REC_SHORT if e == E_OK else e
                        else:  # generic interface counters
                            ci[C_DG, nc] = d
                            ci[C_SEQ, nc] = cseq
                            ci[C_STYPE, nc] = stype
                            ci[C_SIDX, nc] = sidx
                            ci[C_IFINDEX, nc] = _be32(buf, rs)
                            ci[C_IFTYPE, nc] = _be32(buf, rs + 4)
                            ci[C_SPEED, nc] = _u64(buf, rs + 8)
                            ci[C_DIRECTION, nc] = _be32(buf, rs + 16)
                            ci[C_STATUS, nc] = _be32(buf, rs + 20)
                            ci[C_IN_OCTETS, nc] = _u64(buf, rs + 24)
                            for c in range(6):  # in ucast ... in unknown protos
                                ci[C_IN_UCAST + c, nc] = _be32(buf, rs + 32 + 4 * c)
                            ci[C_OUT_OCTETS, nc] = _u64(buf, rs + 56)
                            for c in range(6):  # out ucast ... promiscuous mode
                                ci[C_OUT_UCAST + c, nc] = _be32(buf, rs + 64 + 4 * c)
                            nc += 1
                        r = re
                        j += 1
                    if e == E_OK and r < se:
                        e = E_REC_COUNT_LOW
            else:
                ign[I_SAMPLE_FORMAT] += 1
            if err == E_OK:
                err = e
            q = se
            k += 1
        if err == E_OK and q < end:
            err = E_COUNT_LOW
        di[D_ERR, d] = err
        di[D_NREAD, d] = k
    return nf, nc


@numba.njit(cache=True, nogil=True)
def fix_ip_lengths(buf, off, cap, frame, strip, ip_len):
    """Where an IP header says nothing of its length (IPv4 total length 0, IPv6 payload
    length 0), the packet decoder counted the captured bytes from the IP header on; take
    the sampled frame's length minus the link header and stripped bytes instead."""
    for i in range(off.shape[0]):
        end = off[i] + cap[i]
        q = end - ip_len[i]
        if q < off[i] or q + 6 > end:
            continue
        v = buf[q] >> 4
        if v == 4:
            said = (np.int64(buf[q + 2]) << 8) | np.int64(buf[q + 3])
        elif v == 6:
            said = (np.int64(buf[q + 4]) << 8) | np.int64(buf[q + 5])
        else:
            continue
        if said == 0:
            n = frame[i] - strip[i] - (q - off[i])
            if n > ip_len[i]:
                ip_len[i] = n


@numba.njit(cache=True, nogil=True)
def sequences(group, value, expected, window):
    """Walk sequence numbers in arrival order per group: (jumps, missing) per group.

    ``expected`` (per group, -1 when unknown) is updated in place. A number ahead of the
    expected one is a jump (the numbers skipped are missing); one behind by at most
    ``window`` is a late arrival, which changes nothing (the gap it left stays counted:
    reordering between an agent and its collector is rare, and an agent restarting at
    a low number must not make counts go backwards); further behind, a restart.
    """
    jumps = np.zeros(expected.shape[0], np.int64)
    missing = np.zeros(expected.shape[0], np.int64)
    for i in range(group.shape[0]):
        g = group[i]
        v = value[i]
        x = expected[g]
        if x >= 0 and v != x:
            ahead = (v - x) & 0xFFFFFFFF
            if ahead < 0x80000000:
                jumps[g] += 1
                missing[g] += ahead
            elif ((x - v) & 0xFFFFFFFF) <= window:
                continue
        expected[g] = (v + 1) & 0xFFFFFFFF
    return jumps, missing


@numba.njit(cache=True, nogil=True)
def drop_deltas(group, value, last):
    """Sum per group of the increases of a cumulative counter (``last``: -1 = unknown,
    updated in place); a counter that went down restarted from zero."""
    total = np.zeros(last.shape[0], np.int64)
    for i in range(group.shape[0]):
        g = group[i]
        v = value[i]
        if last[g] >= 0:
            total[g] += v - last[g] if v >= last[g] else v
        last[g] = v
    return total
