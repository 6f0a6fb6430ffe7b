"""NetFlow v5 decoder on hand-built export packets."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.netflow5 import NetFlow5Decoder
from flowhawk.schema import RAW_FLOW_SCHEMA
from tests.collect.test_netflow9 import EXPORT, T0, UPTIME, ts


def v5_record(
    src="10.0.0.1",
    dst="10.0.0.2",
    sport=1234,
    dport=80,
    proto=6,
    flags=0x12,
    pkts=5,
    octets=400,
    first=UPTIME - 2000,
    last=UPTIME - 500,
) -> bytes:
    return struct.pack(
        "!4s4s4sHHIIIIHHBBBBHHBBH",
        ipaddress.ip_address(src).packed,
        ipaddress.ip_address(dst).packed,
        bytes(4),
        1,
        2,
        pkts,
        octets,
        first,
        last,
        sport,
        dport,
        0,
        flags,
        proto,
        0,
        0,
        0,
        0,
        0,
        0,
    )


def v5_packet(
    *records: bytes,
    seq: int = 0,
    uptime: int = UPTIME,
    secs: int = EXPORT,
    nsecs: int = 0,
    engine: tuple[int, int] = (0, 0),
    sampling: int = 0,
    count: int | None = None,
) -> bytes:
    count = len(records) if count is None else count
    return struct.pack(
        "!HHIIIIBBH", 5, count, uptime, secs, nsecs, seq, *engine, sampling
    ) + b"".join(records)


def decode(*packets: bytes, state: ExporterState | None = None, t0: int = T0):
    state = state or ExporterState("192.0.2.50")
    res = NetFlow5Decoder().decode(list(packets), [t0 + i for i in range(len(packets))], state)
    return res, state


def test_records() -> None:
    res, state = decode(
        v5_packet(
            v5_record(),
            v5_record(src="2.2.2.2", dport=22),
            seq=100,
            nsecs=250_000_999,
            engine=(1, 2),
        )
    )
    assert res.flows.schema == RAW_FLOW_SCHEMA and not res.errors
    row = res.flows.to_pylist()[0]
    assert {
        k: row[k]
        for k in (
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "proto",
            "src_tcp_flags",
            "src_pkts",
            "src_bytes",
            "dst_pkts",
            "dst_bytes",
            "vlan",
            "src_mac",
            "uni",
            "orient",
            "sampling",
            "exporter",
            "input",
        )
    } == {
        "src_ip": "10.0.0.1",
        "dst_ip": "10.0.0.2",
        "src_port": 1234,
        "dst_port": 80,
        "proto": 6,
        "src_tcp_flags": 0x12,
        "src_pkts": 5,
        "src_bytes": 400,
        "dst_pkts": 0,
        "dst_bytes": 0,
        "vlan": None,
        "src_mac": None,
        "uni": True,
        "orient": None,
        "sampling": 1,
        "exporter": "192.0.2.50",
        "input": "netflow5://192.0.2.50",
    }
    # header time 22:13:20.250000999: residual nanoseconds kept to the µs
    assert row["ts_start"] == ts("2023-11-14 22:13:18.250")
    assert row["ts_end"] == ts("2023-11-14 22:13:19.750")
    # domain = engine type << 8 | engine id; flow id = domain:sequence:record index
    assert res.flows.column("flow_id").to_pylist() == ["258:100:0", "258:100:1"]
    stats = state.domains["netflow5/258"]
    assert (stats.packets, stats.flows, stats.next_sequence, stats.last_seen_us) == (1, 2, 102, T0)


def test_sampling_interval_scales_counters() -> None:
    # mode 1 (deterministic), interval 100; Juniper sends mode 0 with an interval: same
    for sampling in (0x4000 | 100, 100):
        res, state = decode(v5_packet(v5_record(), sampling=sampling))
        row = res.flows.to_pylist()[0]
        assert (row["sampling"], row["src_pkts"], row["src_bytes"]) == (100, 500, 40000)
        assert state.domains["netflow5/0"].sampling == 100


def test_icmp_keeps_type_and_code_in_dst_port() -> None:
    res, _ = decode(v5_packet(v5_record(proto=1, sport=999, dport=0x0303)))
    row = res.flows.to_pylist()[0]
    assert (row["src_port"], row["dst_port"]) == (0, 0x0303)


def test_uptime_wrap() -> None:
    """first/last are ms of a 32-bit uptime: a flow can start before it wraps."""
    res, _ = decode(v5_packet(v5_record(first=2**32 - 1500, last=300), uptime=500))
    row = res.flows.to_pylist()[0]
    assert (row["ts_start"], row["ts_end"]) == (
        ts("2023-11-14 22:13:18"),
        ts("2023-11-14 22:13:19.800"),
    )


def test_sequence_counts_flows() -> None:
    recs = [v5_record()] * 3
    _, state = decode(v5_packet(*recs, seq=0), v5_packet(*recs, seq=3), v5_packet(*recs, seq=10))
    stats = state.domains["netflow5/0"]
    assert (stats.sequence_gaps, stats.lost, stats.next_sequence) == (1, 4, 13)
    # across batches, and a restart (backwards) is no gap
    _, state = decode(v5_packet(*recs, seq=20), v5_packet(*recs, seq=1), state=state)
    assert (stats.sequence_gaps, stats.lost, stats.next_sequence) == (2, 11, 4)
    # sequence numbers wrap at 2^32
    _, state = decode(v5_packet(*recs, seq=2**32 - 2), v5_packet(*recs, seq=1))
    assert state.domains["netflow5/0"].sequence_gaps == 0


def test_a_full_batch_in_order() -> None:
    packets = [
        v5_packet(*[v5_record(src=f"10.0.{p}.{r}", sport=r) for r in range(30)], seq=30 * p)
        for p in range(64)
    ]
    res, state = decode(*packets)
    assert res.flows.num_rows == 64 * 30
    assert res.flows.column("src_ip").to_pylist()[29:31] == ["10.0.0.29", "10.0.1.0"]
    assert res.flows.column("flow_id").to_pylist()[-1] == f"0:{30 * 63}:29"
    assert state.domains["netflow5/0"].sequence_gaps == 0


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (v5_packet()[:20], "truncated header"),
        (struct.pack("!HH", 1, 0) + bytes(20), "unsupported version"),
        (v5_packet(), "record count mismatch"),  # count 0
        (v5_packet(v5_record(), count=2), "record count mismatch"),
        (v5_packet(v5_record())[:-1], "record count mismatch"),
    ],
)
def test_bad_datagrams_are_dropped_by_reason(packet: bytes, reason: str) -> None:
    res, _ = decode(packet, v5_packet(v5_record(), seq=1))
    assert dict(res.errors) == {reason: 1}
    assert res.flows.num_rows == 1  # the good datagram of the batch still counts


def test_trailing_bytes_are_counted_and_the_records_kept() -> None:
    res, _ = decode(v5_packet(v5_record()) + bytes(5))
    assert res.flows.num_rows == 1 and dict(res.errors) == {"trailing bytes": 1}


def test_empty_batch() -> None:
    res, state = decode()
    assert res.flows.num_rows == 0 and res.flows.schema == RAW_FLOW_SCHEMA and not state.domains
