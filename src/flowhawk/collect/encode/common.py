"""What every export encoder shares: flow columns as numpy arrays, the split of biflows
into unidirectional records, and packing fixed-size records into datagrams.

Encoders take a pyarrow table of canonical (or raw) flows and work on whole columns:
addresses are parsed once per distinct value (:mod:`flowhawk.netaddr`), records are
numpy structured arrays serialized with one ``tobytes()``, and datagrams are slices
of that buffer with a header in front. The only Python loop is one per datagram.

Times: NetFlow v5/v9 and sFlow carry times relative to the exporter's *sysUptime*.
Encoders take the boot time (``boot_us``, epoch microseconds) explicitly; without it
they use the earliest flow start of the table, rounded down to the second, so every
relative time is >= 0. The export time written in a header is the latest flow end
among the records of that datagram (an exporter sends a record after its flow
ended), so replayed flows keep their own (event) time.

Records keep the table's order; give tables in order of flow end, as an exporter
sends them (:func:`flowhawk.collect.replay.read_flows` does). Collectors read uptime
differences as signed 32-bit milliseconds, so a datagram is cut early rather than
hold records more than 2**31 ms (24.8 days) apart. A table spanning more than
2**32 ms (49.7 days) wraps the uptime; :class:`~flowhawk.collect.replay.ExportStream`
"reboots" its exporter instead.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk import netaddr

U32 = 1 << 32

#: ICMP request type -> reply type: the reverse record of an echo request is a reply.
ICMP_REPLY = {8: 0, 13: 14, 15: 16, 17: 18}
ICMP6_REPLY = {128: 129, 130: 131, 135: 136}

#: Interface indexes written for the client side and the server side of a flow.
CLIENT_IF, SERVER_IF = 1, 2


@dataclass
class Encoded:
    """Datagrams built from one table, and the numbers a caller needs to continue."""

    datagrams: list[bytes]
    records: int  # flow records (or sFlow flow samples) in the datagrams
    weights: np.ndarray  # per datagram: how many input flows it carries (fractions; sums ~ flows)
    next_sequence: int  # header sequence number to continue with
    skipped: int = 0  # input flows that cannot be expressed (IPv6 in NetFlow v5)
    extra: dict[str, int] = field(default_factory=dict)  # protocol-specific counters to carry


def empty(next_sequence: int, skipped: int = 0, extra: dict[str, int] | None = None) -> Encoded:
    return Encoded([], 0, np.zeros(0), next_sequence, skipped, extra or {})


@dataclass
class FlowColumns:
    """The columns encoders need, as numpy arrays, one row per input flow."""

    start_us: np.ndarray  # int64 epoch microseconds
    end_us: np.ndarray
    is_v6: np.ndarray  # bool
    src_hi: np.ndarray  # uint64: the 128-bit addresses (IPv4 as ::ffff:a.b.c.d)
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    src_port: np.ndarray  # uint16
    dst_port: np.ndarray
    proto: np.ndarray  # uint8
    src_pkts: np.ndarray  # uint64
    src_bytes: np.ndarray
    dst_pkts: np.ndarray
    dst_bytes: np.ndarray
    src_flags: np.ndarray  # uint8 (0 when unknown)
    dst_flags: np.ndarray
    vlan: np.ndarray  # uint16 (0 = none)
    src_mac: np.ndarray  # (n, 6) uint8 (zeros when unknown)
    dst_mac: np.ndarray

    def __len__(self) -> int:
        return len(self.start_us)


def _ints(table: pa.Table, name: str, dtype: type, default: int = 0) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, default, dtype=dtype)
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("us")).cast(pa.int64())
    arr = col.to_numpy(zero_copy_only=False)
    if arr.dtype == object or np.issubdtype(arr.dtype, np.floating):
        arr = pl.Series(arr).fill_null(default).fill_nan(default).to_numpy()
    return np.clip(arr, 0, None).astype(dtype) if dtype != np.int64 else arr.astype(np.int64)


def _macs(table: pa.Table, name: str) -> np.ndarray:
    out = np.zeros((table.num_rows, 6), dtype=np.uint8)
    if name not in table.column_names:
        return out
    value = (
        pl.Series(table.column(name))
        .cast(pl.String)
        .str.replace_all(r"[:\-.]", "")
        .str.to_integer(base=16, strict=False)
        .fill_null(0)
        .cast(pl.UInt64)
        .to_numpy()
    )
    return value.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 2:].copy()


def flow_columns(flows: pa.Table) -> FlowColumns:
    """Numpy columns of ``flows`` (canonical or raw schema; extra columns ignored).

    Rows with an address that does not parse get ``is_v6`` False and address 0.0.0.0;
    canonical flows never have them.
    """
    src_hi, src_lo, _ = netaddr.parse(pl.Series(flows.column("src_ip")))
    dst_hi, dst_lo, _ = netaddr.parse(pl.Series(flows.column("dst_ip")))
    mapped = netaddr.V4_MAPPED_PREFIX
    src_v4 = (src_hi == 0) & ((src_lo >> np.uint64(32)) == (mapped >> np.uint64(32)))
    dst_v4 = (dst_hi == 0) & ((dst_lo >> np.uint64(32)) == (mapped >> np.uint64(32)))
    return FlowColumns(
        start_us=_ints(flows, "ts_start", np.int64),
        end_us=_ints(flows, "ts_end", np.int64),
        is_v6=~(src_v4 & dst_v4),
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        src_port=_ints(flows, "src_port", np.uint16),
        dst_port=_ints(flows, "dst_port", np.uint16),
        proto=_ints(flows, "proto", np.uint8),
        src_pkts=_ints(flows, "src_pkts", np.uint64),
        src_bytes=_ints(flows, "src_bytes", np.uint64),
        dst_pkts=_ints(flows, "dst_pkts", np.uint64),
        dst_bytes=_ints(flows, "dst_bytes", np.uint64),
        src_flags=_ints(flows, "src_tcp_flags", np.uint8),
        dst_flags=_ints(flows, "dst_tcp_flags", np.uint8),
        vlan=_ints(flows, "vlan", np.uint16),
        src_mac=_macs(flows, "src_mac"),
        dst_mac=_macs(flows, "dst_mac"),
    )


def v4_of(lo: np.ndarray) -> np.ndarray:
    """The IPv4 address (uint32) held in the low half of an IPv4-mapped address."""
    return (lo & np.uint64(0xFFFF_FFFF)).astype(np.uint32)


def v6_bytes(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """(n, 16) uint8 network-order bytes of 128-bit addresses."""
    both = np.empty((len(hi), 2), dtype=">u8")
    both[:, 0] = hi
    both[:, 1] = lo
    return both.view(np.uint8).reshape(-1, 16)


def reply_port(proto: np.ndarray, port: np.ndarray) -> np.ndarray:
    """ICMP type*256+code of the answer to each request (unchanged for other types)."""
    itype = port >> np.uint16(8)
    out = port.copy()
    for table, number in ((ICMP_REPLY, 1), (ICMP6_REPLY, 58)):
        for request, reply in table.items():
            hit = (proto == number) & (itype == request)
            out[hit] = (port[hit] & np.uint16(0xFF)) | np.uint16(reply << 8)
    return out


def icmp_type_code(proto: np.ndarray, dst_port: np.ndarray) -> np.ndarray:
    """ICMP type*256+code for ICMP records (the v9/IPFIX element), 0 for others."""
    return np.where((proto == 1) | (proto == 58), dst_port, 0).astype(np.uint16)


@dataclass
class UniRecords:
    """Unidirectional records: each biflow split into client->server and server->client.

    The forward record is kept when the client sent packets (or nobody did), the reverse
    one when the server did; ``flow`` gives the input row of each record and
    ``weight`` its share of that flow (1 or 1/2), so records in a datagram say how many
    input flows the datagram carries.
    """

    flow: np.ndarray
    weight: np.ndarray
    reverse: np.ndarray  # bool: server->client
    is_v6: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    src_port: np.ndarray
    dst_port: np.ndarray
    proto: np.ndarray
    pkts: np.ndarray
    bytes: np.ndarray
    flags: np.ndarray
    start_us: np.ndarray
    end_us: np.ndarray
    in_if: np.ndarray
    out_if: np.ndarray
    vlan: np.ndarray
    src_mac: np.ndarray
    dst_mac: np.ndarray

    def __len__(self) -> int:
        return len(self.flow)

    def values(self, sel: np.ndarray, first: np.ndarray, last: np.ndarray) -> dict[str, np.ndarray]:
        """Template field values of records ``sel`` (NetFlow v9 / IPFIX names), with the
        start and end already in the protocol's time form."""
        return {
            "src4": v4_of(self.src_lo[sel]),
            "dst4": v4_of(self.dst_lo[sel]),
            "src6": v6_bytes(self.src_hi[sel], self.src_lo[sel]),
            "dst6": v6_bytes(self.dst_hi[sel], self.dst_lo[sel]),
            "sport": self.src_port[sel],
            "dport": self.dst_port[sel],
            "proto": self.proto[sel],
            "tos": np.zeros(len(sel), np.uint8),
            "flags": np.where(self.proto[sel] == 6, self.flags[sel], 0),
            "in_if": self.in_if[sel],
            "out_if": self.out_if[sel],
            "pkts": self.pkts[sel],
            "bytes": self.bytes[sel],
            "first": first,
            "last": last,
            "vlan": self.vlan[sel],
            "smac": self.src_mac[sel],
            "dmac": self.dst_mac[sel],
            "icmp": icmp_type_code(self.proto[sel], self.dst_port[sel]),
        }


