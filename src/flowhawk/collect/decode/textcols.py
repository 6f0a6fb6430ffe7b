"""Text columns of the export decoders built by numba kernels: addresses, MACs, flow ids.

Decoders emit rows whose addresses and flow ids are mostly distinct (an sFlow sample
per packet, a flow id per record): formatting them once per distinct value in Python (as
:func:`flowhawk.netaddr.format` does for IPv6) or through Arrow string compute costs
more than the whole decode. These kernels write the UTF-8 bytes and offsets of an
Arrow string array directly. Spellings are :mod:`flowhawk.netaddr`'s: IPv4 (held
IPv4-mapped) dotted, IPv6 per RFC 5952 (lowercase, longest run of two or more zero
groups, the first of equal runs, as ``::``), MACs ``aa:bb:cc:dd:ee:ff``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from flowhawk.jit import numba

HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _strings(offsets: np.ndarray, data: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    n = len(offsets) - 1
    bitmap = None
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    buffers = [bitmap, pa.py_buffer(offsets), pa.py_buffer(data[: offsets[-1]])]
    return pa.Array.from_buffers(pa.string(), n, buffers)


def ip_strings(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """Address strings of 128-bit ``(hi, lo)`` columns."""
    offsets = np.zeros(len(hi) + 1, np.int32)
    data = np.empty(len(hi) * 39 + 1, np.uint8)
    _format_ips(hi.astype(np.uint64), lo.astype(np.uint64), HEX, offsets, data)
    return _strings(offsets, data)


def mac_strings(values: np.ndarray, missing: np.uint64) -> pa.Array:
    """MAC strings of 48-bit values; null where the value is ``missing``."""
    valid = values != missing
    offsets = np.zeros(len(values) + 1, np.int32)
    data = np.empty(len(values) * 17 + 1, np.uint8)
    _format_macs(values.astype(np.uint64), valid, HEX, offsets, data)
    return _strings(offsets, data, valid)


def joined_numbers(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> pa.Array:
    """``"a:b:c"`` for three columns of non-negative integers (< 10**19)."""
    offsets = np.zeros(len(a) + 1, np.int32)
    data = np.empty(len(a) * 62 + 1, np.uint8)
    cols = np.stack([a, b, c]).astype(np.uint64)
    _format_joined(cols, offsets, data)
    return _strings(offsets, data)


@numba.njit(cache=True, nogil=True, inline="always")
def _decimal(data, p, v):
    """Write ``v`` (uint64) in decimal at ``p``; return the position after it."""
    ten = np.uint64(10)  # uint64 with an int64 literal would go through float64
    n = 1
    t = v
    while t >= ten:
        t //= ten
        n += 1
    for i in range(n - 1, -1, -1):
        data[p + i] = np.uint8(48) + np.uint8(v % ten)
        v //= ten
    return p + n


@numba.njit(cache=True, nogil=True, inline="always")
def _format_ip(h, low, hexd, groups, data, p):
    """Write the address ``(h, low)`` at ``p``; return the position after it."""
    if h == 0 and (low >> np.uint64(32)) == np.uint64(0xFFFF):
        for k in range(4):
            if k:
                data[p] = 46  # "."
                p += 1
            p = _decimal(data, p, (low >> np.uint64(24 - 8 * k)) & np.uint64(0xFF))
        return p
    for k in range(4):
        groups[k] = np.int64((h >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF))
        groups[4 + k] = np.int64((low >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF))
    best, best_len, run, run_len = -1, 0, -1, 0
    for k in range(8):
        if groups[k] == 0:
            if run_len == 0:
                run = k
            run_len += 1
            if run_len > best_len:
                best, best_len = run, run_len
        else:
            run_len = 0
    if best_len < 2:
        best = -1
    k = 0
    while k < 8:
        if k == best:
            data[p] = 58  # "::"
            data[p + 1] = 58
            p += 2
            k += best_len
            continue
        if k > 0 and k != best + best_len:  # not right after the "::"
            data[p] = 58
            p += 1
        g = groups[k]
        started = False
        for s in range(12, -1, -4):
            x = (g >> s) & 0xF
            if x or started or s == 0:
                data[p] = hexd[x]
                p += 1
                started = True
        k += 1
    return p


@numba.njit(cache=True, nogil=True)
def _format_ips(hi, lo, hexd, offsets, data):
    groups = np.zeros(8, np.int64)
    p = 0
    for i in range(hi.shape[0]):
        p = _format_ip(hi[i], lo[i], hexd, groups, data, p)
        offsets[i + 1] = p


def _text_ranks() -> np.ndarray:
    """Rank of each octet's decimal text in text order ("10" < "2"), for :func:`text_less`."""
    ranks = np.empty(256, np.int64)
    for r, o in enumerate(sorted(range(256), key=str)):
        ranks[o] = r
    return ranks


