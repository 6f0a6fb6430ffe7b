"""Replaying flows as export datagrams: the built-in exporter behind ``flowhawk replay``.

Three parts, usable separately (tests and benchmarks use them to load a collector):

- :class:`ExportStream` is one exporter's state across tables (sequence numbers,
  template schedule, sysUptime origin) around the pure encoders of
  :mod:`flowhawk.collect.encode`;
- :class:`UdpSender` owns the socket (start / send / stop), IPv4 or IPv6;
- :class:`Replayer` encodes tables with a stream and sends the datagrams, paced by a
  token bucket in input flows per second.

:func:`replay` ties them to the inputs: any file flowhawk reads goes through the
same sources and :class:`~flowhawk.normalize.Normalizer` as ``analyze``, flows are
sent in order of their end within chunks (an exporter sends a flow once it ended),
and records carry the flows' own times (see the encoders for the header times).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from flowhawk.collect.encode.common import U32, Encoded, empty
from flowhawk.collect.encode.ipfix import encode_ipfix
from flowhawk.collect.encode.netflow5 import encode_netflow5
from flowhawk.collect.encode.netflow9 import encode_netflow9
from flowhawk.collect.encode.sflow import SflowState, encode_sflow
from flowhawk.config import Config
from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import FlowhawkError, InputError
from flowhawk.normalize import Normalizer
from flowhawk.pipeline import NothingReadable, read_inputs

#: Protocol names on the command line.
PROTOCOLS = ("v5", "v9", "ipfix", "sflow")
#: sysUptime origin: this long before the first flow, so later tables that start a
#: little earlier (long flows, a second input) still fit; a table that does not fit
#: "reboots" the exporter.
BOOT_LEAD_US = 3600 * 1_000_000
_UPTIME_SPAN_US = (U32 - 1) * 1000
CHUNK_ROWS = 8192


class ReplayError(FlowhawkError):
    """Replay cannot start: bad collector address, protocol or option."""

    exit_code = 2


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port); raises :class:`ReplayError`."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ReplayError(f"collector {text!r}: write an IPv6 address in brackets, e.g. [::1]:2055")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReplayError(
            f"collector {text!r} is not HOST:PORT (port 1-65535), e.g. 127.0.0.1:2055"
        )
    return host, int(port)


@dataclass
class ExportSettings:
    """What kind of exporter to be."""

    protocol: Literal["v5", "v9", "ipfix", "sflow"] = "ipfix"
    source_id: int = 0  # v5 engine id, v9 source id, IPFIX observation domain, sFlow sub-agent
    max_datagram: int = 1400  # bytes of export payload per UDP datagram
    template_every: int = 20  # v9 / IPFIX: template in every N-th datagram
    sampling: int = 1  # sFlow: 1 in N packets
    sflow_mode: Literal["ceil", "binomial"] = "ceil"
    agent: str = "127.0.0.1"  # sFlow agent address
    biflow: bool = False  # IPFIX: RFC 5103 biflow records
    time_precision: Literal["ms", "us", "ns"] = "ms"  # IPFIX time elements (152/154/156)
    seed: int = 0

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ReplayError(
                f"unknown protocol {self.protocol!r}; use one of {', '.join(PROTOCOLS)}"
            )
        limit = 255 if self.protocol == "v5" else U32 - 1
        if not 0 <= self.source_id <= limit:
            raise ReplayError(f"source id for {self.protocol} is 0 to {limit}")
        if self.sampling < 1:
            raise ReplayError("sampling is 1 in N packets, N >= 1")
        if self.sampling != 1 and self.protocol != "sflow":
            raise ReplayError("sampling applies to sFlow only (flow records are not sampled)")
        if self.biflow and self.protocol != "ipfix":
            raise ReplayError("biflow records exist in IPFIX only")
        if self.time_precision not in ("ms", "us", "ns"):
            raise ReplayError("IPFIX timestamps are ms, us or ns")
        if self.time_precision != "ms" and self.protocol != "ipfix":
            raise ReplayError("the timestamp precision is an IPFIX choice")
        if self.max_datagram < 200:
            raise ReplayError("max datagram size is at least 200 bytes")
        try:
            ipaddress.ip_address(self.agent)
        except ValueError:
            raise ReplayError(f"sFlow agent {self.agent!r} is not an IP address") from None


class ExportStream:
    """One exporter's state across tables, around the pure encoders."""

    def __init__(self, settings: ExportSettings):
        settings.check()
        self.settings = settings
        self.sequence = 0
        self.messages = 0
        self.boot_us: int | None = None
        self.reboots = 0
        self.sflow = SflowState()

    def _boot(self, flows: pa.Table) -> int:
        lo, hi = _extreme(flows, "ts_start", pc.min), _extreme(flows, "ts_end", pc.max)
        if self.boot_us is None or lo < self.boot_us or hi - self.boot_us >= _UPTIME_SPAN_US:
            if self.boot_us is not None:
                self.reboots += 1
            self.boot_us = max(0, (lo - BOOT_LEAD_US) // 1_000_000 * 1_000_000)
        return self.boot_us

    def encode(self, flows: pa.Table) -> Encoded:
        """Datagrams for ``flows``, continuing this exporter's sequence numbers."""
        if flows.num_rows == 0:
            return empty(self.sequence)
        s = self.settings
        if s.protocol == "v5":
            enc = encode_netflow5(
                flows, sequence=self.sequence, boot_us=self._boot(flows), engine_id=s.source_id
            )
        elif s.protocol == "v9":
            enc = encode_netflow9(
                flows,
                sequence=self.sequence,
                source_id=s.source_id,
                boot_us=self._boot(flows),
                max_datagram=s.max_datagram,
                template_every=s.template_every,
                messages_sent=self.messages,
            )
        elif s.protocol == "ipfix":
            enc = encode_ipfix(
                flows,
                sequence=self.sequence,
                domain=s.source_id,
                max_datagram=s.max_datagram,
                template_every=s.template_every,
                messages_sent=self.messages,
                time_precision=s.time_precision,
                biflow=s.biflow,
            )
        else:
            enc = encode_sflow(
                flows,
                rate=s.sampling,
                sequence=self.sequence,
                agent=s.agent,
                sub_agent=s.source_id,
                boot_us=self._boot(flows),
                state=self.sflow,
                max_datagram=s.max_datagram,
                mode=s.sflow_mode,
                seed=s.seed,
            )
            self.sflow = SflowState(**enc.extra)
        self.sequence = enc.next_sequence
        self.messages += len(enc.datagrams)
        return enc


class UdpSender:
    """A UDP socket to one collector; ``start`` resolves and opens, ``stop`` closes."""

    def __init__(self, target: str, send_buffer: int = 4 << 20):
        self.host, self.port = parse_target(target)
        self.send_buffer = send_buffer
        self._sock: socket.socket | None = None
        self.address: tuple = ()

    def start(self) -> UdpSender:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ReplayError(f"collector {self.host!r}: cannot resolve ({exc.strerror})") from None
        family, _, _, _, address = infos[0]
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        self.address = address
        return self

    def send(self, datagram: bytes) -> None:
        assert self._sock is not None, "UdpSender.start() first"
        self._sock.sendto(datagram, self.address)

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> UdpSender:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TokenBucket:
    """Paces work to ``rate`` units per second; ``burst`` units of credit at most."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ReplayError("the rate is a positive number of flows per second")
        self.rate = rate
        self.burst = burst if burst is not None else max(rate * 0.05, 32.0)
        self.clock, self.sleep = clock, sleep
        self.tokens = 0.0
        self.last = clock()

    def take(self, amount: float) -> None:
        """Spend ``amount``; sleep while in debt by more than a millisecond's worth."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate) - amount
        self.last = now
        if self.tokens < 0 and -self.tokens / self.rate > 0.001:
            self.sleep(-self.tokens / self.rate)


@dataclass
class ReplayStats:
    flows: int = 0  # input flows encoded
    records: int = 0  # flow records (sFlow: flow samples) sent
    datagrams: int = 0
    bytes: int = 0  # export payload bytes (UDP payload)
    skipped: int = 0  # flows the protocol cannot carry (IPv6 in v5)
    rounds: int = 0
    elapsed: float = 0.0  # seconds from the first table handed over (encoding included)
    wall: float = 0.0  # seconds of the whole replay, reading inputs included

    @property
    def flow_rate(self) -> float:
        return self.flows / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def datagram_rate(self) -> float:
        return self.datagrams / self.elapsed if self.elapsed > 0 else 0.0


class Replayer:
    """Encodes flow tables with ``stream`` and hands the datagrams to ``send``, paced."""

    def __init__(
        self,
        stream: ExportStream,
        send: Callable[[bytes], object],
        rate: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.stream = stream
        self._send = send
        self.bucket = TokenBucket(rate, clock=clock, sleep=sleep) if rate else None
        self.clock = clock
        self.stats = ReplayStats()
        self._t0: float | None = None

    def send(self, flows: pa.Table) -> Encoded:
        """Encode and send ``flows`` (canonical or raw); returns what was encoded."""
        if self._t0 is None:
            self._t0 = self.clock()
        enc = self.stream.encode(flows)
        if self.bucket is not None and self.stats.datagrams == 0:
            self.bucket.last = self.clock()  # no credit for the time spent encoding
        for datagram, weight in zip(enc.datagrams, enc.weights, strict=True):
            if self.bucket is not None:
                self.bucket.take(float(weight))
            self._send(datagram)
            self.stats.bytes += len(datagram)
        st = self.stats
        st.flows += flows.num_rows - enc.skipped
        st.records += enc.records
        st.datagrams += len(enc.datagrams)
        st.skipped += enc.skipped
        st.elapsed = self.clock() - self._t0
        return enc


def read_flows(
    paths: Iterable[Path],
    cfg: Config,
    diag: Diagnostics,
    fmt: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pa.Table]:
    """Canonical flows of the inputs, in chunks of at least ``chunk_rows`` (an input's
    last chunk may be smaller), each sorted by flow end."""
    normalizer = Normalizer(cfg, diag)
    for name, batches in read_inputs(paths, cfg, diag, fmt):
        pending: list[pa.Table] = []
        rows = 0
        try:
            for table in batches:
                diag.stats(name).records += table.num_rows
                flows = normalizer.process(table)
                if flows.num_rows:
                    pending.append(flows)
                    rows += flows.num_rows
                if rows >= chunk_rows:
                    yield _by_end(pending)
                    pending, rows = [], 0
        except FlowhawkError as exc:
            diag.fail(name, exc.message if isinstance(exc, InputError) else str(exc))
        stitched, _ = normalizer.end_input(name)
        if stitched.num_rows:
            pending.append(stitched)
        if pending:
            yield _by_end(pending)


def _by_end(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table, [("ts_end", "ascending"), ("ts_start", "ascending")]))


def shift_times(flows: pa.Table, offset_us: int) -> pa.Table:
    """``flows`` with ts_start and ts_end moved by ``offset_us`` microseconds."""
    if offset_us == 0:
        return flows
    delta = pa.scalar(timedelta(microseconds=offset_us), pa.duration("us"))
    for name in ("ts_start", "ts_end"):
        i = flows.schema.get_field_index(name)
        col = flows.column(name)
        flows = flows.set_column(i, flows.schema.field(i), pc.add(col, delta).cast(col.type))
    return flows


@dataclass
class ReplayResult:
    stats: ReplayStats
    diagnostics: Diagnostics
    settings: ExportSettings
    target: str
    reboots: int = 0
    interrupted: bool = False
    shifts: list[int] = field(default_factory=list)  # time offset (us) of each round


def replay(
    paths: list[Path],
    target: str,
    settings: ExportSettings,
    cfg: Config,
    *,
    fmt: str | None = None,
    rate: float | None = None,
    loop: bool = False,
    now: bool = False,
    sender: Callable[[bytes], object] | None = None,
    on_chunk: Callable[[ReplayStats], None] | None = None,
) -> ReplayResult:
    """Send the flows of ``paths`` to ``target`` (``HOST:PORT``) as ``settings.protocol``.

    ``now`` moves the flows' times so the first one starts at the moment replay
    starts; ``loop`` repeats the inputs until interrupted (Ctrl-C), each round later
    than the previous by the inputs' time span (rounded up to the second, plus one),
    so a collector sees time go on. ``sender`` replaces the UDP socket (tests).
    Raises :class:`NothingReadable` when the inputs hold no flow.
    """
    began = time.perf_counter()
    stream = ExportStream(settings)
    udp = None if sender is not None else UdpSender(target).start()
    send = sender if sender is not None else udp.send  # type: ignore[union-attr]
    diag = Diagnostics()
    replayer = Replayer(stream, send, rate)
    result = ReplayResult(replayer.stats, diag, settings, target)
    offset: int | None = 0 if not now else None
    period = 0
    try:
        while True:
            lo, hi = None, None
            for flows in read_flows(paths, cfg, diag, fmt):
                start = _extreme(flows, "ts_start", pc.min)
                if offset is None:  # --now: first flow starts now
                    offset = int(time.time() * 1_000_000) - start
                lo = start if lo is None else min(lo, start)
                end = _extreme(flows, "ts_end", pc.max)
                hi = end if hi is None else max(hi, end)
                replayer.send(shift_times(flows, offset + period * replayer.stats.rounds))
                if on_chunk is not None:
                    on_chunk(replayer.stats)
            if lo is None or hi is None:
                if replayer.stats.rounds == 0:
                    raise NothingReadable("no flows could be read from the inputs", diag)
                break
            result.shifts.append((offset or 0) + period * replayer.stats.rounds)
            replayer.stats.rounds += 1
            if not loop:
                break
            if period == 0:
                period = ((hi - lo) // 1_000_000 + 2) * 1_000_000
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if udp is not None:
            udp.stop()
    result.reboots = stream.reboots
    replayer.stats.wall = time.perf_counter() - began
    return result


def _extreme(flows: pa.Table, name: str, fn: Callable) -> int:
    """pc.min / pc.max of a timestamp column, in epoch microseconds."""
    return fn(flows.column(name)).cast(pa.timestamp("us")).cast(pa.int64()).as_py()
