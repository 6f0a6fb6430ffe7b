"""The pcap and pcapng readers: capture files metered into raw biflow tables.

:class:`CaptureMeter` runs one capture byte stream (a file read in windows, or
tcpdump's output for :mod:`~flowhawk.sources.pcap.live`) through the record scanner,
the decoder and the flow meter, and builds tables in
:data:`flowhawk.schema.RAW_FLOW_SCHEMA`. Memory is bounded by the window (4 MiB by
default, grown only for a single larger record) plus the flows in progress.

Options (``ctx.options``), in seconds:

- ``active_timeout`` (1800): a flow longer than this is cut and continued in a new one;
- ``idle_timeout`` (60): a non-TCP flow silent this long ends;
- ``tcp_idle_timeout`` (300): a TCP flow silent this long ends;
- ``tcp_close_timeout`` (10): after RST or FIN both ways, how long trailing packets
  are still counted in the closed flow.

Orientation: ``src`` is the endpoint that sent the first packet. When that packet
started the conversation (a TCP SYN without ACK, an ICMP request or error, any
packet of another protocol) ``orient`` is ``"start"``; otherwise it is null and the
normalizer orients by port. Bad records are counted in the diagnostics with the
byte offset of the packet data and never stop the read; non-IP packets (ARP, STP...)
are counted as ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowhawk import netaddr, schema
from flowhawk.errors import ConfigError, InputError
from flowhawk.sources.base import ReadContext, open_maybe_compressed

if TYPE_CHECKING:
    from flowhawk.sources.pcap.capfile import Records
    from flowhawk.sources.pcap.meter import FlowMeter

# The kernel modules (capfile, decode, meter) import numba, which costs ~0.4 s: they
# are imported where a capture is actually read, so that format detection, which
# imports every source, stays cheap.

#: Bytes of capture held at once when reading a file. Small on purpose: the window just
#: read is still in the CPU caches when it is scanned and decoded (64 MiB was 30 % slower).
DEFAULT_WINDOW = 4 << 20
#: Records scanned, decoded and metered per kernel call.
SCAN_BATCH = 1 << 16
#: Bytes needed to recognise a capture.
HEAD_BYTES = 24

#: Option name -> default, seconds (FlowMeter's defaults are the same numbers).
TIMEOUT_OPTIONS = {
    "active_timeout": 1800.0,
    "idle_timeout": 60.0,
    "tcp_idle_timeout": 300.0,
    "tcp_close_timeout": 10.0,
}
# The magic numbers capfile.capture_kind accepts, for a numba-free sniff.
_PCAP_MAGICS = (
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x34\xcd\xb2\xa1",
    b"\xa1\xb2\xcd\x34",
)
_PCAPNG_BOMS = (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a")


def sniff_kind(head: bytes) -> str | None:
    """``"pcap"`` or ``"pcapng"`` from the first bytes of a capture, else None."""
    if len(head) >= HEAD_BYTES and head[:4] in _PCAP_MAGICS:
        return "pcap"
    if len(head) >= 12 and head[:4] == b"\x0a\x0d\x0d\x0a" and head[8:12] in _PCAPNG_BOMS:
        return "pcapng"
    return None


def meter_from_options(options: dict[str, Any]) -> FlowMeter:
    """A flow meter with the timeouts named in ``options`` (seconds), defaults elsewhere."""
    values: dict[str, float] = {}
    for key, default in TIMEOUT_OPTIONS.items():
        raw = options.get(key, default)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"pcap option {key} must be seconds, got {raw!r}") from None
        if not value > 0:
            raise ConfigError(f"pcap option {key} must be positive, got {raw!r}")
        values[key] = value
    from flowhawk.sources.pcap.meter import FlowMeter

    return FlowMeter(**values)


class CaptureMeter:
    """Meters one capture byte stream, fed in pieces, into raw flow tables."""

    def __init__(
        self,
        input_name: str,
        ctx: ReadContext,
        head: bytes,
        window: int = DEFAULT_WINDOW,
        meter: FlowMeter | None = None,
    ):
        from flowhawk.sources.pcap.capfile import RecordScanner

        if sniff_kind(head) is None:
            raise InputError(input_name, "not a pcap or pcapng capture (unknown magic number)")
        self.input = input_name
        self.ctx = ctx
        self.scanner = RecordScanner(head)
        self.meter = meter if meter is not None else meter_from_options(ctx.options)
        self.buf = np.empty(max(window, 4096), dtype=np.uint8)
        self.base = 0  # file offset of buf[0]
        self.filled = 0
        self.pos = 0  # next record to scan, relative to buf
        self.skip_bytes = self.scanner.start  # the pcap file header
        self.corrupt = False
        self._rows: list[np.ndarray] = []
        self._pending = 0
        self._next_id = 0
        self.stats = ctx.diagnostics.stats(input_name)

    def space(self) -> memoryview:
        """Where to put the next bytes of the stream (slides or grows the window)."""
        size = len(self.buf)
        if self.pos and (self.filled == size or self.pos >= size // 2):
            keep = self.filled - self.pos  # the start of an incomplete record
            self.buf[:keep] = self.buf[self.pos : self.filled]
            self.base += self.pos
            self.filled, self.pos = keep, 0
        if self.filled == size:  # one record larger than the window
            self.buf = np.concatenate([self.buf, np.empty_like(self.buf)])
        return memoryview(self.buf)[self.filled :]

    def commit(self, nbytes: int) -> None:
        """Account ``nbytes`` written into :meth:`space` and meter the records now complete."""
        from flowhawk.sources.pcap.capfile import SCAN_CORRUPT, SCAN_FULL

        self.filled += nbytes
        if self.skip_bytes:
            step = min(self.skip_bytes, self.filled - self.pos)
            self.pos += step
            self.skip_bytes -= step
        while not self.corrupt:
            recs, self.pos, code = self.scanner.scan(self.buf, self.pos, self.filled, SCAN_BATCH)
            if len(recs.offset):
                self._meter(recs)
            if code == SCAN_CORRUPT:
                self.corrupt = True
                self.ctx.diagnostics.skip(
                    self.input,
                    f"offset {self.base + self.pos}",
                    "corrupt capture record",
                    "invalid record or block header; the rest of the capture is not read",
                )
            if code != SCAN_FULL:
                break

    def advance(self, ts_us: int) -> None:
        """Move the meter clock without packets (live capture on a quiet link)."""
        self._add_rows(self.meter.advance(ts_us))

    def finish(self) -> None:
        """End of stream: report a cut-short last record, emit every remaining flow."""
        if not self.corrupt and self.filled > self.pos:
            self.ctx.diagnostics.skip(
                self.input,
                f"offset {self.base + self.pos}",
                "truncated record",
                f"the capture ends {self.filled - self.pos} bytes into a record",
            )
        self._add_rows(self.meter.flush())

    def _meter(self, recs: Records) -> None:
        from flowhawk.sources.pcap.decode import SKIP_REASONS, ST_NOT_IP, ST_OK, decode

        packets = decode(self.buf, recs)
        counts = np.bincount(packets.status, minlength=8)
        diag = self.ctx.diagnostics
        self.stats.packets += int(counts[ST_OK])
        if counts[ST_NOT_IP]:
            diag.ignore(self.input, "non-IP packet", int(counts[ST_NOT_IP]))
        for status, reason in SKIP_REASONS.items():
            if counts[status]:
                first = int(np.flatnonzero(packets.status == status)[0])
                diag.skip(
                    self.input,
                    f"offset {self.base + int(recs.offset[first])}",
                    reason,
                    f"link type {int(recs.linktype[first])}, {int(recs.caplen[first])} bytes "
                    f"captured",
                    count=int(counts[status]),
                )
        self._add_rows(self.meter.add(packets))

    def _add_rows(self, rows: np.ndarray) -> None:
        if len(rows):
            self._rows.append(rows)
            self._pending += len(rows)

    def tables(self, force: bool = False) -> Iterator[pa.Table]:
        """Tables of the flows ended so far, once ``ctx.batch_rows`` are pending (or ``force``)."""
        target = max(1, self.ctx.batch_rows)
        if self._pending == 0 or (self._pending < target and not force):
            return
        rows = np.concatenate(self._rows) if len(self._rows) > 1 else self._rows[0]
        self._rows, self._pending = [], 0
        for start in range(0, len(rows), target):
            part = rows[start : start + target]
            table = flows_table(part, self.input, self._next_id)
            self._next_id += len(part)
            yield table


class FlowColumns(NamedTuple):
    """Emitted flows as columns, ``src`` being the endpoint that sent the first packet."""

    ts_start: np.ndarray  # int64 µs
    ts_end: np.ndarray
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    src_port: np.ndarray  # int32
    dst_port: np.ndarray
    proto: np.ndarray  # int16
    src_pkts: np.ndarray  # int64
    src_bytes: np.ndarray
    dst_pkts: np.ndarray
    dst_bytes: np.ndarray
    src_tcp_flags: np.ndarray  # int16
    dst_tcp_flags: np.ndarray
    vlan: np.ndarray  # int32, -1 = untagged
    src_mac: np.ndarray  # uint64, NO_MAC = unknown
    dst_mac: np.ndarray
    started: np.ndarray  # bool: the first packet started the conversation
    end_reason: np.ndarray  # int8 END_*


def oriented(rows: np.ndarray) -> FlowColumns:
    """Columns of the flow rows a FlowMeter emitted, oriented first sender -> other side."""
    from flowhawk.sources.pcap.meter import (
        END_SHIFT,
        F_AHI,
        F_ALO,
        F_BHI,
        F_BLO,
        F_BYTES0,
        F_BYTES1,
        F_FIRST,
        F_KEY,
        F_LAST,
        F_MAC0,
        F_MAC1,
        F_PKTS0,
        F_PKTS1,
        F_STATE,
        S_FIRST_B,
        S_STARTED,
    )

    st = rows[:, F_STATE]
    key = rows[:, F_KEY]
    b_first = (st & S_FIRST_B) != 0

    def pick(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.where(b_first, b, a), np.where(b_first, a, b)

    proto = ((key >> 32) & 0xFF).astype(np.int16)
    src_hi, dst_hi = pick(rows[:, F_AHI], rows[:, F_BHI])
    src_lo, dst_lo = pick(rows[:, F_ALO], rows[:, F_BLO])
    src_port, dst_port = pick(key & 0xFFFF, (key >> 16) & 0xFFFF)
    icmp = (proto == 1) | (proto == 58)  # type/code is not an endpoint's: always dst_port
    src_port = np.where(icmp, 0, src_port)
    dst_port = np.where(icmp, (key >> 16) & 0xFFFF, dst_port)
    src_pkts, dst_pkts = pick(rows[:, F_PKTS0], rows[:, F_PKTS1])
    src_bytes, dst_bytes = pick(rows[:, F_BYTES0], rows[:, F_BYTES1])
    src_flags, dst_flags = pick(st & 0xFF, (st >> 8) & 0xFF)
    src_mac, dst_mac = pick(rows[:, F_MAC0], rows[:, F_MAC1])
    return FlowColumns(
        rows[:, F_FIRST].copy(),
        rows[:, F_LAST].copy(),
        src_hi.view(np.uint64),
        src_lo.view(np.uint64),
        dst_hi.view(np.uint64),
        dst_lo.view(np.uint64),
        src_port.astype(np.int32),
        dst_port.astype(np.int32),
        proto,
        src_pkts,
        src_bytes,
        dst_pkts,
        dst_bytes,
        src_flags.astype(np.int16),
        dst_flags.astype(np.int16),
        (((key >> 40) & 0x1FFF) - 1).astype(np.int32),
        src_mac.view(np.uint64),
        dst_mac.view(np.uint64),
        (st & S_STARTED) != 0,
        ((st >> END_SHIFT) & 7).astype(np.int8),
    )


def flows_table(rows: np.ndarray, input_name: str, first_id: int) -> pa.Table:
    """Raw flow table of emitted meter rows; ``flow_id`` counts from ``first_id``."""
    c = oriented(rows)
    n = len(rows)
    tcp = c.proto == 6
    started = pa.array(c.started)
    cols = {
        "ts_start": pa.array(c.ts_start, type=schema.TS),
        "ts_end": pa.array(c.ts_end, type=schema.TS),
        "src_ip": netaddr.format(c.src_hi, c.src_lo).to_arrow(),
        "dst_ip": netaddr.format(c.dst_hi, c.dst_lo).to_arrow(),
        "src_port": c.src_port,
        "dst_port": c.dst_port,
        "proto": c.proto,
        "src_pkts": c.src_pkts,
        "src_bytes": c.src_bytes,
        "dst_pkts": c.dst_pkts,
        "dst_bytes": c.dst_bytes,
        "src_tcp_flags": pa.array(c.src_tcp_flags, mask=~tcp),
        "dst_tcp_flags": pa.array(c.dst_tcp_flags, mask=~tcp),
        "vlan": pa.array(c.vlan, mask=c.vlan < 0),
        "src_mac": _macs(c.src_mac),
        "dst_mac": _macs(c.dst_mac),
        "orient": pc.if_else(started, pa.scalar(schema.ORIENT_START), pa.scalar(None, pa.string())),
        "uni": np.zeros(n, dtype=bool),
        "sampling": np.ones(n, dtype=np.int32),
        "input": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [input_name]),
        "flow_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)).cast(pa.string()),
    }
    # addresses were formatted from numbers by netaddr: the normalizer need not re-parse
    return schema.conform(pa.table(cols)).replace_schema_metadata(
        {schema.CANONICAL_ADDRESSES: b"1"}
    )


def _macs(values: np.ndarray) -> pa.Array:
    """``aa:bb:cc:dd:ee:ff`` strings, null where unknown (formatted once per distinct MAC)."""
    uniq, inverse = np.unique(values, return_inverse=True)
    no_mac = (1 << 64) - 1
    texts = [
        None if v == no_mac else ":".join(f"{int(v):012x}"[i : i + 2] for i in range(0, 12, 2))
        for v in uniq.tolist()
    ]
    return pa.array(texts, type=pa.string()).take(pa.array(inverse.astype(np.int64)))


def read_capture(
    path: Path, ctx: ReadContext, fmt: str, window: int = DEFAULT_WINDOW
) -> Iterator[pa.Table]:
    """Meter the capture at ``path`` (plain or gzip/bzip2/xz) into raw flow tables."""
    name = str(path)
    ctx.diagnostics.stats(name).format = fmt
    try:
        fh = open_maybe_compressed(path)
    except OSError as exc:
        raise InputError(name, f"cannot open: {exc.strerror or exc}") from None
    with fh:
        try:
            head = fh.read(HEAD_BYTES)
        except (OSError, EOFError) as exc:
            raise InputError(name, f"cannot read: {exc}") from None
        stream = CaptureMeter(name, ctx, head, window)
        space = stream.space()
        space[: len(head)] = head
        stream.commit(len(head))
        while not stream.corrupt:
            try:
                nbytes = fh.readinto(stream.space())
            except (OSError, EOFError) as exc:  # e.g. a cut-short gzip stream
                ctx.diagnostics.skip(
                    name, f"offset {stream.base + stream.filled}", "unreadable data", str(exc)
                )
                break
            if not nbytes:
                break
            stream.commit(nbytes)
            yield from stream.tables()
        stream.finish()
        yield from stream.tables(force=True)


class PcapSource:
    """Classic pcap files (tcpdump, libpcap), metered into bidirectional flows."""

    name: ClassVar[str] = "pcap"
    description: ClassVar[str] = "pcap capture (tcpdump/libpcap), metered into biflows"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        return 100 if sniff_kind(head) == "pcap" else 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        return read_capture(path, ctx, self.name)


class PcapngSource:
    """pcapng files (Wireshark, dumpcap), metered into bidirectional flows."""

    name: ClassVar[str] = "pcapng"
    description: ClassVar[str] = "pcapng capture (Wireshark/dumpcap), metered into biflows"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        return 100 if sniff_kind(head) == "pcapng" else 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        return read_capture(path, ctx, self.name)
