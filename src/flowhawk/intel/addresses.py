"""Addresses and networks of indicators as 128-bit ranges.

Built on :mod:`flowhawk.netaddr`: an address is two ``uint64`` halves (``hi``, ``lo``),
IPv4 mapped into ``::ffff:0:0/96``, so one range table serves both families. A
network ``a.b.c.d/n`` is the range ``[start, end]`` of the mapped addresses with a
prefix length ``96 + n`` in that space. Work is vectorized; the rare spellings
netaddr hands to :mod:`ipaddress` are parsed once per distinct value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from flowhawk import netaddr

_V4_BASE = 96  # prefix length of ::ffff:0:0/96, the mapped IPv4 space


@dataclass
class Ranges:
    """Inclusive 128-bit ranges with their prefix length (128 for a single address)."""

    start_hi: np.ndarray
    start_lo: np.ndarray
    end_hi: np.ndarray
    end_lo: np.ndarray
    prefix: np.ndarray  # uint8, in the 128-bit space
    ok: np.ndarray  # False where the text was not an address or network


def is_v4(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """True where ``(hi, lo)`` is an IPv4-mapped address."""
    return (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))


def _mask_table() -> tuple[np.ndarray, np.ndarray]:
    full = (1 << 128) - 1
    masks = [full ^ ((1 << (128 - n)) - 1) for n in range(129)]
    return (
        np.array([m >> 64 for m in masks], dtype=np.uint64),
        np.array([m & 0xFFFF_FFFF_FFFF_FFFF for m in masks], dtype=np.uint64),
    )


#: Network masks (hi, lo) by prefix length 0-128.
MASK_HI, MASK_LO = _mask_table()


def parse_ranges(values: pl.Series) -> Ranges:
    """Parse ``address`` or ``address/length`` text into ranges (host bits cleared).

    An IPv4 length counts IPv4 bits (``/24``); an IPv6 length IPv6 bits. Invalid text
    (not an address, a length out of range) gives ``ok = False``.
    """
    frame = pl.DataFrame({"v": values.cast(pl.String)}).select(
        addr=pl.col("v").str.split("/").list.get(0, null_on_oob=True),
        length=pl.col("v").str.split("/").list.get(1, null_on_oob=True),
        parts=pl.col("v").str.count_matches("/"),
    )
    hi, lo, ok = netaddr.parse(frame.get_column("addr"))
    has_len = frame.get_column("length").is_not_null().to_numpy()
    length = frame.get_column("length").cast(pl.Int64, strict=False).fill_null(-1).to_numpy()
    ok &= frame.get_column("parts").fill_null(9).to_numpy() <= 1
    # IPv4 lengths are 0-32 and live at 96 + n; an IPv6 length of a mapped address
    # stays as written (::ffff:0:0/104 is 0.0.0.0/8).
    v4_text = frame.get_column("addr").str.contains(":").not_().fill_null(False).to_numpy()
    prefix = np.where(has_len, length + np.where(v4_text, _V4_BASE, 0), 128)
    ok &= ~has_len | ((length >= 0) & np.where(v4_text, length <= 32, length <= 128))
    prefix = np.where(ok, prefix, 128).astype(np.uint8)
    m_hi, m_lo = MASK_HI[prefix], MASK_LO[prefix]
    start_hi, start_lo = hi & m_hi, lo & m_lo
    end_hi, end_lo = start_hi | ~m_hi, start_lo | ~m_lo
    return Ranges(start_hi, start_lo, end_hi, end_lo, prefix, ok)


def canonical_text(r: Ranges) -> tuple[pl.Series, np.ndarray]:
    """Canonical text of each range and whether it is a single address.

    A single address prints as an address; a network as ``start/length`` in its own
    family's bits (mapped IPv4 networks of length >= 96 as IPv4; a shorter network
    never starts at a mapped address, its ``ffff`` bits being cleared). Rows not
    ``ok`` are null.
    """
    single = r.prefix == 128
    mapped = is_v4(r.start_hi, r.start_lo) & (r.prefix >= _V4_BASE)
    address = netaddr.format(r.start_hi, r.start_lo)
    length = np.where(mapped, r.prefix.astype(np.int64) - _V4_BASE, r.prefix.astype(np.int64))
    text = (
        pl.DataFrame({"a": address, "n": length, "s": single})
        .select(
            pl.when(pl.col("s"))
            .then(pl.col("a"))
            .otherwise(pl.col("a") + "/" + pl.col("n").cast(pl.String))
        )
        .to_series()
    )
    if not r.ok.all():
        text = text.scatter(np.flatnonzero(~r.ok), None)
    return text, single
