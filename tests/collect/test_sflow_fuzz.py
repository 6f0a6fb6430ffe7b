"""sFlow v5 decoder under mutated input: real and hand-built datagrams with bytes, 32-bit
fields and lengths changed, cut, dropped or repeated must never raise, must give tables
of the right schema, and must decode the same in a batch as one by one (a read past
one datagram's end would see its neighbour's bytes). The long run is bench/fuzz_sflow.py.
"""

from __future__ import annotations

import struct

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.sflow import COUNTER_SCHEMA, SFlowDecoder
from flowhawk.schema import RAW_FLOW_SCHEMA
from tests.collect.test_sflow import (
    TCPDUMP,
    counter_sample,
    datagram,
    ext_switch,
    flow_sample,
    generic_counters,
    raw_header,
    record,
    sampled_ipv4,
    sampled_ipv6,
    tcp_frame,
    udp_payloads,
)
from tests.conftest import SHARED_DATA
from tests.sources.pcap import ETH_IP6, eth, icmp, ip4, ip6, udp

#: 32-bit values that lengths, counts and types are most likely to break on.
INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 11, 12, 16, 88, 1001, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1]


def built_datagrams() -> list[bytes]:
    """Hand-built datagrams covering every structure the decoder reads."""
    v6 = eth(
        ip6("2001:db8::1", "2001:db8::2", 17, udp(1, 2, b"q" * 30)), ETH_IP6, vlans=[(0x8100, 5)]
    )
    v4 = ip4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0, b"p" * 40))
    return [
        datagram(
            [
                flow_sample([ext_switch(3, 4), raw_header(tcp_frame())], rate=100, seq=9),
                flow_sample([raw_header(v6)], expanded=True, rate=7),
                flow_sample([raw_header(v4, proto=11, stripped=0)]),
                flow_sample([sampled_ipv4("1.2.3.4", "5.6.7.8", 6, 1, 2, 40, 2)]),
                counter_sample([record(2, bytes(52)), generic_counters(3)]),
            ],
            agent="2001:db8::9",
        ),
        datagram(
            [
                flow_sample([sampled_ipv6("::1", "::2", 58, 128, 0)], expanded=True),
                counter_sample([generic_counters(4)], expanded=True),
                record(5, bytes(16), enterprise=4300),
            ],
            sub=7,
        ),
    ]


def seed_datagrams() -> list[bytes]:
    seeds = built_datagrams()
    for name in (
        "sflow-print-v6.pcap",
        "sflow_expanded.pcap",
        "sflow_multiple_counter_30_pdus.pcap",
    ):
        seeds += [p for _, _, p in udp_payloads(SHARED_DATA / TCPDUMP / name)]
    seeds += [p for _, _, p in udp_payloads(SHARED_DATA / "conformance/ndpi_pcaps/pcap/sflow.pcap")]
    return [s for s in seeds if s[:4] == b"\x00\x00\x00\x05"]


SEEDS = seed_datagrams()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["byte", "word", "word", "cut", "drop", "repeat"]))
        if kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "word":  # a length, count, type or format field: 4-byte aligned
            pos &= ~3
            value = draw(st.sampled_from(INTERESTING) | st.integers(0, 2**32 - 1))
            data[pos : pos + 4] = struct.pack("!I", value)
        elif kind == "cut":
            del data[pos:]
        elif kind == "drop":
            del data[pos : pos + draw(st.integers(1, 40))]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 200))]
    return bytes(data)


def decode(batch: list[bytes]):
    return SFlowDecoder().decode(batch, list(range(len(batch))), ExporterState("192.0.2.1"))


def check(res, n: int) -> None:
    assert res.flows.schema == RAW_FLOW_SCHEMA
    assert res.counters is None or res.counters.schema == COUNTER_SCHEMA
    assert all(v > 0 for v in res.errors.values()) and all(v > 0 for v in res.ignored.values())
    flows = res.flows.to_pydict()
    assert all(p >= 1 for p in flows["src_pkts"]) and all(b >= 0 for b in flows["src_bytes"])
    assert all(s >= 1 for s in flows["sampling"])


def test_seeds_decode_cleanly() -> None:
    res = decode(SEEDS)
    check(res, len(SEEDS))
    assert not res.errors and res.flows.num_rows >= 20 and res.counters.num_rows >= 190


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=6))
def test_mutated_datagrams_never_escape(batch: list[bytes]) -> None:
    res = decode(batch)
    check(res, len(batch))
    singles = [decode([d]) for d in batch]
    assert res.flows.drop_columns(["ts_start", "ts_end"]) == pa.concat_tables(
        s.flows for s in singles
    ).drop_columns(["ts_start", "ts_end"])
    counters = [s.counters for s in singles if s.counters is not None]
    if counters:
        assert res.counters.drop_columns(["ts"]) == pa.concat_tables(counters).drop_columns(["ts"])
    else:
        assert res.counters is None
    total = sum((s.errors for s in singles), start=type(res.errors)())
    assert res.errors == total
