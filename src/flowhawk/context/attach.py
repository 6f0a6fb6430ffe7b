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
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from flowhawk import archive, netaddr
from flowhawk.config import Config
from flowhawk.context import hops
from flowhawk.context.geoip import SCHEMA as GEO_SCHEMA
from flowhawk.context.geoip import GeoIP
from flowhawk.dns.passive import PDNS_FILE, PassiveDns

GEO = pl.Struct(GEO_SCHEMA)
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
        out = events.join(self._hops(events), on="id", how="left", maintain_order="left")
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

    def _geo(self, events: pl.DataFrame) -> dict[str, pl.Series]:
        if self.geoip is None:
            return {
                f"{s}_geo": pl.Series([None] * events.height, dtype=GEO) for s in ("src", "dst")
            }
        out = {}
        for side in ("src", "dst"):
            found = self.geoip.lookup(events.get_column(f"{side}_ip"))
            known = pl.any_horizontal(pl.all().is_not_null())
            out[f"{side}_geo"] = found.select(
                pl.when(known).then(pl.struct(pl.all())).alias(f"{side}_geo")
            ).to_series()
        return out

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
