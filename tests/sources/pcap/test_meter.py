"""The flow meter: biflow rules, timeouts, TCP closing, incrementality, against a reference."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

import numpy as np
import pytest

from flowhawk.sources.pcap.decode import NO_MAC, Packets
from flowhawk.sources.pcap.meter import (
    END_ACTIVE,
    END_CLOSED,
    END_FLUSH,
    END_IDLE,
    END_NEW_SYN,
    F_STATE,
    NF,
    FlowMeter,
)
from flowhawk.sources.pcap.source import oriented
from tests.sources.pcap import ACK, FIN, PSH, RST, SYN

S = 1_000_000  # microseconds per second


@dataclass
class P:
    """One packet for the meter."""

    ts: float  # seconds
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    proto: int = 17
    flags: int = 0
    length: int = 100
    vlan: int = -1
    smac: int = int(NO_MAC)
    dmac: int = int(NO_MAC)


def _split(ip: str) -> tuple[int, int]:
    a = ipaddress.ip_address(ip)
    v = (0xFFFF << 32) | int(a) if a.version == 4 else int(a)
    return v >> 64, v & 0xFFFF_FFFF_FFFF_FFFF


def columns(pkts: list[P]) -> Packets:
    src = [_split(p.src) for p in pkts]
    dst = [_split(p.dst) for p in pkts]
    u64 = np.uint64
    return Packets(
        np.array([round(p.ts * S) for p in pkts], np.int64),
        np.array([s[0] for s in src], u64),
        np.array([s[1] for s in src], u64),
        np.array([d[0] for d in dst], u64),
        np.array([d[1] for d in dst], u64),
        np.array([p.sport for p in pkts], np.uint16),
        np.array([p.dport for p in pkts], np.uint16),
        np.array([p.proto for p in pkts], np.uint8),
        np.array([p.flags for p in pkts], np.uint8),
        np.array([p.length for p in pkts], np.int64),
        np.array([p.vlan for p in pkts], np.int16),
        np.array([p.smac for p in pkts], u64),
        np.array([p.dmac for p in pkts], u64),
        np.zeros(len(pkts), np.uint8),
    )


def run(pkts: list[P], **timeouts: float) -> list[dict]:
    m = FlowMeter(**timeouts)
    rows = np.concatenate([m.add(columns(pkts)), m.flush()])
    return records(rows)


def records(rows: np.ndarray) -> list[dict]:
    c = oriented(rows)
    out = []
    for i in range(len(rows)):
        r = {f: getattr(c, f)[i].item() for f in c._fields}
        for side in ("src", "dst"):
            r[side] = _join(r.pop(f"{side}_hi"), r.pop(f"{side}_lo"))
        out.append(r)
    return out


def _join(hi: int, lo: int) -> str:
    if hi == 0 and lo >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def test_both_directions_make_one_oriented_flow() -> None:
    mac_c, mac_s = 0x0200_0000_0001, 0x0200_0000_0002
    pkts = [
        P(1.0, "10.0.0.1", "10.0.0.2", 40000, 80, 6, SYN, 60, smac=mac_c, dmac=mac_s),
        P(1.1, "10.0.0.2", "10.0.0.1", 80, 40000, 6, SYN | ACK, 60, smac=mac_s, dmac=mac_c),
        P(1.2, "10.0.0.1", "10.0.0.2", 40000, 80, 6, ACK | PSH, 500),
        P(1.3, "10.0.0.2", "10.0.0.1", 80, 40000, 6, ACK, 52),
    ]
    (f,) = run(pkts)
    assert (f["src"], f["dst"], f["src_port"], f["dst_port"], f["proto"]) == (
        "10.0.0.1",
        "10.0.0.2",
        40000,
        80,
        6,
    )
    assert (f["src_pkts"], f["src_bytes"], f["dst_pkts"], f["dst_bytes"]) == (2, 560, 2, 112)
    assert (f["src_tcp_flags"], f["dst_tcp_flags"]) == (SYN | ACK | PSH, SYN | ACK)
    assert (f["ts_start"], f["ts_end"]) == (1 * S, 1_300_000)
    assert f["started"] and f["end_reason"] == END_FLUSH
    assert (f["src_mac"], f["dst_mac"]) == (mac_c, mac_s)


def test_a_missed_handshake_is_not_a_start() -> None:
    pkts = [
        P(1.0, "10.0.0.2", "10.0.0.1", 80, 40000, 6, SYN | ACK),
        P(1.1, "10.0.0.1", "10.0.0.2", 40000, 80, 6, ACK),
    ]
    (f,) = run(pkts)
    assert (f["src"], f["src_port"], f["started"]) == ("10.0.0.2", 80, False)


def test_icmp_echo_and_reply_are_one_flow() -> None:
    pkts = [
        P(1.0, "1.1.1.1", "2.2.2.2", 0, 8 * 256, 1),
        P(1.1, "2.2.2.2", "1.1.1.1", 0, 0, 1),
        P(2.0, "::1", "::2", 0, 128 * 256, 58),
        P(2.1, "::2", "::1", 0, 129 * 256, 58),
        P(3.0, "3.3.3.3", "1.1.1.1", 0, 0, 1),  # a reply whose request was not seen
        P(4.0, "1.1.1.1", "4.4.4.4", 0, 3 * 256 + 1, 1),
    ]  # an error: its own flow
    f4, f6, late, err = run(pkts)
    assert (f4["src"], f4["src_pkts"], f4["dst_pkts"], f4["dst_port"], f4["started"]) == (
        "1.1.1.1",
        1,
        1,
        2048,
        True,
    )
    assert (f6["src"], f6["src_pkts"], f6["dst_pkts"], f6["dst_port"]) == ("::1", 1, 1, 128 * 256)
    assert (late["src"], late["dst_port"], late["started"]) == ("3.3.3.3", 2048, False)
    assert (err["dst_port"], err["src_port"], err["started"]) == (769, 0, True)


def test_vlan_is_part_of_the_key() -> None:
    pkts = [P(1.0, "1.1.1.1", "2.2.2.2", 5, 53, vlan=10), P(1.1, "1.1.1.1", "2.2.2.2", 5, 53)]
    a, b = run(pkts)
    assert (a["vlan"], b["vlan"]) == (10, -1)


@pytest.mark.parametrize(("gap", "flows"), [(59.999999, 1), (60.0, 2)])
def test_idle_timeout_boundary(gap: float, flows: int) -> None:
    pkts = [P(100.0, "1.1.1.1", "2.2.2.2", 5, 53), P(100.0 + gap, "2.2.2.2", "1.1.1.1", 53, 5)]
    out = run(pkts, idle_timeout=60)
    assert len(out) == flows
    if flows == 2:
        assert out[0]["end_reason"] == END_IDLE and out[1]["src"] == "2.2.2.2"


def test_tcp_has_its_own_idle_timeout() -> None:
    pkts = [
        P(0, "1.1.1.1", "2.2.2.2", 1, 80, 6, ACK),
        P(200, "1.1.1.1", "2.2.2.2", 1, 80, 6, ACK),
        P(0, "1.1.1.1", "2.2.2.2", 1, 80, 17),
        P(200, "1.1.1.1", "2.2.2.2", 1, 80, 17),
    ]
    pkts.sort(key=lambda p: p.ts)
    out = run(pkts, idle_timeout=60, tcp_idle_timeout=300)
    assert sorted((f["proto"], f["src_pkts"]) for f in out) == [(6, 2), (17, 1), (17, 1)]


def test_active_timeout_cuts_long_flows() -> None:
    pkts = [P(float(t), "1.1.1.1", "2.2.2.2", 5, 5) for t in range(0, 100, 10)]
    out = run(pkts, active_timeout=30)
    assert [f["src_pkts"] for f in out] == [3, 3, 3, 1]
    assert [f["end_reason"] for f in out] == [END_ACTIVE] * 3 + [END_FLUSH]
    assert all(f["ts_end"] - f["ts_start"] < 30 * S for f in out)


def _conn(t0: float, sport: int = 40000) -> list[P]:
    c, s = ("10.0.0.1", sport), ("10.0.0.2", 80)
    return [
        P(t0, c[0], s[0], c[1], s[1], 6, SYN),
        P(t0 + 0.1, s[0], c[0], s[1], c[1], 6, SYN | ACK),
        P(t0 + 0.2, c[0], s[0], c[1], s[1], 6, ACK | FIN),
        P(t0 + 0.3, s[0], c[0], s[1], c[1], 6, ACK | FIN),
    ]


def test_fin_both_ways_closes_and_trailing_ack_stays_in_the_flow() -> None:
    ack = P(1.5, "10.0.0.1", "10.0.0.2", 40000, 80, 6, ACK)
    late = P(20.0, "10.0.0.1", "10.0.0.2", 40000, 80, 6, ACK)
    first, second = run([*_conn(1.0), ack, late], tcp_close_timeout=10)
    assert (first["src_pkts"], first["dst_pkts"], first["end_reason"]) == (3, 2, END_CLOSED)
    assert (second["src_pkts"], second["started"]) == (1, False)


def test_new_syn_after_close_starts_a_new_flow_at_once() -> None:
    out = run([*_conn(1.0), *_conn(2.0)], tcp_close_timeout=10)
    assert [f["end_reason"] for f in out] == [END_NEW_SYN, END_FLUSH]
    assert all(f["started"] and f["src_pkts"] == 2 and f["dst_pkts"] == 2 for f in out)


def test_rst_closes() -> None:
    pkts = [
        P(1.0, "10.0.0.1", "10.0.0.2", 1, 2, 6, SYN),
        P(1.1, "10.0.0.2", "10.0.0.1", 2, 1, 6, RST | ACK),
        P(1.2, "10.0.0.1", "10.0.0.2", 1, 2, 6, SYN),
    ]  # retried: a new attempt
    out = run(pkts)
    assert [(f["src_pkts"], f["dst_pkts"], f["end_reason"]) for f in out] == [
        (1, 1, END_NEW_SYN),
        (1, 0, END_FLUSH),
    ]


def test_expired_flows_are_emitted_by_add_and_advance() -> None:
    m = FlowMeter(idle_timeout=60)
    assert len(m.add(columns([P(0.0, "1.1.1.1", "2.2.2.2", 1, 2)]))) == 0
    assert m.active_flows == 1
    assert len(m.add(columns([P(59.0, "3.3.3.3", "2.2.2.2", 1, 2)]))) == 0
    done = m.add(columns([P(60.0, "4.4.4.4", "2.2.2.2", 1, 2)]))
    assert records(done)[0]["src"] == "1.1.1.1" and m.active_flows == 2
    assert records(m.advance(119 * S))[0]["src"] == "3.3.3.3"
    assert len(m.advance(100 * S)) == 0 and m.now_us == 119 * S  # the clock never goes back
    assert [r["src"] for r in records(m.flush())] == ["4.4.4.4"]
    assert m.active_flows == 0 and len(m.flush()) == 0


def test_bad_timeouts() -> None:
    with pytest.raises(ValueError):
        FlowMeter(idle_timeout=0)


# ---------------------------------------------------------------- reference model


@dataclass
class _Ref:
    key: tuple
    first: int
    last: int
    first_b: bool
    started: bool
    order: int
    pkts: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    flags: list[int] = field(default_factory=lambda: [0, 0])
    fin: list[bool] = field(default_factory=lambda: [False, False])
    closed: bool = False


def reference(pkts: list[P], active: float, idle: float, tcp_idle: float, close: float) -> list:
    """A slow, obvious implementation of the meter rules in meter.py's docstring."""
    flows: dict[tuple, _Ref] = {}
    out: list[tuple] = []
    now = -(1 << 62)
    order = 0

    def end(f: _Ref) -> tuple[int, int]:
        t = close if f.closed else tcp_idle if f.key[0] == 6 else idle
        idle_end, active_end = f.last + round(t * S), f.first + round(active * S)
        if active_end <= idle_end:
            return active_end, END_ACTIVE
        return idle_end, END_CLOSED if f.closed else END_IDLE

    def emit(f: _Ref, why: int) -> None:
        out.append(
            (
                f.key,
                f.first,
                f.last,
                tuple(f.pkts),
                tuple(f.bytes),
                tuple(f.flags),
                f.first_b,
                f.started,
                why,
            )
        )

    for p in pkts:
        ts = round(p.ts * S)
        now = max(now, ts)
        for k in [k for k, f in flows.items() if end(f)[0] <= now]:
            f = flows.pop(k)
            emit(f, end(f)[1])
        s, d = (_split(p.src), p.sport), (_split(p.dst), p.dport)
        dport = p.dport
        if p.proto in (1, 58):
            typ = dport >> 8
            reply = typ in (0, 14, 16, 18) if p.proto == 1 else typ == 129
            if reply:
                dport = ({0: 8, 14: 13, 16: 15, 18: 17, 129: 128}[typ] << 8) | (dport & 0xFF)
            swap = s[0] > d[0]
            key = (p.proto, p.vlan, min(s[0], d[0]), max(s[0], d[0]), dport)
            started = not reply
        else:
            swap = s > d
            key = (p.proto, p.vlan, *sorted([s, d]))
            started = p.proto != 6 or (p.flags & (SYN | ACK)) == SYN
        di = int(swap)
        f = flows.get(key)
        if f is not None and f.closed and p.flags & SYN:
            emit(flows.pop(key), END_NEW_SYN)
            f = None
        if f is None:
            f = flows[key] = _Ref(key, ts, ts, bool(swap), started, order)
            order += 1
        f.first, f.last = min(f.first, ts), max(f.last, ts)
        f.pkts[di] += 1
        f.bytes[di] += p.length
        f.flags[di] |= p.flags
        if p.proto == 6 and not f.closed:
            f.fin[di] |= bool(p.flags & FIN)
            f.closed = bool(p.flags & RST) or all(f.fin)
    for f in sorted(flows.values(), key=lambda f: f.order):
        emit(f, END_FLUSH)
    return out


