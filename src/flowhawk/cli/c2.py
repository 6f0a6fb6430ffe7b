"""``flowhawk c2 export``: the C2 candidates found so far, as a blocklist."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer

from flowhawk import c2export
from flowhawk.cli import app, make_console
from flowhawk.sinks.store import store_path

c2_app = typer.Typer(help="Command-and-control candidates (N2) found so far.", no_args_is_help=True)
app.add_typer(c2_app, name="c2")
err = make_console(stderr=True)


class Format(StrEnum):
    csv = "csv"
    stix = "stix"


@c2_app.command("export")
def export(
    data: Path = typer.Option(Path("data"), "--data", "-d", help="Data directory."),
    fmt: Format = typer.Option(Format.csv, "--format", "-f", help="csv or stix (2.1 bundle)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file, not stdout."),
    min_score: float = typer.Option(0.0, "--min-score", help="Only candidates scoring this."),
) -> None:
    """Export the C2 candidates (rare servers internal hosts beacon to) with their
    first-seen times and bots, as CSV or STIX 2.1 indicators."""
    if not store_path(data).exists():
        err.print(f"[bold red]error:[/] {data}: no event store (run flowhawk analyze first)")
        raise typer.Exit(1)
    found = c2export.candidates(data, min_score)
    text = c2export.write(found, fmt.value, out)
    if out is None:
        sys.stdout.write(text)
    else:
        err.print(f"{found.height} C2 candidate(s) written to {out}")
