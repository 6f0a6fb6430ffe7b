"""IPFIX decoder on hand-built messages: time elements, enterprise and variable-length
elements, RFC 5103 biflows, withdrawals, sequence conventions, options, bad input."""

from __future__ import annotations

import json
import struct

import pytest

from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.ipfix import IpfixDecoder
from flowhawk.schema import RAW_FLOW_SCHEMA
from tests.collect.test_netflow9 import EXPORT, T0, flowset, pack, ts

REV = 29305  # RFC 5103 reverse PEN

FLOW = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (2, 8), (1, 8), (152, 8), (153, 8)]
START_MS = EXPORT * 1000 - 4000


def ipfix_template(tid: int, fields: list[tuple]) -> bytes:
    out = [struct.pack("!HH", tid, len(fields))]
    for f in fields:
        pen = f[2] if len(f) > 2 else 0
        out.append(
            struct.pack("!HHI", f[0] | 0x8000, f[1], pen) if pen else struct.pack("!HH", f[0], f[1])
        )
    return b"".join(out)


def ipfix_options_template(tid: int, scope: list[tuple], fields: list[tuple]) -> bytes:
    head = struct.pack("!HHH", tid, len(scope) + len(fields), len(scope))
    return head + ipfix_template(0, scope + fields)[4:]


def ipfix_message(*sets: bytes, seq: int = 0, domain: int = 0, export: int = EXPORT) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), export, seq, domain) + body


def flow(
    src="10.1.1.1",
    dst="10.2.2.2",
    sport=5000,
    dport=53,
    proto=17,
    flags=0,
    pkts=3,
    octets=300,
    start=START_MS,
    end=START_MS + 1500,
) -> bytes:
    return pack(FLOW, [src, dst, sport, dport, proto, flags, pkts, octets, start, end])


def decode(*messages: bytes, state: ExporterState | None = None, decoder=None, t0: int = T0):
    state = state or ExporterState("203.0.113.5")
    decoder = decoder or IpfixDecoder()
    res = decoder.decode(list(messages), [t0 + i for i in range(len(messages))], state)
    return res, state


def test_template_and_data() -> None:
    msg = ipfix_message(
        flowset(2, ipfix_template(256, FLOW)), flowset(256, flow() * 2), seq=40, domain=9
    )
    res, state = decode(msg)
    assert res.flows.schema == RAW_FLOW_SCHEMA and not res.errors
    row = res.flows.to_pylist()[0]
    assert (
        row["src_ip"],
        row["dst_ip"],
        row["src_port"],
        row["dst_port"],
        row["proto"],
        row["src_pkts"],
        row["src_bytes"],
        row["uni"],
        row["input"],
    ) == ("10.1.1.1", "10.2.2.2", 5000, 53, 17, 3, 300, True, "ipfix://203.0.113.5")
    assert (row["ts_start"], row["ts_end"]) == (
        ts("2023-11-14 22:13:16"),
        ts("2023-11-14 22:13:17.500"),
    )
    offset = 16 + 4 + 4 + 4 * len(FLOW) + 4
    assert res.flows.column("flow_id").to_pylist() == [f"9:40:{offset}", f"9:40:{offset + 46}"]
    stats = state.domains["ipfix/9"]
    assert (stats.packets, stats.flows, stats.next_sequence) == (1, 2, 42)


NTP = 2_208_988_800  # seconds from 1900 to 1970


