"""Grouping on integer codes, in one pass over a batch, for the behavioral log.

The log's views are group-bys of the same flows on different keys. Here every key
column is turned into dense codes whose order is the order of its values (so sorting
groups by codes sorts them by values), a key's codes are packed into one ``uint64``,
and numba kernels assign each row its group, sum measures per group and count
distinct values per group with open-addressing hash tables that grow as needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowhawk.jit import numba
from flowhawk.keyhash import fmix

#: Rows per partition: a partition's hash table stays in the core's cache.
_PART_ROWS = 1 << 13


@numba.njit(cache=True, nogil=True)
def capacity(n):  # type: ignore[no-untyped-def]
    """Slots of an open-addressing table for ``n`` entries: a power of two, >= 16."""
    cap = 16
    while cap < n:
        cap *= 2
    return cap


@numba.njit(cache=True, nogil=True)
def _largest(bounds):  # type: ignore[no-untyped-def]
    """Rows of the largest partition (at least 1)."""
    most = 1
    for p in range(len(bounds) - 1):
        most = max(most, bounds[p + 1] - bounds[p])
    return most


@numba.njit(cache=True, nogil=True)
def _partition(keys, lo, shift, parts):  # type: ignore[no-untyped-def]
    """Rows in order of key range ``(key - lo) >> shift`` (stable within a range):
    the rows, their keys in that order, and where each range starts."""
    n = len(keys)
    bounds = np.zeros(parts + 1, np.int64)
    for i in range(n):
        bounds[((keys[i] - lo) >> shift) + np.uint64(1)] += 1
    for p in range(parts):
        bounds[p + 1] += bounds[p]
    pos = bounds[:-1].copy()
    order = np.empty(n, np.int64)
    pk = np.empty(n, np.uint64)
    for i in range(n):
        p = (keys[i] - lo) >> shift
        j = pos[p]
        pos[p] = j + 1
        order[j] = i
        pk[j] = keys[i]
    return order, pk, bounds


@numba.njit(cache=True, nogil=True)
def _group(pk, order, bounds):  # type: ignore[no-untyped-def]
    """Dense group of each row in key order, per partition with a table in cache.

    Returns the group of each row (in partition order), each group's first row and
    size, and the number of groups.
    """
    n = len(pk)
    pg = np.empty(n, np.int64)
    first = np.empty(max(n, 1), np.int64)
    size = np.zeros(max(n, 1), np.int64)
    most = _largest(bounds)
    cap = capacity(2 * most)
    tkey = np.empty(cap, np.uint64)
    tid = np.full(cap, -1, np.int64)
    lkey = np.empty(most, np.uint64)
    lfirst = np.empty(most, np.int64)
    lsize = np.zeros(most, np.int64)
    rank = np.empty(most, np.int64)
    base = 0
    for p in range(len(bounds) - 1):
        a, b = bounds[p], bounds[p + 1]
        if a == b:
            continue
        c = capacity(2 * (b - a))
        mask = np.uint64(c - 1)
        m = 0
        for j in range(a, b):
            k = pk[j]
            s = fmix(k) & mask
            while True:
                t = tid[s]
                if t < 0:
                    tkey[s] = k
                    tid[s] = m
                    lkey[m] = k
                    lfirst[m] = order[j]
                    lsize[m] = 1
                    pg[j] = m
                    m += 1
                    break
                if tkey[s] == k:
                    pg[j] = t
                    lsize[t] += 1
                    break
                s = (s + np.uint64(1)) & mask
        tid[:c] = -1
        perm = np.argsort(lkey[:m])
        for r in range(m):
            rank[perm[r]] = r
            first[base + r] = lfirst[perm[r]]
            size[base + r] = lsize[perm[r]]
        for j in range(a, b):
            pg[j] = base + rank[pg[j]]
        base += m
    return pg, first[:base], size[:base], base


@numba.njit(cache=True, nogil=True)
def _scatter(pg, order, n):  # type: ignore[no-untyped-def]
    gid = np.empty(n, np.int64)
    for j in range(len(order)):
        gid[order[j]] = pg[j]
    return gid


@numba.njit(cache=True, nogil=True)
def _distinct(pg, order, bounds, x, groups):  # type: ignore[no-untyped-def]
    """Per group, how many distinct ``x`` its rows have (``x`` >= 0, < 2**32); rows in
    partition order, each partition a range of groups."""
    count = np.zeros(groups, np.int64)
    most = _largest(bounds)
    cap = capacity(2 * most)
    tkey = np.empty(cap, np.uint64)
    used = np.zeros(cap, np.bool_)
    for p in range(len(bounds) - 1):
        a, b = bounds[p], bounds[p + 1]
        c = capacity(2 * (b - a))
        mask = np.uint64(c - 1)
        for j in range(a, b):
            g = pg[j]
            k = (np.uint64(g) << np.uint64(32)) | np.uint64(x[order[j]])
            s = fmix(k) & mask
            while True:
                if not used[s]:
                    used[s] = True
                    tkey[s] = k
                    count[g] += 1
                    break
                if tkey[s] == k:
                    break
                s = (s + np.uint64(1)) & mask
        used[:c] = False
    return count


@numba.njit(cache=True, nogil=True)
def _sums(pg, order, groups, values, at, swap):  # type: ignore[no-untyped-def]
    """Per group sums of ``values`` (items x measures): row ``i`` adds item ``at[i]``
    (``i`` if ``at`` is empty), with the measures of each pair swapped (sent for
    received) where ``swap[i]``."""
    m = values.shape[1]
    out = np.zeros((groups, m), np.int64)
    for j in range(len(order)):
        g = pg[j]
        i = order[j]
        r = at[i] if len(at) else i
        if len(swap) and swap[i]:
            for c in range(m):
                out[g, c ^ 1 if c < 4 else c] += values[r, c]
        else:
            for c in range(m):
                out[g, c] += values[r, c]
    return out


def _partitioned(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_partition` into key ranges of about :data:`_PART_ROWS` rows each if the
    keys spread evenly over their range."""
    if not len(keys):
        return np.zeros(0, np.int64), keys, np.zeros(1, np.int64)
    lo, hi = keys.min(), keys.max()
    want = max(len(keys) // _PART_ROWS, 1).bit_length()  # log2 of the partitions wanted
    shift = max(int(hi - lo).bit_length() - want, 0)
    parts = (int(hi - lo) >> shift) + 1
    return _partition(keys, lo, np.uint64(shift), parts)


class Grouping:
    """The groups of rows with equal ``uint64`` keys, ordered by key.

    ``gid`` is each row's group (0 .. ``n`` - 1, in key order), ``first`` each group's
    first row. Rows are also kept partitioned by ranges of groups (``order``, with
    ``pg`` their groups), so that per-group work touches one range at a time.
    """

    def __init__(self, keys: np.ndarray):
        self.order, pk, self.bounds = _partitioned(keys)
        self.pg, self.first, self._sizes, self.n = _group(pk, self.order, self.bounds)
        self.gid = _scatter(self.pg, self.order, len(keys))

    @classmethod
    def given(cls, gid: np.ndarray, n: int) -> Grouping:
        """The grouping whose group of each row is ``gid`` (``n`` groups)."""
        out = cls.__new__(cls)
        out.gid, out.n = gid, n
        out.order, pg, out.bounds = _partitioned(gid.astype(np.uint64))
        out.pg = pg.astype(np.int64)
        out.first = np.zeros(0, np.int64)
        out._sizes = None
        return out

    @classmethod
    def prefix(cls, keys: np.ndarray, radix: int) -> Grouping:
        """The groups of ``keys`` (sorted, packed) without their last digit (``radix``)."""
        head = keys // np.uint64(radix)
        starts = np.r_[True, head[1:] != head[:-1]][: len(head)]
        out = cls.given(np.cumsum(starts) - 1, int(starts.sum()))
        out.first = np.flatnonzero(starts)
        return out

    def rollup(self, sums: np.ndarray) -> np.ndarray:
        """Per group sums of the rows' ``sums`` (rows x measures); the rows themselves
        when each is its own group."""
        return sums if self.n == len(self.gid) else self.sums(sums)

    def sums(
        self, values: np.ndarray, at: np.ndarray | None = None, swap: np.ndarray | None = None
    ) -> np.ndarray:
        """Per group sums of ``values`` (int64, rows x measures, C order): groups x
        measures. With ``at``, row ``i`` of the grouping adds ``values[at[i]]``; with
        ``swap``, the first four measures (two pairs) of the rows where it is true are
        added swapped."""
        none = np.zeros(0, np.int64)
        return _sums(
            self.pg,
            self.order,
            self.n,
            values,
            none if at is None else _int64(at),
            np.zeros(0, np.bool_) if swap is None else swap,
        )

    def sizes(self) -> np.ndarray:
        """Rows per group."""
        if self._sizes is None:
            self._sizes = np.bincount(self.gid, minlength=self.n)
        return self._sizes

    def distinct(self, codes: np.ndarray) -> np.ndarray:
        """Per group, the number of distinct ``codes`` (dense, >= 0) among its rows."""
        return _distinct(self.pg, self.order, self.bounds, codes, self.n)


@numba.njit(cache=True, nogil=True)
def _pack(acc, codes, idx, sizes):  # type: ignore[no-untyped-def]
    """``acc`` times the radix of each code column plus its code, per output row; a
    column's code of output row ``j`` is at ``idx[c][j]`` (at ``j`` if ``idx[c]`` is
    empty)."""
    out = acc.copy()
    for c in range(len(codes)):
        code, at, m = codes[c], idx[c], np.uint64(sizes[c])
        if len(at):
            for j in range(len(out)):
                out[j] = out[j] * m + np.uint64(code[at[j]])
        else:
            for j in range(len(out)):
                out[j] = out[j] * m + np.uint64(code[j])
    return out


def pack(
    codes: Sequence[np.ndarray],
    sizes: Sequence[int],
    rows: np.ndarray | Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """One ``uint64`` per output row whose order is the lexicographic order of
    ``codes`` (int64, dense, each below its size), most significant first.

    ``rows`` picks the output rows: one index array for every column, or one per
    column (None: that column is given per output row already); by default the rows
    of the columns themselves. When the radix product would pass 2**63 the columns
    so far are replaced by their dense rank (same order, smaller radix).
    """
    none = np.zeros(0, np.int64)
    if rows is None or isinstance(rows, np.ndarray):
        rows = [rows] * len(codes)
    idx = [none if r is None else _int64(r) for r in rows]
    codes = [_int64(c) for c in codes]
    n = next((len(r) for r in rows if r is not None), len(codes[0]))
    acc, size, start = np.zeros(n, np.uint64), 1, 0
    for end, m in enumerate(sizes):
        m = max(int(m), 1)
        if size * m >= 2**63:
            part = slice(start, end)
            acc = _pack(acc, tuple(codes[part]), tuple(idx[part]), _radix(sizes[part]))
            g = Grouping(acc)
            acc, size, start = g.gid.astype(np.uint64), g.n, end
        size *= m
    return _pack(acc, tuple(codes[start:]), tuple(idx[start:]), _radix(sizes[start:]))


def _radix(sizes: Sequence[int]) -> np.ndarray:
    return np.array([max(int(m), 1) for m in sizes], np.int64)


def _int64(a: np.ndarray) -> np.ndarray:
    """``a`` as a writable, C-ordered int64 array (one type for the kernels)."""
    return np.require(a, np.int64, ["C", "W"])
