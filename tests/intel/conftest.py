"""Helpers of the threat-intelligence tests: fixtures, parsing one file, the real feeds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from flowhawk.diagnostics import Diagnostics, InputStats
from flowhawk.intel import formats
from flowhawk.intel.feeds import Feed, content_version
from flowhawk.intel.formats.base import ParseContext, finish
from flowhawk.intel.formats.base import entries as raw_entries
from flowhawk.intel.settings import FeedOptions, IntelSettings

FIXTURES = Path(__file__).parent / "fixtures"
#: The time the fixtures are read at (after every date they carry).
NOW = datetime(2024, 3, 10, tzinfo=UTC)


def parse_file(
    path: Path, fmt: str | None = None, options: dict | None = None
) -> tuple[pl.DataFrame, InputStats, Diagnostics]:
    """Parse one feed file as the loader does; returns indicators, its stats, diagnostics."""
    data = path.read_bytes()
    diag = Diagnostics()
    chosen = fmt or formats.detect(data, str(path))
    ctx = ParseContext(str(path), diag, now=NOW, options=options or {}, path_parts=path.parts)
    return formats.read(data, chosen, ctx), diag.stats(str(path)), diag


def values(frame: pl.DataFrame, kind: str | None = None) -> list[str]:
    if kind is not None:
        frame = frame.filter(pl.col("type") == kind)
    return frame.get_column("value").to_list()


@pytest.fixture(scope="session")
def intel_data(shared_data: Path) -> Path:
    path = shared_data / "intel"
    assert path.is_dir(), f"threat-intelligence test data not found at {path}"
    return path


def make_feed(
    name: str,
    entries: list[str],
    category: str = "malicious",
    *,
    weight: float = 1.0,
    last_seen: datetime | None = None,
    loaded_at: datetime = NOW,
    **options: object,
) -> Feed:
    """A feed listing ``entries`` (raw text, normalized as a parser would)."""
    diag = Diagnostics()
    ctx = ParseContext(name, diag)
    frame = finish([(ctx, raw_entries(entries, list(range(1, len(entries) + 1))))])[0]
    assert diag.stats(name).skipped_total == 0, diag.issues
    if last_seen is not None:
        frame = frame.with_columns(last_seen=pl.lit(last_seen).cast(frame.schema["last_seen"]))
    settings = IntelSettings()
    own = FeedOptions(weight=weight, category=category, **options)  # type: ignore[arg-type]
    return Feed(name, name, "plain", content_version("\n".join(entries).encode()), loaded_at,
                settings.options_for(name, own), category, frame)  # fmt: skip
