"""The flow table of the pcap meter: its row layout and the numba kernels that run it.

One row of ``NF`` int64 per flow in a pool; an open-addressing index over exact
keys; a min-heap of expiry times (stale entries recognised by a sequence number);
``_meter_run`` walks a batch of packets updating flows and emitting the ended ones.
The rules these kernels implement are described in :mod:`flowhawk.sources.pcap.meter`.
"""

from __future__ import annotations

import numpy as np

from flowhawk.jit import numba

# Fields of a flow row. Endpoint "a" is the smaller one in the canonical key;
# the *0 counters are what a sent, the *1 what b sent.
(
    F_AHI,
    F_ALO,
    F_BHI,
    F_BLO,
    F_KEY,
    F_FIRST,
    F_LAST,
    F_PKTS0,
    F_PKTS1,
    F_BYTES0,
    F_BYTES1,
    F_STATE,
    F_MAC0,
    F_MAC1,
    F_SEQ,
    F_ORDER,
) = range(16)
NF = 16

# F_STATE bits: TCP flags sent by a (bits 0-7) and by b (8-15), then:
S_FIRST_B = 1 << 16  # endpoint b sent the first packet
S_STARTED = 1 << 17  # the first packet started the conversation
S_FIN0 = 1 << 18
S_FIN1 = 1 << 19
S_RST = 1 << 20
S_CLOSED = 1 << 21
END_SHIFT = 24  # why the flow was emitted (END_*), bits 24-26
END_IDLE, END_ACTIVE, END_CLOSED, END_NEW_SYN, END_FLUSH = 1, 2, 3, 4, 5

# Counters and parameters of the kernel state.
C_NOW, C_LIVE, C_USED, C_FREE_N, C_HEAP_N, C_SEQ, C_ORDER, C_NOUT = range(8)
P_ACTIVE, P_IDLE, P_TCP_IDLE, P_CLOSE = range(4)

# Kernel return codes.
RUN_DONE, RUN_OUT_FULL, RUN_GROW = 0, 1, 2

_SIGN = np.int64(-0x8000_0000_0000_0000)
_LOW32 = np.int64(0xFFFF_FFFF)


@numba.njit(cache=True, nogil=True)
def _hash(ahi, alo, bhi, blo, key):
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ np.uint64(alo)) * np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    h = (h ^ np.uint64(blo)) * np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(32)
    h = h ^ np.uint64(ahi) ^ (np.uint64(bhi) * np.uint64(0xD6E8FEB86659FD93))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return np.int64(h >> np.uint64(32))  # 32 bits: the home slot and the fingerprint


@numba.njit(cache=True, nogil=True)
def _rehash(pool, used, index):
    mask = index.shape[0] - 1
    for fi in range(used):
        if pool[fi, F_SEQ] < 0:
            continue
        fp = _hash(
            pool[fi, F_AHI], pool[fi, F_ALO], pool[fi, F_BHI], pool[fi, F_BLO], pool[fi, F_KEY]
        )
        i = fp & mask
        while index[i] != 0:
            i = (i + 1) & mask
        index[i] = (fp << 32) | (fi + 1)


@numba.njit(cache=True, nogil=True)
def _index_remove(pool, index, fi):
    """Delete flow ``fi`` from the index by backward shifting (no tombstones)."""
    mask = index.shape[0] - 1
    fp = _hash(pool[fi, F_AHI], pool[fi, F_ALO], pool[fi, F_BHI], pool[fi, F_BLO], pool[fi, F_KEY])
    i = fp & mask
    while (index[i] & _LOW32) != fi + 1:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        e = index[j]
        if e == 0:
            break
        home = (e >> 32) & mask
        if ((j - home) & mask) >= ((j - i) & mask):  # e may move back to the hole
            index[i] = e
            i = j
    index[i] = 0


@numba.njit(cache=True, nogil=True)
def _sift_down(heap, n, i, t, fi, seq):
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and heap[c + 1, 0] < heap[c, 0]:
            c += 1
        if heap[c, 0] >= t:
            break
        heap[i, 0], heap[i, 1], heap[i, 2] = heap[c, 0], heap[c, 1], heap[c, 2]
        i = c
    heap[i, 0], heap[i, 1], heap[i, 2] = t, fi, seq


@numba.njit(cache=True, nogil=True)
def _heap_push(heap, ctr, t, fi, seq):
    i = ctr[C_HEAP_N]
    ctr[C_HEAP_N] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent, 0] <= t:
            break
        heap[i, 0], heap[i, 1], heap[i, 2] = heap[parent, 0], heap[parent, 1], heap[parent, 2]
        i = parent
    heap[i, 0], heap[i, 1], heap[i, 2] = t, fi, seq