@pytest.mark.parametrize(
    ("fields", "values", "start", "end"),
    [
        ([(150, 4), (151, 4)], [EXPORT - 5, EXPORT - 2], "22:13:15", "22:13:18"),
        (
            [(152, 8), (153, 8)],
            [EXPORT * 1000 - 5250, EXPORT * 1000 - 2],
            "22:13:14.750",
            "22:13:19.998",
        ),
        # dateTimeMicroseconds / Nanoseconds: NTP seconds . fraction of 2^32
        (
            [(154, 8), (155, 8)],
            [(EXPORT - 5 + NTP) << 32 | 1 << 31, (EXPORT + NTP) << 32 | 1 << 30],
            "22:13:15.500",
            "22:13:20.250",
        ),
        (
            [(156, 8), (157, 8)],
            [(EXPORT - 1 + NTP) << 32 | 429496, (EXPORT + NTP) << 32],
            "22:13:19.000099",
            "22:13:20",
        ),
        (
            [(158, 4), (159, 4)],
            [2_000_001, 1_000_000],
            "22:13:17.999999",
            "22:13:19",
        ),  # before export
        ([(152, 8)], [EXPORT * 1000 - 7000], "22:13:13", "22:13:13"),  # no end: the start
        (
            [(152, 8), (161, 4)],
            [EXPORT * 1000 - 7000, 2500],
            "22:13:13",
            "22:13:15.500",
        ),  # duration
        ([(153, 8)], [EXPORT * 1000 - 7000], "22:13:13", "22:13:13"),  # no start: the end
        ([], [], "22:13:20", "22:13:20"),  # no time at all: the export time
        # sysUpTime without systemInitTime: ends at the export time, keeps the duration
        ([(22, 4), (21, 4)], [10_000, 12_500], "22:13:17.500", "22:13:20"),
        # ... with systemInitTimeMilliseconds in the record itself
        (
            [(22, 4), (21, 4), (160, 8)],
            [10_000, 12_500, EXPORT * 1000 - 60_000],
            "22:12:30",
            "22:12:32.500",
        ),
    ],
)
def test_time_elements(fields: list, values: list, start: str, end: str) -> None:
    tpl = [(8, 4), (12, 4), *fields]
    res, _ = decode(
        ipfix_message(
            flowset(2, ipfix_template(256, tpl)),
            flowset(256, pack(tpl, ["1.1.1.1", "2.2.2.2", *values])),
        )
    )
    row = res.flows.to_pylist()[0]
    assert (row["ts_start"], row["ts_end"]) == (ts(f"2023-11-14 {start}"), ts(f"2023-11-14 {end}"))


def test_system_init_time_from_options() -> None:
    opt = ipfix_options_template(300, [(143, 4)], [(160, 8)])
    tpl = [(8, 4), (12, 4), (22, 4), (21, 4)]
    res, state = decode(
        ipfix_message(
            flowset(3, opt),
            flowset(300, pack([(143, 4), (160, 8)], [1, EXPORT * 1000 - 60_000])),
            flowset(2, ipfix_template(256, tpl)),
            flowset(256, pack(tpl, ["1.1.1.1", "2.2.2.2", 1000, 2000])),
        )
    )
    row = res.flows.to_pylist()[0]
    assert (row["ts_start"], row["ts_end"]) == (
        ts("2023-11-14 22:12:21"),
        ts("2023-11-14 22:12:22"),
    )
    assert state.options["ipfix/0"]["sys_init_ms"] == EXPORT * 1000 - 60_000


def test_enterprise_and_variable_length_elements() -> None:
    tpl = [
        (9999, 4, 12345),
        (27, 16),
        (1, 65535, 5951),
        (28, 16),
        (7, 2),
        (11, 2),
        (4, 1),
        (82, 65535),
        (2, 4),
        (300, 65535, 8888),
    ]
    long_text = b"x" * 300  # needs the 3-byte length form
    rec = pack(
        tpl,
        [0xDEADBEEF, "2001:db8::10", b"abc", "2001:db8::20", 1234, 80, 6, b"eth0", 9, long_text],
    )
    rec2 = pack(tpl, [1, "2001:db8::11", b"", "2001:db8::21", 1235, 81, 6, long_text, 1, b""])
    res, state = decode(
        ipfix_message(flowset(2, ipfix_template(400, tpl)), flowset(400, rec + rec2))
    )
    assert not res.errors
    got = [
        (r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["src_pkts"], r["src_bytes"])
        for r in res.flows.to_pylist()
    ]
    assert got == [
        ("2001:db8::10", "2001:db8::20", 1234, 80, 9, 0),
        ("2001:db8::11", "2001:db8::21", 1235, 81, 1, 0),
    ]
    # the JSON state keeps enterprise numbers and the varlen marker
    fields = state.templates["ipfix/0/400"]["fields"]
    assert fields[0] == [9999, 12345, 4] and fields[2] == [1, 5951, 65535]
    offset = 16 + 4 + len(ipfix_template(400, tpl)) + 4
    assert res.flows.column("flow_id").to_pylist() == [
        f"0:0:{offset}",
        f"0:0:{offset + len(rec)}",
    ]


def test_truncated_variable_length_record() -> None:
    tpl = [(8, 4), (12, 4), (82, 65535)]
    good = pack(tpl, ["1.1.1.1", "2.2.2.2", b"eth0"])
    cut = pack(tpl, ["3.3.3.3", "4.4.4.4", b"x" * 40])[:20]
    res, _ = decode(
        ipfix_message(flowset(2, ipfix_template(256, tpl)), flowset(256, good + cut, align=1))
    )
    assert res.flows.column("src_ip").to_pylist() == ["1.1.1.1"]
    assert dict(res.errors) == {"truncated record": 1}


