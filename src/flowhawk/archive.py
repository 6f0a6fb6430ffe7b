"""The flow archive: canonical flows as Parquet, hive-partitioned by date and hour.

Layout: ``<data>/flows/date=YYYY-MM-DD/hour=HH/part-<run>-<seq>-<n>.parquet``, by the
hour of ``ts_start`` in UTC. Readable by DuckDB, Spark, polars or pandas as one
dataset. A writer remembers which files it wrote so the detection pass of a run
reads exactly its own flows, partition by partition in time order.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from flowhawk.schema import FLOW_SCHEMA

PARTITIONING = ds.partitioning(
    pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive"
)


class ArchiveWriter:
    """Appends flow tables to the archive and lists what this run wrote."""

    def __init__(self, root: Path, run_id: str):
        self.root = root
        self.run_id = run_id
        self._seq = 0
        self.files: dict[tuple[str, str], list[Path]] = defaultdict(list)
        self.rows = 0

    def write(self, flows: pa.Table) -> None:
        if flows.num_rows == 0:
            return
        ts = flows.column("ts_start")
        table = flows.append_column("date", pc.strftime(ts, format="%Y-%m-%d")).append_column(
            "hour", pc.strftime(ts, format="%H")
        )
        written: list[str] = []
        ds.write_dataset(
            table,
            self.root,
            format="parquet",
            partitioning=PARTITIONING,
            basename_template=f"part-{self.run_id}-{self._seq:05d}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            file_visitor=lambda f: written.append(f.path),
            max_rows_per_group=256 * 1024,
        )
        self._seq += 1
        self.rows += flows.num_rows
        for path in written:
            p = Path(path)
            key = (p.parent.parent.name.split("=", 1)[1], p.parent.name.split("=", 1)[1])
            self.files[key].append(p)

    def partitions(self) -> list[tuple[str, str]]:
        """(date, hour) partitions this run wrote, oldest first."""
        return sorted(self.files)

    def read_partition(self, key: tuple[str, str]) -> pl.DataFrame:
        """This run's flows of one partition, sorted by ts_start (stable)."""
        tables = [
            ds.dataset(str(p), format="parquet", schema=FLOW_SCHEMA).to_table()
            for p in self.files[key]
        ]
        df = pl.from_arrow(pa.concat_tables(tables))
        assert isinstance(df, pl.DataFrame)
        return df.sort("ts_start", maintain_order=True)

    def iter_partitions(self) -> Iterator[tuple[tuple[str, str], pl.DataFrame]]:
        for key in self.partitions():
            yield key, self.read_partition(key)


def dataset(root: Path) -> ds.Dataset:
    """The whole archive as one dataset (empty if nothing was archived yet)."""
    return ds.dataset(str(root), format="parquet", partitioning=PARTITIONING, schema=FLOW_SCHEMA)


def apply_retention(root: Path, keep: float, now: datetime) -> int:
    """Delete hour partitions that ended more than ``keep`` seconds before ``now``."""
    if not root.is_dir():
        return 0
    limit = now - timedelta(seconds=keep)
    removed = 0
    for date_dir in sorted(root.glob("date=*")):
        for hour_dir in sorted(date_dir.glob("hour=*")):
            try:
                start = datetime.strptime(
                    f"{date_dir.name[5:]} {hour_dir.name[5:]}", "%Y-%m-%d %H"
                ).replace(tzinfo=UTC)
            except ValueError:
                continue
            if start + timedelta(hours=1) < limit:
                shutil.rmtree(hour_dir)
                removed += 1
        if date_dir.is_dir() and not any(date_dir.iterdir()):
            date_dir.rmdir()
    return removed
