"""Property tests: mutated real export packets never crash the NetFlow / IPFIX decoders.

Every corpus file is replayed after its template files, with one datagram (template
or data) mutated: bit flips, cuts, 16/32-bit fields set to boundary values, set and
template ids exchanged, bytes inserted or removed. Whatever comes in, a decoder
returns a raw-flow table and counts what it dropped under a known reason; its state
stays JSON. bench/fuzz_decoders.py runs the same idea over a million datagrams.
"""

from __future__ import annotations

import json
import struct

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.dispatch import protocol_of
from flowhawk.collect.decode.ipfix import IpfixDecoder
from flowhawk.collect.decode.netflow5 import NetFlow5Decoder
from flowhawk.collect.decode.netflow9 import NetFlow9Decoder
from flowhawk.schema import RAW_FLOW_SCHEMA
from tests.collect.test_vendor_corpus import ALL, CONTEXT, REASONS, datagrams

SCENARIOS = {name: datagrams(*CONTEXT.get(name, []), name) for name in ALL}
DECODERS = {"netflow5": NetFlow5Decoder, "netflow9": NetFlow9Decoder, "ipfix": IpfixDecoder}


def decoder_for(name: str):
    """The decoder of the scenario's protocol (a mutated version field is its business)."""
    return DECODERS[protocol_of(SCENARIOS[name][0])]()


U16 = [0, 1, 2, 3, 4, 5, 8, 15, 16, 20, 255, 256, 257, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
U32 = [0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF, 29305]
FUZZ = settings(
    max_examples=1500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def set_headers(dgram: bytes) -> list[int]:
    """Offsets of the set headers of a v9 / IPFIX datagram (as far as they chain)."""
    version = int.from_bytes(dgram[:2], "big")
    pos = {9: 20, 10: 16}.get(version, len(dgram))
    out = []
    while pos + 4 <= len(dgram):
        length = int.from_bytes(dgram[pos + 2 : pos + 4], "big")
        out.append(pos)
        if length < 4:
            break
        pos += length
    return out


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    name = draw(st.sampled_from(ALL))
    packets = list(SCENARIOS[name])
    i = draw(st.integers(0, len(packets) - 1))
    b = bytearray(packets[i])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                ["flip", "cut", "u16", "u32", "set id", "tid", "insert", "delete", "set length"]
            )
        )
        if not b:
            break
        pos = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del b[pos:]
        elif op == "u16" and pos + 2 <= len(b):
            b[pos : pos + 2] = struct.pack("!H", draw(st.sampled_from(U16)))
        elif op == "u32" and pos + 4 <= len(b):
            b[pos : pos + 4] = struct.pack("!I", draw(st.sampled_from(U32)))
        elif op in ("set id", "set length", "tid"):
            heads = set_headers(bytes(b))
            if heads:
                at = draw(st.sampled_from(heads)) + {"set id": 0, "set length": 2, "tid": 4}[op]
                if at + 2 <= len(b):
                    b[at : at + 2] = struct.pack("!H", draw(st.sampled_from(U16)))
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[pos : pos + draw(st.integers(1, 8))]
    packets[i] = bytes(b)
    return name, packets


def check(result, state: ExporterState) -> None:
    assert set(result.errors) <= REASONS, result.errors
    assert result.flows.schema == RAW_FLOW_SCHEMA
    text = json.dumps(state.to_json())
    assert ExporterState.from_json(json.loads(text)).to_json() == json.loads(text)


@FUZZ
@given(mutated())
def test_mutated_packets_in_one_batch(case: tuple[str, list[bytes]]) -> None:
    name, packets = case
    state = ExporterState("192.0.2.1")
    result = decoder_for(name).decode(packets, list(range(len(packets))), state)
    check(result, state)


@FUZZ
@given(mutated())
def test_mutated_packets_one_by_one_give_the_same_flows(case: tuple[str, list[bytes]]) -> None:
    """A datagram decodes alike alone or in a batch: nothing leaks between datagrams."""
    name, packets = case
    batch_state, single_state = ExporterState("x"), ExporterState("x")
    batch = decoder_for(name).decode(packets, [0] * len(packets), batch_state)
    decoder, tables, errors = decoder_for(name), [], {}
    for p in packets:
        one = decoder.decode([p], [0], single_state)
        check(one, single_state)
        tables.append(one.flows)
        for k, v in one.errors.items():
            errors[k] = errors.get(k, 0) + v
    assert pa.concat_tables(tables).equals(batch.flows)
    assert errors == dict(batch.errors)
    assert batch_state.to_json() == single_state.to_json()


def test_every_scenario_is_fuzzable() -> None:
    assert all(protocol_of(p[0]) in DECODERS for p in SCENARIOS.values())
