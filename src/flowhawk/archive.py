"""The flow archive: canonical flows as Parquet, hive-partitioned by date and hour.

Layout: ``<data>/flows/date=YYYY-MM-DD/hour=HH/part-<run>-<seq>-<n>.parquet``, by the
hour of ``ts_start`` in UTC. Readable by DuckDB, Spark, polars or pandas as one
dataset. A writer remembers which files it wrote so the detection pass of a run
reads exactly its own flows, partition by partition in time order.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from flowhawk.schema import FLOW_SCHEMA

PARTITIONING = ds.partitioning(
    pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive"
)


class ArchiveWriter:
    """Appends flow tables to the archive and lists what this run wrote.

    ``time_column`` decides the hour partition of each row (other timed tables, such as
    DNS transactions, are laid out the same way)."""

    def __init__(
        self, root: Path, run_id: str, compression: str = "lz4", time_column: str = "ts_start"
    ):
        self.root = root
        self.run_id = run_id
        self.compression = compression
        self.time_column = time_column
        self._seq = 0
        self.files: dict[tuple[str, str], list[Path]] = defaultdict(list)
        self.rows = 0

    def write(self, flows: pa.Table) -> None:
        if flows.num_rows == 0:
            return
        df = pl.from_arrow(flows)
        assert isinstance(df, pl.DataFrame)
        # Partition keys by integer arithmetic on the hour, formatted once per hour.
        hours = df.select(pl.col(self.time_column).dt.epoch("s") // 3600).to_series()
        df = df.with_columns(_hour=hours)
        for (hour,), part in df.partition_by("_hour", as_dict=True, maintain_order=True).items():
            start = datetime.fromtimestamp(int(hour) * 3600, UTC)
            key = (start.strftime("%Y-%m-%d"), start.strftime("%H"))
            folder = self.root / f"date={key[0]}" / f"hour={key[1]}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{self.run_id}-{self._seq:05d}.parquet"
            write_atomic(part.drop("_hour"), path, self.compression)
            self.files[key].append(path)
        self._seq += 1
        self.rows += flows.num_rows

    def partitions(self) -> list[tuple[str, str]]:
        """(date, hour) partitions this run wrote, oldest first."""
        return sorted(self.files)

    def read_partition(
        self, key: tuple[str, str], columns: list[str] | None = None
    ) -> pl.DataFrame:
        """This run's rows of one partition, sorted by the time column (stable)."""
        df = pl.concat([pl.read_parquet(p, columns=columns) for p in self.files[key]])
        return df.sort(self.time_column, maintain_order=True)

    def iter_partitions(
        self, columns: list[str] | None = None
    ) -> Iterator[tuple[tuple[str, str], pl.DataFrame]]:
        for key in self.partitions():
            yield key, self.read_partition(key, columns)


def write_atomic(df: pl.DataFrame, path: Path, compression: str = "lz4") -> None:
    """Write ``df`` to ``path`` so that it is either complete or absent, even after kill -9.

    The data goes to a hidden temporary name (no reader globs ``*.parquet`` match it), is
    flushed to disk, then renamed into place.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        df.write_parquet(fh, compression=compression, row_group_size=256 * 1024)  # type: ignore[arg-type]
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def dataset(root: Path) -> ds.Dataset:
    """The whole archive as one dataset (empty if nothing was archived yet)."""
    return ds.dataset(str(root), format="parquet", partitioning=PARTITIONING, schema=FLOW_SCHEMA)


def hour_files(root: Path, hours: Iterable[datetime]) -> list[Path]:
    """Parquet files of the hour partitions starting at ``hours`` (UTC hour starts)."""
    files: list[Path] = []
    for hour in sorted(set(hours)):
        folder = root / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
        if folder.is_dir():
            files.extend(sorted(folder.glob("*.parquet")))
    return files


def scan_hours(root: Path, hours: Iterable[datetime]) -> pl.LazyFrame:
    """The archived flows of some hour partitions, lazily (empty if none were archived)."""
    files = hour_files(root, hours)
    if not files:
        return pl.LazyFrame(schema=pl.Schema(pl.from_arrow(FLOW_SCHEMA.empty_table()).schema))
    return pl.scan_parquet(files)


def hour_partitions(root: Path) -> Iterator[tuple[datetime, Path]]:
    """(UTC hour start, folder) of every ``date=/hour=`` partition below ``root``, in
    order; folders with other names are passed over."""
    for date_dir in sorted(root.glob("date=*")):
        for hour_dir in sorted(date_dir.glob("hour=*")):
            try:
                start = datetime.strptime(
                    f"{date_dir.name[5:]} {hour_dir.name[5:]}", "%Y-%m-%d %H"
                ).replace(tzinfo=UTC)
            except ValueError:
                continue
            yield start, hour_dir


def apply_retention(root: Path, keep: float, now: datetime) -> int:
    """Delete hour partitions that ended more than ``keep`` seconds before ``now``."""
    if not root.is_dir():
        return 0
    limit = now - timedelta(seconds=keep)
    removed = 0
    for start, hour_dir in list(hour_partitions(root)):
        if start + timedelta(hours=1) < limit:
            shutil.rmtree(hour_dir)
            removed += 1
            if not any(hour_dir.parent.iterdir()):
                hour_dir.parent.rmdir()
    return removed
