"""Flows from the Parquet archive for the API: a time range, filters, a row limit.

Only the hour partitions the range touches are scanned (lazily, with polars), the
caller's sites are part of the filter, and at most ``limit`` rows come back (with
``truncated`` set when more matched), so a query can never read the whole archive
into memory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from flowhawk.archive import scan_hours

#: Longest time range one flow query may cover.
MAX_SPAN = timedelta(days=7)
COLUMNS = [
    "ts_start", "ts_end", "site", "src_ip", "src_port", "dst_ip", "dst_port", "proto",
    "direction", "src_pkts", "src_bytes", "dst_pkts", "dst_bytes", "service", "state",
    "exporter", "input", "flow_id",
]  # fmt: skip


def _hours(since: datetime, until: datetime) -> list[datetime]:
    t = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while t < until:
        out.append(t)
        t += timedelta(hours=1)
    return out


def query_flows(
    data_dir: Path,
    since: datetime,
    until: datetime,
    sites: list[str] | None,
    *,
    host: str | None = None,
    port: int | None = None,
    proto: int | None = None,
    limit: int = 1000,
    where: pl.Expr | None = None,
) -> dict[str, Any]:
    """Flows starting in [since, until) matching the filters, oldest first."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    if until - since > MAX_SPAN:
        raise ValueError(f"a flow query covers at most {MAX_SPAN.days} days")
    lf = scan_hours(data_dir / "flows", _hours(since, until))
    cond = (pl.col("ts_start") >= since) & (pl.col("ts_start") < until)
    if sites is not None:
        cond &= pl.col("site").is_in(sites)
    if host:
        cond &= (pl.col("src_ip") == host) | (pl.col("dst_ip") == host)
    if port is not None:
        cond &= (pl.col("src_port") == port) | (pl.col("dst_port") == port)
    if proto is not None:
        cond &= pl.col("proto") == proto
    if where is not None:
        cond &= where
    df = lf.filter(cond).select(COLUMNS).sort("ts_start").head(limit + 1).collect()
    truncated = df.height > limit
    df = df.head(limit).with_columns(
        pl.col("ts_start", "ts_end").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
    )
    return {"count": df.height, "limit": limit, "truncated": truncated, "items": df.to_dicts()}


def event_flows(
    data_dir: Path, event: dict[str, Any], start: datetime, end: datetime, limit: int
) -> dict[str, Any]:
    """The flows of an event's communication in its window."""
    where = (
        (pl.col("src_ip") == event["src_ip"])
        & (pl.col("dst_ip") == event["dst_ip"])
        & (pl.col("site") == event["site"])
    )
    if event.get("dst_port") is not None and event.get("dst_port", -1) >= 0:
        where &= pl.col("dst_port") == event["dst_port"]
    if event.get("proto") is not None:
        where &= pl.col("proto") == event["proto"]
    return query_flows(data_dir, start, end, None, limit=limit, where=where)
