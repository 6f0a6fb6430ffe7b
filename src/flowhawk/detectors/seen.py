"""A set of keys with the event time each was first seen: the memory of "new" detectors."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pyarrow as pa

from flowhawk.detectors.base import UTC_US


class SeenSet:
    """Keys (tuples of columns) with their first-seen time, growing in event time."""

    def __init__(self, keys: Sequence[str], schema: dict[str, pl.DataType]):
        self.keys = list(keys)
        self._schema = {**{k: schema[k] for k in self.keys}, "first_seen": UTC_US}
        self._seen = pl.DataFrame(schema=self._schema)
        self._chunks = 0

    def __len__(self) -> int:
        return self._seen.height

    @property
    def table(self) -> pl.DataFrame:
        return self._seen

    def first_new(self, rows: pl.DataFrame, time_col: str = "ts_start") -> pl.DataFrame:
        """Rows of ``rows`` whose key is not yet seen, the first (in order) of each key only.

        ``rows`` must hold the key columns and ``time_col``; it is not changed, and nothing
        is added to the set: call :meth:`add` for that.
        """
        if rows.height == 0:
            return rows
        first = rows.filter(pl.struct(self.keys).is_first_distinct())
        if self._seen.height == 0:
            return first
        return first.join(self._seen.select(self.keys), on=self.keys, how="anti", nulls_equal=True)

    def add(self, rows: pl.DataFrame, time_col: str = "ts_start") -> None:
        """Remember the keys of ``rows`` (first occurrence times kept)."""
        new = self.first_new(rows, time_col)
        if new.height == 0:
            return
        fresh = new.select(
            [
                *(pl.col(k).cast(self._schema[k]) for k in self.keys),
                pl.col(time_col).cast(UTC_US).alias("first_seen"),
            ]
        )
        self._seen = pl.concat([self._seen, fresh], how="vertical", rechunk=False)
        self._chunks += 1
        if self._chunks >= 64:  # keep joins fast: few large chunks, not many small ones
            self._seen = self._seen.rechunk()
            self._chunks = 0

    def to_arrow(self) -> pa.Table:
        return self._seen.to_arrow()

    def load(self, table: pa.Table | None) -> None:
        if table is None or table.num_rows == 0:
            self._seen = pl.DataFrame(schema=self._schema)
            return
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        self._seen = df.select([pl.col(c).cast(t) for c, t in self._schema.items()])
