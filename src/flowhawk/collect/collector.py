"""The collector component: receive, decode, normalize, archive; start and stop.

Every ``batch_interval`` the queued datagrams are grouped by exporter and decoded;
bidirectional records (IPFIX biflows) are normalized at once, unidirectional ones
(NetFlow, sFlow samples) are held by the normalizer for stitching. Every
``rollover`` the flows gathered so far (and the held records that can no longer meet
their reverse direction) are written to the Parquet archive, atomically. Every
``checkpoint`` the exporter inventory (templates, options, statistics) is saved;
``stop`` flushes and saves everything, and ``start`` restores the templates, so data
after a restart decodes without waiting for the next template. With ``[collect]
detect`` (the default) every rollover's flows also go to live detection
(:class:`flowhawk.live.LiveDetection`, its own thread), which publishes events to the
data directory's event store as ``analyze`` would. Zeek dns.logs named in ``[collect]
dns_logs`` are followed (:mod:`flowhawk.collect.dnsfollow`): every rollover their new
lines go to the DNS archive (``DATA/dns``) and to live detection with that rollover's
flows (also when there are no flows); the follower's positions are saved after each
rollover that read DNS and at every checkpoint, with the passive DNS they added.

NetFlow and IPFIX records reach the normalizer as numeric columns
(:class:`~flowhawk.normalize.rawcolumns.RawColumns`): addresses stay numbers through
decoding, stitching, orientation and network context, and become text once, for the
canonical flows of a rollover. Rollovers are archived (and handed to live detection) by
an archive thread, in order, while the next datagrams decode: Parquet writing releases
the GIL, so it overlaps on a second core.

The component owns its threads: the receiver's, the archive writer's, and (with
:meth:`run_in_thread`) a processing thread; :meth:`step` can also be driven by hand
(tests).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from flowhawk.archive import ArchiveWriter
from flowhawk.collect.decode.dispatch import ExportDecoder
from flowhawk.collect.dnsfollow import DnsFollower
from flowhawk.collect.inventory import Inventory
from flowhawk.collect.metrics import CollectorMetrics
from flowhawk.collect.receiver import Receiver
from flowhawk.config import Config
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import passive
from flowhawk.dns.store import DnsWriter, dns_root
from flowhawk.memory import reuse_freed_memory
from flowhawk.normalize import Normalizer
from flowhawk.schema import FLOW_SCHEMA

if TYPE_CHECKING:
    from flowhawk.live import LiveDetection

log = logging.getLogger("flowhawk.collect")

#: Datagrams decoded per step at most (bounds the latency of one step).
MAX_BATCH = 20_000
#: Rollovers waiting for the archive writer at most.
WRITES_QUEUED = 2


@dataclass
class CollectorTotals:
    """What a collector did since it started (for summaries and tests)."""

    datagrams: int = 0
    flows_decoded: int = 0
    flows_archived: int = 0
    files: int = 0
    decode_errors: Counter = field(default_factory=Counter)
    kernel_drops: int = 0
    dns_records: int = 0  # DNS transactions read from the followed dns.logs
    dns_bad: int = 0  # their lines that could not be used


class _Writer:
    """One thread that archives rollovers in order while the next ones are decoded.

    Writing Parquet (and fsync) releases the GIL, so on a second core it overlaps the
    decoding and stitching of the next rollover. At most :data:`WRITES_QUEUED` rollovers
    wait: beyond that :meth:`put` blocks the processing thread, which then reads no more
    datagrams (the receive queue and the kernel buffer take the excess, drops counted).
    A failed write is raised again in the processing thread at the next :meth:`put` or
    at :meth:`close`, as it was raised when writing was done there.
    """

    def __init__(self, write: Callable[[pa.Table | None, pa.Table | None], None]):
        self._write = write
        self._jobs: queue.Queue = queue.Queue(WRITES_QUEUED)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def put(self, table: pa.Table | None, dns: pa.Table | None) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="flowhawk-archive", daemon=True)
            self._thread.start()
        self._jobs.put((table, dns))

    def close(self) -> None:
        """Wait until every rollover handed over is written."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is not None:
                continue  # not written after a failure; the failure is raised
            try:
                self._write(*job)
            except BaseException as exc:  # raised in the processing thread
                log.exception("archiving a rollover failed")
                self._error = exc


