"""Rows of the behavioral log turned into arrays for the clustering models (M10-M25).

A frame of log rows of one view becomes a :class:`Prepared`: its rows sorted by key
(a 64-bit hash of the view's key columns) then bucket, the ``log1p`` of the
:data:`~flowhawk.behavior.views.MEASURES` as float32, and for each row the previous
row of the same key in the frame (the arrays are filled by the numba kernels of
:mod:`~flowhawk.detectors.clusters_rows`; the ``log1p`` is the float32 one polars
gives). Several detectors read the same view of the same closed buckets (four read
``comm``), so the preparation of a frame is cached for as long as the frame lives and
done once, and so are the rich vectors' non-linear features its two Gaussian mixtures
use.

Keys are hashed with polars (stable within a polars version); each model stores the
hash of a fixed probe key, and a model or live state restored under a polars whose
hash differs is discarded rather than trusted (:func:`hash_probe`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from flowhawk.behavior.views import BY_NAME, MEASURES

KEY_SEED = 0xC1A5
KEY_TYPES: dict[str, pl.DataType] = {
    "site": pl.String(),
    "src_ip": pl.String(),
    "dst_ip": pl.String(),
    "ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
}


def key_hash(view: str) -> pl.Expr:
    """64-bit hash of the view's key columns (``_key``)."""
    key = BY_NAME[view].key
    return pl.struct([pl.col(k).cast(KEY_TYPES[k]) for k in key]).hash(KEY_SEED).alias("_key")


def hash_probe(view: str) -> int:
    """The hash of a fixed key: equal iff keys hash as they did when a model was built."""
    key = BY_NAME[view].key
    probe = pl.DataFrame({k: pl.Series([_PROBE[k]], dtype=KEY_TYPES[k]) for k in key})
    return int(probe.select(key_hash(view)).item())


_PROBE = {
    "site": "probe",
    "src_ip": "192.0.2.1",
    "dst_ip": "2001:db8::1",
    "ip": "198.51.100.1",
    "dst_port": 443,
    "proto": 6,
}


@dataclass
class Prepared:
    """A frame of log rows as arrays, sorted by key hash then bucket."""

    order: np.ndarray  # int64: row of the frame at each sorted position
    keys: np.ndarray  # uint64: key hash, ascending
    buckets: np.ndarray  # int64: bucket start, epoch seconds
    X: np.ndarray  # float32 (n, 8): log1p of the measures
    prev: np.ndarray  # int64: previous sorted position of the same key, or -1
    group: np.ndarray  # int64: key number (0, 1, ...) of each sorted position
    _extras: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def extras(self) -> np.ndarray:
        """float64 (n, 3): the non-linear features of each row's rich vector (computed
        once, for the Gaussian mixtures of the view)."""
        if self._extras is None:
            from flowhawk.detectors.clusters_scan import extras

            self._extras = extras(self.X)
        return self._extras

    @property
    def heads(self) -> np.ndarray:
        """Sorted positions of the first row of each key."""
        return np.flatnonzero(self.prev < 0)

    @property
    def tails(self) -> np.ndarray:
        """Sorted positions of the last row of each key."""
        last = np.ones(self.n, dtype=bool)
        last[:-1] = self.keys[1:] != self.keys[:-1]
        return np.flatnonzero(last)


def prepare(rows: pl.DataFrame, view: str) -> Prepared:
    """Arrays of ``rows`` (log rows of ``view``)."""
    from flowhawk.detectors import clusters_rows as kern

    cols = rows.select(key_hash(view), pl.col("bucket").dt.epoch("s").alias("_b"))
    keys = readonly(cols.get_column("_key").to_numpy())
    X = np.empty((rows.height, len(MEASURES)), dtype=np.float32)
    table = _log1p_table()
    for j, m in enumerate(MEASURES):
        kern.log1p_into(readonly(rows.get_column(m).to_numpy()), table, X, j)
    n = rows.height
    out = Prepared(
        order=np.empty(n, dtype=np.int64),
        keys=np.empty(n, dtype=np.uint64),
        buckets=np.empty(n, dtype=np.int64),
        X=np.empty((n, len(MEASURES)), dtype=np.float32),
        prev=np.empty(n, dtype=np.int64),
        group=np.empty(n, dtype=np.int64),
    )  # allocated by numpy (large pages where the system has them), filled by numba
    buckets = readonly(cols.get_column("_b").to_numpy())
    kern.arrange(keys, buckets, X, out.order, out.keys, out.buckets, out.X, out.prev, out.group)
    return out


def readonly(a: np.ndarray) -> np.ndarray:
    """``a``, marked read-only: kernels then see one type of array, whether it is a
    view of a frame's memory (read-only) or a copy."""
    a.flags.writeable = False
    return a


_TABLE: list[np.ndarray] = []


def _log1p_table() -> np.ndarray:
    if not _TABLE:
        from flowhawk.detectors.clusters_rows import log1p_table

        _TABLE.append(log1p_table())
    return _TABLE[0]


_CACHE: dict[tuple[int, str], tuple[weakref.ref, Prepared]] = {}
_CACHE_SIZE = 24


def prepared(rows: pl.DataFrame, view: str) -> Prepared:
    """:func:`prepare`, computed once per live frame (detectors of a view share it)."""
    slot = (id(rows), view)
    hit = _CACHE.get(slot)
    if hit is not None and hit[0]() is rows:
        return hit[1]
    prep = prepare(rows, view)
    for k in [k for k, (ref, _) in _CACHE.items() if ref() is None]:
        del _CACHE[k]
    while len(_CACHE) >= _CACHE_SIZE:
        del _CACHE[next(iter(_CACHE))]
    _CACHE[slot] = (weakref.ref(rows), prep)
    return prep


def lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query in ``sorted_keys``, or -1."""
    if len(sorted_keys) == 0:
        return np.full(len(queries), -1, dtype=np.int64)
    pos = np.searchsorted(sorted_keys, queries)
    pos[pos == len(sorted_keys)] = 0
    return np.where(sorted_keys[pos] == queries, pos, -1).astype(np.int64)
