"""``flowhawk sql``: query the flow archive, events, alarms and reports with DuckDB."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from flowhawk.cli import app, make_console
from flowhawk.errors import FlowhawkError
from flowhawk.sqlviews import open_views

console = make_console()


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def sql(
    query: str = typer.Argument(..., help="A SQL query (DuckDB dialect)."),
    data: Path = typer.Option(..., "--data", "-d", help="Data directory of analyze/learn runs."),
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--output", "-O", help="table, csv or json (JSON lines)."
    ),
    limit: int = typer.Option(1000, help="Rows shown at most in table output."),
) -> None:
    """Run QUERY over views `flows`, `events`, `alarms`, `hosts` and `flow_scores`.

    Example: flowhawk sql "SELECT method, count(*) FROM alarms GROUP BY ALL" --data out/demo
    """
    import duckdb

    con = open_views(data)
    try:
        rel = con.sql(query)
    except duckdb.Error as exc:
        raise FlowhawkError(f"query failed: {exc}") from None
    if rel is None:
        return
    df = rel.pl()
    if output is OutputFormat.csv:
        df.write_csv(sys.stdout)
    elif output is OutputFormat.json:
        df.write_ndjson(sys.stdout)
    else:
        t = Table(show_edge=False)
        for col in df.columns:
            t.add_column(col)
        for row in df.head(limit).iter_rows():
            t.add_row(*("" if v is None else str(v) for v in row))
        console.print(t)
        if df.height > limit:
            console.print(f"({df.height - limit:,} more rows; use --limit or --output csv)")
