"""Stitching on numeric columns: :func:`flowhawk.normalize.stitch.stitch` for
:class:`~flowhawk.normalize.rawcolumns.RawColumns` (the collector's records).

The rules are :mod:`.stitch`'s, to the record: the direction-free key (ICMP replies
keyed as their request), the side that spells first as text is side 0 (compared on the
numbers, :func:`~flowhawk.collect.decode.textcols.text_less`), a record joins the
session of its key when it starts no later than ``gap`` after the latest end so far,
records of a key are taken by start, then side, then arrival, and the client is chosen
as there. Only the way there differs: one compiled pass computes each record's key, a
64-bit hash of it and a packed row of what the session pass reads (two cache lines a
record instead of one per column); the records are sorted by hash (ties by start, side,
arrival), and one compiled pass cuts the sessions comparing exact keys, so two keys whose
hashes collide stay apart. Sessions come out in the order their first records arrived.
"""

from __future__ import annotations

import numpy as np

from flowhawk.collect.decode.textcols import HEX, OCTET_RANK, text_less_one
from flowhawk.jit import numba
from flowhawk.normalize.orient import ICMP6_REPLY_TO_REQUEST, ICMP_REPLY_TO_REQUEST
from flowhawk.normalize.rawcolumns import NO_MAC, RawColumns
from flowhawk.normalize.stitch import _ACK, _SYN

# Fields of the per-session arrays the kernel fills (one row per field).
(
    F_FIRST,  # first record (row in the input)
    F_TS0,  # its start
    F_END,  # latest end
    F_SAMPLING,  # highest sampling rate
    F_IDX0,  # first record of side 0 / 1 (-1: none)
    F_IDX1,
    F_FTS0,  # its start
    F_FTS1,
    F_PKTS0,  # sums per side
    F_PKTS1,
    F_BYTES0,
    F_BYTES1,
    F_FLAGS0,  # TCP flags, every record's
    F_FLAGS1,
    F_FFLAGS0,  # TCP flags of the side's first record
    F_FFLAGS1,
    F_REQ0,  # an ICMP request came from that side
    F_REQ1,
    F_VLAN,  # first record with a VLAN (-1: none)
    F_STATE,  # latest record with a state (-1: none)
) = range(20)
_NF = 20


def _type_table(replies: dict[int, int]) -> np.ndarray:
    table = np.arange(256, dtype=np.int32)
    for reply, request in replies.items():
        table[reply] = request
    return table


#: ICMP / ICMPv6 type -> the request type it answers (identity for other types).
REQUEST_OF_V4 = _type_table(ICMP_REPLY_TO_REQUEST)
REQUEST_OF_V6 = _type_table(ICMP6_REPLY_TO_REQUEST)
IS_REQUEST_V4 = np.isin(np.arange(256), list(ICMP_REPLY_TO_REQUEST.values()))
IS_REQUEST_V6 = np.isin(np.arange(256), list(ICMP6_REPLY_TO_REQUEST.values()))
IS_REPLY_V4 = np.isin(np.arange(256), list(ICMP_REPLY_TO_REQUEST))
IS_REPLY_V6 = np.isin(np.arange(256), list(ICMP6_REPLY_TO_REQUEST))


def request_port(proto: np.ndarray, port: np.ndarray) -> np.ndarray:
    """The ``dst_port`` of the matching request for ICMP reply types; ``port`` otherwise
    (:func:`flowhawk.normalize.orient.icmp_request_port`)."""
    itype, code = port >> 8, port & 0xFF
    itype = np.minimum(itype, 255)  # ICMP ports are type * 256 + code < 65536
    out = np.where(proto == 1, REQUEST_OF_V4[itype] * 256 + code, port)
    return np.where(proto == 58, REQUEST_OF_V6[itype] * 256 + code, out).astype(np.int32)


