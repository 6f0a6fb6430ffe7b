"""Dense, value-ordered codes of a batch's key columns (addresses, sites, ports...).

A column's code of a value is that value's rank among the batch's distinct values
(nulls first), so grouping on codes groups on values and ordering by codes orders by
values. Columns may share one dictionary (the client and server addresses do, so a
device has one code on either side).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from flowhawk.behavior.grouping import capacity
from flowhawk.jit import numba
from flowhawk.keyhash import fmix

#: Integer columns whose values span less than this are coded with a lookup table.
_SPAN = 1 << 22
_SEEDS = (0x517C_C1B7_2722_0A95, 0x2545_F491_4F6C_DD1D)


class Dictionary:
    """The distinct ``values`` of ``columns`` in order, and each column's ``codes``."""

    def __init__(self, columns: Sequence[pl.Series]):
        columns = list(columns)
        coded = (
            _string_codes(columns)
            if columns[0].dtype in (pl.String, pl.Categorical, pl.Enum)
            else _int_codes(columns)
        )
        if coded is None:
            coded = _ranked(columns)
        self.values: pl.Series = coded[0]
        self.codes: list[np.ndarray] = coded[1]

    def __len__(self) -> int:
        return len(self.values)


@numba.njit(cache=True, nogil=True)
def _first_seen(keys, check):  # type: ignore[no-untyped-def]
    """Id of each key's value in order of first appearance, each id's first row, and
    whether ``check`` (a second hash) agrees within every id.

    The table grows with the distinct keys, so few distinct keys stay in cache.
    """
    n = len(keys)
    gid = np.empty(n, np.int64)
    first = np.empty(max(n, 1), np.int64)
    cap = 1024
    table = np.zeros((cap, 3), np.uint64)  # key, check, id + 1 (0: empty)
    g = 0
    for i in range(n):
        k = keys[i]
        mask = np.uint64(cap - 1)
        s = fmix(k) & mask
        while True:
            t = table[s, 2]
            if t == 0:
                table[s, 0] = k
                table[s, 1] = check[i]
                table[s, 2] = g + 1
                first[g] = i
                gid[i] = g
                g += 1
                if 2 * g > cap:
                    cap = capacity(4 * g)
                    table = _regrow(table, cap)
                break
            if table[s, 0] == k:
                if table[s, 1] != check[i]:
                    return gid, first[:g], False
                gid[i] = np.int64(t) - 1
                break
            s = (s + np.uint64(1)) & mask
    return gid, first[:g], True


@numba.njit(cache=True, nogil=True)
def _regrow(table, cap):  # type: ignore[no-untyped-def]
    new = np.zeros((cap, 3), np.uint64)
    mask = np.uint64(cap - 1)
    for j in range(len(table)):
        if table[j, 2] != 0:
            q = fmix(table[j, 0]) & mask
            while new[q, 2] != 0:
                q = (q + np.uint64(1)) & mask
            new[q] = table[j]
    return new


def _int_codes(columns: list[pl.Series]) -> tuple[pl.Series, list[np.ndarray]] | None:
    """Codes of integer (or temporal) columns without nulls spanning a small range:
    a lookup table; None otherwise."""
    if any(c.null_count() for c in columns):
        return None
    ints = [c.to_physical().cast(pl.Int64).to_numpy() for c in columns]
    lo = min(int(v.min()) for v in ints if len(v))
    hi = max(int(v.max()) for v in ints if len(v))
    if hi - lo >= _SPAN:
        return None
    present = np.zeros(hi - lo + 1, np.bool_)
    for v in ints:
        present[v - lo] = True
    table = np.cumsum(present) - 1
    values = pl.Series(columns[0].name, np.flatnonzero(present) + lo).cast(columns[0].dtype)
    return values, [table[v - lo] for v in ints]


def _string_codes(columns: list[pl.Series]) -> tuple[pl.Series, list[np.ndarray]] | None:
    """Codes of strings: one column's values are told apart by a 64-bit hash and
    checked with a second, independent one; then the columns' distinct values are
    merged and sorted. None if the second hash finds two values sharing the first.

    Two different strings share a code only if both hashes collide at once.
    """
    if len(columns) == 1 and not columns[0].null_count():
        only = columns[0]
        if len(only) and (only == only[0]).all():  # a constant column (a site)
            return only.head(1), [np.zeros(len(only), np.int64)]
    locals_: list[tuple[np.ndarray, pl.Series, np.ndarray, np.ndarray]] = []
    for col in columns:
        h, check = (col.hash(seed).to_numpy() for seed in _SEEDS)
        gid, first, ok = _first_seen(h, check)
        if not ok:
            return None
        locals_.append((gid, col.gather(first), h[first], check[first]))
    reps = pl.concat([r for _, r, _, _ in locals_])
    union, first, ok = _first_seen(
        np.concatenate([h for *_, h, _ in locals_]), np.concatenate([c for *_, c in locals_])
    )
    if not ok:
        return None
    distinct = reps.gather(first)
    order = distinct.arg_sort(nulls_last=False).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    code_of_rep = rank[union]
    out, start = [], 0
    for gid, r, *_ in locals_:
        out.append(code_of_rep[start : start + len(r)][gid])
        start += len(r)
    return distinct.gather(order), out


def _ranked(columns: list[pl.Series]) -> tuple[pl.Series, list[np.ndarray]]:
    """Codes by grouping on the values themselves: exact in every case, slower."""
    joined = pl.concat(columns, rechunk=False)
    values = joined.unique().sort(nulls_last=False)
    codes = (
        joined.to_frame("v")
        .join(
            values.to_frame("v").with_row_index("c"),
            on="v",
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
        .get_column("c")
        .cast(pl.Int64)
        .to_numpy()
    )
    return values, list(np.split(codes, np.cumsum([len(c) for c in columns])[:-1]))
