"""The flow archive: canonical flows as Parquet, hive-partitioned by date and hour.

Layout: ``<data>/flows/date=YYYY-MM-DD/hour=HH/part-<run>-<seq>-<n>.parquet``, by the
hour of ``ts_start`` in UTC. Readable by DuckDB, Spark, polars or pandas as one
dataset. A writer remembers which files it wrote so the detection pass of a run
reads exactly its own flows, partition by partition in time order.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from flowhawk.schema import FLOW_SCHEMA

_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
#: Flow columns of (nearly) distinct values: dictionary encoding would only be tried and
#: dropped, and min/max statistics of record ids prune nothing.
_PLAIN = frozenset({"ts_start", "ts_end", "src_bytes", "dst_bytes", "flow_id"})
_NO_STATISTICS = frozenset({"flow_id"})

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
        # Partition keys by integer arithmetic on the hour, formatted once per hour; rows
        # keep their order within an hour.
        ts = flows.column(self.time_column).cast(pa.int64()).to_numpy()
        unit = _PER_SECOND[flows.schema.field(self.time_column).type.unit] * 3600
        hours = ts // unit
        first, last = int(hours.min()), int(hours.max())
        if first == last:
            parts = [(first, flows)]
        else:
            step = np.diff(hours)
            if (step < 0).any():  # hours interleaved: group them (stable)
                order = np.argsort(hours, kind="stable")
                hours, flows = hours[order], flows.take(order)
                step = np.diff(hours)
            bounds = [0, *(np.flatnonzero(step) + 1).tolist(), len(hours)]
            parts = [(int(hours[a]), flows.slice(a, b - a)) for a, b in itertools.pairwise(bounds)]
        for hour, part in parts:
            start = datetime.fromtimestamp(hour * 3600, UTC)
            key = (start.strftime("%Y-%m-%d"), start.strftime("%H"))
            folder = self.root / f"date={key[0]}" / f"hour={key[1]}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{self.run_id}-{self._seq:05d}.parquet"
            write_table_atomic(part, path, self.compression)
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


def write_table_atomic(table: pa.Table, path: Path, compression: str = "lz4") -> None:
    """:func:`write_atomic` for an Arrow table, written by pyarrow without a conversion.

    Every column is written as optional (as polars writes them), so files of either
    writer read back alike; flow columns of nearly distinct values are written plain
    rather than dictionary-encoded, and record ids without statistics.
    """
    schema = pa.schema([f.with_nullable(True) for f in table.schema])
    names = table.column_names
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        pq.write_table(
            table.cast(schema),
            fh,
            compression=compression,
            row_group_size=256 * 1024,
            use_dictionary=[c for c in names if c not in _PLAIN],
            write_statistics=[c for c in names if c not in _NO_STATISTICS],
        )
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