def test_both_address_families_in_one_template() -> None:
    tpl = [(8, 4), (12, 4), (27, 16), (28, 16)]
    recs = pack(tpl, ["1.1.1.1", "2.2.2.2", "::", "::"]) + pack(
        tpl, ["0.0.0.0", "0.0.0.0", "2001:db8::1", "2001:db8::2"]
    )
    res, _ = decode(ipfix_message(flowset(2, ipfix_template(256, tpl)), flowset(256, recs)))
    assert res.flows.column("src_ip").to_pylist() == ["1.1.1.1", "2001:db8::1"]


# -- RFC 5103 biflows ---------------------------------------------------------------------

BIFLOW = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (2, 4),
    (1, 4),
    (2, 4, REV),
    (1, 4, REV),
    (6, 1),
    (6, 1, REV),
]


@pytest.mark.parametrize(
    ("direction", "orient", "swapped"),
    [
        (None, "start", False),  # RFC 5103: the forward direction is the initiator
        (1, "start", False),  # initiator
        (2, "start", True),  # reverseInitiator: the destination started it
        (0, None, False),  # arbitrary
        (3, None, False),  # perimeter
    ],
)
def test_biflows(direction: int | None, orient: str | None, swapped: bool) -> None:
    tpl = BIFLOW + ([(239, 1)] if direction is not None else [])
    values = ["10.0.0.1", "10.0.0.2", 50000, 22, 6, 10, 1000, 8, 4000, 0x1A, 0x12]
    rec = pack(tpl, values + ([direction] if direction is not None else []))
    res, _ = decode(ipfix_message(flowset(2, ipfix_template(256, tpl)), flowset(256, rec)))
    row = res.flows.to_pylist()[0]
    got = (
        row["src_ip"],
        row["src_port"],
        row["src_pkts"],
        row["src_bytes"],
        row["src_tcp_flags"],
        row["dst_ip"],
        row["dst_port"],
        row["dst_pkts"],
        row["dst_bytes"],
        row["dst_tcp_flags"],
    )
    forward = ("10.0.0.1", 50000, 10, 1000, 0x1A)
    reverse = ("10.0.0.2", 22, 8, 4000, 0x12)
    assert got == (reverse + forward if swapped else forward + reverse)
    assert (row["uni"], row["orient"]) == (False, orient)


# -- template withdrawal ---------------------------------------------------------------------


def test_withdrawal_of_one_and_of_all_templates() -> None:
    tpl = [(8, 4), (12, 4)]
    rec = pack(tpl, ["1.1.1.1", "2.2.2.2"])
    opt = ipfix_options_template(500, [(149, 4)], [(34, 4)])
    decoder = IpfixDecoder()
    res, state = decode(
        ipfix_message(
            flowset(2, ipfix_template(256, tpl) + ipfix_template(257, tpl)), flowset(3, opt)
        ),
        ipfix_message(flowset(2, struct.pack("!HH", 256, 0))),  # withdraw 256
        ipfix_message(flowset(256, rec), flowset(257, rec)),
        decoder=decoder,
    )
    assert (res.flows.num_rows, res.pending) == (1, 1)  # 257 decoded, 256 waits
    assert sorted(state.templates) == ["ipfix/0/257", "ipfix/0/500"]
    res, state = decode(
        ipfix_message(flowset(2, struct.pack("!HH", 2, 0))), state=state, decoder=decoder
    )  # withdraw all (data) templates
    assert sorted(state.templates) == ["ipfix/0/500"]
    res, state = decode(
        ipfix_message(flowset(3, struct.pack("!HH", 3, 0))), state=state, decoder=decoder
    )  # withdraw all options templates
    assert state.templates == {}
    assert decoder.flush(state) == {"no template": 1}


# -- sequence numbers ------------------------------------------------------------------------


def _messages(seqs_counts: list[tuple[int, int]]) -> list[bytes]:
    tpl = [(8, 4), (12, 4)]
    out = [ipfix_message(flowset(2, ipfix_template(256, tpl)), seq=seqs_counts[0][0])]
    for seq, n in seqs_counts:
        out.append(ipfix_message(flowset(256, pack(tpl, ["1.1.1.1", "2.2.2.2"]) * n), seq=seq))
    return out


def _gaps(seqs_counts: list[tuple[int, int]]) -> tuple[int, int]:
    _, state = decode(*_messages(seqs_counts))
    stats = state.domains["ipfix/0"]
    return stats.sequence_gaps, stats.lost


def test_sequence_counts_records_sent_before_the_message() -> None:
    assert _gaps([(0, 3), (3, 2), (5, 4), (9, 1)]) == (0, 0)
    assert _gaps([(0, 3), (3, 2), (10, 4), (14, 1)]) == (1, 5)
    assert _gaps([(0, 3), (3, 2), (1, 4)]) == (0, 0)  # backwards: a restart


