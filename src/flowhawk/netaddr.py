"""IP addresses in columns: parse, format and test membership without a Python loop per row.

Every address is held as 128 bits split in two ``uint64`` columns (``hi``, ``lo``);
IPv4 addresses are IPv4-mapped (``::ffff:a.b.c.d``), so one code path serves both
families. Work is done once per *distinct* address (flow data repeats addresses
heavily), IPv4 entirely in vectorized string/array operations, IPv6 per distinct
value with :mod:`ipaddress`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

V4_MAPPED_PREFIX = np.uint64(0xFFFF_0000_0000)
_U32 = np.uint64(0xFFFF_FFFF)


def _parse_one(text: str) -> tuple[int, int] | None:
    text = text.strip()
    if "%" in text:  # IPv6 zone id (fe80::1%eth0): not part of the address
        text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:  # type: ignore[union-attr]
        ip = ip.ipv4_mapped  # type: ignore[union-attr]
    if ip.version == 4:
        return 0, int(V4_MAPPED_PREFIX) | int(ip)
    value = int(ip)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


def _format_one(hi: int, lo: int) -> str:
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def parse(ips: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse address strings into ``(hi, lo, valid)`` arrays (invalid rows are 0, 0, False)."""
    df = pl.DataFrame({"ip": ips.cast(pl.String)})
    uniq = df.select(pl.col("ip").unique()).get_column("ip")
    u_hi, u_lo, u_ok = _parse_unique(uniq)
    table = pl.DataFrame(
        {"ip": uniq, "hi": u_hi, "lo": u_lo, "ok": u_ok},
        schema={"ip": pl.String, "hi": pl.UInt64, "lo": pl.UInt64, "ok": pl.Boolean},
    )
    joined = df.join(table, on="ip", how="left", maintain_order="left", nulls_equal=True)
    return (
        joined.get_column("hi").fill_null(0).to_numpy(),
        joined.get_column("lo").fill_null(0).to_numpy(),
        joined.get_column("ok").fill_null(False).to_numpy(),
    )


