"""Address and network indicators as one sorted table of disjoint intervals.

Every indicator is a 128-bit range (an address is a range of one). CIDR blocks never
partly overlap (two blocks are nested or disjoint), so one sweep in address order
with a stack of open blocks cuts the address space into disjoint intervals, each
carrying the indicator that wins there: the *riskiest* covering indicator (lowest
reputation), and among equally risky ones the *most specific* (longest prefix). The
table is its breakpoints: interval ``i`` runs from ``start[i]`` to ``start[i+1] - 1``
and holds ``slot[i]`` (an indicator number, or -1: no indicator), so a lookup is one
search for the last breakpoint at or below the address.

IPv4 addresses (IPv4-mapped in the 128-bit space) use a projection of the table on
the mapped range: 32-bit keys packed with their slot in one word, and an index of
their top bits sized to leave about four breakpoints a bucket, so a lookup reads the
index (small enough to stay in cache) and then one or two cache lines.

IPv4 text is parsed inside the same compiled loop: reading a dotted quad costs less
than hashing the string to find its earlier parse, so the distinct-value step is kept
for what falls through (IPv6 and unusual spellings), which is parsed once per
distinct value by :mod:`flowhawk.netaddr`.
"""

from __future__ import annotations

import numpy as np

from flowhawk.jit import numba

V4_START_LO = np.uint64(0xFFFF_0000_0000)
V4_END_LO = np.uint64(0xFFFF_FFFF_FFFF)
_MAX = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


@numba.njit(cache=True, nogil=True)
def _less(a_hi, a_lo, b_hi, b_lo):  # type: ignore[no-untyped-def]
    return a_hi < b_hi or (a_hi == b_hi and a_lo < b_lo)


@numba.njit(cache=True, nogil=True)
def _emit(out_hi, out_lo, out_slot, m, hi, lo, slot):  # type: ignore[no-untyped-def]
    """Append breakpoint (hi, lo) -> slot, replacing one at the same place and merging
    with the previous interval when it carries the same slot; returns the new count."""
    if m > 0 and out_hi[m - 1] == hi and out_lo[m - 1] == lo:
        out_slot[m - 1] = slot
        if m > 1 and out_slot[m - 2] == slot:
            return m - 1
        return m
    if m > 0 and out_slot[m - 1] == slot:
        return m
    out_hi[m] = hi
    out_lo[m] = lo
    out_slot[m] = slot
    return m + 1


@numba.njit(cache=True, nogil=True)
def _sweep(s_hi, s_lo, e_hi, e_lo, key, slot, out_hi, out_lo, out_slot):  # type: ignore[no-untyped-def]
    """Breakpoints of ranges sorted by start, wider first; returns their count."""
    n = len(s_hi)
    st_hi = np.empty(n, np.uint64)
    st_lo = np.empty(n, np.uint64)
    st_best = np.empty(n, np.int64)
    depth = 0
    m = _emit(out_hi, out_lo, out_slot, 0, np.uint64(0), np.uint64(0), -1)
    for r in range(n + 1):
        # Close the open ranges that end before this one starts (all of them at the end).
        while depth > 0 and (r == n or _less(st_hi[depth - 1], st_lo[depth - 1], s_hi[r], s_lo[r])):
            depth -= 1
            end_hi, end_lo = st_hi[depth], st_lo[depth]
            if end_hi == _MAX and end_lo == _MAX:
                continue
            nxt_lo = end_lo + np.uint64(1)
            nxt_hi = end_hi + np.uint64(1) if nxt_lo == 0 else end_hi
            back = slot[st_best[depth - 1]] if depth > 0 else -1
            m = _emit(out_hi, out_lo, out_slot, m, nxt_hi, nxt_lo, back)
        if r == n:
            break
        best = r
        if depth > 0 and key[st_best[depth - 1]] <= key[r]:
            best = st_best[depth - 1]
        m = _emit(out_hi, out_lo, out_slot, m, s_hi[r], s_lo[r], slot[best])
        st_hi[depth] = e_hi[r]
        st_lo[depth] = e_lo[r]
        st_best[depth] = best
        depth += 1
    return m


