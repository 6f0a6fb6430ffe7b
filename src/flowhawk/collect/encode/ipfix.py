"""IPFIX (RFC 7011) export messages from canonical flows.

By default each biflow becomes unidirectional records as in NetFlow v9 (client->server,
then server->client when the server sent packets). With ``biflow=True`` each flow stays
one RFC 5103 biflow record: the forward elements carry the client's counters and the
reverse elements (enterprise 29305) the server's.

Templates: 256/257 (IPv4/IPv6 unidirectional), 258/259 (biflow); the template set goes
out in the first message and every ``template_every``-th message after it.
Times are absolute: flowStartMilliseconds / flowEndMilliseconds (152/153); with
``time_precision="us"`` flowStartMicroseconds / flowEndMicroseconds (154/155), with
``"ns"`` flowStartNanoseconds / flowEndNanoseconds (156/157), both in NTP format with
fractions rounded up (for "us" to the 2**-21 s grain RFC 7011 asks for) so that a
truncating decoder gets the microsecond back. nfdump 1.7 reads only 152/153 (later
versions 156/157 too); tshark reads all three.

The header export time is the latest flow end of the message rounded up to the
second; the sequence number is the number of data records sent before the message
(RFC 7011 section 3.1).
"""

from __future__ import annotations

import struct
from typing import Literal

import numpy as np
import pyarrow as pa

from flowhawk.collect.encode.common import (
    REVERSE_PEN,
    U32,
    Encoded,
    Field,
    FlowColumns,
    datagram_weights,
    empty,
    fill,
    flow_columns,
    icmp_type_code,
    pack_sets,
    range_max,
    record_dtype,
    template_record,
    unidirectional,
    v4_of,
    v6_bytes,
)

HEADER = struct.Struct("!HHIII")
TEMPLATE_V4, TEMPLATE_V6, TEMPLATE_BI_V4, TEMPLATE_BI_V6 = 256, 257, 258, 259
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def _fields(v6: bool, precision: str, biflow: bool) -> list[Field]:
    addr = (
        [Field(27, 16, "src6"), Field(28, 16, "dst6")]
        if v6
        else [Field(8, 4, "src4"), Field(12, 4, "dst4")]
    )
    start_ie = {"ms": 152, "us": 154, "ns": 156}[precision]
    times = [Field(start_ie, 8, "first"), Field(start_ie + 1, 8, "last")]
    fields = [
        *addr,
        Field(7, 2, "sport"),  # sourceTransportPort
        Field(11, 2, "dport"),  # destinationTransportPort (ICMP: type*256+code)
        Field(4, 1, "proto"),  # protocolIdentifier
        Field(5, 1, "tos"),  # ipClassOfService
        Field(6, 2, "flags"),  # tcpControlBits
        Field(10, 4, "in_if"),  # ingressInterface
        Field(14, 4, "out_if"),  # egressInterface
        Field(2, 8, "pkts"),  # packetDeltaCount
        Field(1, 8, "bytes"),  # octetDeltaCount
        *times,
        Field(58, 2, "vlan"),  # vlanId
        Field(56, 6, "smac"),  # sourceMacAddress
        Field(80, 6, "dmac"),  # destinationMacAddress
        Field(139 if v6 else 32, 2, "icmp"),  # icmpTypeCodeIPv6 / icmpTypeCodeIPv4
    ]
    if biflow:
        fields += [
            Field(2, 8, "rpkts", REVERSE_PEN),  # reversePacketDeltaCount
            Field(1, 8, "rbytes", REVERSE_PEN),  # reverseOctetDeltaCount
            Field(6, 2, "rflags", REVERSE_PEN),  # reverseTcpControlBits
        ]
    return fields


def template_set(precision: str = "ms", biflow: bool = False) -> bytes:
    ids = (TEMPLATE_BI_V4, TEMPLATE_BI_V6) if biflow else (TEMPLATE_V4, TEMPLATE_V6)
    body = b"".join(
        template_record(tid, _fields(v6, precision, biflow))
        for tid, v6 in zip(ids, (False, True), strict=True)
    )
    return struct.pack("!HH", 2, 4 + len(body)) + body