def oriented_reference(out: list) -> list[tuple]:
    rows = []
    for key, first, last, pkts, nbytes, flags, first_b, started, why in out:
        proto, vlan = key[0], key[1]
        b = int(first_b)
        if proto in (1, 58):
            ends = (key[2], key[3])
            src, dst, sport, dport = ends[b], ends[1 - b], 0, key[4]
        else:
            ends = (key[2], key[3])
            (src, sport), (dst, dport) = ends[b], ends[1 - b]
        rows.append(
            (
                _join(*src),
                _join(*dst),
                sport,
                dport,
                proto,
                vlan,
                first,
                last,
                pkts[b],
                nbytes[b],
                pkts[1 - b],
                nbytes[1 - b],
                flags[b],
                flags[1 - b],
                started,
                why,
            )
        )
    return rows


def as_tuples(recs: list[dict]) -> list[tuple]:
    return [
        (
            r["src"],
            r["dst"],
            r["src_port"],
            r["dst_port"],
            r["proto"],
            r["vlan"],
            r["ts_start"],
            r["ts_end"],
            r["src_pkts"],
            r["src_bytes"],
            r["dst_pkts"],
            r["dst_bytes"],
            r["src_tcp_flags"],
            r["dst_tcp_flags"],
            r["started"],
            r["end_reason"],
        )
        for r in recs
    ]


