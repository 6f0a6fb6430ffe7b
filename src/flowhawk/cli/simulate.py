"""``flowhawk simulate``: days of a simulated site's flows with labeled anomalies."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import typer

from flowhawk.cli import app, make_console
from flowhawk.cli.analyze import QuietOpt

console = make_console()


def _kinds(text: str) -> tuple[str, ...]:
    from flowhawk.sim import KINDS

    text = text.strip().lower()
    if text == "all":
        return KINDS
    if text in ("none", ""):
        return ()
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise typer.BadParameter(
            f"unknown kinds {', '.join(unknown)}; use all, none or some of: {', '.join(KINDS)}",
            param_hint="--anomalies",
        )
    return kinds


@app.command()
def simulate(
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Flows file; the extension picks the format: .log (Zeek conn.log), .parquet, .csv.",
    ),
    days: int = typer.Option(7, "--days", help="Days to simulate (1-366)."),
    seed: int = typer.Option(1, "--seed", help="Random seed: same arguments, same output."),
    start: str = typer.Option(
        "2026-03-02", "--start", help="First day (UTC midnight), YYYY-MM-DD."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="Labels CSV (default: FILE with .labels.csv)."
    ),
    anomalies: str = typer.Option(
        "all", "--anomalies", help="all, none, or kinds separated by commas (see below)."
    ),
    per_kind: int = typer.Option(2, "--per-kind", help="Anomalies of each kind."),
    clean_days: int = typer.Option(
        3, "--clean-days", help="Days at the start without anomalies (for learning)."
    ),
    workstations: int = typer.Option(60, "--workstations", help="Office workstations."),
    servers: int = typer.Option(
        10, "--servers", help="Servers (roles are shared when fewer than 10)."
    ),
    iot: int = typer.Option(
        20, "--iot", help="IoT devices (MQTT, cloud, CoAP, Modbus meters, cameras)."
    ),
    plcs: int = typer.Option(8, "--plcs", help="PLCs polled by the SCADA master."),
    hmis: int = typer.Option(2, "--hmis", help="Operator HMIs."),
    export: str | None = typer.Option(
        None, "--export", help="Also send the flows to a collector at HOST:PORT (UDP)."
    ),
    protocol: str = typer.Option(
        "ipfix", "--protocol", "-p", help="--export as v5, v9, ipfix or sflow."
    ),
    rate: float | None = typer.Option(
        None, "--rate", help="--export pace in flows per second (default: as fast as possible)."
    ),
    now: bool = typer.Option(
        False, "--now", help="--export: move times so the first flow starts now (live demo)."
    ),
    quiet: bool = QuietOpt,
) -> None:
    """Simulate a site's flows over days, with labeled anomalies.

    The site: workstations used by people (office hours, lunch, weekends,
    days off), servers (DNS, directory, files, intranet app, database, mail,
    public web, monitoring, MQTT broker, backups at night), IoT devices
    reporting on fixed periods (MQTT 1883/8883, CoAP, Modbus meters, cameras)
    and a plant (SCADA polling PLCs over Modbus 502, historian, HMIs).
    External addresses are documentation and benchmarking ranges; the
    site's clock is UTC.

    Anomaly kinds: volume_spike, exfiltration, silence, underflow,
    new_communication, behavior_shift, dns_tunnel, port_shift, icmp_burst.
    They come after --clean-days and never overlap; the n-th of a kind takes
    its n-th variant (--per-kind 3 covers them all).

    Writes FILE, FILE's labels (one row per anomaly and behavioral-log key
    it changed: id, kind, variant, methods expected to fire, view, key,
    start, end, description) and <stem>.toml, a configuration to analyze
    FILE with (learning period = clean days).

    Exit status: 0 on success, 2 on usage errors.
    """
    from flowhawk.sim import SimSettings
    from flowhawk.sim import simulate as run
    from flowhawk.sim.site import SiteSpec
    from flowhawk.sim.write import format_of, labels_path, write_flows, write_labels

    if out is None and export is None:
        raise typer.BadParameter("give --out FILE, --export HOST:PORT or both", param_hint="--out")
    if out is not None:
        try:
            format_of(out)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--out") from None
    try:
        first = date.fromisoformat(start)
    except ValueError:
        raise typer.BadParameter(f"{start!r} is not YYYY-MM-DD", param_hint="--start") from None
    settings = SimSettings(
        days=days,
        seed=seed,
        start=first,
        site=SiteSpec(workstations=workstations, servers=servers, iot=iot, plcs=plcs, hmis=hmis),
        anomalies=_kinds(anomalies),
        per_kind=per_kind,
        clean_days=clean_days,
    )
    try:
        settings.check()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    exporter = _exporter(export, protocol, rate) if export else None
    began = time.perf_counter()
    sim = run(settings)
    took = time.perf_counter() - began
    if not quiet:
        console.print(
            f"simulated {sim.flows.height:,} flows over {days} days in {took:.1f} s "
            f"({sim.flows.height / max(took, 1e-9):,.0f} flows/s), "
            f"{len(sim.anomalies)} anomalies, {sim.labels.height:,} label rows",
            highlight=False,
        )
    if out is not None:
        written = write_flows(sim, out)
        lab = write_labels(sim, labels or labels_path(out))
        if not quiet:
            console.print(f"wrote {', '.join(map(str, written))} and {lab}", highlight=False)
            console.print(
                f"analyze: flowhawk analyze {out} -c {written[-1]} --out DIR", highlight=False
            )
    elif labels is not None:
        write_labels(sim, labels)
    if not quiet:
        for aid, inj in sorted(sim.anomalies.items()):
            console.print(
                f"  {aid:>3} {inj.start:%Y-%m-%d %H:%M}-{inj.end:%H:%M} {inj.kind:<17} "
                f"{inj.description}",
                highlight=False,
                soft_wrap=True,
            )
    if exporter is not None:
        _export(sim, exporter, now, quiet)


def _exporter(target: str, protocol: str, rate: float | None) -> tuple:
    from flowhawk.collect.replay import PROTOCOLS, ExportSettings, ReplayError, parse_target

    if protocol not in PROTOCOLS:
        raise typer.BadParameter(
            f"unknown protocol {protocol!r}; use one of: {', '.join(PROTOCOLS)}",
            param_hint="--protocol",
        )
    try:
        parse_target(target)
    except ReplayError as exc:
        raise typer.BadParameter(str(exc), param_hint="--export") from None
    if rate is not None and rate <= 0:
        raise typer.BadParameter("a positive number of flows per second", param_hint="--rate")
    return target, ExportSettings(protocol=protocol), rate  # type: ignore[arg-type]


def _export(sim, exporter: tuple, now: bool, quiet: bool) -> None:  # type: ignore[no-untyped-def]
    from flowhawk.sim.write import export

    target, settings, rate = exporter
    if not quiet:
        pace = f"at {rate:g} flows/s" if rate else "as fast as possible"
        console.print(f"exporting to {target} as {settings.protocol}, {pace}...")
    stats = export(sim, target, settings, rate=rate, now=now)
    if not quiet:
        console.print(
            f"sent {stats.flows:,} flows as {stats.records:,} records in {stats.datagrams:,} "
            f"datagrams ({stats.bytes:,} bytes) in {stats.elapsed:.2f} s"
            + (f"; skipped {stats.skipped:,} IPv6 flows (v5)" if stats.skipped else ""),
            highlight=False,
        )