def stitch_columns(
    uni: RawColumns, gap_seconds: float = 60.0
) -> tuple[RawColumns, np.ndarray, np.ndarray]:
    """Biflows (``uni`` False) of unidirectional records, the session of each record and
    each session's first record (indices into ``uni``)."""
    c = uni.cols
    n = len(uni)
    side = np.empty(n, np.int64)
    hashed = np.empty(n, np.uint64)
    packed = np.empty((n, _NP), np.int64)
    _keys(
        c["proto"], c["src_hi"], c["src_lo"], c["dst_hi"], c["dst_lo"], c["src_port"],
        c["dst_port"], c["ts_start"], c["ts_end"], c["src_pkts"], c["src_bytes"],
        c["src_tcp_flags"], c["sampling"], c["vlan"], c["state"], OCTET_RANK, HEX,
        REQUEST_OF_V4, REQUEST_OF_V6, IS_REQUEST_V4, IS_REQUEST_V6, side, hashed, packed,
    )  # fmt: skip
    order = np.argsort(hashed)
    _settle(order, hashed, c["ts_start"] * 2 + side)  # by key, then start, side, arrival
    record_session, s = _sessions(order, hashed, packed, int(gap_seconds * 1_000_000))
    # Sessions in the order their first records arrived (records of one time are archived
    # together, and an exporter's time order is kept), not in the order of their hashes.
    by_arrival = np.argsort(s[F_FIRST])
    s = s[:, by_arrival]
    rank = np.empty_like(by_arrival)
    rank[by_arrival] = np.arange(len(by_arrival))
    record_session = rank[record_session]
    return _assemble(uni, side, s), record_session, s[F_FIRST]


def _assemble(uni: RawColumns, side: np.ndarray, s: np.ndarray) -> RawColumns:
    """Biflow columns from the per-session aggregates (client side chosen as in stitch)."""
    c = uni.cols
    m = s.shape[1]
    out = {
        "ts_start": s[F_TS0],
        "ts_end": s[F_END],
        "src_hi": np.empty(m, np.uint64),
        "src_lo": np.empty(m, np.uint64),
        "dst_hi": np.empty(m, np.uint64),
        "dst_lo": np.empty(m, np.uint64),
        "src_port": np.empty(m, np.int32),
        "dst_port": np.empty(m, np.int32),
        "proto": np.empty(m, np.int16),
        "src_pkts": np.empty(m, np.int64),
        "src_bytes": np.empty(m, np.int64),
        "dst_pkts": np.empty(m, np.int64),
        "dst_bytes": np.empty(m, np.int64),
        "src_tcp_flags": np.empty(m, np.int16),
        "dst_tcp_flags": np.empty(m, np.int16),
        "vlan": np.empty(m, np.int32),
        "state": np.empty(m, np.int8),
        "orient": np.empty(m, np.bool_),
        "uni": np.zeros(m, np.bool_),
        "sampling": s[F_SAMPLING].astype(np.int32),
        "fid_domain": np.empty(m, np.uint64),
        "fid_seq": np.empty(m, np.uint64),
        "fid_off": np.empty(m, np.uint64),
    }
    src_idx, dst_idx = np.empty(m, np.int64), np.empty(m, np.int64)
    _biflows(
        s, side, c["proto"], c["src_hi"], c["src_lo"], c["dst_hi"], c["dst_lo"], c["src_port"],
        c["dst_port"], c["vlan"], c["state"], c["fid_domain"], c["fid_seq"], c["fid_off"],
        REQUEST_OF_V4, REQUEST_OF_V6, out["src_hi"], out["src_lo"], out["dst_hi"],
        out["dst_lo"], out["src_port"], out["dst_port"], out["proto"], out["src_pkts"],
        out["src_bytes"], out["dst_pkts"], out["dst_bytes"], out["src_tcp_flags"],
        out["dst_tcp_flags"], out["vlan"], out["state"], out["orient"], out["fid_domain"],
        out["fid_seq"], out["fid_off"], src_idx, dst_idx,
    )  # fmt: skip
    if "src_mac" in c:  # the MAC each side's first record was sent from
        mac = c["src_mac"]
        out["src_mac"] = np.where(src_idx >= 0, mac[np.maximum(src_idx, 0)], NO_MAC)
        out["dst_mac"] = np.where(dst_idx >= 0, mac[np.maximum(dst_idx, 0)], NO_MAC)
    return RawColumns(uni.input, uni.exporter, out)