@numba.njit(cache=True, nogil=True)
def _heap_pop(heap, ctr):
    n = ctr[C_HEAP_N] - 1
    ctr[C_HEAP_N] = n
    if n > 0:
        _sift_down(heap, n, 0, heap[n, 0], heap[n, 1], heap[n, 2])


@numba.njit(cache=True, nogil=True)
def _expiry(pool, params, fi):
    """When flow ``fi`` ends if no packet comes, and why."""
    st = pool[fi, F_STATE]
    if st & S_CLOSED:
        t, why = params[P_CLOSE], END_CLOSED
    elif ((pool[fi, F_KEY] >> 32) & 0xFF) == 6:
        t, why = params[P_TCP_IDLE], END_IDLE
    else:
        t, why = params[P_IDLE], END_IDLE
    idle_end = pool[fi, F_LAST] + t
    active_end = pool[fi, F_FIRST] + params[P_ACTIVE]
    if active_end <= idle_end:
        return active_end, END_ACTIVE
    return idle_end, why


@numba.njit(cache=True, nogil=True)
def _emit(pool, out, ctr, fi, why):
    n = ctr[C_NOUT]
    for f in range(NF):
        out[n, f] = pool[fi, f]
    out[n, F_STATE] |= why << END_SHIFT
    ctr[C_NOUT] = n + 1


@numba.njit(cache=True, nogil=True)
def _sweep(pool, index, heap, free, ctr, params, out, now):
    """Emit every flow that has ended by ``now``; False if the output filled up first."""
    while ctr[C_HEAP_N] > 0 and heap[0, 0] <= now:
        fi = heap[0, 1]
        seq = heap[0, 2]
        if pool[fi, F_SEQ] != seq:  # stale: the flow ended or was rescheduled since
            _heap_pop(heap, ctr)
            continue
        end, why = _expiry(pool, params, fi)
        if end > now:  # packets came since this check was scheduled
            _sift_down(heap, ctr[C_HEAP_N], 0, end, fi, seq)
            continue
        if ctr[C_NOUT] >= out.shape[0]:
            return False
        _heap_pop(heap, ctr)
        _emit(pool, out, ctr, fi, why)
        _index_remove(pool, index, fi)
        pool[fi, F_SEQ] = -1
        free[ctr[C_FREE_N]] = fi
        ctr[C_FREE_N] += 1
        ctr[C_LIVE] -= 1
    return True


@numba.njit(cache=True, nogil=True)
def _init_flow(pool, heap, ctr, params, fi, ahi, alo, bhi, blo, key, t, started, first_b):
    pool[fi, F_AHI], pool[fi, F_ALO], pool[fi, F_BHI], pool[fi, F_BLO] = ahi, alo, bhi, blo
    pool[fi, F_KEY] = key
    pool[fi, F_FIRST] = pool[fi, F_LAST] = t
    for f in range(F_PKTS0, F_BYTES1 + 1):
        pool[fi, f] = 0
    pool[fi, F_STATE] = (S_FIRST_B if first_b else 0) | (S_STARTED if started else 0)
    pool[fi, F_MAC0] = pool[fi, F_MAC1] = -1
    seq = ctr[C_SEQ]
    ctr[C_SEQ] = seq + 1
    pool[fi, F_SEQ] = seq
    pool[fi, F_ORDER] = ctr[C_ORDER]
    ctr[C_ORDER] += 1
    end, _ = _expiry(pool, params, fi)
    _heap_push(heap, ctr, end, fi, seq)