@numba.njit(cache=True, nogil=True)
def _find128(b_hi, b_lo, hi, lo):  # type: ignore[no-untyped-def]
    """Index of the last breakpoint at or below (hi, lo)."""
    a, b = 0, len(b_hi)
    while a < b:
        mid = (a + b) >> 1
        if _less(hi, lo, b_hi[mid], b_lo[mid]):
            b = mid
        else:
            a = mid + 1
    return a - 1


@numba.njit(cache=True, nogil=True)
def _find32(packed, radix, shift, q):  # type: ignore[no-untyped-def]
    """Slot of the last IPv4 breakpoint at or below ``q``.

    ``packed`` holds ``key << 32 | slot + 1`` in key order; ``radix[t]`` is the first
    entry whose key's top bits are >= ``t``, so the answer lies in one bucket of a few
    entries. A long bucket is halved first; the last few entries are counted without
    branches (a binary search there would mispredict at nearly every step).
    """
    top = q >> shift
    a, b = np.int64(radix[top]), np.int64(radix[top + 1])
    while b - a > 8:
        mid = (a + b) >> 1
        if q < (packed[mid] >> np.uint64(32)):
            b = mid
        else:
            a = mid + 1
    i = a - 1
    for k in range(a, b):
        i += np.int64((packed[k] >> np.uint64(32)) <= q)
    return np.int64(packed[i] & np.uint64(0xFFFFFFFF)) - 1


@numba.njit(cache=True, nogil=True)
def lookup_pairs(hi, lo, b_hi, b_lo, b_slot, packed, radix, shift, out):  # type: ignore[no-untyped-def]
    """Slot of each address given as (hi, lo); IPv4-mapped ones through the 32-bit table."""
    for i in range(len(hi)):
        if hi[i] == 0 and (lo[i] >> np.uint64(32)) == np.uint64(0xFFFF):
            out[i] = _find32(packed, radix, shift, lo[i] & np.uint64(0xFFFFFFFF))
        else:
            out[i] = b_slot[_find128(b_hi, b_lo, hi[i], lo[i])]


_BAD = np.uint64(1) << np.uint64(63)
_BLOCK = 256


@numba.njit(cache=True, nogil=True)
def _dotted_quad(data, start, end):  # type: ignore[no-untyped-def]
    """The address in ``data[start:end]``, or :data:`_BAD` with the reason bits set."""
    if end - start < 7 or end - start > 15:
        return _BAD
    value = np.uint64(0)
    octet = np.uint64(0)
    digits = 0
    dots = 0
    flag = np.uint64(0)
    for j in range(start, end):
        c = np.uint64(data[j])
        d = c - np.uint64(48)  # wraps for characters below '0'
        if c == 46:
            flag |= np.uint64(digits == 0) | np.uint64(octet > 255)
            value = (value << np.uint64(8)) | octet
            octet = np.uint64(0)
            digits = 0
            dots += 1
        else:
            flag |= np.uint64(d > 9)
            octet = octet * np.uint64(10) + d
            digits += 1
    flag |= np.uint64(dots != 3) | np.uint64(digits == 0) | np.uint64(digits > 3)
    flag |= np.uint64(octet > 255)
    return ((value << np.uint64(8)) | octet) | (flag << np.uint64(63))


