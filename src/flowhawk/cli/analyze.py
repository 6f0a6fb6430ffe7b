"""``flowhawk analyze``, ``flowhawk learn`` and ``flowhawk demo``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from flowhawk import config as cfgmod
from flowhawk.cli import app, make_console
from flowhawk.cli.report import print_summary
from flowhawk.pipeline import NothingReadable, RunResult, run
from flowhawk.sources import format_names

console = make_console()

_STAGES = {"read": "reading inputs", "detect": "detecting (hour by hour)", "score": "scoring flows"}


def _run_with_progress(quiet: bool, **kwargs) -> RunResult:  # type: ignore[no-untyped-def]
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, advance: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(_STAGES.get(stage, stage), total=total)
            elif total is not None:
                progress.update(tasks[stage], total=total)
            progress.advance(tasks[stage], advance)

        return run(progress=report, **kwargs)


def _check_format(fmt: str | None) -> None:
    if fmt is not None and fmt not in format_names():
        raise typer.BadParameter(
            f"unknown format {fmt!r}; known: {', '.join(format_names())}", param_hint="--format"
        )


InputsArg = typer.Argument(None, help="Captures, flow logs or folders of them.", show_default=False)
ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (defaults if omitted).")
FormatOpt = typer.Option(None, "--format", "-f", help="Force the input format (see `formats`).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars or summary.")


@app.command()
def analyze(
    inputs: list[Path] = InputsArg,
    out: Path = typer.Option(..., "--out", "-o", help="Directory for this run's reports."),
    data: Path | None = typer.Option(
        None, "--data", "-d", help="Data directory (archive, state, event store); default: --out."
    ),
    config: Path | None = ConfigOpt,
    fmt: str | None = FormatOpt,
    interface: str | None = typer.Option(
        None, "--interface", "-i", help="Capture live from this interface (needs tcpdump)."
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="With --interface: stop after this many seconds."
    ),
    packets: int | None = typer.Option(
        None, "--packets", help="With --interface: stop after this many packets."
    ),
    bpf: str | None = typer.Option(
        None, "--filter", help="With --interface: a capture filter, e.g. 'not port 22'."
    ),
    intel: list[str] = typer.Option(
        [],
        "--intel",
        help="Threat-intelligence feed (file, folder or URL; format detected), besides the "
        "configured ones; repeatable. Default: the configured feeds, else the data "
        "directory's snapshot (`flowhawk intel update`).",
        show_default=False,
    ),
    quiet: bool = QuietOpt,
) -> None:
    """Read INPUTS (or a live interface), archive their flows, run every detector in event
    time, write events.

    Writes events.jsonl, hosts.csv, suspicious.csv and flow_scores.csv to --out, and the
    Parquet flow archive, the detectors' state and the event store to --data.
    Exit status: 0 when something was read (even with skipped records), 1 when nothing
    could be read, 2 on usage or configuration errors.
    """
    if not inputs and not interface:
        raise typer.BadParameter(
            "give at least one input (file or folder) or --interface", param_hint="INPUTS"
        )
    if interface and inputs:
        raise typer.BadParameter(
            "give either INPUTS or --interface, not both", param_hint="--interface"
        )
    if not interface and (duration or packets or bpf):
        raise typer.BadParameter(
            "--duration, --packets and --filter go with --interface", param_hint="--interface"
        )
    _check_format(fmt)
    live = (interface, duration, packets, bpf) if interface else None
    _analyze(
        inputs or [], out, data or out, config, fmt, quiet, learn_only=False, live=live, intel=intel
    )


@app.command()
def learn(
    inputs: list[Path] = InputsArg,
    data: Path = typer.Option(..., "--data", "-d", help="Data directory to keep what is learned."),
    config: Path | None = ConfigOpt,
    fmt: str | None = FormatOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Learn normal behavior from INPUTS without alarming; ends the learning period.

    A later `flowhawk analyze --data DIR` alarms from its first flow.
    """
    if not inputs:
        raise typer.BadParameter("give at least one input (file or folder)", param_hint="INPUTS")
    _check_format(fmt)
    _analyze(inputs, data, data, config, fmt, quiet, learn_only=True)


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Where to write the demo."),
    quiet: bool = QuietOpt,
) -> None:
    """Generate a simulated day of a small company network and analyze it.

    The input (a Zeek conn.log), its config and the list of incidents are written to
    OUT/input; results to OUT. Runs again from scratch each time.
    """
    import shutil

    from flowhawk.demo import make_demo

    shutil.rmtree(out, ignore_errors=True)
    logs, cfg = make_demo(out / "input")
    if not quiet:
        names = ", ".join(str(p) for p in logs)
        console.print(
            f"Demo input: {names} (incidents listed in {out / 'input' / 'INCIDENTS.txt'})"
        )
    _analyze(logs, out, out, cfg, None, quiet, learn_only=False)
    if not quiet:
        console.print("\nWhat really happened:")
        console.print((out / "input" / "INCIDENTS.txt").read_text(), highlight=False)


@app.command()
def formats() -> None:
    """List the input formats flowhawk reads."""
    from flowhawk.sources import load_source

    for name in format_names():
        console.print(f"{name:<12} {load_source(name).description}", highlight=False)


def _analyze(
    inputs: list[Path],
    out: Path,
    data: Path,
    config: Path | None,
    fmt: str | None,
    quiet: bool,
    learn_only: bool,
    live: tuple | None = None,
    intel: list[str] | None = None,
) -> None:
    cfg = cfgmod.load(config)
    extra = _live_input(cfg, live, quiet) if live is not None else {}
    try:
        result = _run_with_progress(
            quiet,
            inputs=inputs,
            cfg=cfg,
            data_dir=data,
            out_dir=out,
            fmt=fmt,
            learn_only=learn_only,
            intel=intel or [],
            **extra,
        )
    except NothingReadable as exc:
        err = make_console(stderr=True)
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        for issue in exc.diagnostics.issues:
            err.print(f"  {issue}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if not quiet:
        print_summary(console, result, learn_only=learn_only)


def _live_input(cfg: cfgmod.Config, live: tuple, quiet: bool) -> dict:
    """Pipeline arguments that read a live interface instead of files."""
    from flowhawk.diagnostics import Diagnostics
    from flowhawk.pipeline import source_options
    from flowhawk.sources.base import ReadContext
    from flowhawk.sources.pcap.live import capture

    iface, duration, packets, bpf = live
    diag = Diagnostics()
    ctx = ReadContext(diag, options=source_options(cfg, "interface"))
    if not quiet:
        limits = [f"{duration:g} s" if duration else "", f"{packets:,} packets" if packets else ""]
        stop = " or ".join(x for x in limits if x) or "Ctrl-C"
        console.print(f"capturing on {iface} until {stop}...")
    tables = capture(iface, ctx, duration=duration, packet_limit=packets, bpf=bpf)
    return {"tables": [(f"live:{iface}", tables)], "diagnostics": diag}
