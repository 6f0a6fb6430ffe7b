"""A stable 64-bit hash of key columns, defined here so that it never changes.

Sets of seen keys are kept as hashes only (16 bytes a key with the first-seen time);
their checkpoints must mean the same after an upgrade of polars, whose own hash may
change between versions. This one is fixed by this module: strings hash their UTF-8
bytes (FNV-1a, then the length), integers their value, nulls a marker of their own,
each column mixed in turn and the result finalized with the MurmurHash3 64-bit
finalizer. A truly new key is taken for a known one only if its hash collides:
about n / 2**64 per lookup among n keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from flowhawk.jit import numba

SEED = np.uint64(0x5EED_F10A_4A3C_0001)
_NULL = np.uint64(0x9E37_79B9_7F4A_7C15)


@numba.njit(cache=True, nogil=True)
def fmix(x):  # type: ignore[no-untyped-def]
    """The MurmurHash3 64-bit finalizer: every input bit moves every output bit."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


@numba.njit(cache=True, nogil=True)
def _mix_strings(h, offsets, data, valid):  # type: ignore[no-untyped-def]
    prime = np.uint64(0x100000001B3)
    for i in range(len(h)):
        if not valid[i]:
            h[i] = fmix(h[i] ^ _NULL)
            continue
        x = h[i] ^ np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            x = (x ^ np.uint64(data[j])) * prime
        h[i] = fmix(x ^ np.uint64(offsets[i + 1] - offsets[i]))


@numba.njit(cache=True, nogil=True)
def _mix_ints(h, values, valid):  # type: ignore[no-untyped-def]
    for i in range(len(h)):
        v = np.uint64(values[i]) if valid[i] else _NULL
        h[i] = fmix(h[i] ^ fmix(v + np.uint64(0x632BE59BD9B4E019)))


def stable_hash(
    df: pl.DataFrame, columns: Sequence[str], types: Mapping[str, pl.DataType]
) -> np.ndarray:
    """uint64 hash of each row's ``columns`` (cast to ``types`` first)."""
    h = np.full(df.height, SEED, dtype=np.uint64)
    for name in columns:
        col = df.get_column(name).cast(types[name])
        valid = col.is_not_null().to_numpy()
        if col.dtype == pl.String:
            arr = col.rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())
            bufs = arr.buffers()
            offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
            data = (
                np.frombuffer(bufs[2], dtype=np.uint8)
                if bufs[2] is not None
                else np.zeros(0, np.uint8)
            )
            _mix_strings(h, offsets, data, valid)
        else:
            _mix_ints(h, col.cast(pl.Int64).fill_null(0).to_numpy(), valid)
    return h