def random_traffic(n: int, seed: int) -> list[P]:
    rnd = random.Random(seed)
    hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.1.1", "2001:db8::1", "2001:db8::2"]
    tcp_flags = [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, 0]
    icmp_types = [0, 8, 3, 11, 128, 129, 14, 13]
    t = 1_000_000.0
    pkts = []
    cycle = [SYN, SYN | ACK, ACK | FIN, ACK | FIN]  # a connection reusing its ports
    for i in range(n):
        t += rnd.expovariate(2.0)
        if i % 3 == 0:  # a long-lived flow, for the active timeout
            pkts.append(P(t, "10.0.0.9", "10.0.0.8", 5, 5, 17, 0, 100))
            continue
        if i % 5 == 1:
            k = (i // 5) % 4
            ends = ("10.0.0.5", "10.0.0.6", 2000, 80)
            if k % 2:
                ends = ("10.0.0.6", "10.0.0.5", 80, 2000)
            pkts.append(P(t, *ends, 6, cycle[k], 60))
            continue
        ts = t - rnd.random() * 3 if rnd.random() < 0.02 else t  # a few out of order
        v6 = rnd.random() < 0.3
        pool = hosts[4:] if v6 else hosts[:4]
        src, dst = rnd.choice(pool), rnd.choice(pool)
        proto = rnd.choice([6, 6, 6, 17, 17, 1 if not v6 else 58, 47])
        sport, dport, flags = rnd.choice([1000, 1001, 80]), rnd.choice([80, 443, 1000]), 0
        if proto == 6:
            flags = rnd.choice(tcp_flags)
        elif proto in (1, 58):
            sport, dport = 0, rnd.choice(icmp_types) * 256 + rnd.choice([0, 0, 1])
        elif proto == 47:
            sport = dport = 0
        vlan = rnd.choice([-1, -1, -1, 7])
        pkts.append(P(ts, src, dst, sport, dport, proto, flags, rnd.randint(40, 1500), vlan))
    return pkts


TIMEOUTS = {
    "active_timeout": 40.0,
    "idle_timeout": 5.0,
    "tcp_idle_timeout": 9.0,
    "tcp_close_timeout": 2.0,
}


def test_agrees_with_the_reference_model() -> None:
    reasons = set()
    for seed in (1, 2, 3):
        pkts = random_traffic(4000, seed)
        got = as_tuples(run(pkts, **TIMEOUTS))
        want = oriented_reference(reference(pkts, 40.0, 5.0, 9.0, 2.0))
        assert len(got) == len(want)
        assert sorted(got) == sorted(want)
        reasons |= {r[-1] for r in got}
    assert reasons == {END_IDLE, END_ACTIVE, END_CLOSED, END_NEW_SYN, END_FLUSH}


def test_output_does_not_depend_on_chunking_or_capacity() -> None:
    cols = columns(random_traffic(3000, 9))
    whole = FlowMeter(**TIMEOUTS)
    expected = np.concatenate([whole.add(cols), whole.flush()])
    for chunk, capacity, out_rows in [(1, 4, 1), (7, 16, 3), (500, 2, 1000), (3000, 1 << 14, 2)]:
        m = FlowMeter(**TIMEOUTS, capacity=capacity, out_rows=out_rows)
        parts = [m.add(Packets(*(c[i : i + chunk] for c in cols))) for i in range(0, 3000, chunk)]
        got = np.concatenate([*parts, m.flush()])
        assert got.shape == expected.shape and got.shape[1] == NF
        # Row for row, including the order of emission (the pool slot fields may differ).
        assert np.array_equal(got[:, : F_STATE + 1], expected[:, : F_STATE + 1])


def test_many_concurrent_flows_grow_the_tables() -> None:
    n = 70_000
    rng = np.random.default_rng(5)
    pkts = Packets(
        np.arange(n, dtype=np.int64) * 10,
        np.zeros(n, np.uint64),
        (0xFFFF_0A00_0000 + rng.permutation(n)).astype(np.uint64),
        np.zeros(n, np.uint64),
        np.full(n, 0xFFFF_C0A8_0001, np.uint64),
        np.full(n, 1234, np.uint16),
        np.full(n, 53, np.uint16),
        np.full(n, 17, np.uint8),
        np.zeros(n, np.uint8),
        np.full(n, 60, np.int64),
        np.full(n, -1, np.int16),
        np.full(n, NO_MAC, np.uint64),
        np.full(n, NO_MAC, np.uint64),
        np.zeros(n, np.uint8),
    )
    m = FlowMeter(capacity=8)
    assert len(m.add(pkts)) == 0 and m.active_flows == n
    assert len(m.add(pkts)) == 0 and m.active_flows == n  # every packet found its flow again
    rows = m.flush()
    assert len(rows) == n and (rows[:, 7] == 2).all()  # F_PKTS0: two packets each
