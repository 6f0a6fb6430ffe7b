"""DNS transactions as Parquet under ``DATA/dns``, partitioned as the flow archive.

Layout: ``<data>/dns/date=YYYY-MM-DD/hour=HH/part-<run>-<seq>.parquet`` by the UTC
hour of ``ts``, each file written atomically by :func:`flowhawk.archive.write_atomic`,
so DuckDB, Spark or polars read the folder as one hive-partitioned dataset beside
``DATA/flows``. :func:`read_range` reads back the transactions of a time range,
opening only the hour partitions that overlap it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from flowhawk.archive import ArchiveWriter, hour_partitions
from flowhawk.dns.schema import DNS_SCHEMA, conform


def dns_root(data_dir: Path) -> Path:
    """Where DNS transactions live in a data directory."""
    return data_dir / "dns"


class DnsWriter(ArchiveWriter):
    """Appends DNS tables to ``root`` (by the hour of ``ts``) and lists the files it wrote."""

    def __init__(self, root: Path, run_id: str, compression: str = "lz4"):
        super().__init__(root, run_id, compression, time_column="ts")

    def write(self, table: pa.Table | pl.DataFrame) -> None:
        """Write one table (any DNS_SCHEMA-compatible columns), split by hour."""
        super().write(table.to_arrow() if isinstance(table, pl.DataFrame) else conform(table))


def _partition_files(root: Path, start: datetime | None, end: datetime | None) -> list[Path]:
    files: list[Path] = []
    for hour, folder in hour_partitions(root):
        if start is not None and hour + timedelta(hours=1) <= start:
            continue
        if end is not None and hour >= end:
            continue
        files.extend(sorted(folder.glob("*.parquet")))
    return files


def read_range(
    root: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Transactions with ``start <= ts < end`` (either bound may be None), sorted by ts."""
    for bound in (start, end):
        if bound is not None and bound.tzinfo is None:
            raise ValueError("read_range needs timezone-aware datetimes")
    files = _partition_files(root, start, end) if root.is_dir() else []
    wanted = columns if columns is None or "ts" in columns else ["ts", *columns]
    if not files:
        empty = pl.from_arrow(DNS_SCHEMA.empty_table())
        assert isinstance(empty, pl.DataFrame)
        return empty.select(wanted) if wanted else empty
    lazy = pl.scan_parquet(files, hive_partitioning=False)
    if start is not None:
        lazy = lazy.filter(pl.col("ts") >= start)
    if end is not None:
        lazy = lazy.filter(pl.col("ts") < end)
    if wanted is not None:
        lazy = lazy.select(wanted)
    df = lazy.collect().sort("ts", maintain_order=True)
    return df if columns is None else df.select(columns)
