"""The batch pipeline behind ``flowhawk analyze`` and ``flowhawk learn``.

sources -> normalize -> archive -> detectors (event time, hour by hour) -> events
-> flow scores -> sinks -> host ranking; then a checkpoint of all state.

Threat intelligence is loaded once per run (:func:`flowhawk.intelstore.for_run`: the
configured feeds and ``intel``, else the data directory's snapshot) and handed to the
detectors.

Inputs are archived first and detection replays the archive in time order, so
inputs that overlap in time (several sensors, logs written at connection close)
are still seen in event-time order, and memory holds one hour of flows at a time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from flowhawk import archive, intelstore
from flowhawk.archive import ArchiveWriter
from flowhawk.behavior.log import LogStore
from flowhawk.config import Config
from flowhawk.context.attach import EventContext
from flowhawk.detectors.base import empty_alarms
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns.store import DnsWriter, dns_root
from flowhawk.engine import DetectionEngine
from flowhawk.errors import FlowhawkError, InputError
from flowhawk.events import build_events
from flowhawk.hosts import rank_hosts
from flowhawk.netaddr import NetworkSet
from flowhawk.normalize import LINEAGE_SCHEMA, Normalizer
from flowhawk.schema import FLOW_SCHEMA
from flowhawk.scoring import score_flows
from flowhawk.sinks import SINKS
from flowhawk.sinks.base import SinkPaths
from flowhawk.sinks.store import load_alarms_and_events
from flowhawk.sources import detect_format, expand_inputs, load_source
from flowhawk.sources.base import ReadContext, read_head
from flowhawk.state import StateStore

if TYPE_CHECKING:
    from flowhawk.intel import IntelSet

#: progress(stage, advance, total): stage names "read", "detect", "score".
ProgressFn = Callable[[str, int, int | None], None]


class NothingReadable(FlowhawkError):
    """No input yielded a single flow."""

    def __init__(self, message: str, diagnostics: Diagnostics):
        super().__init__(message)
        self.diagnostics = diagnostics


@dataclass
class RunResult:
    diagnostics: Diagnostics
    flows: int
    events: pl.DataFrame
    alarms: pl.DataFrame
    hosts: pl.DataFrame
    out_dir: Path
    data_dir: Path
    learning_until: datetime | None
    flows_learned: int = 0
    flows_scored: int = 0
    dns: int = 0  # DNS transactions read (Zeek dns.logs, captures)
    outputs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def source_options(cfg: Config, fmt: str) -> dict[str, Any]:
    if fmt in ("pcap", "pcapng", "interface"):
        return cfg.pcap.model_dump()
    sections = {
        "csv": cfg.input.csv,
        "parquet": cfg.input.parquet,
        "argus": cfg.input.argus,
        "nfdump": cfg.input.nfdump,
        "nfdump-csv": cfg.input.nfdump,
        "nfdump-text": cfg.input.nfdump,
    }
    return sections[fmt].model_dump() if fmt in sections else {}


def _message(exc: FlowhawkError) -> str:
    return exc.message if isinstance(exc, InputError) else str(exc)


def _no_progress(stage: str, advance: int, total: int | None) -> None:
    return None


def is_dns_log(path: Path) -> bool:
    """A Zeek dns.log (TSV or JSON lines), from its first bytes."""
    head = read_head(path)
    if b"#path\tdns" in head:
        return True
    first = head.lstrip().split(b"\n", 1)[0]
    return first.startswith(b"{") and b'"query"' in first and b'"trans_id"' in first


def read_inputs(
    paths: Iterable[Path],
    cfg: Config,
    diag: Diagnostics,
    fmt: str | None = None,
    progress: ProgressFn = _no_progress,
    dns: list[Path] | None = None,
) -> Iterator[tuple[str, Iterator[pa.Table]]]:
    """(input name, raw tables) for every readable input; failures are recorded in ``diag``.

    A file named by the user that cannot be read is a failure; a file found in a folder
    that is not a flow log (a README) is counted as ignored on the folder's line. With
    ``dns`` given, Zeek dns.logs and captures are added to it (DNS is read from them
    separately) and dns.logs are not read as flows.
    """
    files = expand_inputs(list(paths))
    progress("read", 0, len(files))
    for path, folder in files:
        name = str(path)
        try:
            if not path.exists():
                raise InputError(name, "does not exist")
            if dns is not None and fmt is None and is_dns_log(path):
                diag.stats(name).format = "dns"
                dns.append(path)
                progress("read", 1, None)
                continue
            if fmt is None and folder is not None:
                try:
                    chosen = detect_format(path)
                except InputError:
                    diag.stats(str(folder)).format = "folder"
                    diag.ignore(str(folder), "files that are not flow logs")
                    progress("read", 1, None)
                    continue
            else:
                chosen = fmt or detect_format(path)
            diag.stats(name).format = chosen
            if dns is not None and chosen in ("pcap", "pcapng"):
                dns.append(path)
            source = load_source(chosen)()
            ctx = ReadContext(diag, options=source_options(cfg, chosen))
            yield name, source.read(path, ctx)
        except FlowhawkError as exc:
            diag.fail(name, _message(exc))
        progress("read", 1, None)


def read_dns_inputs(
    paths: Sequence[Path], cfg: Config, data_dir: Path, run_id: str, diag: Diagnostics
) -> DnsWriter:
    """DNS transactions of ``paths`` into ``DATA/dns`` and the data directory's passive
    DNS; returns the writer (what was written, by hour). A capture without DNS adds
    nothing; a dns.log that cannot be read is a failure of that input."""
    writer = DnsWriter(dns_root(data_dir), run_id, cfg.archive.compression)
    if not paths:
        return writer
    from flowhawk.dns import passive, read_dns

    observed = []  # this run's answers; saving merges them with what the directory has
    for path in paths:
        try:
            for table in read_dns(path, diag):
                writer.write(table)
                observed.append(passive.build(table))
                if diag.stats(str(path)).format == "dns":
                    diag.stats(str(path)).records += table.num_rows
        except FlowhawkError as exc:
            diag.fail(str(path), _message(exc))
    if writer.rows:
        passive.PassiveDns(passive.merge(*observed)).save(data_dir / passive.PDNS_FILE)
    return writer


def replay(
    flows: ArchiveWriter, dns: ArchiveWriter
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame | None]]:
    """This run's flows and DNS transactions hour by hour in event time."""
    empty = pl.from_arrow(FLOW_SCHEMA.empty_table())
    assert isinstance(empty, pl.DataFrame)
    for key in sorted(set(flows.partitions()) | set(dns.partitions())):
        yield (
            flows.read_partition(key) if key in flows.files else empty,
            dns.read_partition(key) if key in dns.files else None,
        )