@numba.njit(cache=True, nogil=True)
def _meter_run(
    pool,
    index,
    heap,
    free,
    ctr,
    params,
    out,
    ts,
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
    pos,
    end,
    advance_to,
):
    if advance_to > ctr[C_NOW]:
        ctr[C_NOW] = advance_to
    if not _sweep(pool, index, heap, free, ctr, params, out, ctr[C_NOW]):
        return pos, RUN_OUT_FULL
    mask = index.shape[0] - 1
    for k in range(pos, end):
        if status[k] != 0:
            continue
        t = ts[k]
        if t > ctr[C_NOW]:
            ctr[C_NOW] = t
        now = ctr[C_NOW]
        if (
            ctr[C_HEAP_N] > 0
            and heap[0, 0] <= now
            and not _sweep(pool, index, heap, free, ctr, params, out, now)
        ):
            return k, RUN_OUT_FULL
        # Room for what one packet may need: an emitted row, a flow, two heap entries.
        if ctr[C_NOUT] >= out.shape[0]:
            return k, RUN_OUT_FULL
        if ctr[C_HEAP_N] + 2 > heap.shape[0] or (
            ctr[C_FREE_N] == 0 and ctr[C_USED] >= pool.shape[0]
        ):
            return k, RUN_GROW

        pr = np.int64(proto[k])
        fl = np.int64(flags[k])
        sp = np.int64(sport[k])
        dp = np.int64(dport[k])
        s_hi, s_lo, d_hi, d_lo = shi[k], slo[k], dhi[k], dlo[k]
        # Canonical order: compare (address, port) as unsigned numbers.
        if s_hi != d_hi:
            swap = (s_hi ^ _SIGN) > (d_hi ^ _SIGN)
        elif s_lo != d_lo:
            swap = (s_lo ^ _SIGN) > (d_lo ^ _SIGN)
        else:
            swap = False
        if pr == 1 or pr == 58:
            typ = dp >> 8
            if pr == 1:
                reply = typ == 0 or typ == 14 or typ == 16 or typ == 18
                req = np.int64(8) if typ == 0 else typ - 1
            else:
                reply = typ == 129
                req = np.int64(128)
            if reply:
                dp = (req << 8) | (dp & 0xFF)
            started = not reply
            a_port = np.int64(0)
            b_port = dp
        else:
            if s_hi == d_hi and s_lo == d_lo:
                swap = sp > dp
            a_port, b_port = (dp, sp) if swap else (sp, dp)
            started = pr != 6 or (fl & 0x12) == 0x02  # TCP: SYN without ACK
        if swap:
            ahi, alo, bhi, blo = d_hi, d_lo, s_hi, s_lo
        else:
            ahi, alo, bhi, blo = s_hi, s_lo, d_hi, d_lo
        d = np.int64(1) if swap else np.int64(0)
        key = a_port | (b_port << 16) | (pr << 32) | ((np.int64(vlan[k]) + 1) << 40)

        fp = _hash(ahi, alo, bhi, blo, key)
        i = fp & mask
        fi = np.int64(-1)
        while True:
            e = index[i]
            if e == 0:
                break
            if ((e >> 32) & _LOW32) == fp:
                c = (e & _LOW32) - 1
                if (
                    pool[c, F_ALO] == alo
                    and pool[c, F_BLO] == blo
                    and pool[c, F_KEY] == key
                    and pool[c, F_AHI] == ahi
                    and pool[c, F_BHI] == bhi
                ):
                    fi = c
                    break
            i = (i + 1) & mask
        if fi >= 0:
            expires, why = _expiry(pool, params, fi)
            restart = False
            if expires <= now:  # only after out-of-order timestamps: the heap is exact
                restart = True
            elif (pool[fi, F_STATE] & S_CLOSED) and (fl & 0x02):
                restart, why = True, END_NEW_SYN
            if restart:
                _emit(pool, out, ctr, fi, why)
                _init_flow(pool, heap, ctr, params, fi, ahi, alo, bhi, blo, key, t, started, swap)
        else:
            if ctr[C_FREE_N] > 0:
                ctr[C_FREE_N] -= 1
                fi = free[ctr[C_FREE_N]]
            else:
                fi = ctr[C_USED]
                ctr[C_USED] += 1
            index[i] = (fp << 32) | (fi + 1)
            ctr[C_LIVE] += 1
            _init_flow(pool, heap, ctr, params, fi, ahi, alo, bhi, blo, key, t, started, swap)

        if t > pool[fi, F_LAST]:
            pool[fi, F_LAST] = t
        elif t < pool[fi, F_FIRST]:
            pool[fi, F_FIRST] = t
        pool[fi, F_PKTS0 + d] += 1
        pool[fi, F_BYTES0 + d] += iplen[k]
        st = pool[fi, F_STATE] | (fl << (8 * d))
        if pr == 6 and (fl & 0x05) and not (st & S_CLOSED):
            if fl & 0x01:
                st |= S_FIN0 << d
            if fl & 0x04:
                st |= S_RST
            if (st & S_RST) or ((st & S_FIN0) and (st & S_FIN1)):
                # Closed: reschedule on the shorter linger; the old heap entry goes stale.
                st |= S_CLOSED
                pool[fi, F_STATE] = st
                seq = ctr[C_SEQ]
                ctr[C_SEQ] = seq + 1
                pool[fi, F_SEQ] = seq
                expires, _ = _expiry(pool, params, fi)
                _heap_push(heap, ctr, expires, fi, seq)
        pool[fi, F_STATE] = st
        if d == 0:
            ma, mb = smac[k], dmac[k]
        else:
            ma, mb = dmac[k], smac[k]
        if pool[fi, F_MAC0] == -1:
            pool[fi, F_MAC0] = ma
        if pool[fi, F_MAC1] == -1:
            pool[fi, F_MAC1] = mb
    return end, RUN_DONE