def _time(us: np.ndarray, precision: str) -> np.ndarray:
    """Times in the encoding of the chosen elements: milliseconds since the epoch, or
    NTP format (seconds since 1900, 2**-32 s fractions)."""
    if precision == "ms":
        return (us // 1000).astype(np.uint64)
    secs = us // 1_000_000
    frac = -(-((us % 1_000_000) << 32) // 1_000_000)  # ceil; int64 holds 2**52
    if precision == "us":
        frac = -(-frac // 2048) * 2048  # RFC 7011 6.1.9: the low 11 bits are zero
    secs = secs + NTP_EPOCH_OFFSET + (frac >> 32)  # a fraction rounded up to 1 s carries
    return (secs.astype(np.uint64) << np.uint64(32)) | (frac & 0xFFFF_FFFF).astype(np.uint64)


def _bi_values(c: FlowColumns, sel: np.ndarray, precision: str) -> dict[str, np.ndarray]:
    tcp = c.proto[sel] == 6
    return {
        "src4": v4_of(c.src_lo[sel]),
        "dst4": v4_of(c.dst_lo[sel]),
        "src6": v6_bytes(c.src_hi[sel], c.src_lo[sel]),
        "dst6": v6_bytes(c.dst_hi[sel], c.dst_lo[sel]),
        "sport": c.src_port[sel],
        "dport": c.dst_port[sel],
        "proto": c.proto[sel],
        "tos": np.zeros(len(sel), np.uint8),
        "flags": np.where(tcp, c.src_flags[sel], 0),
        "in_if": np.full(len(sel), 1, np.uint32),
        "out_if": np.full(len(sel), 2, np.uint32),
        "pkts": c.src_pkts[sel],
        "bytes": c.src_bytes[sel],
        "first": _time(c.start_us[sel], precision),
        "last": _time(c.end_us[sel], precision),
        "vlan": c.vlan[sel],
        "smac": c.src_mac[sel],
        "dmac": c.dst_mac[sel],
        "icmp": icmp_type_code(c.proto[sel], c.dst_port[sel]),
        "rpkts": c.dst_pkts[sel],
        "rbytes": c.dst_bytes[sel],
        "rflags": np.where(tcp, c.dst_flags[sel], 0),
    }


def encode_ipfix(
    flows: pa.Table,
    *,
    sequence: int = 0,
    domain: int = 0,
    max_datagram: int = 1400,
    template_every: int = 20,
    messages_sent: int = 0,
    time_precision: Literal["ms", "us", "ns"] = "ms",
    biflow: bool = False,
) -> Encoded:
    """IPFIX messages for ``flows``; ``sequence`` = data records sent before by ``domain``.

    ``messages_sent`` is how many messages this domain sent before (template schedule).
    """
    if time_precision not in ("ms", "us", "ns"):
        raise ValueError("time_precision is 'ms', 'us' or 'ns'")
    cols = flow_columns(flows)
    if len(cols) == 0:
        return empty(sequence)
    dtypes = [record_dtype(_fields(v6, time_precision, biflow)) for v6 in (False, True)]
    if biflow:
        is_v6, weight = cols.is_v6, np.ones(len(cols))
        end_us = cols.end_us
        values = lambda sel: _bi_values(cols, sel, time_precision)  # noqa: E731
        ids = (TEMPLATE_BI_V4, TEMPLATE_BI_V6)
    else:
        uni = unidirectional(cols)
        is_v6, weight, end_us = uni.is_v6, uni.weight, uni.end_us
        values = lambda sel: uni.values(  # noqa: E731
            sel, _time(uni.start_us[sel], time_precision), _time(uni.end_us[sel], time_precision)
        )
        ids = (TEMPLATE_V4, TEMPLATE_V6)
    bufs = []
    for dtype, mask in zip(dtypes, (~is_v6, is_v6), strict=True):
        sel = np.flatnonzero(mask)
        bufs.append(fill(np.zeros(len(sel), dtype), values(sel)).tobytes())
    packed = pack_sets(
        (bufs[0], bufs[1]),
        (dtypes[0].itemsize, dtypes[1].itemsize),
        ids,
        is_v6,
        template_set(time_precision, biflow),
        max_datagram - HEADER.size,
        template_every,
        messages_sent,
    )
    ranges = [(p.start, p.end) for p in packed]
    datagrams = []
    for p, end in zip(packed, range_max(end_us, ranges), strict=True):
        export_s = -(-end // 1_000_000)  # ceil
        size = HEADER.size + len(p.body)
        header = HEADER.pack(10, size, export_s % U32, (sequence + p.start) % U32, domain)
        datagrams.append(header + p.body)
    weights = datagram_weights(weight, ranges)
    return Encoded(datagrams, len(is_v6), weights, (sequence + len(is_v6)) % U32)
