"""NetFlow v5 export datagrams from canonical flows.

v5 is unidirectional and IPv4 only: each biflow becomes a client->server record
(client counters) and, when the server sent packets, a server->client record; IPv6
flows cannot be expressed and are counted in :attr:`Encoded.skipped`. Counters are
32-bit in v5 and saturate at 2**32 - 1.

Header (24 bytes): version 5, count (<= 30), sysUptime, unix_secs, unix_nsecs,
flow_sequence (flows sent before this datagram), engine type and id, and the
sampling interval (2 bits mode, 14 bits interval). The header time is the latest
flow end in the datagram, to the millisecond; First/Last are milliseconds since
``boot_us``, so ``unix time - sysUptime + First`` is the flow's own start.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa

from flowhawk.collect.encode.common import (
    U32,
    Encoded,
    datagram_weights,
    default_boot_us,
    empty,
    flow_columns,
    range_max,
    split,
    unidirectional,
    uptime_ms,
    v4_of,
)

MAX_RECORDS = 30
HEADER = struct.Struct("!HHIIIIBBH")

RECORD = np.dtype(
    [
        ("srcaddr", ">u4"),
        ("dstaddr", ">u4"),
        ("nexthop", ">u4"),
        ("input", ">u2"),
        ("output", ">u2"),
        ("dPkts", ">u4"),
        ("dOctets", ">u4"),
        ("first", ">u4"),
        ("last", ">u4"),
        ("srcport", ">u2"),
        ("dstport", ">u2"),
        ("pad1", "u1"),
        ("tcp_flags", "u1"),
        ("prot", "u1"),
        ("tos", "u1"),
        ("src_as", ">u2"),
        ("dst_as", ">u2"),
        ("src_mask", "u1"),
        ("dst_mask", "u1"),
        ("pad2", ">u2"),
    ]
)
assert RECORD.itemsize == 48


def encode_netflow5(
    flows: pa.Table,
    *,
    sequence: int = 0,
    boot_us: int | None = None,
    engine_type: int = 0,
    engine_id: int = 0,
    sampling_interval: int = 0,
    records_per_datagram: int = MAX_RECORDS,
) -> Encoded:
    """NetFlow v5 datagrams for ``flows``; ``sequence`` is the flow_sequence to start at.

    ``sampling_interval`` is the raw 16-bit header field (mode in the top 2 bits).
    ``next_sequence`` of the result counts the records sent.
    """
    if not 1 <= records_per_datagram <= MAX_RECORDS:
        raise ValueError(f"NetFlow v5 carries 1 to {MAX_RECORDS} records per datagram")
    cols = flow_columns(flows)
    v6 = int(cols.is_v6.sum())
    if len(cols) == v6:
        return empty(sequence, v6)
    uni = unidirectional(cols)
    uni_keep = ~uni.is_v6
    boot = default_boot_us(cols.start_us[~cols.is_v6]) if boot_us is None else boot_us
    rec = np.zeros(int(uni_keep.sum()), dtype=RECORD)
    sel = np.flatnonzero(uni_keep)
    rec["srcaddr"] = v4_of(uni.src_lo[sel])
    rec["dstaddr"] = v4_of(uni.dst_lo[sel])
    rec["input"] = uni.in_if[sel]
    rec["output"] = uni.out_if[sel]
    rec["dPkts"] = np.minimum(uni.pkts[sel], U32 - 1)
    rec["dOctets"] = np.minimum(uni.bytes[sel], U32 - 1)
    rec["first"] = uptime_ms(uni.start_us[sel], boot)
    rec["last"] = uptime_ms(uni.end_us[sel], boot)
    rec["srcport"] = uni.src_port[sel]
    rec["dstport"] = uni.dst_port[sel]
    rec["tcp_flags"] = np.where(uni.proto[sel] == 6, uni.flags[sel], 0)
    rec["prot"] = uni.proto[sel]
    buf = rec.tobytes()
    end_ms = uni.end_us[sel] // 1000
    weights = uni.weight[sel]

    n = len(rec)
    times = (uni.start_us[sel], uni.end_us[sel])
    ranges = split(np.full(n, 48), lambda i: 48 * records_per_datagram, times=times)
    datagrams = []
    boot_ms = boot // 1000
    for (a, b), export_ms in zip(ranges, range_max(end_ms, ranges), strict=True):
        header = HEADER.pack(
            5,
            b - a,
            (export_ms - boot_ms) % U32,
            export_ms // 1000,
            export_ms % 1000 * 1_000_000,
            (sequence + a) % U32,
            engine_type,
            engine_id,
            sampling_interval,
        )
        datagrams.append(header + buf[a * 48 : b * 48])
    return Encoded(datagrams, n, datagram_weights(weights, ranges), (sequence + n) % U32, v6)
