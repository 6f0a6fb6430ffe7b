"""The flow meter: packets in arrival order to bidirectional flows, incrementally.

Like softflowd and nfpcapd, a numba kernel keeps an exact-key hash table of the
active flows (open addressing with linear probing over a flow pool, one 128-byte row
per flow) and updates one flow per packet. State lives in :class:`FlowMeter` between
calls, so a capture is fed in bounded chunks and a live stream is metered as it comes;
the output does not depend on how the packets were chunked.
Expiry runs off a min-heap of the time each flow would end if it stayed silent
(entries made stale by later packets are recognised by a sequence number and
rescheduled when they surface), so flows end exactly on time for a cost per flow,
not per packet or per table sweep.

Rules (times are event time: the largest packet timestamp seen so far, never the
wall clock):

- Key: (VLAN, protocol, the two endpoints). Endpoints are sorted so both directions
  land in one flow. ICMP/ICMPv6 flows are keyed by address pair and
  ``type * 256 + code``, a reply type (echo, timestamp, information, address mask)
  counting as its request type, so a ping and its answer make one flow.
- Per flow: first/last timestamp, packets and IP bytes each way, TCP flags each way,
  which endpoint sent the first packet and whether that packet started the
  conversation (TCP SYN without ACK; ICMP anything but a reply; other protocols
  always), and the MAC of each endpoint when the link shows it.
- A flow ends when ``active_timeout`` has passed since its first packet, or when it
  has been silent for ``idle_timeout`` (``tcp_idle_timeout`` for TCP). Ended flows are
  emitted as soon as the packet clock reaches their end; a packet at or after that
  time starts a new flow.
- TCP: a RST, or a FIN from both sides, closes the connection. A closed flow lingers
  for ``tcp_close_timeout`` after its last packet so trailing packets (the last
  ACK, retransmitted FINs, RSTs answering late segments) are counted in it rather
  than opening one-packet junk flows; a packet with SYN set on a closed flow is a
  new connection on the same ports: the old flow is emitted, a new one starts.
- :meth:`FlowMeter.flush` emits every remaining flow, in creation order.

Emitted flows are rows of an ``(n, NF)`` int64 array (fields ``F_*``);
:func:`flowhawk.sources.pcap.source.oriented` turns them into columns with the first
sender as ``src``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "flowhawk" / "numba"))
import numba

from flowhawk.sources.pcap.decode import Packets

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

#: Defaults in seconds, as documented in the source options.
DEFAULT_ACTIVE_TIMEOUT = 1800.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_TCP_IDLE_TIMEOUT = 300.0
DEFAULT_TCP_CLOSE_TIMEOUT = 10.0

_SIGN = np.int64(-0x8000_0000_0000_0000)
_LOW32 = np.int64(0xFFFF_FFFF)


class FlowMeter:
    """An incremental bidirectional flow meter (timeouts in seconds)."""

    def __init__(
        self,
        active_timeout: float = DEFAULT_ACTIVE_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT,
        tcp_close_timeout: float = DEFAULT_TCP_CLOSE_TIMEOUT,
        capacity: int = 1 << 14,
        out_rows: int = 1 << 16,
    ):
        timeouts = (active_timeout, idle_timeout, tcp_idle_timeout, tcp_close_timeout)
        if min(timeouts) <= 0:
            raise ValueError(f"flow timeouts must be positive, got {timeouts}")
        self.params = np.array([round(t * 1e6) for t in timeouts], dtype=np.int64)
        self.pool = np.empty((capacity, NF), dtype=np.int64)
        self.index = np.zeros(2 * capacity, dtype=np.int64)
        self.free = np.empty(capacity, dtype=np.int64)
        self.heap = np.empty((capacity, 3), dtype=np.int64)
        self.ctr = np.zeros(8, dtype=np.int64)
        self.ctr[C_NOW] = np.iinfo(np.int64).min
        self.out = np.empty((out_rows, NF), dtype=np.int64)

    @property
    def active_flows(self) -> int:
        """Flows currently held."""
        return int(self.ctr[C_LIVE])

    @property
    def now_us(self) -> int:
        """The meter's clock: the newest packet time seen (or advanced to)."""
        return int(self.ctr[C_NOW])

    def add(self, packets: Packets) -> np.ndarray:
        """Meter ``packets`` (rows with a non-OK status are ignored); return ended flows."""
        return self._run(packets, np.iinfo(np.int64).min)

    def advance(self, ts_us: int) -> np.ndarray:
        """Move the clock to ``ts_us`` without a packet (a quiet live link); return ended flows."""
        return self._run(None, ts_us)

    def flush(self) -> np.ndarray:
        """Emit every flow still held, in creation order, and empty the meter."""
        used = int(self.ctr[C_USED])
        rows = self.pool[:used][self.pool[:used, F_SEQ] >= 0]
        rows = rows[np.argsort(rows[:, F_ORDER], kind="stable")]
        rows[:, F_STATE] |= END_FLUSH << END_SHIFT
        self.index[:] = 0
        for c in (C_LIVE, C_USED, C_FREE_N, C_HEAP_N, C_NOUT):
            self.ctr[c] = 0
        return rows

    def _run(self, packets: Packets | None, advance_to: int) -> np.ndarray:
        chunks: list[np.ndarray] = []
        pos = 0
        n = 0 if packets is None else len(packets.ts_us)
        cols = _kernel_columns(packets)
        while True:
            pos, code = _meter_run(
                self.pool,
                self.index,
                self.heap,
                self.free,
                self.ctr,
                self.params,
                self.out,
                *cols,
                pos,
                n,
                advance_to,
            )
            if code in (RUN_OUT_FULL, RUN_DONE):
                nout = int(self.ctr[C_NOUT])
                if nout:
                    chunks.append(self.out[:nout].copy())
                self.ctr[C_NOUT] = 0
                if code == RUN_DONE:
                    break
            else:
                self._grow()
        if not chunks:
            return np.empty((0, NF), dtype=np.int64)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _grow(self) -> None:
        if self.ctr[C_HEAP_N] + 2 > len(self.heap):
            self.heap = np.concatenate([self.heap, np.empty_like(self.heap)])
        if self.ctr[C_FREE_N] == 0 and self.ctr[C_USED] >= len(self.pool):
            cap = 2 * len(self.pool)
            pool = np.empty((cap, NF), dtype=np.int64)
            pool[: len(self.pool)] = self.pool
            self.pool = pool
            self.free = np.empty(cap, dtype=np.int64)  # empty: every slot was in use
            self.index = np.zeros(2 * cap, dtype=np.int64)
            _rehash(self.pool, int(self.ctr[C_USED]), self.index)


def _kernel_columns(p: Packets | None) -> tuple[np.ndarray, ...]:
    if p is None:
        z64 = np.zeros(0, np.int64)
        return (
            z64,
            z64,
            z64,
            z64,
            z64,
            np.zeros(0, np.uint16),
            np.zeros(0, np.uint16),
            np.zeros(0, np.uint8),
            np.zeros(0, np.uint8),
            z64,
            np.zeros(0, np.int16),
            z64,
            z64,
            np.zeros(0, np.uint8),
        )
    # The kernel works in int64 throughout (mixing uint64 and int64 makes numba fall
    # back to floats); addresses and MACs are reinterpreted, not converted.
    return (
        p.ts_us,
        p.src_hi.view(np.int64),
        p.src_lo.view(np.int64),
        p.dst_hi.view(np.int64),
        p.dst_lo.view(np.int64),
        p.sport,
        p.dport,
        p.proto,
        p.tcp_flags,
        p.ip_len,
        p.vlan,
        p.src_mac.view(np.int64),
        p.dst_mac.view(np.int64),
        p.status,
    )


# ---------------------------------------------------------------- numba kernels


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