@numba.njit(cache=True, nogil=True)
def _biflows(
    s, side, proto, s_hi, s_lo, d_hi, d_lo, sport, dport, vlan, state, fid_a, fid_b, fid_c,
    req4, req6, o_shi, o_slo, o_dhi, o_dlo, o_sport, o_dport, o_proto, o_spkts, o_sbytes,
    o_dpkts, o_dbytes, o_sflags, o_dflags, o_vlan, o_state, o_orient, o_fa, o_fb, o_fc,
    src_idx, dst_idx,
):  # type: ignore[no-untyped-def]  # fmt: skip
    for k in range(s.shape[1]):
        f = s[F_FIRST, k]
        pr = np.int64(proto[f])
        has0, has1 = s[F_IDX0, k] >= 0, s[F_IDX1, k] >= 0
        both = has0 and has1
        earlier0 = both and s[F_FTS0, k] < s[F_FTS1, k]
        earlier1 = both and s[F_FTS1, k] < s[F_FTS0, k]
        icmp = pr == 1 or pr == 58
        client = -1
        if icmp:
            req0, req1 = s[F_REQ0, k] > 0, s[F_REQ1, k] > 0
            if req0 and not req1:
                client = 0
            elif req1 and not req0:
                client = 1
        elif pr == 6:
            # the side whose first record starts earlier with a SYN; a lone TCP record
            # with SYN but no ACK is a connection attempt: its sender started
            syn0 = (s[F_FFLAGS0, k] & _SYN) != 0
            syn1 = (s[F_FFLAGS1, k] & _SYN) != 0
            lone0 = not has1 and (s[F_FLAGS0, k] & (_SYN | _ACK)) == _SYN
            lone1 = not has0 and (s[F_FLAGS1, k] & (_SYN | _ACK)) == _SYN
            if (earlier0 and syn0) or lone0:
                client = 0
            elif (earlier1 and syn1) or lone1:
                client = 1
        elif earlier0:
            client = 0
        elif earlier1:
            client = 1
        o_orient[k] = client >= 0
        if client < 0:
            client = side[f]  # the side of the earliest record
        c0 = client == 0
        # the key's sides, as the first record has them: side 0 is its (src, dst)
        if side[f] == 0:
            ahi, alo, bhi, blo = s_hi[f], s_lo[f], d_hi[f], d_lo[f]
            ap, bp = np.int64(sport[f]), np.int64(dport[f])
        else:
            ahi, alo, bhi, blo = d_hi[f], d_lo[f], s_hi[f], s_lo[f]
            ap, bp = np.int64(dport[f]), np.int64(sport[f])
        if icmp:
            dp = np.int64(dport[f])
            itype = min(dp >> 8, 255)
            table = req4 if pr == 1 else req6
            ap = np.int64(table[itype]) * 256 + (dp & 0xFF)
            bp = ap
        if c0:
            o_shi[k], o_slo[k], o_dhi[k], o_dlo[k] = ahi, alo, bhi, blo
            o_sport[k], o_dport[k] = ap, bp
            o_spkts[k], o_dpkts[k] = s[F_PKTS0, k], s[F_PKTS1, k]
            o_sbytes[k], o_dbytes[k] = s[F_BYTES0, k], s[F_BYTES1, k]
            o_sflags[k] = s[F_FLAGS0, k] if has0 else -1
            o_dflags[k] = s[F_FLAGS1, k] if has1 else -1
            src_idx[k], dst_idx[k] = s[F_IDX0, k], s[F_IDX1, k]
        else:
            o_shi[k], o_slo[k], o_dhi[k], o_dlo[k] = bhi, blo, ahi, alo
            o_sport[k], o_dport[k] = bp, ap
            o_spkts[k], o_dpkts[k] = s[F_PKTS1, k], s[F_PKTS0, k]
            o_sbytes[k], o_dbytes[k] = s[F_BYTES1, k], s[F_BYTES0, k]
            o_sflags[k] = s[F_FLAGS1, k] if has1 else -1
            o_dflags[k] = s[F_FLAGS0, k] if has0 else -1
            src_idx[k], dst_idx[k] = s[F_IDX1, k], s[F_IDX0, k]
        if icmp:  # type and code in dst_port, as the request's
            o_sport[k], o_dport[k] = 0, ap
        o_proto[k] = pr
        o_vlan[k] = vlan[s[F_VLAN, k]] if s[F_VLAN, k] >= 0 else -1
        o_state[k] = state[s[F_STATE, k]] if s[F_STATE, k] >= 0 else -1
        o_fa[k], o_fb[k], o_fc[k] = fid_a[f], fid_b[f], fid_c[f]


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(h, v):
    h ^= v
    h *= np.uint64(0x9E3779B97F4A7C15)
    return h ^ (h >> np.uint64(29))