OCTET_RANK = _text_ranks()


def text_less(a_hi: np.ndarray, a_lo: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray) -> np.ndarray:
    """Where address ``a`` spells before ``b`` (string order of the canonical texts),
    without making the texts: what comparing the address columns as strings gives."""
    out = np.empty(len(a_hi), np.bool_)
    _text_less(
        a_hi.astype(np.uint64),
        a_lo.astype(np.uint64),
        b_hi.astype(np.uint64),
        b_lo.astype(np.uint64),
        OCTET_RANK,
        HEX,
        out,
    )
    return out


@numba.njit(cache=True, nogil=True)
def _text_less(a_hi, a_lo, b_hi, b_lo, rank, hexd, out):
    groups = np.zeros(8, np.int64)
    ta = np.empty(40, np.uint8)
    tb = np.empty(40, np.uint8)
    for i in range(a_hi.shape[0]):
        out[i] = text_less_one(a_hi[i], a_lo[i], b_hi[i], b_lo[i], rank, hexd, groups, ta, tb)


@numba.njit(cache=True, nogil=True, inline="always")
def text_less_one(ah, al, bh, bl, rank, hexd, groups, ta, tb):
    """Whether address ``a`` spells before ``b``; ``groups``, ``ta``, ``tb`` are scratch
    (8 int64, 40 and 40 bytes)."""
    # Dotted quads compare octet by octet as texts: the first differing octet decides,
    # and where one octet's text is a prefix of the other's, the "." or the end after
    # it sorts before any digit, as the shorter text does. IPv6 texts are made and
    # compared byte by byte.
    m32 = np.uint64(0xFFFF)
    if ah == 0 and bh == 0 and (al >> np.uint64(32)) == m32 and (bl >> np.uint64(32)) == m32:
        ka = 0
        kb = 0
        for k in range(4):
            sh = np.uint64(24 - 8 * k)
            ka = (ka << 8) | rank[np.int64((al >> sh) & np.uint64(0xFF))]
            kb = (kb << 8) | rank[np.int64((bl >> sh) & np.uint64(0xFF))]
        return ka < kb
    na = _format_ip(ah, al, hexd, groups, ta, 0)
    nb = _format_ip(bh, bl, hexd, groups, tb, 0)
    for k in range(min(na, nb)):
        if ta[k] != tb[k]:
            return ta[k] < tb[k]
    return na < nb


@numba.njit(cache=True, nogil=True)
def _format_macs(values, valid, hexd, offsets, data):
    p = 0
    for i in range(values.shape[0]):
        if valid[i]:
            v = values[i]
            for k in range(6):
                if k:
                    data[p] = 58
                    p += 1
                b = (v >> np.uint64(40 - 8 * k)) & np.uint64(0xFF)
                data[p] = hexd[b >> np.uint64(4)]
                data[p + 1] = hexd[b & np.uint64(0xF)]
                p += 2
        offsets[i + 1] = p


@numba.njit(cache=True, nogil=True)
def _format_joined(cols, offsets, data):
    p = 0
    for i in range(cols.shape[1]):
        for c in range(cols.shape[0]):
            if c:
                data[p] = 58
                p += 1
            p = _decimal(data, p, cols[c, i])
        offsets[i + 1] = p
