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

Emitted flows are rows of an ``(n, NF)`` int64 array (fields ``F_*``, laid out and
processed by the kernels in :mod:`flowhawk.sources.pcap.flowtable`);
:func:`flowhawk.sources.pcap.source.oriented` turns them into columns with the first
sender as ``src``.
"""

from __future__ import annotations

import numpy as np

from flowhawk.sources.pcap.decode import Packets
from flowhawk.sources.pcap.flowtable import (  # noqa: F401 - the layout is public here too
    C_FREE_N,
    C_HEAP_N,
    C_LIVE,
    C_NOUT,
    C_NOW,
    C_ORDER,
    C_SEQ,
    C_USED,
    END_ACTIVE,
    END_CLOSED,
    END_FLUSH,
    END_IDLE,
    END_NEW_SYN,
    END_SHIFT,
    F_AHI,
    F_ALO,
    F_BHI,
    F_BLO,
    F_BYTES0,
    F_BYTES1,
    F_FIRST,
    F_KEY,
    F_LAST,
    F_MAC0,
    F_MAC1,
    F_ORDER,
    F_PKTS0,
    F_PKTS1,
    F_SEQ,
    F_STATE,
    NF,
    P_ACTIVE,
    P_CLOSE,
    P_IDLE,
    P_TCP_IDLE,
    RUN_DONE,
    RUN_GROW,
    RUN_OUT_FULL,
    S_CLOSED,
    S_FIN0,
    S_FIN1,
    S_FIRST_B,
    S_RST,
    S_STARTED,
    _meter_run,
    _rehash,
)

#: Defaults in seconds, as documented in the source options.
DEFAULT_ACTIVE_TIMEOUT = 1800.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_TCP_IDLE_TIMEOUT = 300.0
DEFAULT_TCP_CLOSE_TIMEOUT = 10.0


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