def run(
    inputs: list[Path],
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    fmt: str | None = None,
    learn_only: bool = False,
    progress: ProgressFn = _no_progress,
    tables: Iterable[tuple[str, Iterator[pa.Table]]] | None = None,
    diagnostics: Diagnostics | None = None,
    intel: Sequence[str | Path] = (),
) -> RunResult:
    """Analyze (or only learn from) ``inputs``.

    ``tables`` replaces reading files (a live capture, a simulator): (input name, raw
    tables) pairs whose problems go to ``diagnostics``. ``intel``: feeds (files,
    folders, URLs) used besides the configured ones; one that cannot be read raises
    :class:`InputError` before any input is read.
    """
    intel_set = None if learn_only else intelstore.for_run(cfg, data_dir, intel)
    context = EventContext(cfg, data_dir)  # opens the GeoIP databases: fails early
    try:
        return _run(
            inputs,
            cfg,
            data_dir,
            out_dir,
            fmt,
            learn_only,
            progress,
            tables,
            diagnostics,
            intel_set,
            context,
        )
    finally:
        context.close()


def _run(
    inputs: list[Path],
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    fmt: str | None,
    learn_only: bool,
    progress: ProgressFn,
    tables: Iterable[tuple[str, Iterator[pa.Table]]] | None,
    diagnostics: Diagnostics | None,
    intel_set: IntelSet | None,
    context: EventContext,
) -> RunResult:
    diag = diagnostics or Diagnostics()
    clock = _Clock()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    writer = ArchiveWriter(data_dir / "flows", run_id, cfg.archive.compression)
    normalizer = Normalizer(cfg, diag)
    lineage: list[pl.DataFrame] = []
    dns: list[Path] | None = [] if cfg.context.passive_dns else None
    sources = tables if tables is not None else read_inputs(inputs, cfg, diag, fmt, progress, dns)
    for name, batches in sources:
        try:
            for table in batches:
                diag.stats(name).records += table.num_rows
                writer.write(normalizer.process(table))
        except FlowhawkError as exc:
            diag.fail(name, _message(exc))
        stitched, lin = normalizer.end_input(name)
        writer.write(stitched)
        if lin.height:
            lineage.append(lin)
    dns_writer = read_dns_inputs(dns or [], cfg, data_dir, run_id, diag)
    if writer.rows == 0:
        raise NothingReadable("no flows could be read from the inputs", diag)
    clock.lap("read+normalize+archive")

    logs = LogStore(data_dir / "behavior", run_id, cfg.archive.compression)
    engine = DetectionEngine(
        cfg,
        StateStore(data_dir),
        learn_only=learn_only,
        log_store=logs,
        intel=intel_set,
        passive_dns=context.passive_dns(),  # with this run's DNS
    )
    parts = set(writer.partitions()) | set(dns_writer.partitions())
    progress("detect", 0, len(parts))
    found = []
    for flows, dns_rows in replay(writer, dns_writer):
        found.append(engine.process(flows, dns_rows))
        progress("detect", 1, None)
    found.append(engine.finish())
    if learn_only:
        engine.finish_learning()
    alarms = pl.concat(found) if found else empty_alarms()
    clock.lap("detect")
    events, alarms = build_events(alarms, cfg)
    events = context.attach(events)
    clock.lap("events+context")

    out_dir.mkdir(parents=True, exist_ok=True)
    progress("score", 0, None)
    lineage_df = pl.concat(lineage) if lineage else pl.DataFrame(schema=LINEAGE_SCHEMA)
    events = score_flows(writer, events, cfg.events.window, lineage_df, out_dir / "flow_scores.csv")
    clock.lap("flow scores")
    paths = SinkPaths(out=out_dir, data=data_dir)
    for _, cls in SINKS:
        sink = cls(paths, top=cfg.events.top_suspicious)
        sink.start()
        try:
            sink.write(events, alarms)
        finally:
            sink.stop()
    engine.checkpoint(
        {
            "run": run_id,
            "inputs": [s.name for s in diag.inputs.values()],
            "flows": writer.rows,
            "events": events.height,
            "learn_only": learn_only,
        }
    )
    clock.lap("sinks+checkpoint")
    all_alarms, all_events = load_alarms_and_events(data_dir)
    internal = NetworkSet([*cfg.network.internal, *cfg.network.local_scope])
    hosts = rank_hosts(all_alarms, all_events, cfg.events.host_half_life, internal)
    hosts.write_csv(out_dir / "hosts.csv")
    if engine.meta.last_event:
        logs.apply_retention(cfg.behavior.retention, datetime.fromisoformat(engine.meta.last_event))
    if cfg.archive.retention and engine.meta.last_event:
        archive.apply_retention(
            data_dir / "flows",
            cfg.archive.retention,
            datetime.fromisoformat(engine.meta.last_event),
        )
    clock.lap("hosts+retention")
    return RunResult(
        diagnostics=diag,
        flows=writer.rows,
        events=events,
        alarms=alarms,
        hosts=hosts,
        out_dir=out_dir,
        data_dir=data_dir,
        learning_until=engine.learning_until,
        flows_learned=engine.flows_learned,
        flows_scored=engine.flows_scored,
        dns=dns_writer.rows,
        outputs={
            n: out_dir / n
            for n in ("events.jsonl", "hosts.csv", "suspicious.csv", "flow_scores.csv")
        }
        | {"flows": data_dir / "flows"},
        timings=clock.laps,
    )


class _Clock:
    """Wall time of each stage of a run."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._t
        self._t = now
