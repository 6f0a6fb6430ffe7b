"""Keeping the behavioral log: open buckets, closing them in event time, Parquet storage.

:class:`BucketBuffer` holds the flows of buckets still open. A bucket closes when
event time (the newest flow start seen, less ``lateness``) has passed its end; its
flows are then aggregated once, completely, whatever batches they arrived in, so a
file read in hour partitions and the same flows received live give the same rows.
Flows that arrive for a bucket already closed are counted as late and left out of
the log (they are still archived).

:class:`LogStore` writes closed rows under ``<data>/behavior/view=<name>/date=/hour=``
(atomic files, like the flow archive) and reads history back for training.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from flowhawk.archive import apply_retention, write_atomic
from flowhawk.behavior.aggregate import aggregate
from flowhawk.behavior.views import BY_NAME


def floor_time(t: datetime, seconds: int) -> datetime:
    return datetime.fromtimestamp(int(t.timestamp()) // seconds * seconds, tz=UTC)


def ceil_time(t: datetime, seconds: int) -> datetime:
    low = floor_time(t, seconds)
    return low if low == t else low + timedelta(seconds=seconds)


class BucketBuffer:
    """Flows of the buckets not yet closed."""

    def __init__(self, bucket_seconds: int, lateness: float = 0.0):
        self.bucket = bucket_seconds
        self.lateness = timedelta(seconds=lateness)
        self._open: list[pl.DataFrame] = []
        self.closed_until: datetime | None = None  # every bucket before this is closed
        self.newest: datetime | None = None  # newest flow start seen
        self.late = 0  # flows that came after their bucket closed

    def add(self, flows: pl.DataFrame) -> None:
        if flows.height == 0:
            return
        if self.closed_until is not None:
            late = pl.col("ts_start") < pl.lit(self.closed_until, dtype=flows.schema["ts_start"])
            n_late = flows.select(late.sum()).item()
            if n_late:
                self.late += n_late
                flows = flows.filter(~late)
        if flows.height:
            self._open.append(flows)
            newest = flows.get_column("ts_start").max()
            assert isinstance(newest, datetime)
            self.newest = newest if self.newest is None else max(self.newest, newest)

    def close_due(self) -> tuple[pl.DataFrame, datetime, datetime] | None:
        """Flows of the buckets event time has passed, and the closed range [from, until)."""
        if self.newest is None:
            return None
        until = floor_time(self.newest - self.lateness, self.bucket)
        return self._close(until)

    def close_all(self) -> tuple[pl.DataFrame, datetime, datetime] | None:
        """Close every open bucket (end of a file input, or shutdown)."""
        if self.newest is None:
            return None
        return self._close(floor_time(self.newest, self.bucket) + timedelta(seconds=self.bucket))

    def _close(self, until: datetime) -> tuple[pl.DataFrame, datetime, datetime] | None:
        start = self.closed_until
        if start is None:
            if not self._open:
                return None
            first = min(f.get_column("ts_start").min() for f in self._open)  # type: ignore[type-var]
            assert isinstance(first, datetime)
            start = floor_time(first, self.bucket)
        if until <= start:
            return None
        held = pl.concat(self._open) if self._open else None
        self.closed_until = until
        if held is None:
            return None if start is None else (pl.DataFrame(), start, until)
        cut = pl.col("ts_start") < pl.lit(until, dtype=held.schema["ts_start"])
        ready, rest = held.filter(cut), held.filter(~cut)
        self._open = [rest] if rest.height else []
        return ready, start, until

    def state(self) -> dict[str, pa.Table]:
        """Open flows and the clock, for a checkpoint (live collection)."""
        meta = pa.table(
            {
                "closed_until": pa.array([self.closed_until], pa.timestamp("us", "UTC")),
                "newest": pa.array([self.newest], pa.timestamp("us", "UTC")),
                "late": pa.array([self.late], pa.int64()),
            }
        )
        out = {"buffer_meta": meta}
        if self._open:
            out["buffer_flows"] = pl.concat(self._open).to_arrow()
        return out

    def load_state(self, tables: dict[str, pa.Table]) -> None:
        meta = tables.get("buffer_meta")
        if meta is not None and meta.num_rows:
            self.closed_until = meta.column("closed_until")[0].as_py()
            self.newest = meta.column("newest")[0].as_py()
            self.late = meta.column("late")[0].as_py() or 0
        flows = tables.get("buffer_flows")
        if flows is not None and flows.num_rows:
            df = pl.from_arrow(flows)
            assert isinstance(df, pl.DataFrame)
            self._open = [df]


def close_to_log(
    closed: tuple[pl.DataFrame, datetime, datetime], bucket_seconds: int
) -> dict[str, pl.DataFrame]:
    flows = closed[0]
    return aggregate(flows, bucket_seconds) if flows.height else {}


class LogStore:
    """The behavioral log on disk: written per closed range, read back for training."""

    def __init__(self, root: Path, run_id: str, compression: str = "lz4"):
        self.root = root
        self.run_id = run_id
        self.compression = compression
        self._seq = 0
        # Reads of the latest training time, shared by the detectors that train then
        # (several read the same view); any write clears it.
        self._cache: dict[tuple[str, datetime, datetime], pl.DataFrame] = {}

    def write(self, log: dict[str, pl.DataFrame]) -> int:
        """Write rows of each view, partitioned by hour; returns rows written."""
        rows = 0
        self._cache.clear()
        for name, df in log.items():
            if df.height == 0:
                continue
            hours = df.select(pl.col("bucket").dt.epoch("s") // 3600).to_series()
            for (hour,), part in (
                df.with_columns(_h=hours)
                .partition_by("_h", as_dict=True, maintain_order=True)
                .items()
            ):
                t = datetime.fromtimestamp(int(hour) * 3600, UTC)
                folder = self.root / f"view={name}" / f"date={t:%Y-%m-%d}" / f"hour={t:%H}"
                folder.mkdir(parents=True, exist_ok=True)
                write_atomic(
                    part.drop("_h"),
                    folder / f"part-{self.run_id}-{self._seq:06d}.parquet",
                    self.compression,
                )
                rows += part.height
        self._seq += 1
        return rows

    def read(
        self,
        view: str,
        since: datetime,
        until: datetime,
        share: bool = True,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rows of ``view`` with ``since <= bucket < until`` (the same frame for the same
        arguments until the next write: detectors sharing a view share the read; with
        ``share=False``, a small lookup, it is neither taken from nor kept in the cache;
        ``columns``, only those, read unshared)."""
        if not share or columns is not None:
            return self._read(view, since, until, columns)
        slot = (view, since, until)
        hit = self._cache.get(slot)
        if hit is None:
            if any(k[2] != until for k in self._cache):
                self._cache.clear()
            hit = self._cache[slot] = self._read(view, since, until)
        return hit

    def _read(
        self, view: str, since: datetime, until: datetime, columns: Sequence[str] | None = None
    ) -> pl.DataFrame:
        folder = self.root / f"view={view}"
        files = []
        for day in sorted(folder.glob("date=*")):
            for hour in sorted(day.glob("hour=*")):
                try:
                    t = datetime.strptime(f"{day.name[5:]} {hour.name[5:]}", "%Y-%m-%d %H")
                except ValueError:
                    continue
                t = t.replace(tzinfo=UTC)
                if t + timedelta(hours=1) > since and t < until:
                    files.extend(sorted(hour.glob("*.parquet")))
        if not files:
            from flowhawk.behavior.views import empty

            rows = empty(BY_NAME[view], _KEY_TYPES)
            return rows if columns is None else rows.select(columns)
        scan = pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore")
        scan = scan.filter(pl.col("bucket").is_between(since, until, closed="left"))
        return (scan if columns is None else scan.select(columns)).collect()

    def apply_retention(self, keep: float, now: datetime) -> int:
        self._cache.clear()
        return sum(apply_retention(d, keep, now) for d in self.root.glob("view=*"))


_KEY_TYPES: dict[str, pl.DataType] = {
    "site": pl.String(),
    "src_ip": pl.String(),
    "dst_ip": pl.String(),
    "ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
}
