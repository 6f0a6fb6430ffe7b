"""``flowhawk collect`` (receive exports into the archive) and ``flowhawk exporters``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.table import Table

from flowhawk import config as cfgmod
from flowhawk.cli import app, make_console
from flowhawk.errors import FlowhawkError

console = make_console()


@app.command()
def collect(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
    data: Path = typer.Option(Path("data"), "--data", "-d", help="Data directory for the archive."),
    duration: float | None = typer.Option(
        None, "--duration", help="Stop after this many seconds (default: until SIGINT/SIGTERM)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No start and stop report."),
) -> None:
    """Receive NetFlow v5/v9, IPFIX and sFlow v5 over UDP and archive the flows.

    Listens on [collect] listen (default UDP 2055, 4739 and 6343 on IPv4 and IPv6; the
    protocol is read from each datagram), writes canonical flows to DATA/flows every
    [collect] rollover, keeps templates and exporter statistics in DATA/collector, and
    serves Prometheus metrics on [collect] metrics. SIGINT or SIGTERM stops it cleanly:
    queued datagrams are decoded, flows archived, templates saved.
    """
    from flowhawk.collect.collector import Collector

    cfg = cfgmod.load(config)
    col = Collector(cfg, data)
    col.start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    if not quiet:
        ports = ", ".join(f"{a} (udp {p})" for a, p in col.ports())
        console.print(f"collecting on {ports}", highlight=False)
        if col.metrics_address:
            host, port = col.metrics_address
            console.print(f"metrics: http://{host}:{port}/metrics", highlight=False)
        console.print(f"archive: {data / 'flows'}; stop with Ctrl-C", highlight=False)
    col.run_in_thread()
    done.wait(duration)
    col.stop()
    if not quiet:
        t = col.totals
        console.print(
            f"received {t.datagrams:,} datagrams, decoded {t.flows_decoded:,} flow records, "
            f"archived {t.flows_archived:,} flows in {t.files:,} files; "
            f"kernel drops {t.kernel_drops:,}",
            highlight=False,
        )
        if col.detection is not None:
            d = col.detection.totals
            console.print(
                f"detection: {d.flows:,} flows in {d.batches:,} batches, {d.alarms:,} alarms, "
                f"{d.events_published:,} event updates in {data / 'events.duckdb'}; "
                f"late flows {d.late_flows:,}, failed batches {d.errors:,}",
                highlight=False,
            )
        for reason, n in t.decode_errors.most_common():
            console.print(f"  not decoded: {n:,} ({reason})", highlight=False)
        _print_exporters(col.inventory.table())


@app.command()
def exporters(
    data: Path = typer.Option(Path("data"), "--data", "-d", help="Data directory of a collector."),
) -> None:
    """List the exporters a collector has heard from (as of its last checkpoint)."""
    from flowhawk.collect.inventory import Inventory, inventory_path

    if not inventory_path(data).exists():
        raise FlowhawkError(f"no exporter inventory in {data} (has `flowhawk collect` run?)")
    _print_exporters(Inventory.load(data).table())


def _print_exporters(df) -> None:  # type: ignore[no-untyped-def]
    t = Table(title="Exporters", title_justify="left", show_edge=False)
    for col in df.columns:
        t.add_column(col, justify="right" if df.schema[col].is_numeric() else "left")
    for row in df.iter_rows():
        t.add_row(
            *(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row)
        )
    console.print(t)