def unidirectional(
    c: FlowColumns, interfaces: tuple[int, int] = (CLIENT_IF, SERVER_IF)
) -> UniRecords:
    """Records in input order, the reverse record right after its forward one."""
    n = len(c)
    fwd = (c.src_pkts > 0) | (c.dst_pkts == 0)
    rev = c.dst_pkts > 0
    keep = np.empty(2 * n, dtype=bool)
    keep[0::2], keep[1::2] = fwd, rev
    idx = np.repeat(np.arange(n), 2)[keep]
    reverse = np.tile(np.array([False, True]), n)[keep]
    per_flow = fwd.astype(np.int64) + rev.astype(np.int64)
    weight = 1.0 / per_flow[idx]

    rev_i = reverse.astype(np.intp)

    def pick(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a for forward records, b for reverse ones."""
        return np.stack([a, b])[rev_i, idx]

    icmp = (c.proto == 1) | (c.proto == 58)
    rev_sport = np.where(icmp, np.uint16(0), c.dst_port)
    rev_dport = np.where(icmp, reply_port(c.proto, c.dst_port), c.src_port)
    if_c = np.full(n, interfaces[0], dtype=np.uint32)
    if_s = np.full(n, interfaces[1], dtype=np.uint32)
    return UniRecords(
        flow=idx,
        weight=weight,
        reverse=reverse,
        is_v6=c.is_v6[idx],
        src_hi=pick(c.src_hi, c.dst_hi),
        src_lo=pick(c.src_lo, c.dst_lo),
        dst_hi=pick(c.dst_hi, c.src_hi),
        dst_lo=pick(c.dst_lo, c.src_lo),
        src_port=pick(c.src_port, rev_sport),
        dst_port=pick(c.dst_port, rev_dport),
        proto=c.proto[idx],
        pkts=pick(c.src_pkts, c.dst_pkts),
        bytes=pick(c.src_bytes, c.dst_bytes),
        flags=pick(c.src_flags, c.dst_flags),
        start_us=c.start_us[idx],
        end_us=c.end_us[idx],
        in_if=pick(if_c, if_s),
        out_if=pick(if_s, if_c),
        vlan=c.vlan[idx],
        src_mac=pick(c.src_mac, c.dst_mac),
        dst_mac=pick(c.dst_mac, c.src_mac),
    )


def default_boot_us(start_us: np.ndarray) -> int:
    """sysUptime origin when none is given: the earliest start, down to the second."""
    return int(start_us.min() // 1_000_000 * 1_000_000) if len(start_us) else 0


def uptime_ms(us: np.ndarray, boot_us: int) -> np.ndarray:
    """Milliseconds since boot (floor), as the 32-bit value exporters send (wraps)."""
    return ((us // 1000 - boot_us // 1000) % U32).astype(np.uint32)


#: Largest time span of the records of one datagram under sysUptime (v5, v9, sFlow):
#: collectors read uptime differences as signed 32-bit milliseconds.
MAX_SPAN_US = ((1 << 31) - 1) * 1000


def split(
    sizes: np.ndarray,
    budget: Callable[[int], int],
    max_records: int | None = None,
    times: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[tuple[int, int]]:
    """Greedy [start, end) record ranges per datagram: as many records as fit ``budget(i)``.

    ``sizes`` are record sizes in bytes; ``budget(i)`` the room for records in datagram
    ``i``. Every datagram takes at least one record. With ``times`` (start and end in
    µs per record), a datagram also ends before its records would span
    :data:`MAX_SPAN_US`, so sysUptime-relative times stay readable.
    """
    cum = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
    n, pos, out = len(sizes), 0, []
    if times is not None and (len(sizes) == 0 or times[1].max() - times[0].min() < MAX_SPAN_US):
        times = None  # the whole table fits: nothing to check per datagram
    while pos < n:
        end = max(bisect_right(cum, cum[pos] + budget(len(out)), pos) - 1, pos + 1)
        if max_records is not None:
            end = min(end, pos + max_records)
        if times is not None:
            lo = np.minimum.accumulate(times[0][pos:end])
            hi = np.maximum.accumulate(times[1][pos:end])
            too_wide = np.flatnonzero(hi - lo >= MAX_SPAN_US)
            if too_wide.size:
                end = pos + max(int(too_wide[0]), 1)
        out.append((pos, end))
        pos = end
    return out


def range_max(values: np.ndarray, ranges: list[tuple[int, int]]) -> list[int]:
    """max(values[a:b]) for each (non-empty) range."""
    return np.maximum.reduceat(values, [a for a, _ in ranges]).tolist() if ranges else []


def pad4(length: int) -> bytes:
    return b"\x00" * (-length % 4)


def prefix_counts(mask: np.ndarray) -> np.ndarray:
    """cnt[i] = how many of mask[:i] are set (length n+1), to slice per-family buffers."""
    return np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])


def datagram_weights(weight: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Sum of the records' weights per datagram."""
    if not ranges:
        return np.zeros(0)
    return np.add.reduceat(weight, [a for a, _ in ranges])


# -- NetFlow v9 / IPFIX: templates and sets ---------------------------------------------

#: IANA private enterprise number of RFC 5103 reverse information elements.
REVERSE_PEN = 29305


@dataclass(frozen=True)
class Field:
    """One field of a template: information element, length, the record column it fills."""

    ie: int
    length: int
    name: str
    enterprise: int = 0


def record_dtype(fields: list[Field]) -> np.dtype:
    """Packed big-endian numpy dtype of a record laid out as ``fields``."""
    scalar = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}
    return np.dtype(
        [
            (f.name, scalar[f.length]) if f.length in scalar else (f.name, "u1", (f.length,))
            for f in fields
        ]
    )


