"""``flowhawk intel update|lookup|stats``: threat-intelligence snapshots and lookups."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import typer
from rich.table import Table

from flowhawk import config as cfgmod
from flowhawk import intelstore
from flowhawk.cli import app, make_console
from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import FlowhawkError
from flowhawk.intel import HIGH_RISK, IntelSet, load
from flowhawk.netaddr import parse

intel_app = typer.Typer(
    help="Threat intelligence: load feeds into a snapshot, look values up, show statistics.",
    no_args_is_help=True,
)
app.add_typer(intel_app, name="intel")
console = make_console()

DataOpt = typer.Option(Path("data"), "--data", "-d", help="Data directory holding the snapshot.")
IntelOpt = typer.Option(
    [],
    "--intel",
    help="Feed file, folder or http(s) URL (format detected); repeatable.",
    show_default=False,
)


def _table(*columns: str, numbers: tuple[str, ...] = ()) -> Table:
    t = Table(show_edge=False)
    for col in columns:
        t.add_column(col, justify="right" if col in numbers else "left")
    return t


@intel_app.command("update")
def update(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
    data: Path = DataOpt,
    intel: list[str] = IntelOpt,
) -> None:
    """Load the configured feeds and every --intel one, and store them as the data
    directory's current snapshot (DATA/intel/VERSION), used by later runs and lookups.

    Exit status: 0 when stored, 1 when a feed named here or in the config cannot be
    read, 2 when there is no feed at all.
    """
    cfg = cfgmod.load(config)
    if not cfg.intel.feeds and not intel:
        raise typer.BadParameter(
            "no feeds: configure [[intel.feeds]] or give --intel", param_hint="--intel"
        )
    diag = Diagnostics()
    intel_set = intelstore.load_configured(cfg, intel, diagnostics=diag)
    folder = intelstore.save_current(intel_set, data)
    t = _table("feed", "format", "indicators", "skipped", "ignored", "version",
               numbers=("indicators", "skipped", "ignored"))  # fmt: skip
    for feed in intel_set.feeds:
        stats = diag.stats(feed.origin)
        counts = (feed.indicators, stats.skipped_total, sum(stats.ignored.values()))
        t.add_row(feed.name, feed.format, *(f"{n:,}" for n in counts), feed.version)
    console.print(t)
    for stats in diag.inputs.values():
        if stats.failed:
            console.print(f"[yellow]passed over[/] {stats.name}: {stats.failed}", highlight=False)
    console.print(
        f"intel set {intel_set.version}: {len(intel_set):,} indicators from "
        f"{len(intel_set.feeds):,} feeds, stored in {folder}",
        highlight=False,
    )


def _source(data: Path, intel: list[str]) -> IntelSet:
    if intel:
        return load(intel)
    found = intelstore.open_current(data)
    if found is None:
        raise FlowhawkError(
            f"{data}: no intel snapshot; run `flowhawk intel update --data {data}` or give --intel"
        )
    return found


def _kind(value: str) -> str:
    if "://" in value:
        return "url"
    return "ip" if parse(pl.Series([value]))[2][0] else "domain"


@intel_app.command("lookup")
def lookup(
    values: list[str] = typer.Argument(..., help="IP addresses, domains or URLs."),
    data: Path = DataOpt,
    intel: list[str] = IntelOpt,
) -> None:
    """Look VALUES up (type detected): reputation (0-100, lower is riskier; below 20 is
    high risk) and the evidence behind it, from the data directory's snapshot or from
    --intel feeds. Exit status: 0 (listed or not), 1 when no intel can be read."""
    intel_set = _source(data, intel)
    lookups = {"ip": intel_set.lookup_ips, "domain": intel_set.lookup_domains,
               "url": intel_set.lookup_urls}  # fmt: skip
    for value in values:
        kind = _kind(value)
        hit = lookups[kind](pl.Series([value])).row(0, named=True)
        if hit["indicator"] is None:
            console.print(f"{value} ({kind}): not listed", highlight=False)
            continue
        rep = hit["reputation"]
        matched = intel_set.indicators.filter(pl.col("indicator") == hit["indicator"]).row(
            0, named=True
        )
        via = f" via {matched['type']} {matched['value']}" if matched["value"] != value else ""
        risk = "[bold red]high risk[/]" if rep < HIGH_RISK else "not high risk"
        console.print(f"{value} ({kind}): reputation {rep}, {risk}{via}", highlight=False)
        t = _table("feed", "feed version", "category", "family", "first seen", "last seen")
        for ev in intel_set.explain(hit["indicator"]).iter_rows(named=True):
            times = (ev["first_seen"], ev["last_seen"])
            t.add_row(ev["feed"], ev["feed_version"], ev["category"] or "-", ev["family"] or "-",
                      *(f"{x:%Y-%m-%d %H:%M}" if x else "-" for x in times))  # fmt: skip
        console.print(t)


@intel_app.command("stats")
def stats(data: Path = DataOpt) -> None:
    """The data directory's snapshot: version, load time, indicators per feed and category."""
    intel_set = _source(data, [])
    console.print(
        f"intel set {intel_set.version} (loaded {intel_set.as_of:%Y-%m-%d %H:%M:%S} UTC): "
        f"{len(intel_set):,} indicators from {len(intel_set.feeds):,} feeds",
        highlight=False,
    )
    ind = intel_set.indicators
    kinds = ind.group_by("type").len().sort("type")
    high = ind.filter(pl.col("reputation") < HIGH_RISK).height
    per_type = ", ".join(f"{k} {n:,}" for k, n in kinds.iter_rows())
    console.print(f"by type: {per_type}; high risk: {high:,}", highlight=False)
    t = _table("category", "indicators", "feeds", numbers=("indicators", "feeds"))
    categories = (
        intel_set.evidence.group_by("category")
        .agg(indicators=pl.col("indicator").n_unique(), feeds=pl.col("feed").n_unique())
        .sort("indicators", "category", descending=[True, False])
    )
    for category, n, feeds in categories.iter_rows():
        t.add_row(category or "-", f"{n:,}", f"{feeds:,}")
    console.print(t)
    t = _table("feed", "format", "indicators", "version", "loaded", numbers=("indicators",))
    for feed in intel_set.feeds:
        t.add_row(feed.name, feed.format, f"{feed.indicators:,}", feed.version,
                  f"{feed.loaded_at:%Y-%m-%d %H:%M:%S}")  # fmt: skip
    console.print(t)
