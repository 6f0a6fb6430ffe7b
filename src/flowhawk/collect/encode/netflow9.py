"""NetFlow v9 (RFC 3954) export datagrams from canonical flows.

Records are unidirectional as in v5 (client->server, then server->client when the
server sent packets), IPv4 and IPv6 each with their own template (ids 256 and 257).
The template flowset goes out in the first datagram and every ``template_every``-th
datagram after it; data flowsets are padded to 4 bytes. The header ``count`` is the
number of records (template records included) and the sequence number counts export
packets (RFC 3954 section 5.1).

Times: FIRST_SWITCHED / LAST_SWITCHED are milliseconds of sysUptime since
``boot_us``; the header's unix_secs is the latest flow end of the datagram rounded up
to the second and sysUptime matches it exactly, so ``unix_secs*1000 - sysUptime +
FIRST_SWITCHED`` is the flow's own start in milliseconds.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa

from flowhawk.collect.encode.common import (
    U32,
    Encoded,
    Field,
    datagram_weights,
    default_boot_us,
    empty,
    fill,
    flow_columns,
    pack_sets,
    range_max,
    record_dtype,
    template_record,
    unidirectional,
    uptime_ms,
)

HEADER = struct.Struct("!HHIIII")
TEMPLATE_V4, TEMPLATE_V6 = 256, 257

_COMMON = [
    Field(7, 2, "sport"),  # L4_SRC_PORT
    Field(11, 2, "dport"),  # L4_DST_PORT (ICMP: type*256+code)
    Field(4, 1, "proto"),  # PROTOCOL
    Field(5, 1, "tos"),  # SRC_TOS
    Field(6, 1, "flags"),  # TCP_FLAGS
    Field(10, 4, "in_if"),  # INPUT_SNMP
    Field(14, 4, "out_if"),  # OUTPUT_SNMP
    Field(2, 8, "pkts"),  # IN_PKTS
    Field(1, 8, "bytes"),  # IN_BYTES
    Field(22, 4, "first"),  # FIRST_SWITCHED
    Field(21, 4, "last"),  # LAST_SWITCHED
    Field(58, 2, "vlan"),  # SRC_VLAN
    Field(56, 6, "smac"),  # IN_SRC_MAC
    Field(80, 6, "dmac"),  # IN_DST_MAC
]
FIELDS_V4 = [Field(8, 4, "src4"), Field(12, 4, "dst4"), *_COMMON, Field(32, 2, "icmp")]
# ICMP_TYPE (32) is type*256+code for either family in v9 (139 is an IPFIX element)
FIELDS_V6 = [Field(27, 16, "src6"), Field(28, 16, "dst6"), *_COMMON, Field(32, 2, "icmp")]
DTYPE_V4, DTYPE_V6 = record_dtype(FIELDS_V4), record_dtype(FIELDS_V6)


def template_flowset() -> bytes:
    body = template_record(TEMPLATE_V4, FIELDS_V4) + template_record(TEMPLATE_V6, FIELDS_V6)
    return struct.pack("!HH", 0, 4 + len(body)) + body


def encode_netflow9(
    flows: pa.Table,
    *,
    sequence: int = 0,
    source_id: int = 0,
    boot_us: int | None = None,
    max_datagram: int = 1400,
    template_every: int = 20,
    messages_sent: int = 0,
) -> Encoded:
    """NetFlow v9 datagrams for ``flows``.

    ``sequence`` is the package sequence of the first datagram; ``messages_sent`` how
    many datagrams this source sent before (for the template schedule).
    """
    cols = flow_columns(flows)
    if len(cols) == 0:
        return empty(sequence)
    uni = unidirectional(cols)
    boot = default_boot_us(cols.start_us) if boot_us is None else boot_us
    recs = []
    for dtype, mask in ((DTYPE_V4, ~uni.is_v6), (DTYPE_V6, uni.is_v6)):
        sel = np.flatnonzero(mask)
        first, last = uptime_ms(uni.start_us[sel], boot), uptime_ms(uni.end_us[sel], boot)
        recs.append(fill(np.zeros(len(sel), dtype), uni.values(sel, first, last)).tobytes())
    tmpl = template_flowset()
    packed = pack_sets(
        (recs[0], recs[1]),
        (DTYPE_V4.itemsize, DTYPE_V6.itemsize),
        (TEMPLATE_V4, TEMPLATE_V6),
        uni.is_v6,
        tmpl,
        max_datagram - HEADER.size,
        template_every,
        messages_sent,
        times=(uni.start_us, uni.end_us),
    )
    ranges = [(p.start, p.end) for p in packed]
    boot_ms = boot // 1000
    datagrams = []
    for i, (p, end_ms) in enumerate(
        zip(packed, range_max(uni.end_us // 1000, ranges), strict=True)
    ):
        export_s = -(-end_ms // 1000)  # ceil
        count = p.records + (2 if p.templates else 0)
        header = HEADER.pack(
            9, count, (export_s * 1000 - boot_ms) % U32, export_s, (sequence + i) % U32, source_id
        )
        datagrams.append(header + p.body)
    weights = datagram_weights(uni.weight, ranges)
    return Encoded(datagrams, len(uni), weights, (sequence + len(packed)) % U32)