def template_record(template_id: int, fields: list[Field]) -> bytes:
    """A template record: id, field count, then (id, length[, enterprise]) per field."""
    out = [struct.pack("!HH", template_id, len(fields))]
    for f in fields:
        if f.enterprise:
            out.append(struct.pack("!HHI", f.ie | 0x8000, f.length, f.enterprise))
        else:
            out.append(struct.pack("!HH", f.ie, f.length))
    return b"".join(out)


def fill(rec: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
    for name in rec.dtype.names or ():
        rec[name] = values[name]
    return rec


@dataclass
class Packed:
    """One datagram's body (everything after the message header)."""

    start: int  # first record (index in record order)
    end: int
    body: bytes
    records: int  # data records
    templates: bool  # carries the template set


def pack_sets(
    buffers: tuple[bytes, bytes],
    record_sizes: tuple[int, int],
    set_ids: tuple[int, int],
    is_v6: np.ndarray,
    template_set: bytes,
    room: int,
    template_every: int,
    messages_sent: int,
    times: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Packed]:
    """Data records (IPv4 and IPv6 buffers, in record order) split into datagram bodies.

    Each body is [template set] + [IPv4 data set] + [IPv6 data set], sets padded to 4
    bytes; ``room`` is the datagram size minus the message header. The template set
    goes into the first datagram and every ``template_every``-th one after it
    (counting ``messages_sent`` datagrams sent before; 0 = only the very first).
    ``times`` limits the time span of a datagram (see :func:`split`).
    """

    def has_template(i: int) -> bool:
        k = messages_sent + i
        return k == 0 or (template_every > 0 and k % template_every == 0)

    reserve = 2 * (4 + 3)  # two set headers and their padding
    sizes = np.where(is_v6, record_sizes[1], record_sizes[0])

    def budget(i: int) -> int:
        return room - reserve - (len(template_set) if has_template(i) else 0)

    counts = (prefix_counts(~is_v6).tolist(), prefix_counts(is_v6).tolist())
    out = []
    for i, (a, b) in enumerate(split(sizes, budget, times=times)):
        tmpl = has_template(i)
        parts = [template_set] if tmpl else []
        for fam in (0, 1):
            lo, hi = counts[fam][a], counts[fam][b]
            if hi > lo:
                data = buffers[fam][lo * record_sizes[fam] : hi * record_sizes[fam]]
                pad = pad4(len(data))
                parts.append(struct.pack("!HH", set_ids[fam], 4 + len(data) + len(pad)))
                parts.append(data + pad)
        out.append(Packed(a, b, b"".join(parts), b - a, tmpl))
    return out