# What the session pass reads of a record, packed in one row (two cache lines) so that
# reading records in key order costs two misses a record, not one per column.
(P_AHI, P_ALO, P_BHI, P_BLO, P_START, P_END, P_PKTS, P_BYTES, P_KEY, P_MISC) = range(10)
_NP = 10
# P_KEY: a port | b port << 16 | proto << 32 (the key besides the addresses), then bits
# of side << 40, ICMP request << 41, has a VLAN << 42, has a state << 43.
# P_MISC: TCP flags (null: 0) | sampling << 16.
_KEY_BITS = (1 << 40) - 1


@numba.njit(cache=True, nogil=True)
def _keys(
    proto, s_hi, s_lo, d_hi, d_lo, sport, dport, start, end, pkts, nbytes, flags, sampling,
    vlan, state, rank, hexd, req4, req6, is_req4, is_req6, side, hashed, packed,
):  # type: ignore[no-untyped-def]  # fmt: skip
    """Per record: the side (0: src spells first as text, or same address and src port
    <= dst port), the key (ICMP: the request's type and code as both ports), a 64-bit
    hash of it, and the packed row."""
    groups = np.zeros(8, np.int64)
    ta = np.empty(40, np.uint8)
    tb = np.empty(40, np.uint8)
    for i in range(proto.shape[0]):
        sh, sl, dh, dl = s_hi[i], s_lo[i], d_hi[i], d_lo[i]
        sp, dp = np.int64(sport[i]), np.int64(dport[i])
        if sh == dh and sl == dl:
            first = sp <= dp
        else:
            first = text_less_one(sh, sl, dh, dl, rank, hexd, groups, ta, tb)
        pr = np.int64(proto[i])
        req = False
        if pr == 1 or pr == 58:
            itype = min(dp >> 8, 255)
            code = dp & 0xFF
            if pr == 1:
                ap = np.int64(req4[itype]) * 256 + code
                req = is_req4[itype]
            else:
                ap = np.int64(req6[itype]) * 256 + code
                req = is_req6[itype]
            bp = ap
        elif first:
            ap, bp = sp, dp
        else:
            ap, bp = dp, sp
        if not first:
            sh, sl, dh, dl = dh, dl, sh, sl
        side[i] = 0 if first else 1
        h = _mix(np.uint64(0x57), np.uint64(pr))
        h = _mix(h, sh)
        h = _mix(h, sl)
        h = _mix(h, np.uint64(ap))
        h = _mix(h, dh)
        h = _mix(h, dl)
        hashed[i] = _mix(h, np.uint64(bp))
        row = packed[i]
        row[P_AHI] = np.int64(sh)
        row[P_ALO] = np.int64(sl)
        row[P_BHI] = np.int64(dh)
        row[P_BLO] = np.int64(dl)
        row[P_START] = start[i]
        row[P_END] = end[i]
        row[P_PKTS] = pkts[i]
        row[P_BYTES] = nbytes[i]
        key = ap | (bp << 16) | (pr << 32)
        if not first:
            key |= np.int64(1) << 40
        if req:
            key |= np.int64(1) << 41
        if vlan[i] >= 0:
            key |= np.int64(1) << 42
        if state[i] >= 0:
            key |= np.int64(1) << 43
        row[P_KEY] = key
        row[P_MISC] = max(np.int64(flags[i]), 0) | (np.int64(sampling[i]) << 16)