def test_sequence_that_counts_the_current_message_too() -> None:
    """softflowd 1.1.0: the header counts this message's records too: no false gaps."""
    counts = [3, 2, 5, 1, 4, 4, 2]
    seqs, total = [], 0
    for n in counts:
        total += n
        seqs.append(total)
    assert _gaps(list(zip(seqs, counts, strict=True))) == (0, 0)
    # a real loss in that convention is still one: 7 records lost before the last message
    lossy = [*zip(seqs, counts, strict=True), (seqs[-1] + 7 + 3, 3)]
    assert _gaps(lossy) == (1, 7)


def test_a_gap_that_looks_like_the_other_convention_once_is_still_a_gap() -> None:
    # expected 5 but got 7; 7 - 3 equals this message's 4 records, yet the next message
    # follows the standard convention again: the 2 records are lost after all.
    assert _gaps([(0, 3), (3, 2), (7, 4), (11, 1)]) == (1, 2)


# -- options -----------------------------------------------------------------------------


def test_psamp_sampling_and_interface_names() -> None:
    opt = ipfix_options_template(300, [(302, 4)], [(304, 2), (305, 4), (306, 4)])
    names = ipfix_options_template(301, [(10, 4)], [(82, 65535), (83, 65535)])
    res, state = decode(
        ipfix_message(
            flowset(3, opt + names),
            flowset(300, pack([(302, 4), (304, 2), (305, 4), (306, 4)], [7, 1, 1, 99])),
            flowset(301, pack([(10, 4), (82, 65535), (83, 65535)], [3, b"ge-0/0/1", b"to ISP"])),
            flowset(2, ipfix_template(256, FLOW)),
            flowset(256, flow()),
        )
    )
    assert res.flows.column("sampling").to_pylist() == [100]
    assert res.flows.column("src_bytes").to_pylist() == [30000]
    opts = state.options["ipfix/0"]
    assert (opts["sampling"], opts["selectors"]) == (100, {"7": 100})
    assert opts["interfaces"] == {"3": {"name": "ge-0/0/1", "description": "to ISP"}}


def test_templates_survive_json_round_trip() -> None:
    tpl = [(8, 4), (12, 4), (82, 65535), (1, 8, REV)]
    _, state = decode(ipfix_message(flowset(2, ipfix_template(256, tpl))))
    state = ExporterState.from_json(json.loads(json.dumps(state.to_json())))
    res, _ = decode(
        ipfix_message(flowset(256, pack(tpl, ["1.1.1.1", "2.2.2.2", b"x", 77]))),
        state=state,
        decoder=IpfixDecoder(),
    )
    assert res.flows.column("dst_bytes").to_pylist() == [77] and not res.errors


def test_groups_keep_arrival_order() -> None:
    a = [(8, 4), (12, 4)]
    b = [(12, 4), (8, 4), (4, 1)]
    msgs = [ipfix_message(flowset(2, ipfix_template(256, a) + ipfix_template(257, b)))]
    for i in range(5):
        msgs.append(
            ipfix_message(
                flowset(256, pack(a, [f"1.0.0.{i}", "9.9.9.9"])),
                flowset(257, pack(b, ["9.9.9.9", f"2.0.0.{i}", 6])),
                seq=2 * i,
            )
        )
    res, _ = decode(*msgs)
    assert res.flows.column("src_ip").to_pylist() == [
        f"{k}.0.0.{i}" for i in range(5) for k in (1, 2)
    ]


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (ipfix_message()[:12], "truncated header"),
        (struct.pack("!HHIII", 9, 16, 0, 0, 0), "unsupported version"),
        (struct.pack("!HHIII", 10, 8, 0, 0, 0), "bad message length"),
        (ipfix_message(flowset(256, bytes(8)))[:-4], "truncated message"),
        (ipfix_message() + bytes(4), "trailing bytes"),
        (ipfix_message(flowset(1, bytes(8))), "reserved set id"),
        (ipfix_message(flowset(2, ipfix_template(255, FLOW))), "bad template"),
        (
            ipfix_message(flowset(2, ipfix_template(256, [(1, 4, 77)])[:-2], align=1)),
            "bad template",
        ),
        (ipfix_message(flowset(3, struct.pack("!HHH", 300, 2, 0) + bytes(8))), "bad template"),
        (ipfix_message(struct.pack("!HH", 2, 3)), "bad set length"),
    ],
)
def test_bad_input_is_counted_by_reason(message: bytes, reason: str) -> None:
    res, _ = decode(message)
    assert dict(res.errors) == {reason: 1}
