"""The export encoders, checked on the bytes they produce with a parser written here.

The parsers below follow the RFCs / the sFlow v5 spec field by field and share no
code with the encoders; the peers (nfcapd, tshark) check the same datagrams in
test_replay.py.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flowhawk.collect.encode.ipfix import encode_ipfix
from flowhawk.collect.encode.netflow5 import encode_netflow5
from flowhawk.collect.encode.netflow9 import encode_netflow9
from flowhawk.collect.encode.sflow import SflowState, encode_sflow
from tests.flowbuild import T0, canonical

T0_MS = int(T0.timestamp() * 1000)


def flows(rows: list[dict]) -> pa.Table:
    return canonical(rows).to_arrow()


def many(n: int, v6_every: int = 0) -> pa.Table:
    rows = []
    for i in range(n):
        v6 = v6_every and i % v6_every == 0
        rows.append(
            {
                "src_ip": f"2001:db8::{i + 1:x}" if v6 else f"10.0.{i // 250}.{i % 250 + 1}",
                "dst_ip": "2001:db8:ffff::1" if v6 else "192.0.2.80",
                "dst_port": 443,
                "t": i * 0.5,
                "dur": 2.25,
            }
        )
    return flows(rows)


# -- NetFlow v5 ---------------------------------------------------------------------------


def parse_v5(d: bytes) -> tuple[dict, list[dict]]:
    names = ["version", "count", "uptime", "secs", "nsecs", "sequence"]
    names += ["engine_type", "engine_id", "sampling"]
    head = dict(zip(names, struct.unpack("!HHIIIIBBH", d[:24]), strict=True))
    recs = []
    for i in range(head["count"]):
        f = struct.unpack("!IIIHHIIIIHHBBBBHHBBH", d[24 + 48 * i : 72 + 48 * i])
        boot_ms = head["secs"] * 1000 + head["nsecs"] // 1_000_000 - head["uptime"]
        recs.append(
            {
                "src": str(ipaddress.IPv4Address(f[0])),
                "dst": str(ipaddress.IPv4Address(f[1])),
                "input": f[3],
                "output": f[4],
                "pkts": f[5],
                "bytes": f[6],
                "first_ms": boot_ms + f[7],
                "last_ms": boot_ms + f[8],
                "sport": f[9],
                "dport": f[10],
                "flags": f[12],
                "proto": f[13],
            }
        )
    assert len(d) == 24 + 48 * head["count"]
    return head, recs


def test_v5_splits_biflows_into_two_records_with_own_times():
    table = flows(
        [
            {
                "src_ip": "10.0.0.1",
                "dst_ip": "192.0.2.1",
                "dst_port": 80,
                "t": 10.0012,
                "dur": 3.5,
                "src_tcp_flags": 0x1B,
                "dst_tcp_flags": 0x12,
            },
            {
                "src_ip": "10.0.0.2",
                "dst_ip": "192.0.2.2",
                "dst_port": 53,
                "proto": 17,
                "t": 11,
                "dst_pkts": 0,
                "dst_bytes": 0,
            },
        ]
    )
    enc = encode_netflow5(table, sequence=100, engine_type=1, engine_id=7, sampling_interval=0)
    assert enc.records == 3 and enc.skipped == 0 and enc.next_sequence == 103
    (d,) = enc.datagrams
    head, recs = parse_v5(d)
    assert head["version"] == 5 and head["count"] == 3 and head["sequence"] == 100
    assert (head["engine_type"], head["engine_id"], head["sampling"]) == (1, 7, 0)
    fwd, rev, udp = recs
    assert (fwd["src"], fwd["dst"], fwd["sport"], fwd["dport"]) == (
        "10.0.0.1",
        "192.0.2.1",
        40000,
        80,
    )
    assert (fwd["pkts"], fwd["bytes"], fwd["flags"], fwd["proto"]) == (3, 300, 0x1B, 6)
    assert (rev["src"], rev["dst"], rev["sport"], rev["dport"]) == (
        "192.0.2.1",
        "10.0.0.1",
        80,
        40000,
    )
    assert (rev["pkts"], rev["bytes"], rev["flags"]) == (2, 200, 0x12)
    assert (fwd["input"], fwd["output"], rev["input"], rev["output"]) == (1, 2, 2, 1)
    assert fwd["first_ms"] == rev["first_ms"] == T0_MS + 10001  # floor of 10.0012 s
    assert fwd["last_ms"] == T0_MS + 13501
    assert udp["dport"] == 53 and udp["proto"] == 17  # no reverse: the server sent nothing
    # the header time is the latest flow end in the datagram, to the millisecond
    assert head["secs"] * 1000 + head["nsecs"] // 1_000_000 == T0_MS + 13501


def test_v5_datagrams_hold_30_records_and_sequence_counts_flows():
    enc = encode_netflow5(many(31), sequence=2**32 - 10)
    assert enc.records == 62
    heads = [parse_v5(d)[0] for d in enc.datagrams]
    assert [h["count"] for h in heads] == [30, 30, 2]
    assert [h["sequence"] for h in heads] == [2**32 - 10, 20, 50]  # wraps at 32 bits
    assert enc.next_sequence == 52
    assert all(len(d) <= 24 + 30 * 48 for d in enc.datagrams)
    assert enc.weights.sum() == pytest.approx(31)


def test_v5_skips_and_counts_ipv6():
    enc = encode_netflow5(many(10, v6_every=3))
    assert enc.skipped == 4
    recs = [r for d in enc.datagrams for r in parse_v5(d)[1]]
    assert len(recs) == 12 and all(":" not in r["src"] for r in recs)
    only_v6 = encode_netflow5(many(4, v6_every=1))
    assert only_v6.datagrams == [] and only_v6.skipped == 4


def test_v5_icmp_reverse_is_the_reply_and_counters_saturate():
    table = flows(
        [
            {
                "src_ip": "10.0.0.1",
                "dst_ip": "192.0.2.1",
                "proto": 1,
                "src_port": 0,
                "dst_port": 8 * 256,
                "src_bytes": 2**33,
            },
        ]
    )
    _, (req, rep) = parse_v5(encode_netflow5(table).datagrams[0])
    assert (req["sport"], req["dport"], rep["sport"], rep["dport"]) == (0, 0x800, 0, 0)
    assert req["bytes"] == 2**32 - 1


def test_v5_refuses_more_than_30_records():
    with pytest.raises(ValueError):
        encode_netflow5(many(2), records_per_datagram=31)


# -- NetFlow v9 and IPFIX ----------------------------------------------------------------


def parse_sets(body: bytes, templates: dict, ipfix: bool) -> tuple[list[dict], int]:
    """Data records (dicts by IE number; reverse IEs as -IE) and template record count."""
    recs, n_templates, pos = [], 0, 0
    while pos < len(body):
        set_id, length = struct.unpack("!HH", body[pos : pos + 4])
        assert length >= 4 and length % 4 == 0, "sets are padded to 4 bytes"
        data, pos = body[pos + 4 : pos + length], pos + length
        if set_id == (2 if ipfix else 0):
            q = 0
            while q + 4 <= len(data):
                tid, count = struct.unpack("!HH", data[q : q + 4])
                q += 4
                fields = []
                for _ in range(count):
                    ie, flen = struct.unpack("!HH", data[q : q + 4])
                    q += 4
                    if ie & 0x8000:
                        (pen,) = struct.unpack("!I", data[q : q + 4])
                        q += 4
                        assert pen == 29305
                        ie = -(ie & 0x7FFF)
                    fields.append((ie, flen))
                templates[tid] = fields
                n_templates += 1
        else:
            fields = templates[set_id]
            size = sum(f[1] for f in fields)
            for q in range(0, len(data) - size + 1, size):
                rec, r = {}, q
                for ie, flen in fields:
                    raw = data[r : r + flen]
                    rec[ie] = raw if flen in (6, 16) else int.from_bytes(raw, "big")
                    r += flen
                recs.append(rec)
            assert len(data) % size < 4, "only padding after the last record"
    return recs, n_templates


def parse_v9(d: bytes, templates: dict) -> tuple[dict, list[dict]]:
    names = ["version", "count", "uptime", "secs", "sequence", "source_id"]
    head = dict(zip(names, struct.unpack("!HHIIII", d[:20]), strict=True))
    recs, n_templates = parse_sets(d[20:], templates, ipfix=False)
    head["templates"] = n_templates
    boot_ms = head["secs"] * 1000 - head["uptime"]
    for r in recs:
        r["first_ms"], r["last_ms"] = boot_ms + r[22], boot_ms + r[21]
    return head, recs


def parse_ipfix(d: bytes, templates: dict) -> tuple[dict, list[dict]]:
    names = ["version", "length", "export_time", "sequence", "domain"]
    head = dict(zip(names, struct.unpack("!HHIII", d[:16]), strict=True))
    assert head["length"] == len(d)
    recs, head["templates"] = parse_sets(d[16:], templates, ipfix=True)
    return head, recs


def test_v9_templates_counts_sequence_and_times():
    table = many(300, v6_every=4)
    enc = encode_netflow9(table, sequence=5, source_id=9, template_every=4, max_datagram=1400)
    templates: dict = {}
    parsed = [parse_v9(d, templates) for d in enc.datagrams]
    heads = [h for h, _ in parsed]
    recs = [r for _, rs in parsed for r in rs]
    assert all(len(d) <= 1400 for d in enc.datagrams)
    assert [h["sequence"] for h in heads] == list(range(5, 5 + len(heads)))
    assert enc.next_sequence == 5 + len(heads)
    assert all(h["version"] == 9 and h["source_id"] == 9 for h in heads)
    assert [h["templates"] for h in heads][:9] == [2, 0, 0, 0, 2, 0, 0, 0, 2]
    assert all(
        h["count"] == h["templates"] + len(rs) for h, (_, rs) in zip(heads, parsed, strict=True)
    )
    assert sorted(templates) == [256, 257]
    ies = [ie for ie, _ in templates[256]]
    for ie in (1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 14, 21, 22):
        assert ie in ies
    assert {27, 28} <= {ie for ie, _ in templates[257]}
    assert len(recs) == enc.records == 600
    v6 = [r for r in recs if 27 in r]
    assert len(v6) == 150
    assert ipaddress.IPv6Address(v6[0][27]) == ipaddress.IPv6Address("2001:db8::1")
    first = recs[0]
    assert first[8] == int(ipaddress.IPv4Address("10.0.0.2"))
    assert first["first_ms"] == T0_MS + 500 and first["last_ms"] == T0_MS + 2750
    # records are client->server then server->client
    assert (recs[1][8], recs[1][7], recs[1][1], recs[1][2]) == (
        int(ipaddress.IPv4Address("192.0.2.80")),
        443,
        200,
        2,
    )


def test_v9_template_schedule_continues_across_calls():
    table = many(40)
    first = encode_netflow9(table, template_every=3, max_datagram=400)
    second = encode_netflow9(
        table,
        sequence=first.next_sequence,
        template_every=3,
        max_datagram=400,
        messages_sent=len(first.datagrams),
    )
    templates: dict = {}
    marks = [parse_v9(d, templates)[0]["templates"] > 0 for d in first.datagrams + second.datagrams]
    assert [i for i, m in enumerate(marks) if m] == list(range(0, len(marks), 3))


def test_uptime_datagrams_never_span_more_than_24_days():
    """Flows years apart in one table go out in different datagrams, so the uptime
    differences a collector reads as signed 32-bit milliseconds stay right."""
    rows = [
        {"src_ip": "10.0.0.1", "dst_ip": "192.0.2.1", "dst_port": 80, "t": -T0.timestamp() + 10},
        {"src_ip": "10.0.0.2", "dst_ip": "192.0.2.1", "dst_port": 80, "t": 0.5},
    ]
    table = flows(rows).sort_by("ts_end")
    half = 1 << 31
    for enc, parse in ((encode_netflow9, "v9"), (encode_netflow5, "v5")):
        got, templates = [], {}
        for d in enc(table).datagrams:
            if parse == "v9":
                head, recs = parse_v9(d, templates)
                export_ms = head["secs"] * 1000
            else:
                head, recs = parse_v5(d)
                export_ms = head["secs"] * 1000 + head["nsecs"] // 1_000_000
            for r in recs:
                first = r[22] if parse == "v9" else r["first_ms"] - export_ms + head["uptime"]
                ago = (head["uptime"] - first + half) % (1 << 32) - half
                got.append(export_ms - ago)
        assert sorted(set(got)) == [10_000, T0_MS + 500], parse


def test_ipfix_sequence_counts_records_before_the_message():
    enc = encode_ipfix(many(100, v6_every=5), sequence=1000, domain=42, max_datagram=600)
    templates: dict = {}
    seen = 1000
    for d in enc.datagrams:
        head, recs = parse_ipfix(d, templates)
        assert head["version"] == 10 and head["domain"] == 42 and len(d) <= 600
        assert head["sequence"] == seen
        assert head["export_time"] >= max(r[153] for r in recs) / 1000
        seen += len(recs)
    assert enc.next_sequence == seen == 1000 + enc.records
    assert sorted(templates) == [256, 257]
    assert {152, 153} <= {ie for ie, _ in templates[256]}


def test_ipfix_microseconds_are_exact_in_ntp_format():
    table = flows(
        [
            {
                "src_ip": "10.0.0.1",
                "dst_ip": "192.0.2.1",
                "dst_port": 80,
                "t": 1.000001,
                "dur": 0.999998,
            }
        ]
    )
    templates: dict = {}
    _, (rec, _) = parse_ipfix(encode_ipfix(table, time_precision="us").datagrams[0], templates)
    for ie, want in ((154, T0.timestamp() + 1.000001), (155, T0.timestamp() + 1.999999)):
        secs, frac = rec[ie] >> 32, rec[ie] & 0xFFFF_FFFF
        assert frac & 0x7FF == 0, "RFC 7011: the low 11 bits of microsecond fractions are 0"
        us = (secs - 2_208_988_800) * 1_000_000 + frac * 1_000_000 // 2**32
        assert us == round(want * 1_000_000)


def test_ipfix_biflow_keeps_one_record_with_reverse_counters():
    table = flows(
        [
            {
                "src_ip": "10.0.0.1",
                "dst_ip": "192.0.2.1",
                "dst_port": 80,
                "src_tcp_flags": 0x02,
                "dst_tcp_flags": 0x12,
            }
        ]
    )
    templates: dict = {}
    enc = encode_ipfix(table, biflow=True)
    _, recs = parse_ipfix(enc.datagrams[0], templates)
    assert sorted(templates) == [258, 259] and len(recs) == 1 == enc.records
    (r,) = recs
    assert (r[2], r[1], r[6], r[-2], r[-1], r[-6]) == (3, 300, 0x02, 2, 200, 0x12)


def test_encoders_accept_raw_flows_and_empty_tables():
    from tests.flowbuild import raw

    table = raw([{"src_ip": "10.0.0.1", "dst_ip": "192.0.2.1", "dst_port": 80}])
    for enc in (encode_netflow5, encode_netflow9, encode_ipfix, encode_sflow):
        assert enc(table).records >= 1
        assert enc(table.slice(0, 0)).datagrams == []


# -- sFlow --------------------------------------------------------------------------------


def parse_sflow(d: bytes) -> tuple[dict, list[dict]]:
    version, addr_type = struct.unpack("!II", d[:8])
    alen = 4 if addr_type == 1 else 16
    agent = str(ipaddress.ip_address(d[8 : 8 + alen]))
    sub, seq, uptime, n = struct.unpack("!IIII", d[8 + alen : 24 + alen])
    pos, samples = 24 + alen, []
    for _ in range(n):
        tag, length = struct.unpack("!II", d[pos : pos + 8])
        body = d[pos + 8 : pos + 8 + length]
        pos += 8 + length
        if tag == 1:
            seq_s, src, rate, pool, drops, inp, out, nrec = struct.unpack("!8I", body[:32])
            rtag, rlen, hproto, frame, stripped, hlen = struct.unpack("!6I", body[32:56])
            header = body[56 : 56 + hlen]
            assert rlen == 16 + hlen + (-hlen % 4) and length == 40 + rlen
            samples.append(
                dict(
                    kind="flow",
                    seq=seq_s,
                    source=src,
                    rate=rate,
                    pool=pool,
                    drops=drops,
                    input=inp,
                    output=out,
                    records=nrec,
                    rtag=rtag,
                    hproto=hproto,
                    frame=frame,
                    stripped=stripped,
                    header=header,
                    **parse_frame(header),
                )
            )
        elif tag == 2:
            seq_c, src, nrec, ctag, clen = struct.unpack("!5I", body[:20])
            assert (nrec, ctag, clen) == (1, 1, 88)
            ifindex = struct.unpack("!I", body[20:24])[0]
            in_oct, in_pkt = struct.unpack("!QI", body[40:52])
            out_oct, out_pkt = struct.unpack("!QI", body[72:84])
            samples.append(
                dict(
                    kind="counters",
                    seq=seq_c,
                    ifindex=ifindex,
                    in_octets=in_oct,
                    in_pkts=in_pkt,
                    out_octets=out_oct,
                    out_pkts=out_pkt,
                )
            )
    assert pos == len(d)
    head = dict(version=version, agent=agent, sub_agent=sub, sequence=seq, uptime=uptime)
    return head, samples


def parse_frame(h: bytes) -> dict:
    etype, pos = struct.unpack("!H", h[12:14])[0], 14
    vlan = 0
    if etype == 0x8100:
        vlan = struct.unpack("!H", h[14:16])[0] & 0xFFF
        etype, pos = struct.unpack("!H", h[16:18])[0], 18
    if etype == 0x0800:
        ip_hdr = h[pos : pos + 20]
        words = struct.unpack("!10H", ip_hdr)
        total = sum(words)
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        assert total == 0xFFFF, "IPv4 header checksum"
        ip_len, proto = words[1], ip_hdr[9]
        src, dst = ipaddress.IPv4Address(ip_hdr[12:16]), ipaddress.IPv4Address(ip_hdr[16:20])
        l4 = pos + 20
    else:
        assert etype == 0x86DD
        plen, proto = struct.unpack("!HB", h[pos + 4 : pos + 7])
        ip_len = plen + 40
        src = ipaddress.IPv6Address(h[pos + 8 : pos + 24])
        dst = ipaddress.IPv6Address(h[pos + 24 : pos + 40])
        l4 = pos + 40
    sport = dport = flags = 0
    if proto in (6, 17):
        sport, dport = struct.unpack("!HH", h[l4 : l4 + 4])
    if proto == 6:
        flags = h[l4 + 13]
    if proto in (1, 58):
        dport = h[l4] * 256 + h[l4 + 1]
    return dict(
        vlan=vlan,
        ip_len=ip_len,
        proto=proto,
        src=str(src),
        dst=str(dst),
        sport=sport,
        dport=dport,
        flags=flags,
    )


def test_sflow_ceil_samples_per_direction_with_real_headers():
    table = flows(
        [
            {
                "src_ip": "10.0.0.1",
                "dst_ip": "192.0.2.1",
                "dst_port": 443,
                "src_pkts": 25,
                "src_bytes": 25 * 100,
                "dst_pkts": 10,
                "dst_bytes": 10 * 1500,
                "src_tcp_flags": 0x1B,
                "dst_tcp_flags": 0x1B,
                "vlan": 12,
            },
            {
                "src_ip": "2001:db8::1",
                "dst_ip": "2001:db8::53",
                "dst_port": 53,
                "proto": 17,
                "src_pkts": 1,
                "src_bytes": 80,
                "dst_pkts": 1,
                "dst_bytes": 200,
            },
        ]
    )
    enc = encode_sflow(
        table, rate=10, sequence=7, agent="192.0.2.254", sub_agent=3, counter_every=1
    )
    assert enc.records == 3 + 1 + 1 + 1  # ceil(25/10) + ceil(10/10) + 1 + 1
    parsed = [parse_sflow(d) for d in enc.datagrams]
    assert [h["sequence"] for h, _ in parsed] == list(range(8, 8 + len(parsed)))
    assert all(h["agent"] == "192.0.2.254" and h["sub_agent"] == 3 for h, _ in parsed)
    samples = [s for _, ss in parsed for s in ss if s["kind"] == "flow"]
    assert [s["seq"] for s in samples] == list(range(1, 7))
    assert all(s["rate"] == 10 and s["pool"] == 10 * s["seq"] and s["drops"] == 0 for s in samples)
    tcp = [s for s in samples if s["proto"] == 6]
    fwd = [s for s in tcp if s["src"] == "10.0.0.1"]
    rev = [s for s in tcp if s["src"] == "192.0.2.1"]
    assert len(fwd) == 3 and len(rev) == 1
    assert all(s["vlan"] == 12 and s["sport"] == 40000 and s["dport"] == 443 for s in fwd)
    assert [s["flags"] for s in fwd] == [0x02, 0x18, 0x11]  # SYN, PSH+ACK, FIN+ACK
    assert rev[0]["flags"] == 0x12  # the server's first sampled packet: SYN+ACK
    assert fwd[1]["ip_len"] == 100 and fwd[1]["frame"] == 100 + 18 + 4
    assert rev[0]["ip_len"] == 40 + 20  # a SYN carries no data
    assert (fwd[0]["input"], fwd[0]["output"], rev[0]["input"], rev[0]["output"]) == (1, 2, 2, 1)
    for s in samples:
        assert s["rtag"] == 1 and s["hproto"] == 1 and s["stripped"] == 4
        assert len(s["header"]) == min(128, s["frame"] - 4)
    udp = [s for s in samples if s["proto"] == 17]
    assert {(s["src"], s["dst"], s["sport"], s["dport"]) for s in udp} == {
        ("2001:db8::1", "2001:db8::53", 40001, 53),
        ("2001:db8::53", "2001:db8::1", 53, 40001),
    }
    counters = [s for _, ss in parsed for s in ss if s["kind"] == "counters"]
    assert {c["ifindex"] for c in counters} == {1, 2}
    state = SflowState(**enc.extra)
    # the counters count what the samples stand for: rate packets each
    assert (state.sample_sequence, state.client_packets, state.server_packets) == (6, 40, 20)


def test_sflow_times_order_samples_and_datagrams_fit():
    table = many(200)
    enc = encode_sflow(table, rate=1, max_datagram=1400, counter_every=5)
    uptimes = [parse_sflow(d)[0]["uptime"] for d in enc.datagrams]
    assert uptimes == sorted(uptimes)
    assert all(len(d) <= 1400 for d in enc.datagrams)
    assert enc.records == int(pa.compute.sum(table["src_pkts"]).as_py()) + int(
        pa.compute.sum(table["dst_pkts"]).as_py()
    )
    kinds = [[s["kind"] for s in parse_sflow(d)[1]] for d in enc.datagrams]
    assert [i for i, k in enumerate(kinds) if "counters" in k] == list(range(0, len(kinds), 5))
    assert enc.weights.sum() == pytest.approx(200)


def test_sflow_binomial_is_seeded_and_unbiased():
    table = flows(
        [
            {
                "src_ip": "10.0.0.1",
                "dst_ip": "192.0.2.1",
                "dst_port": 80,
                "src_pkts": 100_000,
                "src_bytes": 10**8,
                "dst_pkts": 0,
                "dst_bytes": 0,
            }
        ]
    )
    a = encode_sflow(table, rate=100, mode="binomial", seed=4)
    b = encode_sflow(table, rate=100, mode="binomial", seed=4)
    assert a.datagrams == b.datagrams
    assert abs(a.records - 1000) < 5 * math.sqrt(1000)
    assert encode_sflow(table, rate=100).records == 1000


def test_sflow_ipv6_agent_and_state_carry_over():
    table = many(10)
    first = encode_sflow(table, rate=2, agent="2001:db8::fe")
    second = encode_sflow(
        table,
        rate=2,
        agent="2001:db8::fe",
        sequence=first.next_sequence,
        state=SflowState(**first.extra),
    )
    head, samples = parse_sflow(second.datagrams[0])
    assert head["agent"] == "2001:db8::fe" and head["sequence"] == len(first.datagrams) + 1
    flow = [s for s in samples if s["kind"] == "flow"]
    assert flow[0]["seq"] == first.records + 1


def test_encoding_is_columnar_fast():
    """Many flows at once: no Python loop per flow (a loose bound, not a benchmark)."""
    table = many(2000)
    big = pa.concat_tables([table] * 25)  # 50,000 flows
    start = datetime.now(UTC)
    enc = encode_ipfix(big)
    assert enc.records == 100_000
    assert (datetime.now(UTC) - start).total_seconds() < 10
    assert np.isclose(enc.weights.sum(), 50_000)


# -- round trip through flowhawk's own decoders -------------------------------------------

ROUND_TRIP_INPUTS = (
    "labeled/slips_dataset/dataset_HEAD/test-cc/test-cc-capture-1.pcap",
    "conformance/flow_text_formats/examples/conn.tab.log",
    "conformance/ndpi_pcaps/pcap/http_ipv6.pcap",
    "conformance/ndpi_pcaps/pcap/icmp-tunnel.pcap",
)


def _real_chunks(shared_data) -> list[pa.Table]:
    """The inputs' flows as replay reads them: per input, in order of flow end."""
    from flowhawk import config
    from flowhawk.collect.replay import read_flows
    from flowhawk.diagnostics import Diagnostics

    paths = [shared_data / p for p in ROUND_TRIP_INPUTS]
    return list(read_flows(paths, config.load(None), Diagnostics()))


