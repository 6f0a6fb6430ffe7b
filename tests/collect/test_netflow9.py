"""NetFlow v9 decoder on hand-built export packets: templates, options, pending data, errors.

The builders here (:func:`pack`, :func:`v9_template`, :func:`flowset`, :func:`v9_packet`)
are also used by the IPFIX tests, the fuzz tests and bench/fuzz_decoders.py.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from datetime import UTC, datetime

import pytest

from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.netflow9 import NetFlow9Decoder
from flowhawk.collect.decode.templated import PENDING_SETS, PENDING_US
from flowhawk.schema import RAW_FLOW_SCHEMA

EXPORT = 1_700_000_000  # header unix seconds
UPTIME = 3_600_000  # header sysUptime, ms
T0 = EXPORT * 1_000_000

# A Cisco-like IPv4 template: the usual NetFlow v9 fields.
V4 = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (2, 4),
    (1, 4),
    (22, 4),
    (21, 4),
    (10, 2),
    (14, 2),
    (58, 2),
    (56, 6),
    (80, 6),
]


def pack(fields: list[tuple], values: list) -> bytes:
    """One record: ints big-endian in the field's length, addresses and MACs as text,
    bytes as they are (a 65535-length field gets its 1- or 3-byte length prefix)."""
    out = []
    for field, value in zip(fields, values, strict=True):
        length = field[1]
        if isinstance(value, str) and value.count(":") == 5 and len(value) == 17:
            raw = bytes.fromhex(value.replace(":", ""))
        elif isinstance(value, str):
            raw = ipaddress.ip_address(value).packed
        elif isinstance(value, bytes):
            raw = value
        else:
            raw = int(value).to_bytes(length, "big")
        if length == 65535:
            prefix = bytes([len(raw)]) if len(raw) < 255 else b"\xff" + len(raw).to_bytes(2, "big")
            raw = prefix + raw
        else:
            assert len(raw) == length, (field, value)
        out.append(raw)
    return b"".join(out)


def flowset(set_id: int, body: bytes, align: int = 4) -> bytes:
    """A FlowSet / IPFIX set, zero-padded to ``align`` bytes (1: no padding, as softflowd)."""
    pad = -(len(body) + 4) % align
    return struct.pack("!HH", set_id, 4 + len(body) + pad) + body + bytes(pad)


def v9_template(tid: int, fields: list[tuple[int, int]]) -> bytes:
    return struct.pack("!HH", tid, len(fields)) + b"".join(struct.pack("!HH", *f) for f in fields)


def v9_options_template(
    tid: int, scope: list[tuple[int, int]], fields: list[tuple[int, int]]
) -> bytes:
    return struct.pack("!HHH", tid, 4 * len(scope), 4 * len(fields)) + b"".join(
        struct.pack("!HH", *f) for f in scope + fields
    )


def v9_packet(
    *sets: bytes,
    seq: int = 0,
    source: int = 0,
    count: int | None = None,
    uptime: int = UPTIME,
    secs: int = EXPORT,
) -> bytes:
    count = len(sets) if count is None else count  # like most exporters: one per FlowSet
    return struct.pack("!HHIIII", 9, count, uptime, secs, seq, source) + b"".join(sets)


def v4_record(
    src="10.0.0.1",
    dst="192.0.2.9",
    sport=40000,
    dport=443,
    proto=6,
    flags=0x1B,
    pkts=10,
    octets=5000,
    first=UPTIME - 3000,
    last=UPTIME - 1000,
    ifin=1,
    ifout=2,
    vlan=100,
    smac="00:11:22:33:44:55",
    dmac="66:77:88:99:aa:bb",
) -> bytes:
    return pack(
        V4,
        [
            src,
            dst,
            sport,
            dport,
            proto,
            flags,
            pkts,
            octets,
            first,
            last,
            ifin,
            ifout,
            vlan,
            smac,
            dmac,
        ],
    )


def decode(*packets: bytes, state: ExporterState | None = None, decoder=None, t0: int = T0):
    state = state or ExporterState("198.51.100.7")
    decoder = decoder or NetFlow9Decoder()
    res = decoder.decode(list(packets), [t0 + i for i in range(len(packets))], state)
    return res, state


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- basics --------------------------------------------------------------------------------


def test_template_and_data() -> None:
    pkt = v9_packet(
        flowset(0, v9_template(256, V4)), flowset(256, v4_record() * 2), seq=7, source=3
    )
    res, state = decode(pkt)
    assert res.flows.schema == RAW_FLOW_SCHEMA
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
            "vlan",
            "src_mac",
            "dst_mac",
            "uni",
            "orient",
            "sampling",
            "state",
            "service",
            "exporter",
            "input",
        )
    } == {
        "src_ip": "10.0.0.1",
        "dst_ip": "192.0.2.9",
        "src_port": 40000,
        "dst_port": 443,
        "proto": 6,
        "src_tcp_flags": 0x1B,
        "src_pkts": 10,
        "src_bytes": 5000,
        "dst_pkts": 0,
        "vlan": 100,
        "src_mac": "00:11:22:33:44:55",
        "dst_mac": "66:77:88:99:aa:bb",
        "uni": True,
        "orient": None,
        "sampling": 1,
        "state": None,
        "service": None,
        "exporter": "198.51.100.7",
        "input": "netflow9://198.51.100.7",
    }
    # first/last switched are sysUptime ms: 3 s and 1 s before the export
    assert row["ts_start"] == ts("2023-11-14 22:13:17")
    assert row["ts_end"] == ts("2023-11-14 22:13:19")
    # flow id: source id, header sequence, byte offset of the record in the datagram
    offset = 20 + 4 + 4 + 4 * len(V4) + 4
    assert res.flows.column("flow_id").to_pylist() == [f"3:7:{offset}", f"3:7:{offset + 48}"]
    assert list(state.templates) == ["netflow9/3/256"]
    stats = state.domains["netflow9/3"]
    assert (stats.packets, stats.flows, stats.errors, stats.last_seen_us) == (1, 2, 0, T0)


def test_ipv6_icmp_and_uptime_wrap() -> None:
    fields = [(27, 16), (28, 16), (4, 1), (32, 2), (2, 4), (1, 4), (22, 4), (21, 4)]
    # the router rebooted 1 s ago but the flow started 2 s before the uptime wrapped
    rec = pack(fields, ["2001:db8::1", "2001:db8::2", 58, 0x8000, 1, 104, 2**32 - 2000, 500])
    pkt = v9_packet(flowset(0, v9_template(300, fields)), flowset(300, rec), uptime=1000)
    row = decode(pkt)[0].flows.to_pylist()[0]
    assert (row["src_ip"], row["dst_ip"], row["src_port"], row["dst_port"]) == (
        "2001:db8::1",
        "2001:db8::2",
        0,
        0x8000,
    )  # ICMPv6 echo request 128/0
    assert row["ts_start"] == ts("2023-11-14 22:13:17")
    assert row["ts_end"] == ts("2023-11-14 22:13:19.500")


def test_icmp_type_and_code_fields_and_v9_vendor_types() -> None:
    # 176/177 (type, code) and a vendor type >= 32768 (no enterprise number in v9)
    fields = [(8, 4), (12, 4), (4, 1), (7, 2), (11, 2), (176, 1), (177, 1), (40000, 3)]
    rec = pack(fields, ["10.0.0.1", "10.0.0.2", 1, 777, 0, 3, 1, 0xABCDEF])
    row = decode(v9_packet(flowset(0, v9_template(256, fields)), flowset(256, rec)))[0]
    row = row.flows.to_pylist()[0]
    assert (row["src_port"], row["dst_port"], row["src_tcp_flags"]) == (0, 3 * 256 + 1, None)


def test_several_sets_padding_and_unaligned_sets() -> None:
    fields = [(8, 4), (12, 4), (4, 1)]  # 9-byte records: sets need padding
    tpl = flowset(0, v9_template(256, fields))
    aligned = flowset(256, pack(fields, ["1.1.1.1", "2.2.2.2", 17]), align=4)  # 3 bytes pad
    unaligned = flowset(256, pack(fields, ["3.3.3.3", "4.4.4.4", 6]) * 2, align=1)  # softflowd
    res, state = decode(v9_packet(tpl, aligned, unaligned, aligned))
    assert res.flows.column("src_ip").to_pylist() == ["1.1.1.1", "3.3.3.3", "3.3.3.3", "1.1.1.1"]
    assert not res.errors and state.domains["netflow9/0"].flows == 4


def test_zero_padding_after_the_last_set_is_not_an_error() -> None:
    pkt = v9_packet(flowset(0, v9_template(256, V4)), flowset(256, v4_record())) + bytes(600)
    res, _ = decode(pkt)
    assert res.flows.num_rows == 1 and not res.errors


def test_source_ids_keep_their_own_templates() -> None:
    short = [(8, 4), (12, 4)]
    res, _ = decode(
        v9_packet(flowset(0, v9_template(256, V4)), source=1),
        v9_packet(flowset(0, v9_template(256, short)), source=2),
        v9_packet(flowset(256, v4_record()), source=1),
        v9_packet(flowset(256, pack(short, ["5.5.5.5", "6.6.6.6"])), source=2),
    )
    assert res.flows.column("src_ip").to_pylist() == ["10.0.0.1", "5.5.5.5"]
    assert res.flows.column("flow_id").to_pylist()[1].startswith("2:")


# -- template lifecycle --------------------------------------------------------------------


def test_template_replaced_mid_batch_keeps_earlier_records() -> None:
    """A new definition applies to what follows; what was read before keeps the old one."""
    a = [(8, 4), (12, 4), (2, 4)]
    b = [(12, 4), (8, 4), (1, 4)]  # same id, other layout: dst first, bytes not packets
    rec = pack(a, ["1.0.0.1", "2.0.0.2", 7])
    res, state = decode(
        v9_packet(flowset(0, v9_template(256, a)), flowset(256, rec)),
        v9_packet(flowset(256, rec)),
        v9_packet(flowset(0, v9_template(256, b)), flowset(256, rec)),
        v9_packet(flowset(0, v9_template(256, b))),  # refresh: same definition
        v9_packet(flowset(256, rec)),
    )
    rows = [
        (r["src_ip"], r["dst_ip"], r["src_pkts"], r["src_bytes"]) for r in res.flows.to_pylist()
    ]
    assert rows == [("1.0.0.1", "2.0.0.2", 7, 0)] * 2 + [("2.0.0.2", "1.0.0.1", 0, 7)] * 2
    assert state.templates["netflow9/0/256"]["fields"] == [[12, 0, 4], [8, 0, 4], [1, 0, 4]]


def test_templates_survive_json_round_trip() -> None:
    _, state = decode(v9_packet(flowset(0, v9_template(256, V4)), seq=1))
    restored = ExporterState.from_json(json.loads(json.dumps(state.to_json())))
    res, restored = decode(
        v9_packet(flowset(256, v4_record()), seq=2), state=restored, decoder=NetFlow9Decoder()
    )
    assert res.flows.num_rows == 1 and not res.errors
    assert restored.domains["netflow9/0"].sequence_gaps == 0


def test_data_before_its_template_is_held_then_decoded() -> None:
    decoder = NetFlow9Decoder()
    res, state = decode(v9_packet(flowset(256, v4_record()), seq=1), decoder=decoder)
    assert (res.flows.num_rows, res.pending, dict(res.errors)) == (0, 1, {})
    # the held set survives a restart too (it is in the JSON state)
    state = ExporterState.from_json(json.loads(json.dumps(state.to_json())))
    res, state = decode(
        v9_packet(flowset(0, v9_template(256, V4)), seq=2),
        state=state,
        decoder=decoder,
        t0=T0 + 5_000_000,
    )
    assert (res.flows.num_rows, res.pending) == (1, 0)
    # decoded with its own datagram's header: sequence 1, export time and uptime
    assert res.flows.column("flow_id").to_pylist() == ["0:1:24"]
    assert res.flows.column("ts_start").to_pylist() == [ts("2023-11-14 22:13:17")]


def test_data_before_its_template_in_the_same_batch() -> None:
    res, _ = decode(
        v9_packet(flowset(256, v4_record(src="9.9.9.9"))),
        v9_packet(flowset(0, v9_template(256, V4)), flowset(256, v4_record())),
    )
    assert res.flows.column("src_ip").to_pylist() == ["9.9.9.9", "10.0.0.1"]
    assert res.pending == 0 and not res.errors


def test_held_data_is_bounded_in_count_and_time() -> None:
    decoder = NetFlow9Decoder()
    pkts = [v9_packet(flowset(256 + i % 3, v4_record()), seq=i) for i in range(PENDING_SETS + 5)]
    res, state = decode(*pkts, decoder=decoder)
    assert (res.pending, dict(res.errors)) == (PENDING_SETS, {"no template": 5})
    late = v9_packet(flowset(0, v9_template(999, V4)), seq=100)
    res, state = decode(late, state=state, decoder=decoder, t0=T0 + PENDING_US + 10**6)
    assert (res.pending, dict(res.errors)) == (0, {"no template": PENDING_SETS})
    assert state.domains["netflow9/0"].errors == PENDING_SETS + 5
    assert decoder.flush(state) == {}


# -- options -------------------------------------------------------------------------------


def test_sampling_options_scale_counters() -> None:
    opt = flowset(1, v9_options_template(400, [(1, 4)], [(34, 4), (35, 1)]))
    opt_data = flowset(400, pack([(1, 4), (34, 4), (35, 1)], [0, 100, 2]))
    res, state = decode(
        v9_packet(flowset(0, v9_template(256, V4)), flowset(256, v4_record(pkts=1, octets=60))),
        v9_packet(opt, opt_data, flowset(256, v4_record(pkts=2, octets=120))),
    )
    assert res.flows.column("sampling").to_pylist() == [1, 100]  # only what follows it
    assert res.flows.column("src_pkts").to_pylist() == [1, 200]
    assert res.flows.column("src_bytes").to_pylist() == [60, 12000]
    assert state.options["netflow9/0"]["sampling"] == 100
    assert state.domains["netflow9/0"].sampling == 100


def test_flow_sampler_id_maps_records_to_their_sampler() -> None:
    opt = flowset(1, v9_options_template(400, [(1, 4)], [(48, 1), (49, 1), (50, 4)]))
    samplers = flowset(
        400,
        pack([(1, 4), (48, 1), (49, 1), (50, 4)], [0, 1, 2, 1000])
        + pack([(1, 4), (48, 1), (49, 1), (50, 4)], [0, 2, 2, 64]),
    )
    fields = [*V4, (48, 1)]
    recs = b"".join(pack(fields, [*_values(), sid]) for sid in (1, 2, 3))
    res, state = decode(
        v9_packet(opt, samplers, flowset(0, v9_template(256, fields)), flowset(256, recs))
    )
    assert res.flows.column("sampling").to_pylist() == [1000, 64, 1]  # sampler 3: unknown
    assert res.flows.column("src_pkts").to_pylist() == [10000, 640, 10]
    assert state.options["netflow9/0"]["samplers"] == {"1": 1000, "2": 64}


def test_a_sampler_announced_later_applies_to_later_records_only() -> None:
    """Same flows whatever the batching: earlier records keep the map they came under."""
    opt = flowset(1, v9_options_template(400, [(1, 4)], [(48, 1), (50, 4)]))
    fields = [*V4, (48, 1)]
    data = flowset(256, pack(fields, [*_values(), 5]))
    packets = [
        v9_packet(flowset(0, v9_template(256, fields)), data),
        v9_packet(opt, flowset(400, pack([(1, 4), (48, 1), (50, 4)], [0, 5, 10])), data),
        v9_packet(flowset(400, pack([(1, 4), (48, 1), (50, 4)], [0, 5, 20])), data),
    ]
    res, _ = decode(*packets)
    assert res.flows.column("sampling").to_pylist() == [1, 10, 20]
    decoder, state, one_by_one = NetFlow9Decoder(), ExporterState("x"), []
    for p in packets:
        one_by_one += (
            decode(p, state=state, decoder=decoder)[0].flows.column("sampling").to_pylist()
        )
    assert one_by_one == [1, 10, 20]


def test_sampling_interval_in_the_data_record() -> None:
    fields = [*V4, (34, 4)]
    res, _ = decode(
        v9_packet(
            flowset(0, v9_template(256, fields)), flowset(256, pack(fields, [*_values(), 512]))
        )
    )
    assert res.flows.column("src_bytes").to_pylist() == [5000 * 512]


def test_interface_names_from_options() -> None:
    # scope: interface (2); options: interfaceName (82), interfaceDescription (83)
    opt = flowset(1, v9_options_template(500, [(2, 4)], [(82, 16), (83, 32)]))
    data = flowset(
        500,
        pack(
            [(2, 4), (82, 16), (83, 32)],
            [7, b"Gi0/1".ljust(16, b"\0"), b"uplink to core".ljust(32, b"\0")],
        ),
    )
    _, state = decode(v9_packet(opt, data))
    assert state.options["netflow9/0"]["interfaces"] == {
        "7": {"name": "Gi0/1", "description": "uplink to core"}
    }
    assert state.options["netflow9/0"]["option_records"] == 1
    json.dumps(state.to_json())


def _values() -> list:
    return [
        "10.0.0.1",
        "192.0.2.9",
        40000,
        443,
        6,
        0x1B,
        10,
        5000,
        UPTIME - 3000,
        UPTIME - 1000,
        1,
        2,
        100,
        "00:11:22:33:44:55",
        "66:77:88:99:aa:bb",
    ]


# -- sequence numbers ----------------------------------------------------------------------


def test_sequence_counts_export_packets() -> None:
    tpl = v9_packet(flowset(0, v9_template(256, V4)), seq=10)
    data = [v9_packet(flowset(256, v4_record() * 3), seq=s) for s in (11, 12, 15, 16, 3)]
    _, state = decode(tpl, *data)
    stats = state.domains["netflow9/0"]
    # 13 and 14 lost; 3 after 16 is a restart, not a gap
    assert (stats.sequence_gaps, stats.lost, stats.next_sequence) == (1, 2, 4)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x00\x09\x00\x01", "truncated header"),
        (struct.pack("!HHIIII", 7, 1, 0, 0, 0, 0), "unsupported version"),
        (v9_packet(struct.pack("!HH", 256, 200) + bytes(20)), "bad set length"),
        (v9_packet(struct.pack("!HH", 256, 2) + bytes(20)), "bad set length"),
        (v9_packet(flowset(0, v9_template(12, V4))), "bad template"),  # ids below 256
        (v9_packet(flowset(0, v9_template(256, V4)[:-8])), "bad template"),  # fields cut short
        (v9_packet(flowset(0, v9_template(256, [(8, 0)]))), "bad template"),  # records of 0 bytes
        (v9_packet(flowset(1, struct.pack("!HHH", 300, 6, 4) + bytes(10))), "bad template"),
        (v9_packet(flowset(7, bytes(8))), "reserved set id"),
        (
            v9_packet(flowset(0, v9_template(256, V4)), flowset(256, v4_record()), count=5),
            "record count mismatch",
        ),
        (
            v9_packet(flowset(0, v9_template(256, V4)), flowset(256, v4_record()[:20])),
            "truncated record",
        ),
        (
            v9_packet(flowset(0, v9_template(256, V4)), flowset(256, v4_record() + bytes(30))),
            "trailing bytes in set",
        ),
    ],
)
def test_bad_input_is_counted_by_reason(packet: bytes, reason: str) -> None:
    res, _ = decode(packet)
    assert dict(res.errors) == {reason: 1}
    if reason in ("record count mismatch", "truncated header", "unsupported version"):
        assert res.flows.num_rows == 0


def test_count_may_be_records_or_flowsets() -> None:
    sets = (flowset(0, v9_template(256, V4)), flowset(256, v4_record() * 3))
    for count in (2, 4, 3, 1):  # FlowSets, all records, data records, data FlowSets
        res, _ = decode(v9_packet(*sets, count=count))
        assert res.flows.num_rows == 3 and not res.errors


def test_other_versions_and_empty_batches() -> None:
    res, _ = decode()
    assert res.flows.num_rows == 0 and res.flows.schema == RAW_FLOW_SCHEMA
    res, _ = decode(struct.pack("!HHIIII", 10, 20, 0, 0, 0, 0))
    assert dict(res.errors) == {"unsupported version": 1}
