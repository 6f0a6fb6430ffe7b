"""How many internal hosts ever talked to an external destination, counted up to a cap.

Rarity only needs to tell "nobody", "one or two hosts" and "many": so for each
destination at most ``cap`` distinct clients are remembered (stable 64-bit hashes of
the destination and of the client's (site, address), :mod:`flowhawk.keyhash`); once a
destination has more, it moves to a sorted set of popular destinations (8 bytes) and
its clients are forgotten. Memory is 16 bytes per (rare destination, client) pair,
at most ``cap`` pairs per destination, plus 8 bytes per popular destination.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.keyhash import stable_hash


def address_hash(addresses: pl.Series) -> np.ndarray:
    """Stable hash of each address."""
    return stable_hash(pl.DataFrame({"ip": addresses}), ["ip"], {"ip": pl.String()})


class Popularity:
    """Distinct internal clients of each destination, up to ``cap``."""

    def __init__(self, cap: int):
        self.cap = cap
        self._pairs = pl.DataFrame(schema={"dst": pl.UInt64, "cli": pl.UInt64})
        self._popular = np.zeros(0, dtype=np.uint64)  # sorted

    def _is_popular(self, dst: np.ndarray) -> np.ndarray:
        if len(self._popular) == 0:
            return np.zeros(len(dst), dtype=bool)
        idx = np.searchsorted(self._popular, dst)
        idx[idx == len(self._popular)] = 0
        return self._popular[idx] == dst

    def lookup(self, dst: np.ndarray, cli: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clients, own) per row: distinct clients known for the destination (``cap + 1``
        for popular ones) and whether this client is one of them (popular: unknown, False)."""
        dst = np.asarray(dst, dtype=np.uint64)
        cli = np.asarray(cli, dtype=np.uint64)
        rows = pl.DataFrame({"dst": dst, "cli": cli}).with_row_index("_i")
        counts = self._pairs.group_by("dst").agg(_n=pl.len())
        own = self._pairs.with_columns(_own=pl.lit(True))
        found = (
            rows.join(counts, on="dst", how="left")
            .join(own, on=["dst", "cli"], how="left")
            .sort("_i")
        )
        clients = found.get_column("_n").fill_null(0).cast(pl.Int64).to_numpy()
        mine = found.get_column("_own").fill_null(False).to_numpy()
        popular = self._is_popular(dst)
        clients = np.where(popular, self.cap + 1, clients)
        return clients, mine & ~popular

    def update(self, dst: np.ndarray, cli: np.ndarray) -> None:
        """Remember that each client talked to each destination."""
        dst = np.asarray(dst, dtype=np.uint64)
        cli = np.asarray(cli, dtype=np.uint64)
        keep = ~self._is_popular(dst)
        if not keep.any():
            return
        pairs = pl.concat(
            [self._pairs, pl.DataFrame({"dst": dst[keep], "cli": cli[keep]})]
        ).unique()
        n = pairs.group_by("dst").agg(_n=pl.len())
        crowded = n.filter(pl.col("_n") > self.cap).get_column("dst")
        if crowded.len():
            self._popular = np.union1d(self._popular, crowded.to_numpy().astype(np.uint64))
            pairs = pairs.filter(~pl.col("dst").is_in(crowded.implode()))
        self._pairs = pairs.sort("dst", "cli")

    def to_arrow(self) -> tuple[pa.Table, pa.Table]:
        """(pairs, popular) tables."""
        return self._pairs.to_arrow(), pa.table({"dst": pa.array(self._popular, pa.uint64())})

    def load(self, pairs: pa.Table | None, popular: pa.Table | None) -> None:
        self._pairs = pl.DataFrame(schema={"dst": pl.UInt64, "cli": pl.UInt64})
        self._popular = np.zeros(0, dtype=np.uint64)
        if pairs is not None and pairs.num_rows:
            df = pl.from_arrow(pairs)
            assert isinstance(df, pl.DataFrame)
            self._pairs = df.select(pl.col("dst").cast(pl.UInt64), pl.col("cli").cast(pl.UInt64))
        if popular is not None and popular.num_rows:
            self._popular = np.sort(popular.column("dst").to_numpy().astype(np.uint64))