def _export(chunks: list[pa.Table], **settings) -> tuple[list[bytes], int]:
    """Datagrams of an exporter session (as replay makes them) and the records sent."""
    from flowhawk.collect.replay import ExportSettings, ExportStream

    stream = ExportStream(ExportSettings(**settings))
    encoded = [stream.encode(chunk) for chunk in chunks]
    return [d for e in encoded for d in e.datagrams], sum(e.records for e in encoded)


def _decode(datagrams: list[bytes]):
    from flowhawk.collect.decode.base import ExporterState
    from flowhawk.collect.decode.dispatch import ExportDecoder

    res = ExportDecoder().decode(datagrams, [0] * len(datagrams), ExporterState("192.0.2.1"))
    assert not res.errors and res.pending == 0
    return res.flows


def _address(value: int) -> str:
    ip = ipaddress.IPv6Address(value)
    return str(ip.ipv4_mapped or ip)


def _us(col: pa.ChunkedArray, unit: int) -> list[int]:
    values = col.cast(pa.timestamp("us")).cast(pa.int64()).to_pylist()
    return [v // unit * unit for v in values]


def _sides(t: pa.Table, unit: int) -> dict:
    """Per conversation (proto and the two endpoints, direction-free): first start, last
    end and packets / bytes per endpoint. Stitching may merge repeated flows of one
    5-tuple, so flows are compared per conversation."""
    out: dict = {}
    cols = {c: t.column(c).to_pylist() for c in t.column_names}
    starts, ends = _us(t.column("ts_start"), unit), _us(t.column("ts_end"), unit)
    for i in range(t.num_rows):
        a = (cols["src_ip"][i], cols["src_port"][i])
        b = (cols["dst_ip"][i], cols["dst_port"][i])
        key = (cols["proto"][i], *sorted([a, b]))
        lo, hi, sent = out.get(key, (starts[i], ends[i], {}))
        for end, pkts, octets in ((a, "src_pkts", "src_bytes"), (b, "dst_pkts", "dst_bytes")):
            p, o = sent.get(end, (0, 0))
            sent[end] = (p + cols[pkts][i], o + cols[octets][i])
        out[key] = (min(lo, starts[i]), max(hi, ends[i]), sent)
    return {
        k: (lo, hi, {e: v for e, v in sent.items() if v[0]}) for k, (lo, hi, sent) in out.items()
    }


@pytest.mark.parametrize(
    ("protocol", "unit"),
    [("v5", 1000), ("v9", 1000), ("ipfix", 1000), ("ipfix-us", 1), ("ipfix-ns", 1)],
)
def test_round_trip_through_the_decoders_and_the_normalizer(shared_data, protocol, unit):
    from flowhawk import config
    from flowhawk.diagnostics import Diagnostics
    from flowhawk.normalize import Normalizer

    chunks = _real_chunks(shared_data)
    if protocol == "v5":
        chunks = [c.filter(pc.invert(pc.match_substring(c["src_ip"], ":"))) for c in chunks]
        datagrams, records = _export(chunks, protocol="v5")
    elif protocol == "v9":
        datagrams, records = _export(chunks, protocol="v9", max_datagram=600, template_every=3)
    else:
        precision = {"ipfix": "ms", "ipfix-us": "us", "ipfix-ns": "ns"}[protocol]
        datagrams, records = _export(
            chunks, protocol="ipfix", time_precision=precision, max_datagram=900
        )
    flows = pa.concat_tables(chunks)
    raw = _decode(datagrams)
    assert raw.num_rows == records and all(raw["uni"].to_pylist())
    # the unidirectional records, as a multiset (IPv4 and IPv6 travel in separate sets)
    from flowhawk.collect.encode.common import flow_columns, unidirectional

    uni = unidirectional(flow_columns(flows))
    src = [_address(int(h) << 64 | int(lo)) for h, lo in zip(uni.src_hi, uni.src_lo, strict=True)]
    want = Counter(
        zip(
            src,
            uni.src_port.tolist(),
            uni.dst_port.tolist(),
            uni.pkts.tolist(),
            uni.bytes.tolist(),
            [v // unit * unit for v in uni.start_us.tolist()],
            [v // unit * unit for v in uni.end_us.tolist()],
            strict=True,
        )
    )
    got = Counter(
        zip(
            raw["src_ip"].to_pylist(),
            raw["src_port"].to_pylist(),
            raw["dst_port"].to_pylist(),
            raw["src_pkts"].to_pylist(),
            raw["src_bytes"].to_pylist(),
            _us(raw["ts_start"], unit),
            _us(raw["ts_end"], unit),
            strict=True,
        )
    )
    assert got == want
    # stitched back by the normalizer: the same conversations with the same counters
    norm = Normalizer(config.load(None), Diagnostics())
    assert norm.process(raw).num_rows == 0
    biflows, _ = norm.end_input(raw["input"][0].as_py())
    assert _sides(biflows, unit) == _sides(flows, unit)


def test_ipfix_biflow_round_trip_keeps_each_flow(shared_data):
    chunks = _real_chunks(shared_data)
    flows = pa.concat_tables(chunks)
    raw = _decode(_export(chunks, protocol="ipfix", biflow=True, time_precision="us")[0])
    assert raw.num_rows == flows.num_rows and not any(raw["uni"].to_pylist())
    assert _sides(raw, 1) == _sides(flows, 1)
    clients = Counter(zip(raw["src_ip"].to_pylist(), raw["src_port"].to_pylist(), strict=True))
    assert clients == Counter(
        zip(flows["src_ip"].to_pylist(), flows["src_port"].to_pylist(), strict=True)
    )  # the client stays the source
