"""sFlow v5 datagrams synthesized from canonical flows.

sFlow does not export flows: an agent samples 1 in ``rate`` packets and sends their
headers. Replaying flows as sFlow is therefore statistical by nature: each flow
direction with ``p`` packets becomes ``ceil(p / rate)`` flow samples (``mode="ceil"``,
every flow stays visible) or ``Binomial(p, 1/rate)`` samples (``mode="binomial"``,
seeded and so deterministic; what a real sampler would give, small flows may vanish).
A collector that multiplies by the sampling rate recovers the flows' packets and
bytes approximately, never exactly; sFlow carries no flow start or end, so times
come from the collector's clock (the datagram sysUptime follows the samples).

Each flow sample (format 1) carries one raw packet header record (Ethernet + IP +
TCP/UDP/ICMP, :mod:`.packets`) of a packet placed evenly in the flow's lifetime;
samples go out in that time order. ``sample_pool`` grows by ``rate`` per sample,
``drops`` is 0, input/output are the client (1) and server (2) interfaces; one
sampler (data source ``ds_index``) sees both directions. Every ``counter_every``-th
datagram also carries generic interface counter samples for interfaces 1 and 2
(octets and packets the samples stand for, cumulative).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from flowhawk.collect.encode.common import (
    CLIENT_IF,
    SERVER_IF,
    U32,
    Encoded,
    FlowColumns,
    datagram_weights,
    default_boot_us,
    empty,
    flow_columns,
    reply_port,
    split,
    v6_bytes,
)
from flowhawk.collect.encode.packets import (
    RST,
    SYN,
    PacketSpec,
    build_headers,
    frame_lengths,
    min_ip_len,
    sample_flags,
)

SNAPLEN = 128
FLOW_SAMPLE_FIXED = np.dtype(
    [
        (name, ">u4")
        for name in (
            "tag", "length", "sequence", "source_id", "rate", "pool", "drops", "input",
            "output", "records", "rtag", "rlength", "protocol", "frame_length", "stripped",
            "header_length",
        )
    ]
)  # fmt: skip
COUNTER_SAMPLE = struct.Struct("!IIIII II IIQIIQIIIIIIQIIIIII")
assert COUNTER_SAMPLE.size == 116


@dataclass
class SflowState:
    """Counters an sFlow agent keeps across datagrams (pass the result's ``extra`` back)."""

    sample_sequence: int = 0  # flow samples sent
    counter_sequence: int = 0  # counter samples sent (per interface)
    client_octets: int = 0  # octets / packets the samples stand for, client->server
    client_packets: int = 0
    server_octets: int = 0
    server_packets: int = 0


def _agent_bytes(agent: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(agent)
    return (1 if ip.version == 4 else 2), ip.packed


def _counts(pkts: np.ndarray, rate: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    if mode == "ceil":
        return -(-pkts.astype(np.int64) // rate)
    return rng.binomial(pkts.astype(np.int64), 1.0 / rate).astype(np.int64)


def _counter_sample(
    seq: int, ifindex: int, in_oct: int, in_pkt: int, out_oct: int, out_pkt: int
) -> bytes:
    m64, m32 = (1 << 64) - 1, U32 - 1
    return COUNTER_SAMPLE.pack(
        2, 108, seq % U32, ifindex, 1,  # counters sample: sequence, source, 1 record
        1, 88,  # generic interface counters
        ifindex, 6, 1_000_000_000, 1, 3,  # ethernetCsmacd, 1 Gb/s, full duplex, up/up
        in_oct & m64, in_pkt & m32, 0, 0, 0, 0, 0,
        out_oct & m64, out_pkt & m32, 0, 0, 0, 0, 0,
    )  # fmt: skip


@dataclass
class _Samples:
    """Sampled packets, in time order: their flow, direction, index among the k
    samples of that flow direction, and time."""

    flow: np.ndarray
    reverse: np.ndarray
    j: np.ndarray
    k: np.ndarray
    t_us: np.ndarray

    def side(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a's value for client->server samples, b's for server->client ones."""
        return np.stack([a, b])[self.reverse.astype(np.intp), self.flow]


def _schedule(c: FlowColumns, k_fwd: np.ndarray, k_rev: np.ndarray) -> _Samples:
    """Place the k samples of each flow direction evenly in the flow's lifetime (the
    server's a little after the client's), then order all of them by time."""
    n, m_fwd = len(c), int(k_fwd.sum())
    flow = np.concatenate([np.repeat(np.arange(n), k_fwd), np.repeat(np.arange(n), k_rev)])
    reverse = np.repeat([False, True], [m_fwd, int(k_rev.sum())])
    k = np.where(reverse, k_rev[flow], k_fwd[flow])
    first_fwd = np.concatenate([[0], np.cumsum(k_fwd)[:-1]])
    first_rev = m_fwd + np.concatenate([[0], np.cumsum(k_rev)[:-1]])
    j = np.arange(len(flow)) - np.where(reverse, first_rev[flow], first_fwd[flow])
    phase = np.where(reverse, 0.75, 0.25)
    t_us = c.start_us[flow] + ((j + phase) / k * (c.end_us - c.start_us)[flow]).astype(np.int64)
    order = np.argsort(t_us, kind="stable")
    return _Samples(flow[order], reverse[order], j[order], k[order], t_us[order])


def _packets(c: FlowColumns, s: _Samples, seq0: int) -> PacketSpec:
    """The sampled packets: addresses, ports, flags and sizes from their flow."""
    proto = c.proto[s.flow]
    icmp = (proto == 1) | (proto == 58)
    pkts = s.side(c.src_pkts, c.dst_pkts).astype(np.int64)
    octets = s.side(c.src_bytes, c.dst_bytes).astype(np.int64)
    flow_flags = s.side(c.src_flags, c.dst_flags)
    flags = np.where(proto == 6, sample_flags(flow_flags, s.reverse, s.j == 0, s.j == s.k - 1), 0)
    flags = flags.astype(np.uint8)
    # the flow's average packet size; connection set-up and reset carry no data
    bare = min_ip_len(c.is_v6[s.flow], proto)
    ip_len = np.maximum(octets // np.maximum(pkts, 1), bare)
    ip_len = np.where((flags & (SYN | RST)) > 0, bare + np.where(flags & SYN, 20, 0), ip_len)
    cmac, smac = _macs_or_default(c.src_mac, CLIENT_IF), _macs_or_default(c.dst_mac, SERVER_IF)
    src, dst = v6_bytes(c.src_hi, c.src_lo), v6_bytes(c.dst_hi, c.dst_lo)
    reply = reply_port(c.proto, c.dst_port)[s.flow]
    return PacketSpec(
        is_v6=c.is_v6[s.flow],
        src=s.side(src, dst),
        dst=s.side(dst, src),
        src_port=np.where(icmp, 0, s.side(c.src_port, c.dst_port)).astype(np.uint16),
        dst_port=np.where(s.reverse & icmp, reply, s.side(c.dst_port, c.src_port)).astype(
            np.uint16
        ),
        proto=proto,
        ip_len=ip_len,
        tcp_flags=flags,
        vlan=c.vlan[s.flow],
        src_mac=s.side(cmac, smac),
        dst_mac=s.side(smac, cmac),
        ident=((seq0 + np.arange(len(s.flow))) * 7 + s.flow).astype(np.uint32),
    )


def _macs_or_default(macs: np.ndarray, ifindex: int) -> np.ndarray:
    """The flows' MACs; a locally administered 02:00:00:00:00:<if> where unknown."""
    out = macs.copy()
    unknown = (macs == 0).all(axis=1)
    out[unknown, 0], out[unknown, 5] = 0x02, ifindex
    return out


def _flow_samples(
    spec: PacketSpec, s: _Samples, seq0: int, rate: int, ds_index: int, snaplen: int
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(all flow samples back to back, size of each, frame length of each)."""
    m = len(s.flow)
    headers, captured = build_headers(spec, snaplen)
    frame = frame_lengths(spec)
    padded = captured + (-captured % 4)
    seq = seq0 + 1 + np.arange(m)
    fixed = np.zeros(m, FLOW_SAMPLE_FIXED)
    fixed["tag"] = 1
    fixed["length"] = FLOW_SAMPLE_FIXED.itemsize - 8 + padded
    fixed["sequence"] = seq % U32
    fixed["source_id"] = ds_index
    fixed["rate"] = rate
    fixed["pool"] = (seq * rate) % U32
    fixed["input"] = np.where(s.reverse, SERVER_IF, CLIENT_IF)
    fixed["output"] = np.where(s.reverse, CLIENT_IF, SERVER_IF)
    fixed["records"] = 1
    fixed["rtag"] = 1  # raw packet header
    fixed["rlength"] = 16 + padded
    fixed["protocol"] = 1  # Ethernet
    fixed["frame_length"] = frame
    fixed["stripped"] = 4  # the FCS
    fixed["header_length"] = captured
    head = FLOW_SAMPLE_FIXED.itemsize
    rows = np.zeros((m, head + snaplen + (-snaplen % 4)), np.uint8)
    rows[:, :head] = fixed.view(np.uint8).reshape(m, head)
    rows[:, head : head + snaplen] = headers
    # samples are whole 32-bit words: keep each row's first size/4 words, in order
    size = head + padded
    words = rows.view(np.uint32)
    blob = words[np.arange(words.shape[1])[None, :] < (size // 4)[:, None]].tobytes()
    return blob, size, frame


def encode_sflow(
    flows: pa.Table,
    *,
    rate: int = 1,
    sequence: int = 0,
    agent: str = "127.0.0.1",
    sub_agent: int = 0,
    boot_us: int | None = None,
    state: SflowState | None = None,
    max_datagram: int = 1400,
    counter_every: int = 10,
    mode: Literal["ceil", "binomial"] = "ceil",
    seed: int = 0,
    ds_index: int = CLIENT_IF,
    snaplen: int = SNAPLEN,
) -> Encoded:
    """sFlow v5 datagrams sampling ``flows`` at 1 in ``rate``; ``sequence`` = datagrams before.

    ``extra`` of the result is the new :class:`SflowState` as a dict; ``records`` is the
    number of flow samples.
    """
    if rate < 1:
        raise ValueError("the sampling rate is a positive integer (1 in N packets)")
    if mode not in ("ceil", "binomial"):
        raise ValueError("mode is 'ceil' or 'binomial'")
    state = SflowState(**asdict(state)) if state else SflowState()
    addr_type, agent_addr = _agent_bytes(agent)
    c = flow_columns(flows)
    rng = np.random.default_rng([seed, state.sample_sequence])
    k_fwd = _counts(c.src_pkts, rate, mode, rng)
    k_rev = _counts(c.dst_pkts, rate, mode, rng)
    m = int(k_fwd.sum() + k_rev.sum())
    if m == 0:
        return empty(sequence, extra=asdict(state))  # nothing sampled: no datagram
    seq0 = state.sample_sequence
    s = _schedule(c, k_fwd, k_rev)
    blob, size, frame = _flow_samples(_packets(c, s, seq0), s, seq0, rate, ds_index, snaplen)
    offsets = np.concatenate([[0], np.cumsum(size)]).tolist()

    # interface counters: what the samples stand for, cumulative, per direction
    stood = frame * rate
    fwd_oct = np.cumsum(np.where(s.reverse, 0, stood)) + state.client_octets
    rev_oct = np.cumsum(np.where(s.reverse, stood, 0)) + state.server_octets
    fwd_pkt = np.cumsum(np.where(s.reverse, 0, rate)) + state.client_packets
    rev_pkt = np.cumsum(np.where(s.reverse, rate, 0)) + state.server_packets

    header_size = 28 + (12 if addr_type == 2 else 0)

    def with_counters(i: int) -> bool:
        return counter_every > 0 and (sequence + i) % counter_every == 0

    def budget(i: int) -> int:
        return max_datagram - header_size - (2 * COUNTER_SAMPLE.size if with_counters(i) else 0)

    boot = default_boot_us(c.start_us) if boot_us is None else boot_us
    ranges = split(size, budget, times=(s.t_us, s.t_us))
    datagrams = []
    for i, (a, b) in enumerate(ranges):
        samples = [blob[offsets[a] : offsets[b]]]
        if with_counters(i):
            fo, fp, ro, rp = (int(x[b - 1]) for x in (fwd_oct, fwd_pkt, rev_oct, rev_pkt))
            state.counter_sequence += 1
            seq = state.counter_sequence
            samples[:0] = [
                _counter_sample(seq, CLIENT_IF, fo, fp, ro, rp),
                _counter_sample(seq, SERVER_IF, ro, rp, fo, fp),
            ]
        count = (b - a) + (2 if with_counters(i) else 0)
        uptime = (int(s.t_us[b - 1]) // 1000 - boot // 1000) % U32
        header = struct.pack("!II", 5, addr_type) + agent_addr
        header += struct.pack("!IIII", sub_agent, (sequence + i + 1) % U32, uptime, count)
        datagrams.append(header + b"".join(samples))
    state.sample_sequence = seq0 + m
    state.client_octets, state.client_packets = int(fwd_oct[-1]), int(fwd_pkt[-1])
    state.server_octets, state.server_packets = int(rev_oct[-1]), int(rev_pkt[-1])
    weights = datagram_weights(1.0 / (k_fwd + k_rev)[s.flow], ranges)
    return Encoded(datagrams, m, weights, (sequence + len(ranges)) % U32, extra=asdict(state))
