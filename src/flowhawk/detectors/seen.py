"""A set of keys with the event time each was first seen: the memory of "new" detectors.

Only a stable 64-bit hash of each key is kept (:mod:`flowhawk.keyhash`), sorted, with
its first-seen time beside it: 16 bytes a key, in memory and in checkpoints, and the
same hash under every version of the libraries, so a checkpoint stays valid. A batch
is checked in O(batch * log(set)) by binary search. A truly new key is taken for a
seen one only if its hash collides with one of the n seen keys: probability about
n / 2**64 per lookup (5e-13 for ten million keys). Checkpoints of earlier versions,
which held the key columns, are read by hashing those columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.detectors.base import UTC_US
from flowhawk.keyhash import stable_hash


class SeenSet:
    """Keys (tuples of columns) with their first-seen time, growing in event time."""

    def __init__(self, keys: Sequence[str], schema: dict[str, pl.DataType]):
        self.keys = list(keys)
        self._types = {k: schema[k] for k in self.keys}
        self._hashes = np.zeros(0, dtype=np.uint64)  # sorted
        self._first = np.zeros(0, dtype=np.int64)  # first seen, epoch microseconds

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def nbytes(self) -> int:
        """Memory of the set."""
        return self._hashes.nbytes + self._first.nbytes

    def _hash(self, rows: pl.DataFrame) -> np.ndarray:
        return stable_hash(rows, self.keys, self._types)

    def _known(self, hashes: np.ndarray) -> np.ndarray:
        if len(self._hashes) == 0:
            return np.zeros(len(hashes), dtype=bool)
        idx = np.searchsorted(self._hashes, hashes)
        idx[idx == len(self._hashes)] = 0
        return self._hashes[idx] == hashes

    def contains(self, rows: pl.DataFrame) -> np.ndarray:
        """True where the key of a row is in the set."""
        return self._known(self._hash(rows)) if rows.height else np.zeros(0, dtype=bool)

    def first_new(
        self, rows: pl.DataFrame, time_col: str = "ts_start", remember: bool = False
    ) -> pl.DataFrame:
        """Rows whose key is not yet seen, the first (in row order) of each key only.

        With ``remember`` the keys of those rows are added to the set.
        """
        if rows.height == 0:
            return rows
        hashes = self._hash(rows)
        fresh = ~self._known(hashes)
        if fresh.any():
            _, first = np.unique(hashes[fresh], return_index=True)
            pick = np.sort(np.flatnonzero(fresh)[first])
        else:
            pick = np.zeros(0, dtype=np.int64)
        new = rows[pick]
        if remember and new.height:
            times = new.get_column(time_col).cast(UTC_US).dt.epoch("us").to_numpy()
            self._insert(hashes[pick], times)
        return new

    def add(self, rows: pl.DataFrame, time_col: str = "ts_start") -> None:
        """Remember the keys of ``rows`` (first occurrence times kept)."""
        self.first_new(rows, time_col, remember=True)

    def _insert(self, hashes: np.ndarray, times: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")
        hashes, times = hashes[order], times[order]
        at = np.searchsorted(self._hashes, hashes)
        self._hashes = np.insert(self._hashes, at, hashes)
        self._first = np.insert(self._first, at, times)

    def to_arrow(self) -> pa.Table:
        return pa.table(
            {
                "hash": pa.array(self._hashes, pa.uint64()),
                "first_seen": pa.array(self._first, pa.int64()).cast(pa.timestamp("us", "UTC")),
            }
        )

    def load(self, table: pa.Table | None) -> None:
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._first = np.zeros(0, dtype=np.int64)
        if table is None or table.num_rows == 0:
            return
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        first = df.get_column("first_seen").cast(UTC_US).dt.epoch("us").to_numpy()
        if "hash" in df.columns:
            hashes = df.get_column("hash").cast(pl.UInt64).to_numpy()
        else:  # an earlier checkpoint: the key columns themselves
            hashes = self._hash(df)
        order = np.argsort(hashes, kind="stable")
        self._hashes = np.ascontiguousarray(hashes[order])
        self._first = np.ascontiguousarray(first[order])