@numba.njit(cache=True, nogil=True)
def lookup_text(offsets, data, valid, packed, radix, shift, out, other):  # type: ignore[no-untyped-def]
    """Slot of each dotted-quad text; rows that are not one are flagged in ``other``.

    Accepts exactly what :func:`flowhawk.netaddr.parse` reads as IPv4 without help
    (four groups of 1-3 digits, each at most 255), so the two paths agree. Rows go
    in blocks: a block is parsed into a small buffer, then searched. Searching right
    after each parse would leave one table read in flight at a time; a run of
    searches lets the processor overlap their cache misses.
    """
    n = len(out)
    parsed = np.empty(_BLOCK, np.uint64)
    for first in range(0, n, _BLOCK):
        last = min(n, first + _BLOCK)
        for i in range(first, last):
            if valid[i]:
                parsed[i - first] = _dotted_quad(data, offsets[i], offsets[i + 1])
            else:
                parsed[i - first] = _BAD
        for i in range(first, last):
            x = parsed[i - first]
            if x & _BAD:
                out[i] = -1
                other[i] = valid[i]
            else:
                out[i] = _find32(packed, radix, shift, x)


class IpTable:
    """The interval table of a set of address and network indicators."""

    def __init__(
        self,
        ranges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        prefix: np.ndarray,
        reputation: np.ndarray,
        slot: np.ndarray,
    ):
        """``ranges`` = (start_hi, start_lo, end_hi, end_lo); ``slot`` is what a lookup
        returns for each (an indicator number)."""
        s_hi, s_lo, e_hi, e_lo = (np.ascontiguousarray(a, dtype=np.uint64) for a in ranges)
        # Lower key wins: reputation first, then the longer prefix.
        key = reputation.astype(np.int64) * 256 + (128 - prefix.astype(np.int64))
        order = np.lexsort((prefix, s_lo, s_hi))  # by start, wider first
        n = len(order)
        out_hi = np.empty(2 * n + 2, np.uint64)
        out_lo = np.empty(2 * n + 2, np.uint64)
        out_slot = np.empty(2 * n + 2, np.int64)
        m = _sweep(
            s_hi[order], s_lo[order], e_hi[order], e_lo[order], key[order],
            slot.astype(np.int64)[order], out_hi, out_lo, out_slot,
        )  # fmt: skip
        self.b_hi, self.b_lo = out_hi[:m].copy(), out_lo[:m].copy()
        self.b_slot = out_slot[:m].copy()
        self._project_v4()

    def _project_v4(self) -> None:
        """The IPv4 part as packed 32-bit keys and slots with a radix index sized to
        leave about four entries a bucket."""
        first = _find128(self.b_hi, self.b_lo, np.uint64(0), V4_START_LO)
        inside = (self.b_hi == 0) & (self.b_lo > V4_START_LO) & (self.b_lo <= V4_END_LO)
        keys = np.concatenate([[np.uint64(0)], self.b_lo[inside] & np.uint64(0xFFFF_FFFF)])
        slots = np.concatenate([[self.b_slot[first]], self.b_slot[inside]])
        self.packed = (keys.astype(np.uint64) << np.uint64(32)) | (slots + 1).astype(np.uint64)
        bits = int(min(24, max(8, np.ceil(np.log2(max(len(keys), 1) / 4)))))
        self.shift = np.uint64(32 - bits)
        bounds = np.arange((1 << bits) + 1, dtype=np.uint64) << self.shift
        self.radix = np.searchsorted(keys, bounds, side="left").astype(np.int32)

    @property
    def intervals(self) -> int:
        return len(self.b_hi)

    def lookup_pairs(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Slot of each address (``-1``: no indicator covers it)."""
        out = np.empty(len(hi), np.int32)
        lookup_pairs(
            np.ascontiguousarray(hi, dtype=np.uint64), np.ascontiguousarray(lo, dtype=np.uint64),
            self.b_hi, self.b_lo, self.b_slot, self.packed, self.radix, self.shift, out,
        )  # fmt: skip
        return out

    def lookup_text(
        self, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slots (int32, -1: none) of dotted-quad text given as Arrow string buffers, and
        the rows left for the general parser."""
        n = len(offsets) - 1
        out = np.empty(n, np.int32)
        other = np.zeros(n, dtype=np.bool_)
        lookup_text(offsets, data, valid, self.packed, self.radix, self.shift, out, other)
        return out, other
