"""Pairing rules and DNS-over-TCP reassembly on hand-made messages."""

from __future__ import annotations

import dns.message
import polars as pl
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.dns.pairing import PAIR_TIMEOUT, Pairer, pair
from flowhawk.dns.tcp import TcpStreams


def _msg(ts: int, response: bool, trans_id: int = 7, client_port: int = 4000) -> dict:
    client, server = ("10.0.0.1", client_port), ("10.0.0.53", 53)
    src, dst = (server, client) if response else (client, server)
    return {
        "ts": ts, "src_ip": src[0], "src_port": src[1], "dst_ip": dst[0], "dst_port": dst[1],
        "proto": 17, "response": response, "trans_id": trans_id, "query": "a.example",
        "qclass": 1, "qtype": 1, "rcode": 0 if response else None, "aa": False, "tc": False,
        "rd": True, "ra": response, "answers": ["192.0.2.1"] if response else [],
        "ttls": [60.0] if response else [], "answer_types": ["A"] if response else [],
        "size": 40 if response else 30,
    }  # fmt: skip


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema_overrides={"rcode": pl.Int16, "trans_id": pl.Int32})


def test_pairing_rules() -> None:
    rows = [
        _msg(0, False),  # retransmitted: left unanswered
        _msg(1_000_000, False),
        _msg(1_050_000, True),  # answers the second copy
        _msg(1_060_000, True),  # duplicate: unsolicited
        _msg(2_000_000, False, trans_id=8),  # never answered
        _msg(3_000_000, False, client_port=4001),
        _msg(3_000_000 + PAIR_TIMEOUT + 1, True, client_port=4001),  # too late
    ]
    tx = pair(_frame(rows), "x")
    assert tx.height == 6
    assert tx.get_column("rtt").to_list()[1] == pytest.approx(0.05)
    got = tx.select("ts", "trans_id", "query_bytes", "response_bytes", "src_port").rows()
    assert got == [
        (0, 7, 30, None, 4000),
        (1_000_000, 7, 30, 40, 4000),
        (1_060_000, 7, None, 40, 4000),
        (2_000_000, 8, 30, None, 4000),
        (3_000_000, 7, 30, None, 4001),
        (3_000_000 + PAIR_TIMEOUT + 1, 7, None, 40, 4001),
    ]
    answered = tx.row(1, named=True)
    assert answered["answers"] == ["192.0.2.1"] and answered["ra"] and answered["rcode"] == 0
    assert tx.row(0, named=True)["rcode"] is None
    assert [r is None for r in tx.get_column("rtt")] == [True, False, True, True, True, True]


def test_pairer_is_the_same_in_pieces() -> None:
    rows = [_msg(i * 20_000_000 + (5_000 if i % 3 else 0), i % 2 == 1, i // 2) for i in range(40)]
    whole = pair(_frame(rows), "x")
    pairer = Pairer("x")
    parts = [pairer.add(_frame(rows[i : i + 3])) for i in range(0, len(rows), 3)]
    parts.append(pairer.flush())
    pieces = pl.concat([p for p in parts if p is not None])
    assert pieces.equals(whole)


def test_tcp_reassembly() -> None:
    wire = dns.message.make_query("split.example", "A").to_wire()
    framed = len(wire).to_bytes(2, "big") + wire
    second = dns.message.make_query("two.example", "AAAA").to_wire()
    diag = Diagnostics()
    streams = TcpStreams("cap", diag)
    key = (0, 1, 0, 2, 4000, 53)
    assert streams.segment(key, 100, framed[:5], 10, "offset 1") == []
    assert streams.segment(key, 100, framed[:5], 11, "offset 2") == []  # retransmission
    tail = framed[5:] + len(second).to_bytes(2, "big") + second
    out = streams.segment(key, 105, tail, 12, "offset 3")
    assert [(m, ts, where) for m, ts, where in out] == [
        (wire, 10, "offset 1"),
        (second, 12, "offset 3"),
    ]
    assert streams.segment(key, 105 + len(tail), framed[:7], 13, "offset 4") == []
    assert streams.segment(key, 9999, framed[:3], 14, "offset 5") == []  # gap: held data lost
    streams.finish()
    stats = diag.inputs["cap"]
    assert stats.skipped == {"DNS over TCP with a gap": 1, "DNS over TCP message incomplete": 1}
    assert stats.ignored == {"TCP retransmission of DNS data": 1}
