"""DNS transactions as Parquet under ``DATA/dns``, partitioned as the flow archive.

Layout: ``<data>/dns/date=YYYY-MM-DD/hour=HH/part-<run>-<seq>.parquet`` by the UTC
hour of ``ts``, each file written atomically by :func:`flowhawk.archive.write_atomic`,
so DuckDB, Spark or polars read the folder as one hive-partitioned dataset beside
``DATA/flows``. :func:`read_range` reads back the transactions of a time range,
opening only the hour partitions that overlap it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from flowhawk.archive import write_atomic
from flowhawk.dns.schema import DNS_SCHEMA, conform


def dns_root(data_dir: Path) -> Path:
    """Where DNS transactions live in a data directory."""
    return data_dir / "dns"


class DnsWriter:
    """Appends DNS tables to ``root`` and lists the files it wrote."""

    def __init__(self, root: Path, run_id: str, compression: str = "lz4"):
        self.root = root
        self.run_id = run_id
        self.compression = compression
        self._seq = 0
        self.files: dict[tuple[str, str], list[Path]] = defaultdict(list)
        self.rows = 0

    def write(self, table: pa.Table | pl.DataFrame) -> None:
        """Write one table (any DNS_SCHEMA-compatible columns), split by hour."""
        df = table if isinstance(table, pl.DataFrame) else pl.from_arrow(conform(table))
        assert isinstance(df, pl.DataFrame)
        if df.height == 0:
            return
        df = df.with_columns(_hour=pl.col("ts").dt.epoch("s") // 3600)
        for (hour,), part in df.partition_by("_hour", as_dict=True, maintain_order=True).items():
            start = datetime.fromtimestamp(int(hour) * 3600, UTC)  # type: ignore[arg-type]
            key = (start.strftime("%Y-%m-%d"), start.strftime("%H"))
            folder = self.root / f"date={key[0]}" / f"hour={key[1]}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{self.run_id}-{self._seq:05d}.parquet"
            write_atomic(part.drop("_hour"), path, self.compression)
            self.files[key].append(path)
        self._seq += 1
        self.rows += df.height

    def write_all(self, tables: Iterable[pa.Table]) -> int:
        """Write every table; return the rows written."""
        before = self.rows
        for table in tables:
            self.write(table)
        return self.rows - before


def _partition_files(root: Path, start: datetime | None, end: datetime | None) -> list[Path]:
    files: list[Path] = []
    for date_dir in sorted(root.glob("date=*")):
        for hour_dir in sorted(date_dir.glob("hour=*")):
            try:
                hour = datetime.strptime(
                    f"{date_dir.name[5:]} {hour_dir.name[5:]}", "%Y-%m-%d %H"
                ).replace(tzinfo=UTC)
            except ValueError:
                continue
            if start is not None and hour + timedelta(hours=1) <= start:
                continue
            if end is not None and hour >= end:
                continue
            files.extend(sorted(hour_dir.glob("*.parquet")))
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