def _parse_unique(uniq: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(uniq)
    hi = np.zeros(n, dtype=np.uint64)
    lo = np.zeros(n, dtype=np.uint64)
    ok = np.zeros(n, dtype=bool)
    if n == 0:
        return hi, lo, ok
    # IPv4 dotted quads, vectorized.
    frame = pl.DataFrame({"ip": uniq}).with_columns(
        v4=pl.col("ip").str.contains(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$").fill_null(False)
    )
    parts = frame.select(
        [
            pl.col("ip")
            .str.split(".")
            .list.get(i, null_on_oob=True)
            .cast(pl.UInt32, strict=False)
            .alias(f"o{i}")
            for i in range(4)
        ]
    )
    octets = parts.fill_null(999).to_numpy().astype(np.int64, copy=False)
    v4 = frame.get_column("v4").to_numpy() & (octets <= 255).all(axis=1)
    if v4.any():
        o = octets[v4].astype(np.uint64)
        lo[v4] = V4_MAPPED_PREFIX | (o[:, 0] << 24) | (o[:, 1] << 16) | (o[:, 2] << 8) | o[:, 3]
        ok[v4] = True
    # Everything else (IPv6, unusual spellings) one distinct value at a time.
    rest = np.flatnonzero(~v4)
    values = uniq.to_list()
    for i in rest:
        text = values[i]
        if text is None:
            continue
        parsed = _parse_one(text)
        if parsed is not None:
            hi[i], lo[i] = parsed
            ok[i] = True
    return hi, lo, ok


def format(hi: np.ndarray, lo: np.ndarray) -> pl.Series:
    """Format ``(hi, lo)`` arrays as canonical address strings."""
    df = pl.DataFrame({"hi": hi.astype(np.uint64), "lo": lo.astype(np.uint64)})
    uniq = df.unique(maintain_order=False)
    u_hi = uniq.get_column("hi").to_numpy()
    u_lo = uniq.get_column("lo").to_numpy()
    is_v4 = (u_hi == 0) & ((u_lo >> np.uint64(32)) == np.uint64(0xFFFF))
    v4_lo = u_lo[is_v4]
    v4 = uniq.filter(pl.Series(is_v4)).with_columns(
        ip=pl.concat_str(
            [
                pl.Series(((v4_lo >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.uint8)).cast(
                    pl.String
                )
                for shift in (24, 16, 8, 0)
            ],
            separator=".",
        )
    )
    v6 = uniq.filter(pl.Series(~is_v4))
    v6 = v6.with_columns(
        ip=pl.Series(
            [_format_one(h, lo_) for h, lo_ in v6.select("hi", "lo").iter_rows()],
            dtype=pl.String,
        )
    )
    table = pl.concat([v4, v6])
    return df.join(table, on=["hi", "lo"], how="left", maintain_order="left").get_column("ip")


def canonical(ips: pl.Series) -> pl.Series:
    """Canonical spelling of each address (IPv4 dotted, IPv6 compressed); null if invalid."""
    hi, lo, ok = parse(ips)
    out = format(hi, lo)
    return out.set(pl.Series(~ok), None) if not ok.all() else out  # type: ignore[arg-type]


@dataclass(frozen=True)
class Network:
    """One CIDR block as an inclusive 128-bit range."""

    text: str
    start_hi: int
    start_lo: int
    end_hi: int
    end_lo: int


def parse_network(text: str) -> Network:
    """Parse ``10.0.0.0/8``, ``fc00::/7`` or a single address; raise ValueError if invalid."""
    net = ipaddress.ip_network(text.strip(), strict=False)
    if net.version == 4:
        first = int(V4_MAPPED_PREFIX) | int(net.network_address)
        last = int(V4_MAPPED_PREFIX) | int(net.broadcast_address)
        return Network(str(net), 0, first, 0, last)
    first = int(net.network_address)
    last = int(net.broadcast_address)
    mask = 0xFFFF_FFFF_FFFF_FFFF
    return Network(str(net), first >> 64, first & mask, last >> 64, last & mask)


class NetworkSet:
    """A list of networks tested against address columns."""

    def __init__(self, networks: Iterable[str | Network]):
        self.networks = [n if isinstance(n, Network) else parse_network(n) for n in networks]

    def __len__(self) -> int:
        return len(self.networks)

    def match(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Index of the first network containing each address, or -1."""
        out = np.full(len(hi), -1, dtype=np.int32)
        for i in range(len(self.networks) - 1, -1, -1):  # first listed wins
            out[self._contains(self.networks[i], hi, lo)] = i
        return out

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """True where an address is in any of the networks."""
        out = np.zeros(len(hi), dtype=bool)
        for net in self.networks:
            out |= self._contains(net, hi, lo)
        return out

    @staticmethod
    def _contains(net: Network, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        s_hi, s_lo = np.uint64(net.start_hi), np.uint64(net.start_lo)
        e_hi, e_lo = np.uint64(net.end_hi), np.uint64(net.end_lo)
        ge = (hi > s_hi) | ((hi == s_hi) & (lo >= s_lo))
        le = (hi < e_hi) | ((hi == e_hi) & (lo <= e_lo))
        return ge & le


def join_endpoints(df: pl.DataFrame, table: pl.DataFrame, names: dict[str, str]) -> pl.DataFrame:
    """Join ``table`` (keyed by ``ip``) to both ends of ``df``.

    ``names`` maps each column of ``table`` to a name pattern with ``{side}``
    (``"src"``/``"dst"``), e.g. ``{"internal": "{side}_internal"}``. Row order is kept.
    """
    for side in ("src", "dst"):
        renamed = table.rename(
            {"ip": f"{side}_ip", **{c: n.format(side=side) for c, n in names.items()}}
        )
        df = df.join(renamed, on=f"{side}_ip", how="left", maintain_order="left")
    return df
