"""The allow-list: addresses, networks and domains no feed may list.

Public blocklists list infrastructure everyone uses now and then (a public resolver
reported as an attacker because it answered spoofed queries, a CDN edge that once
served malware). ``[intel] allow`` names what the site knows to be good; a lookup of an
allowed address (or one inside an allowed network), or of an allowed domain or any
name under it, finds nothing, whatever the feeds say. The feeds' evidence is kept:
``flowhawk intel lookup`` still shows it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import polars as pl

from flowhawk import netaddr

_DOMAIN = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+$")


def check(value: str) -> str:
    """``value`` as the allow-list keeps it; ValueError when it is no address, network
    or domain name."""
    text = value.strip().lower().rstrip(".")
    try:
        netaddr.parse_network(text)
        return text
    except ValueError:
        pass
    if _DOMAIN.match(text):
        return text
    raise ValueError(f"{value!r} is not an IP address, network or domain name")


class AllowList:
    """Allowed networks and domains, tested against lookup columns."""

    def __init__(self, values: Sequence[str]):
        checked = [check(v) for v in values]
        nets, names = [], []
        for v in checked:
            (nets if _is_address(v) else names).append(v)
        self.networks = netaddr.NetworkSet(nets)
        self.domains = sorted(set(names))

    def __len__(self) -> int:
        return len(self.networks) + len(self.domains)

    def addresses(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """True where an address (128-bit pairs) is allowed."""
        return self.networks.contains(hi, lo)

    def address_text(self, ips: pl.Series) -> np.ndarray:
        hi, lo, ok = netaddr.parse(ips)
        return self.addresses(hi, lo) & ok

    def names(self, names: pl.Series) -> np.ndarray:
        """True where a name is an allowed domain or under one."""
        low = names.cast(pl.String).str.to_lowercase().str.strip_suffix(".")
        hit = pl.Series(np.zeros(len(names), bool))
        for d in self.domains:
            hit = hit | (low == d).fill_null(False) | low.str.ends_with("." + d).fill_null(False)
        return hit.to_numpy()


def _is_address(text: str) -> bool:
    try:
        netaddr.parse_network(text)
        return True
    except ValueError:
        return False
