"""The terminal summary of a run: inputs, flows, events by method, top hosts, outputs."""

from __future__ import annotations

import polars as pl
from rich.console import Console
from rich.table import Table

from flowhawk.diagnostics import KEEP_FIRST
from flowhawk.pipeline import RunResult


def inputs_table(result: RunResult) -> Table:
    t = Table(title="Inputs", title_justify="left", show_edge=False)
    stats = list(result.diagnostics.inputs.values())
    packets = any(st.packets for st in stats)
    numbers = ["packets"] * packets + ["records", "flows", "skipped", "ignored"]
    for col in ("input", "format", *numbers, "status"):
        t.add_column(col, justify="right" if col in numbers else "left")
    for st in stats:
        if st.failed:
            why = st.failed if len(st.failed) <= 60 else st.failed[:57] + "..."
            status = f"[red]unreadable: {why}[/]"
        else:
            status = "[yellow]partly read[/]" if st.skipped_total else "ok"
        counts = [st.packets] * packets + [
            st.records,
            st.flows,
            st.skipped_total,
            sum(st.ignored.values()),
        ]
        t.add_row(st.name, st.format or "-", *(f"{n:,}" for n in counts), status)
    return t


def print_summary(console: Console, result: RunResult, learn_only: bool = False) -> None:
    console.print(inputs_table(result))
    issues = result.diagnostics.issues
    if issues:
        console.print(f"\n[yellow]Problems in the inputs[/] (first {KEEP_FIRST} of each kind):")
        for issue in issues[:40]:
            console.print(f"  {issue}", highlight=False, soft_wrap=True)
        for st in result.diagnostics.inputs.values():
            for reason, n in st.skipped.items():
                console.print(f"  {st.name}: {n:,} record(s) skipped: {reason}", highlight=False)
    until = result.learning_until
    console.print(
        f"\nFlows: [bold]{result.flows:,}[/] archived; {result.flows_learned:,} learned from, "
        f"{result.flows_scored:,} scored"
        + (f"; learning period until {until:%Y-%m-%d %H:%M:%S} UTC" if until else "")
    )
    if learn_only:
        console.print("Learning run: state saved; the next analyze alarms from its first flow.")
        return
    ev = result.events
    console.print(f"Events: [bold]{ev.height:,}[/]", end="")
    if ev.height:
        by_method = (
            ev.select(pl.col("methods").explode())
            .group_by("methods")
            .len()
            .sort(["len", "methods"], descending=[True, False])
        )
        parts = ", ".join(f"{m} {n:,}" for m, n in by_method.iter_rows())
        console.print(f" (by method: {parts})")
    else:
        console.print()
    hosts = result.hosts
    if hosts.height:
        t = Table(title="Top hosts by risk", title_justify="left", show_edge=False)
        for col in ("ip", "risk", "events", "methods", "internal"):
            t.add_column(col)
        for row in hosts.head(10).iter_rows(named=True):
            t.add_row(
                row["ip"],
                f"{row['risk']:.1f}",
                str(row["events"]),
                row["methods"],
                "yes" if row["internal"] else "no",
            )
        console.print(t)
    if result.timings:
        total = sum(result.timings.values())
        laps = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
        console.print(
            f"\nTime: {total:.1f}s ({laps}); {result.flows / max(total, 1e-9):,.0f} flows/s"
        )
    console.print("\nOutputs:")
    for name, path in result.outputs.items():
        console.print(f"  {name:<16} {path}", highlight=False)
