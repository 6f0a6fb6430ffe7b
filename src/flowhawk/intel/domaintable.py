"""Domain indicators as an open-addressing hash table probed with every parent name.

A name matches an indicator for itself or for any parent domain (``a.b.evil.com``
matches ``evil.com``). The compiled lookup reads each name once, from its last byte
to its first, lowercasing as it goes and ignoring trailing dots, and keeps a running
FNV-1a hash of the bytes read so far: at each label boundary that hash, finished
with the suffix length by :func:`flowhawk.keyhash.fmix`, is the key of that parent
name, so every parent is probed for the cost of reading the name once (the hash of
:func:`flowhawk.keyhash.stable_hash` runs front to back and would have to re-read
each suffix). Top-level names alone are not probed: no indicator is one.

Before the table, each key is tested against a bit filter (one bit per key, 16 bits
per indicator: a few MiB at most, so it stays in cache): most names have no listed
parent, and the filter settles about 94 % of those probes without touching the
table. A probe that finds the same 64-bit key compares the bytes too, so a hash
collision can never produce a false match. When several parents match, the
riskiest wins, then the longest (most specific). The table keeps at most half of
its slots full and holds each key beside its entry, so a probe reads one line.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from flowhawk.jit import numba
from flowhawk.keyhash import fmix

_BASIS = np.uint64(0xCBF29CE484222325)
_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, nogil=True)
def _lower(c):  # type: ignore[no-untyped-def]
    return c + 32 if c >= 65 and c <= 90 else c


@numba.njit(cache=True, nogil=True)
def _full_hashes(offsets, data, out):  # type: ignore[no-untyped-def]
    for i in range(len(out)):
        start, end = offsets[i], offsets[i + 1]
        x = _BASIS
        for j in range(end - 1, start - 1, -1):
            x = (x ^ np.uint64(_lower(data[j]))) * _PRIME
        out[i] = fmix(x ^ np.uint64(end - start)) | np.uint64(1)  # 0 marks an empty slot


@numba.njit(cache=True, nogil=True)
def _insert(hashes, table, bits, shift):  # type: ignore[no-untyped-def]
    """Fill the table (rows of hash, entry + 1) and the filter bit of each hash."""
    mask = len(table) - 1
    for e in range(len(hashes)):
        h = hashes[e]
        k = h & mask
        while table[k, 0] != 0:
            k = (k + 1) & mask
        table[k, 0] = h
        table[k, 1] = e + 1
        b = h >> shift
        bits[b >> np.uint64(6)] |= np.uint64(1) << (b & np.uint64(63))


@numba.njit(cache=True, nogil=True)
def _same(data, j, end, e_data, e_start, e_end):  # type: ignore[no-untyped-def]
    if end - j != e_end - e_start:
        return False
    for k in range(end - j):  # noqa: SIM110 (a loop compiles; a generator does not)
        if _lower(data[j + k]) != e_data[e_start + k]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def lookup(offsets, data, valid, bits, shift, table, e_offsets, e_data, e_key, slot, out):  # type: ignore[no-untyped-def]
    """Slot of the winning indicator for each name (-1: none)."""
    mask = len(table) - 1
    for i in range(len(out)):
        out[i] = -1
        if not valid[i]:
            continue
        start, end = offsets[i], offsets[i + 1]
        while end > start and data[end - 1] == 46:
            end -= 1
        x = _BASIS
        dotted = False
        best_key = np.int64(1) << 62
        best = -1
        for j in range(end - 1, start - 1, -1):
            c = _lower(data[j])
            x = (x ^ np.uint64(c)) * _PRIME
            if c == 46:
                dotted = True
                continue
            if not dotted or (j > start and data[j - 1] != 46):
                continue
            h = fmix(x ^ np.uint64(end - j)) | np.uint64(1)
            b = h >> shift
            if not (bits[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1):
                continue  # most names: no listed parent, settled in cache
            k = h & mask
            while table[k, 0] != 0:
                if table[k, 0] == h:
                    e = np.int64(table[k, 1]) - 1
                    if _same(data, j, end, e_data, e_offsets[e], e_offsets[e + 1]):
                        if e_key[e] < best_key:
                            best_key = e_key[e]
                            best = e
                        break
                k = (k + 1) & mask
        if best >= 0:
            out[i] = slot[best]


def string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, bytes, valid) of an Arrow string array (any offset width, sliced or not)."""
    arr = values.cast(pa.large_string()) if values.type != pa.large_string() else values
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    if arr.null_count:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    else:
        valid = np.ones(len(arr), dtype=np.bool_)
    return offsets, data, valid


class DomainTable:
    """The hash table of a set of domain indicators."""

    def __init__(self, names: pa.Array, reputation: np.ndarray, slot: np.ndarray):
        """``names`` are canonical (lowercase, no trailing dot); ``slot`` is what a
        lookup returns for each (an indicator number)."""
        self.e_offsets, self.e_data, _ = string_buffers(names)
        self.e_offsets = self.e_offsets - self.e_offsets[0]
        lengths = np.diff(self.e_offsets)
        # Lower key wins: reputation first, then the longer name.
        self.e_key = reputation.astype(np.int64) * 1024 + (1023 - np.minimum(lengths, 1023))
        self.slot = slot.astype(np.int32)
        n = len(names)
        hashes = np.empty(n, np.uint64)
        _full_hashes(self.e_offsets, self.e_data, hashes)
        capacity = 1 << max(4, int(2 * n).bit_length())
        self.table = np.zeros((capacity, 2), np.uint64)
        filter_bits = 1 << min(26, max(12, int(16 * n).bit_length()))
        self.bits = np.zeros(filter_bits // 64, np.uint64)
        self.shift = np.uint64(64 - (filter_bits.bit_length() - 1))
        _insert(hashes, self.table, self.bits, self.shift)

    def __len__(self) -> int:
        return len(self.slot)

    def lookup(self, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Slot (int32, -1: none) of the winning indicator for each name given as Arrow
        string buffers."""
        out = np.empty(len(offsets) - 1, np.int32)
        lookup(
            offsets, data, valid, self.bits, self.shift, self.table,
            self.e_offsets, self.e_data, self.e_key, self.slot, out,
        )  # fmt: skip
        return out
