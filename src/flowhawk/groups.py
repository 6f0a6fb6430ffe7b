"""Host groups and guarded servers: which configured groups each address belongs to."""

from __future__ import annotations

import polars as pl

from flowhawk import netaddr
from flowhawk.config import Config


class HostGroups:
    """Configured host groups, applied to address columns."""

    def __init__(self, cfg: Config):
        self.names = [g.name for g in cfg.host_groups]
        self.guarded = [g.guarded for g in cfg.host_groups]
        self.sets = [netaddr.NetworkSet(g.networks) for g in cfg.host_groups]

    def lookup(self, ips: pl.Series) -> pl.DataFrame:
        """``ip``, ``groups`` (list of names) and ``guarded`` for each distinct address."""
        uniq = ips.unique()
        hi, lo, _ = netaddr.parse(uniq)
        member = [s.contains(hi, lo) for s in self.sets]
        groups = (
            [[n for n, m in zip(self.names, member, strict=True) if m[i]] for i in range(len(uniq))]
            if self.names
            else [[] for _ in range(len(uniq))]
        )
        guarded = [any(self.guarded[self.names.index(g)] for g in gs) for gs in groups]
        return pl.DataFrame(
            {"ip": uniq, "groups": groups, "guarded": guarded},
            schema={"ip": pl.String, "groups": pl.List(pl.String), "guarded": pl.Boolean},
        )

    def annotate(self, events: pl.DataFrame, boost: float) -> pl.DataFrame:
        """Add ``src_groups``, ``dst_groups``, ``guarded``; raise the risk of guarded events.

        A guarded event's risk becomes ``100 * (1 - (1 - risk/100) ** boost)``.
        """
        if events.height == 0:
            return events.with_columns(
                src_groups=pl.lit([], pl.List(pl.String)),
                dst_groups=pl.lit([], pl.List(pl.String)),
                guarded=pl.lit(False),
            )
        table = self.lookup(pl.concat([events.get_column("src_ip"), events.get_column("dst_ip")]))
        out = netaddr.join_endpoints(
            events, table, {"groups": "{side}_groups", "guarded": "_{side}_guarded"}
        )
        guarded = pl.col("_src_guarded") | pl.col("_dst_guarded")
        return out.with_columns(
            guarded=guarded,
            risk=pl.when(guarded)
            .then((100.0 * (1.0 - (1.0 - pl.col("risk") / 100.0) ** boost)).round(1))
            .otherwise(pl.col("risk")),
        ).drop("_src_guarded", "_dst_guarded")