@numba.njit(cache=True, nogil=True)
def _settle(order, hashed, rank):  # type: ignore[no-untyped-def]
    """Within each run of equal hashes in ``order``, put the records by ``rank`` then
    row (the sort by hash alone left them in no particular order)."""
    n = order.shape[0]
    j = 0
    while j < n:
        h = hashed[order[j]]
        e = j + 1
        while e < n and hashed[order[e]] == h:
            e += 1
        if e - j > 32:
            run = np.sort(order[j:e])  # by row, then stably by rank
            order[j:e] = run[np.argsort(rank[run], kind="mergesort")]
        elif e - j > 1:  # insertion sort by (rank, row): runs are mostly one key's records
            for a in range(j + 1, e):
                x = order[a]
                b = a - 1
                while b >= j and (
                    rank[order[b]] > rank[x] or (rank[order[b]] == rank[x] and order[b] > x)
                ):
                    order[b + 1] = order[b]
                    b -= 1
                order[b + 1] = x
        j = e


@numba.njit(cache=True, nogil=True)
def _sessions(order, hashed, packed, gap):  # type: ignore[no-untyped-def]
    n = order.shape[0]
    record_session = np.empty(n, np.int64)
    out = np.empty((_NF, n), np.int64)
    key_at = np.empty(n, np.int64)  # each session's first record
    m = 0
    run = 0  # first session of the current run of equal hashes
    for j in range(n):
        i = order[j]
        r = packed[i]
        if j == 0 or hashed[i] != hashed[order[j - 1]]:
            run = m
        # the key's open session: the latest of the run with the same key (a run holds one
        # key unless two keys' hashes collide)
        s = -1
        for t in range(m - 1, run - 1, -1):
            k = packed[key_at[t]]
            if (
                k[P_ALO] == r[P_ALO]
                and k[P_BLO] == r[P_BLO]
                and (k[P_KEY] & _KEY_BITS) == (r[P_KEY] & _KEY_BITS)
                and k[P_AHI] == r[P_AHI]
                and k[P_BHI] == r[P_BHI]
            ):
                s = t
                break
        start, end, bits = r[P_START], r[P_END], r[P_KEY]
        if s < 0 or start > out[F_END, s] + gap:
            s = m
            m += 1
            key_at[s] = i
            for f in range(_NF):
                out[f, s] = 0
            out[F_FIRST, s] = i
            out[F_TS0, s] = start
            out[F_END, s] = end
            out[F_IDX0, s] = -1
            out[F_IDX1, s] = -1
            out[F_VLAN, s] = -1
            out[F_STATE, s] = -1
        if end > out[F_END, s]:
            out[F_END, s] = end
        sampling = r[P_MISC] >> 16
        if sampling > out[F_SAMPLING, s]:
            out[F_SAMPLING, s] = sampling
        d = (bits >> 40) & 1
        f = r[P_MISC] & 0xFFFF
        if out[F_IDX0 + d, s] < 0:
            out[F_IDX0 + d, s] = i
            out[F_FTS0 + d, s] = start
            out[F_FFLAGS0 + d, s] = f
        out[F_PKTS0 + d, s] += r[P_PKTS]
        out[F_BYTES0 + d, s] += r[P_BYTES]
        out[F_FLAGS0 + d, s] |= f
        if (bits >> 41) & 1:
            out[F_REQ0 + d, s] = 1
        if (bits >> 42) & 1 and out[F_VLAN, s] < 0:
            out[F_VLAN, s] = i
        if (bits >> 43) & 1:
            out[F_STATE, s] = i  # the latest state wins
        record_session[i] = s
    return record_session, out[:, :m]
