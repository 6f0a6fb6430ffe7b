"""``flowhawk domains score FILE|-``: how machine-generated (DGA) listed names look.

Reads one domain name per line (blank lines and ``#`` comments skipped) and prints CSV
``domain,dga_score,verdict,reason`` in input order, scored by the model shipped with
flowhawk (:mod:`flowhawk.dns.dga`, no network access). Names that are not DNS names are
kept in the output with an empty score, verdict ``invalid`` and the problem as reason,
and counted on stderr with their line numbers; names under no public suffix get verdict
``unscored``.

Exit status: 0 when every line was scored, 1 when the input cannot be read, 3 when some
names were invalid (they are still in the output).
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import typer

from flowhawk.cli import app, err
from flowhawk.dns.dga import explain_domains

domains_app = typer.Typer(
    help="Domain names: score lists of names for analysts (DGA likelihood).",
    no_args_is_help=True,
)
app.add_typer(domains_app, name="domains")
CHUNK = 1_000_000  # names scored at once


def _lines(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines()
    path = Path(source)
    try:
        return path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot read {source}: {exc.strerror or exc}")
        raise typer.Exit(1) from exc


@domains_app.command("score")
def score(
    source: str = typer.Argument(..., help="File with one domain per line, or - for stdin."),
) -> None:
    """Score each name of SOURCE and print CSV domain,dga_score,verdict,reason.

    The score (0-1) says how machine-generated the registered label (left of the public
    suffix) looks; verdicts: dga, suspicious, benign, unscored (no public suffix or an
    internationalized label), invalid (not a DNS name).
    """
    lines = pl.Series("line", _lines(source), dtype=pl.String)
    frame = pl.DataFrame({"text": lines.str.strip_chars()}).with_row_index("lineno", offset=1)
    frame = frame.filter((pl.col("text") != "") & ~pl.col("text").str.starts_with("#"))
    out = sys.stdout
    header = True
    invalid: list[tuple[int, str]] = []
    for lo in range(0, max(frame.height, 1), CHUNK):
        part = frame.slice(lo, CHUNK)
        scored = explain_domains(part.get_column("text"))
        rows = pl.DataFrame(
            {
                "domain": part.get_column("text"),
                "dga_score": scored.get_column("dga_score").round(4),
                "verdict": scored.get_column("verdict"),
                "reason": scored.get_column("reason"),
            }
        )
        bad = part.filter(scored.get_column("verdict") == "invalid")
        shown = bad.head(5)
        invalid.extend(
            zip(
                shown.get_column("lineno").to_list(),
                shown.get_column("text").to_list(),
                strict=True,
            )
        )
        if bad.height > 5:
            invalid.extend([(0, "")] * (bad.height - 5))
        out.write(rows.write_csv(include_header=header))
        header = False
    out.flush()
    if invalid:
        shown = "; ".join(f"line {n}: {t!r}" for n, t in invalid if n)[:300]
        err.print(
            f"warning: {len(invalid)} invalid name(s) in {source} (scored empty): {shown}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(3)
