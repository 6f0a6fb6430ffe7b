"""Attaching context to events: hops and relays, GeoIP/ASN, names from passive DNS.

:class:`EventContext` is opened once per run (or live detection) from the
configuration and the data directory, and adds to each batch of events:

- ``hops`` (nodes and edges) and ``relays``: the east-west hops around risky
  north-south events (:mod:`flowhawk.context.hops`), read from the flow archive, so a
  file run and live detection see the same flows;
- ``src_geo`` / ``dst_geo``: country, city and AS of each end from the configured
  .mmdb files (null when nothing is known, as for internal addresses);
- ``src_names`` / ``dst_names``: the names DNS answered with each address, most
  recent first, from the data directory's passive DNS.

Every node of a hop graph and every address of a relay (its inbound call's client,
the relaying host, its outbound call's server) gets the same: ``names`` by the rule of
the event's ends (answered before the event's end, :meth:`PassiveDns.names_for`) and,
for external addresses only, ``geo``. All addresses of a batch are looked up in one
pass: one passive DNS join, each distinct address once in the GeoIP databases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from flowhawk import archive, netaddr
from flowhawk.config import Config
from flowhawk.context import hops
from flowhawk.context.geoip import GeoIP
from flowhawk.dns.passive import PDNS_FILE, PassiveDns

GEO = hops.GEO
CONTEXT_COLUMNS = {
    "hops": hops.HOPS,
    "relays": pl.List(hops.RELAY),
    "src_geo": GEO,
    "dst_geo": GEO,
    "src_names": pl.List(pl.String),
    "dst_names": pl.List(pl.String),
}


class EventContext:
    """Context sources of one run; :meth:`attach` adds :data:`CONTEXT_COLUMNS`."""

    def __init__(self, cfg: Config, data_dir: Path):
        self.cfg = cfg
        self.data_dir = data_dir
        self.internal = netaddr.NetworkSet([*cfg.network.internal, *cfg.network.local_scope])
        self.local_scope = netaddr.NetworkSet(cfg.network.local_scope)
        self.geoip = GeoIP.open(cfg.context.geoip) if cfg.context.geoip else None
        self._pdns: PassiveDns | Literal[False] | None = None  # False: there is none

    def close(self) -> None:
        if self.geoip is not None:
            self.geoip.close()

    def __enter__(self) -> EventContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attach(self, events: pl.DataFrame) -> pl.DataFrame:
        """``events`` with the context columns (replaced if present)."""
        events = events.drop([c for c in CONTEXT_COLUMNS if c in events.columns])
        if events.height == 0:
            return events.with_columns(
                [pl.lit(None, t).alias(c) for c, t in CONTEXT_COLUMNS.items()]
            )
        context = self._described(self._hops(events), events)
        out = events.join(context, on="id", how="left", maintain_order="left")
        out = out.with_columns(relays=pl.col("relays").fill_null(pl.lit([], pl.List(hops.RELAY))))
        return out.with_columns(**self._geo(events), **self._names(events))

    def _hops(self, events: pl.DataFrame) -> pl.DataFrame:
        c = self.cfg.context
        if not c.hops:
            return pl.DataFrame(schema=hops.CONTEXT_SCHEMA)
        root = self.data_dir / "flows"
        return hops.build(
            events,
            lambda hours: archive.scan_hours(root, hours),
            self.internal,
            local_scope=self.local_scope,
            min_pairs=c.relay_min_pairs,
            min_risk=c.hops_min_risk,
            window=c.hops_window,
            max_edges=c.hops_max_edges,
            relay_delay=c.relay_delay,
            relay_ratio=c.relay_volume_ratio,
            relay_correlation=c.relay_min_correlation,
        )

    def _described(self, context: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
        """:func:`hops.build`'s output with names and geo on its nodes and relays."""
        if context.height == 0:
            return context
        nodes = (
            context.filter(pl.col("hops").is_not_null())
            .select("id", node=pl.col("hops").struct.field("nodes"))
            .explode("node")
            .select("id", pl.col("node").struct.field("ip", "role"))
        )
        relays = (
            context.select("id", "relays")
            .with_row_index("_ctx")
            .explode("relays")
            .filter(pl.col("relays").is_not_null())
            .unnest("relays")
            .with_columns(
                inbound_ip=pl.col("inbound").str.extract(r"^(.+?)→"),
                host_ip=pl.col("host"),
                outbound_ip=pl.col("outbound").str.extract(r"→(.+):\d+$"),
            )
        )
        ends = [relays.select("id", ip=f"{end}_ip") for end in hops.RELAY_ENDS]
        about = self._about(
            pl.concat([nodes.select("id", "ip"), *ends]).join(
                events.select("id", at="ts_end"), on="id"
            )
        )
        node_lists = (
            nodes.join(about, on=["id", "ip"], how="left", maintain_order="left")
            .group_by("id", maintain_order=True)
            .agg(nodes=pl.struct("ip", "role", "names", "geo"))
        )
        graphs = context.join(node_lists, on="id", how="left", maintain_order="left").select(
            pl.when(pl.col("hops").is_not_null())
            .then(pl.struct("nodes", edges=pl.col("hops").struct.field("edges")))
            .cast(hops.HOPS)
            .alias("hops")
        )
        return pl.concat(
            [context.select("id"), graphs, self._relays_described(relays, about, context.height)],
            how="horizontal",
        )

    @staticmethod
    def _relays_described(relays: pl.DataFrame, about: pl.DataFrame, n: int) -> pl.DataFrame:
        """The ``relays`` lists of ``n`` context rows (``_ctx``: row), each relay with the
        names and geo of its three addresses."""
        for end in hops.RELAY_ENDS:
            found = about.rename({"ip": f"{end}_ip", "names": f"{end}_names", "geo": f"{end}_geo"})
            relays = relays.drop(f"{end}_names", f"{end}_geo").join(
                found, on=["id", f"{end}_ip"], how="left", maintain_order="left"
            )
        lists = relays.group_by("_ctx", maintain_order=True).agg(
            relays=pl.struct(*hops.RELAY.to_schema())
        )
        rows = pl.DataFrame({"_ctx": pl.arange(0, n, eager=True).cast(pl.UInt32)})
        return rows.join(lists, on="_ctx", how="left", maintain_order="left").select(
            pl.col("relays").fill_null(pl.lit([], pl.List(hops.RELAY))).cast(pl.List(hops.RELAY))
        )

    def _about(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``id``, ``ip``, ``names`` and ``geo`` (external addresses only) of the distinct
        (id, ip) of ``rows``; ``at`` is the event's end, the names' time limit."""
        rows = rows.filter(pl.col("ip").is_not_null()).unique(["id", "ip"], maintain_order=True)
        pdns = self.passive_dns()
        if pdns is None:
            names = pl.Series("names", [None] * rows.height, dtype=hops.NAMES)
        else:
            names = pdns.names_for(rows.get_column("ip"), at=rows.get_column("at"), limit=3)
        out = rows.select("id", "ip").with_columns(names=names)
        if self.geoip is None or rows.height == 0:
            return out.with_columns(geo=pl.lit(None, GEO))
        ips = out.get_column("ip").unique()
        hi, lo, ok = netaddr.parse(ips)
        external = ips.filter(pl.Series(ok & ~self.internal.contains(hi, lo)))
        found = pl.DataFrame({"ip": external, "geo": self._known(self.geoip.lookup(external))})
        return out.join(found, on="ip", how="left", maintain_order="left")

    @staticmethod
    def _known(found: pl.DataFrame) -> pl.Series:
        """GeoIP rows as one struct column, null where nothing is known."""
        known = pl.any_horizontal(pl.all().is_not_null())
        return found.select(pl.when(known).then(pl.struct(pl.all())).alias("geo")).to_series()

    def _geo(self, events: pl.DataFrame) -> dict[str, pl.Series]:
        if self.geoip is None:
            return {
                f"{s}_geo": pl.Series([None] * events.height, dtype=GEO) for s in ("src", "dst")
            }
        return {
            f"{side}_geo": self._known(self.geoip.lookup(events.get_column(f"{side}_ip"))).alias(
                f"{side}_geo"
            )
            for side in ("src", "dst")
        }

    def _names(self, events: pl.DataFrame) -> dict[str, pl.Series]:
        pdns = self.passive_dns()
        if pdns is None:
            return {
                f"{s}_names": pl.Series([None] * events.height, dtype=pl.List(pl.String))
                for s in ("src", "dst")
            }
        at = events.get_column("ts_end")
        return {
            f"{s}_names": pdns.names_for(events.get_column(f"{s}_ip"), at=at, limit=3)
            for s in ("src", "dst")
        }

    def passive_dns(self) -> PassiveDns | None:
        """The data directory's passive DNS, if it has one and it is used; read once, on
        first use (a run asks after it has read its own DNS inputs)."""
        if self._pdns is None:
            use = self.cfg.context.passive_dns and (self.data_dir / PDNS_FILE).exists()
            self._pdns = PassiveDns.in_data_dir(self.data_dir) if use else False
        return self._pdns or None
