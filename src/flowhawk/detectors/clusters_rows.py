"""numba kernels putting log rows in key order for the clustering models (M10-M25).

A frame of log rows is scored in the order of its key hashes (then buckets), so the
rows of a key are adjacent and every table keyed by hash (a model's keys, the last
vectors of velocity) is joined by one merge walk instead of a search per row:

- :func:`log1p_into`: the ``log1p`` of a measure as float32, exactly as the log's
  columns cast to float32 give it; small integers (most packet, flow, peer and port
  counts) are looked up in a table of the same values;
- :func:`arrange`: the rows in (key, bucket) order, with each row's previous row of
  the same key;
- :func:`find_last` and :func:`remember`: the stored last vectors of a range's keys,
  and the store advanced with the range's last vector of each key.
"""

from __future__ import annotations

import math

import numpy as np

from flowhawk.jit import numba

LOG_TABLE = 1 << 16  # log1p of the integers below this is looked up, not computed
SPREAD = 3  # rows are spread over ranges of the key hash of about 2**SPREAD rows each


@numba.njit(cache=True)
def log1p_table():
    """float32 ``log1p`` of 0 .. LOG_TABLE-1 (as float32)."""
    out = np.empty(LOG_TABLE, dtype=np.float32)
    for c in range(LOG_TABLE):
        out[c] = math.log1p(np.float32(c))
    return out


@numba.njit(cache=True)
def log1p_into(col, table, X, j):
    """``X[:, j]`` = float32 ``log1p`` of ``col`` cast to float32 (``table``: see
    :func:`log1p_table`)."""
    for i in range(col.shape[0]):
        x = np.float32(col[i])
        if x >= 1.0 and x < LOG_TABLE and x == math.floor(x):
            X[i, j] = table[int(x)]
        else:
            X[i, j] = math.log1p(x)


@numba.njit(cache=True)
def arrange(keys, buckets, X, order, k, b, x, prev, group):
    """Rows in (key, bucket, row) order: ``order`` (the row at each sorted position),
    ``k``, ``b``, ``x`` (sorted keys, buckets and vectors), ``prev`` (each row's previous
    position of the same key, or -1) and ``group`` (its key's number).

    Key hashes are uniform, so one pass spreads the rows over ranges of the hash by its
    high bits (a few rows each) and insertion puts each range in order."""
    n = keys.shape[0]
    bits = 1
    while bits < 40 and (1 << (bits + SPREAD)) < n:
        bits += 1  # ranges of about 2**SPREAD rows
    shift = np.uint64(64 - bits)
    ranges = 1 << bits
    start = np.zeros(ranges + 1, dtype=np.int64)
    for i in range(n):
        start[(keys[i] >> shift) + np.uint64(1)] += 1
    for r in range(ranges):
        start[r + 1] += start[r]
    fill = start[:-1].copy()
    for i in range(n):
        r = keys[i] >> shift
        p = fill[r]
        fill[r] += 1
        k[p], b[p], order[p] = keys[i], buckets[i], i
    for r in range(ranges):
        for a in range(start[r] + 1, start[r + 1]):
            kk, t, o = k[a], b[a], order[a]
            c = a
            while c > start[r] and (
                k[c - 1] > kk
                or (k[c - 1] == kk and (b[c - 1] > t or (b[c - 1] == t and order[c - 1] > o)))
            ):
                k[c], b[c], order[c] = k[c - 1], b[c - 1], order[c - 1]
                c -= 1
            k[c], b[c], order[c] = kk, t, o
    g = -1
    for p in range(n):
        if p > 0 and k[p] == k[p - 1]:
            prev[p] = p - 1
        else:
            prev[p] = -1
            g += 1
        group[p] = g
        o = order[p]
        for j in range(X.shape[1]):
            x[p, j] = X[o, j]


@numba.njit(cache=True)
def find_last(keys, prev, stored):
    """For sorted rows (``keys``, ``prev``) and sorted ``stored`` keys: per row, the
    ordinal of its key among the stored keys found (first row of a key only, else -1),
    and the positions in ``stored`` of the keys found, in that order."""
    n, m = keys.shape[0], stored.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    at = np.empty(n, dtype=np.int64)
    found, s = 0, 0
    for i in range(n):
        if prev[i] >= 0:
            continue
        while s < m and stored[s] < keys[i]:
            s += 1
        if s < m and stored[s] == keys[i]:
            out[i] = found
            at[found] = s
            found += 1
    return out, at[:found].copy()


@numba.njit(cache=True)
def count_new(keys, stored):
    """How many distinct ``keys`` (sorted) are not among ``stored`` (sorted)."""
    new, s = 0, 0
    for i in range(keys.shape[0]):
        if i > 0 and keys[i] == keys[i - 1]:
            continue
        while s < stored.shape[0] and stored[s] < keys[i]:
            s += 1
        if s == stored.shape[0] or stored[s] != keys[i]:
            new += 1
    return new


@numba.njit(cache=True)
def remember(keys, X, buckets, skeys, svec, stimes, okeys, ovec, otimes):
    """The stored (``skeys``, ``svec``, ``stimes``) merged with the last row of each key
    of the sorted rows (``keys``, ``X``, ``buckets``), into ``okeys``, ``ovec``,
    ``otimes`` (which may be the stored arrays themselves when no key is new)."""
    n, m = keys.shape[0], skeys.shape[0]
    s, o = 0, 0
    for i in range(n):
        if i + 1 < n and keys[i + 1] == keys[i]:
            continue  # not the key's last row
        while s < m and skeys[s] < keys[i]:
            okeys[o], otimes[o] = skeys[s], stimes[s]
            for j in range(svec.shape[1]):
                ovec[o, j] = svec[s, j]
            s += 1
            o += 1
        if s < m and skeys[s] == keys[i]:
            s += 1
        okeys[o], otimes[o] = keys[i], buckets[i]
        for j in range(X.shape[1]):
            ovec[o, j] = X[i, j]
        o += 1
    while s < m:
        okeys[o], otimes[o] = skeys[s], stimes[s]
        for j in range(svec.shape[1]):
            ovec[o, j] = svec[s, j]
        s += 1
        o += 1
