"""Network context of each flow: which side is internal, the direction, the site.

Direction: ``east-west`` when both ends are internal, ``north-south`` when one is,
``external`` when neither is (transit traffic a sensor happens to see).
Local-scope addresses (multicast, broadcast, link-local, loopback) count as
internal: traffic to them does not leave the network.

Site: the first site whose exporters include the flow's exporter; else the first
site with a network containing the client, else the server; else the default site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from flowhawk import netaddr
from flowhawk.config import Config
from flowhawk.schema import EAST_WEST, EXTERNAL, NORTH_SOUTH


@dataclass
class NetworkContext:
    """Compiled network settings, ready to apply to columns."""

    internal: netaddr.NetworkSet
    local_scope: netaddr.NetworkSet
    site_names: list[str]
    site_networks: list[netaddr.NetworkSet]
    exporter_sites: dict[str, str]
    default_site: str

    @classmethod
    def from_config(cls, cfg: Config) -> NetworkContext:
        exporter_sites: dict[str, str] = {}
        for site in cfg.sites:
            for exp in site.exporters:
                canon = netaddr.canonical(pl.Series([exp]))[0] or exp
                exporter_sites.setdefault(canon, site.name)
        return cls(
            internal=netaddr.NetworkSet(cfg.network.internal),
            local_scope=netaddr.NetworkSet(cfg.network.local_scope),
            site_names=[s.name for s in cfg.sites],
            site_networks=[netaddr.NetworkSet(s.networks) for s in cfg.sites],
            exporter_sites=exporter_sites,
            default_site=cfg.default_site,
        )

    def is_internal(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        return self.internal.contains(hi, lo) | self.local_scope.contains(hi, lo)

    def site_of(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Index into ``site_names`` of the first site containing each address, or -1."""
        out = np.full(len(hi), -1, dtype=np.int32)
        for i in range(len(self.site_networks) - 1, -1, -1):
            out[self.site_networks[i].contains(hi, lo)] = i
        return out

    def names(self) -> pl.Series:
        """The site names, then the default site (what index ``len(site_names)`` means)."""
        return pl.Series([*self.site_names, self.default_site], dtype=pl.String)

    def sites_of(self, ips: pl.Series) -> pl.Series:
        """The site of each address by network (the default site when none contains it)."""
        if ips.len() == 0:
            return self.names().clear().alias(ips.name)
        hi, lo, _ = netaddr.parse(ips.fill_null("0.0.0.0"))
        idx = self.site_of(hi, lo)
        idx[idx < 0] = len(self.site_names)
        return self.names().gather(idx).alias(ips.name)


def add_context(df: pl.DataFrame, net: NetworkContext) -> pl.DataFrame:
    """Add ``src_internal``, ``dst_internal``, ``direction`` and ``site`` to flows."""
    ips = pl.concat([df.get_column("src_ip"), df.get_column("dst_ip")]).unique()
    hi, lo, _ = netaddr.parse(ips)
    table = pl.DataFrame(
        {
            "ip": ips,
            "internal": net.is_internal(hi, lo),
            "site_idx": net.site_of(hi, lo),
        }
    )
    df = netaddr.join_endpoints(
        df, table, {"internal": "{side}_internal", "site_idx": "_{side}_site"}
    )
    si, di = pl.col("src_internal"), pl.col("dst_internal")
    direction = (
        pl.when(si & di)
        .then(pl.lit(EAST_WEST))
        .when(si | di)
        .then(pl.lit(NORTH_SOUTH))
        .otherwise(pl.lit(EXTERNAL))
    )
    names = net.names()
    by_net = (
        pl.when(pl.col("_src_site") >= 0)
        .then(pl.col("_src_site"))
        .when(pl.col("_dst_site") >= 0)
        .then(pl.col("_dst_site"))
        .otherwise(len(net.site_names))
    )
    df = df.with_columns(direction=direction, _site_idx=by_net)
    site = pl.col("_site_idx").map_batches(lambda s: names.gather(s), return_dtype=pl.String)
    if net.exporter_sites:
        exp = pl.col("exporter").replace_strict(
            net.exporter_sites, default=None, return_dtype=pl.String
        )
        site = pl.coalesce(exp, site)
    return df.with_columns(site=site).drop("_src_site", "_dst_site", "_site_idx")
