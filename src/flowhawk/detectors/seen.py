"""A set of keys with the event time each was first seen: the memory of "new" detectors.

Keys are kept as columns (that is what is checkpointed); lookups go through a
sorted array of 64-bit hashes of the keys, rebuilt from the keys when state is
loaded, so a batch is checked in O(batch * log(set)) without rebuilding a join
table of the whole set. A truly new key is taken for a seen one only if its hash
collides with one of the n seen keys: probability about n / 2**64 per lookup
(5e-13 for ten million keys).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.detectors.base import UTC_US

_SEED = 0x5EED


class SeenSet:
    """Keys (tuples of columns) with their first-seen time, growing in event time."""

    def __init__(self, keys: Sequence[str], schema: dict[str, pl.DataType]):
        self.keys = list(keys)
        self._schema = {**{k: schema[k] for k in self.keys}, "first_seen": UTC_US}
        self._seen = pl.DataFrame(schema=self._schema)
        self._hashes = np.zeros(0, dtype=np.uint64)  # sorted
        self._chunks = 0

    def __len__(self) -> int:
        return self._seen.height

    @property
    def table(self) -> pl.DataFrame:
        return self._seen

    def _hash(self, rows: pl.DataFrame) -> np.ndarray:
        cast = [pl.col(k).cast(self._schema[k]) for k in self.keys]
        return rows.select(pl.struct(cast).hash(_SEED)).to_series().to_numpy()

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
            self._insert(new, hashes[pick], time_col)
        return new

    def add(self, rows: pl.DataFrame, time_col: str = "ts_start") -> None:
        """Remember the keys of ``rows`` (first occurrence times kept)."""
        self.first_new(rows, time_col, remember=True)

    def _insert(self, new: pl.DataFrame, hashes: np.ndarray, time_col: str) -> None:
        fresh = new.select(
            [
                *(pl.col(k).cast(self._schema[k]) for k in self.keys),
                pl.col(time_col).cast(UTC_US).alias("first_seen"),
            ]
        )
        self._seen = pl.concat([self._seen, fresh], how="vertical", rechunk=False)
        # Two sorted runs: the stable sort (timsort) merges them in linear time.
        self._hashes = np.sort(np.concatenate([self._hashes, np.sort(hashes)]), kind="stable")
        self._chunks += 1
        if self._chunks >= 64:  # few large chunks keep later scans fast
            self._seen = self._seen.rechunk()
            self._chunks = 0

    def to_arrow(self) -> pa.Table:
        return self._seen.to_arrow()

    def load(self, table: pa.Table | None) -> None:
        if table is None or table.num_rows == 0:
            self._seen = pl.DataFrame(schema=self._schema)
            self._hashes = np.zeros(0, dtype=np.uint64)
            return
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        self._seen = df.select([pl.col(c).cast(t) for c, t in self._schema.items()])
        self._hashes = np.sort(self._hash(self._seen))