class Collector:
    """Receives exports and archives canonical flows under ``<data>/flows``."""

    def __init__(
        self,
        cfg: Config,
        data_dir: Path,
        on_events: Callable[[pl.DataFrame], None] | None = None,
        intel: Sequence[str | Path] = (),
    ):
        self.cfg = cfg
        self.data_dir = data_dir
        reuse_freed_memory()  # every batch makes and drops arrays of the same sizes
        s = cfg.collect
        self.receiver = Receiver(s.listen, s.socket_buffer, s.queue_limit)
        self.decoder = ExportDecoder()
        self.inventory = Inventory.load(data_dir)
        self.diagnostics = Diagnostics()
        self.normalizer = Normalizer(cfg, self.diagnostics)
        run_id = (
            "collect-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        )
        self.archive = ArchiveWriter(data_dir / "flows", run_id, cfg.archive.compression)
        self.dns: DnsFollower | None = None  # the followed Zeek dns.logs
        self.dns_archive = DnsWriter(dns_root(data_dir), run_id, cfg.archive.compression)
        self._pdns: list[pl.DataFrame] = []  # passive DNS read since the last checkpoint
        if s.dns_logs:
            self.dns = DnsFollower.open(s.dns_logs, data_dir, self.diagnostics)
            pdns_file = data_dir / passive.PDNS_FILE
            if cfg.context.passive_dns and not pdns_file.exists():
                passive.PassiveDns().save(pdns_file)  # live detection then grows it in memory
        self.detection: LiveDetection | None = None
        if s.detect:
            from flowhawk.live import LiveDetection

            self.detection = LiveDetection(
                cfg,
                data_dir,
                run_id,
                listener=on_events,
                intel=intel,
                max_queued_flows=cfg.collect.max_queued_flows,
            )
        self.metrics = CollectorMetrics()
        self.totals = CollectorTotals()
        self._ready: list[pa.Table] = []  # canonical flows waiting for the next rollover
        self._seen_inputs: set[str] = set()  # inputs that sent records since the last rollover
        self._last_rollover = self._last_checkpoint = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer = _Writer(self._write)
        self.metrics_address: tuple[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Bind the sockets, start receiving (and serving metrics, if configured)."""
        self.receiver.start()
        if self.detection is not None:
            self.detection.start()
        if self.cfg.collect.metrics:
            self.metrics_address = self.metrics.serve(self.cfg.collect.metrics)
        self.metrics.exporters.set(len(self.inventory.states))

    def run_in_thread(self) -> None:
        """Process in a background thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self.run, name="flowhawk-collector", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Process until :meth:`stop` is called (from another thread or a signal handler)."""
        interval = self.cfg.collect.batch_interval
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.step()
            self._stop.wait(max(0.0, interval - (time.monotonic() - t0)))

    def stop(self) -> None:
        """Stop receiving, decode what is queued, archive everything, save the inventory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.receiver.stop()
        while self.receiver.queue:
            self.step(allow_rollover=False)
        self._count_kernel_drops()
        for name in self.normalizer.held_inputs():
            flows, _ = self.normalizer.end_input(name, lineage=False)
            self._ready.append(flows)
        self.rollover()
        self._writer.close()  # everything archived (and handed to detection)
        self.checkpoint()
        if self.dns is not None:
            self.dns.close()
        if self.detection is not None:
            self.detection.stop()
        self.metrics.close()

    def ports(self) -> list[tuple[str, int]]:
        return self.receiver.ports()

    # -- processing --------------------------------------------------------------------

    def step(self, allow_rollover: bool = True) -> int:
        """Decode what is queued; roll over and checkpoint when due. Returns datagrams done."""
        batch = self.receiver.drain(MAX_BATCH)
        self.metrics.queue.set(len(self.receiver.queue))
        if batch:
            self._decode(batch)
        now = time.monotonic()
        if allow_rollover and now - self._last_rollover >= self.cfg.collect.rollover:
            self._count_kernel_drops()
            self._release_held()
            self.rollover()
        if now - self._last_checkpoint >= self.cfg.collect.checkpoint:
            self.checkpoint()
        return len(batch)

    def _decode(self, batch: list[tuple[bytes, str, int]]) -> None:
        by_exporter: dict[str, tuple[list[bytes], list[int]]] = defaultdict(lambda: ([], []))
        nbytes = 0
        for data, exporter, t in batch:
            group = by_exporter[exporter]
            group[0].append(data)
            group[1].append(t)
            nbytes += len(data)
        self.totals.datagrams += len(batch)
        self.metrics.bytes.inc(nbytes)
        pending = 0
        for exporter, (datagrams, times) in by_exporter.items():
            state = self.inventory.state(exporter)
            lost_before = sum(d.lost for d in state.domains.values())
            result = self.decoder.decode(datagrams, times, state)
            for proto, n in result.datagrams.items():
                self.metrics.datagrams.labels(proto).inc(n)
            self.metrics.sequence_lost.inc(
                sum(d.lost for d in state.domains.values()) - lost_before
            )
            pending += result.pending
            for reason, n in result.errors.items():
                self.metrics.decode_errors.labels(reason).inc(n)
            for reason, n in result.ignored.items():
                self.metrics.ignored.labels(reason).inc(n)
            self.totals.decode_errors.update(result.errors)
            for rec in result.records:  # numeric columns: normalized without text
                self.totals.flows_decoded += len(rec)
                self.metrics.flows.labels(rec.input.split(":", 1)[0]).inc(len(rec))
                self._seen_inputs.add(rec.input)
                canonical = self.normalizer.process(rec)
                if canonical.num_rows:
                    self._ready.append(canonical)
            if not result.records and result.num_flows:
                flows = result.flows
                self._count_flows(flows)
                self._seen_inputs.update(pc.unique(flows.column("input")).to_pylist())
                canonical = self.normalizer.process(flows)
                if canonical.num_rows:
                    self._ready.append(canonical)
        self.metrics.pending.set(pending)
        self.metrics.held.set(self.normalizer.held())
        self.metrics.exporters.set(len(self.inventory.states))

    def _count_flows(self, flows: pa.Table) -> None:
        self.totals.flows_decoded += flows.num_rows
        protocols = pc.value_counts(
            pc.utf8_slice_codeunits(flows.column("input"), 0, 8)  # "netflow9", "ipfix://"...
        )
        for item in protocols.to_pylist():
            self.metrics.flows.labels(item["values"].split(":", 1)[0]).inc(item["counts"])

    def _release_held(self) -> None:
        """Stitch held records that can no longer meet their other direction.

        Per input, records that ended ``stitch_gap`` before the input's newest record
        are released; an input that sent nothing since the last rollover is released
        entirely (its exporter went quiet).
        """
        for name in self.normalizer.held_inputs():
            if name not in self._seen_inputs:
                flows, _ = self.normalizer.end_input(name, lineage=False)
                self._ready.append(flows)
        self._ready.append(self.normalizer.release())
        self._seen_inputs.clear()

    def rollover(self) -> None:
        """Hand the flows gathered since the last rollover to the archive writer."""
        self._last_rollover = time.monotonic()
        ready = [t for t in self._ready if t.num_rows]
        self._ready = []
        dns = self._follow_dns()
        if not ready and (dns is None or self.detection is None):
            return
        table = pa.concat_tables(ready) if ready else None
        self._writer.put(table, dns)

    def _write(self, table: pa.Table | None, dns: pa.Table | None) -> None:
        """Archive a rollover's flows, then hand them to live detection (writer thread)."""
        if table is None:
            if self.detection is not None:
                self.detection.submit(FLOW_SCHEMA.empty_table(), dns)
            return
        files_before = sum(len(v) for v in self.archive.files.values())
        self.archive.write(table)
        if self.detection is not None:
            self.detection.submit(table, dns)
        files = sum(len(v) for v in self.archive.files.values()) - files_before
        self.archive.files.clear()  # a long-running writer must not remember every file
        self.totals.flows_archived += table.num_rows
        self.totals.files += files
        self.metrics.archived.inc(table.num_rows)
        self.metrics.files.inc(files)

    def _follow_dns(self) -> pa.Table | None:
        """New DNS of the followed dns.logs, archived (None: nothing new); never raises."""
        if self.dns is None:
            return None
        try:
            table = self.dns.poll()
        except Exception:  # following DNS must not stop collection
            log.exception("following the dns.logs failed; retrying at the next rollover")
            return None
        t = self.dns.totals
        for outcome, now, before in (
            ("read", t.read, self.totals.dns_records),
            ("bad", t.bad, self.totals.dns_bad),
        ):
            if now > before:
                self.metrics.dns_records.labels(outcome).inc(now - before)
        self.totals.dns_records, self.totals.dns_bad = t.read, t.bad
        if table is None:
            return None
        try:
            self.dns_archive.write(table)
            self.dns_archive.files.clear()
            if self.cfg.context.passive_dns:
                self._pdns.append(passive.build(table))
            self.dns.save(self.data_dir)  # archived: read on from here after a restart
        except OSError:
            log.exception("archiving DNS from the dns.logs failed")
        return table

    def checkpoint(self) -> None:
        self._last_checkpoint = time.monotonic()
        self.inventory.save(self.data_dir)
        if self.dns is not None:
            try:
                if self._pdns:
                    pdns = passive.PassiveDns(passive.merge(*self._pdns))
                    pdns.save(self.data_dir / passive.PDNS_FILE)
                    self._pdns = []
                self.dns.save(self.data_dir)
            except OSError:
                log.exception("saving passive DNS or the dns.log positions failed")

    def _count_kernel_drops(self) -> None:
        drops = self.receiver.read_kernel_drops()
        if drops:
            self.totals.kernel_drops += drops
            self.metrics.dropped.labels("socket").inc(drops)
            log.warning("the kernel dropped %d export datagrams: receive buffer full", drops)
