"""Simulated sites: days of realistic flows with labeled anomalies (``flowhawk simulate``).

:func:`simulate` builds a site (:mod:`.site`), generates its normal traffic
(:mod:`.traffic`, vectorized streams of :mod:`flowhawk.demo.simulate`), injects
anomalies (:mod:`.anomalies`, :mod:`.kinds`) and measures their labels on the final
flows (:mod:`.labels`); :mod:`.write` writes Zeek conn.log, Parquet or CSV and the
labels, or sends the flows to a collector through the built-in exporter.

Normal traffic and anomalies use separate random streams derived from the seed, so
``--anomalies none`` gives exactly the normal flows of the same run with anomalies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.demo.simulate import generate_frame
from flowhawk.schema import RAW_FLOW_SCHEMA, conform
from flowhawk.sim.anomalies import Injected, World, inject, plan
from flowhawk.sim.kinds import INJECTORS, KINDS, VARIANTS
from flowhawk.sim.labels import LABEL_SCHEMA, label_rows
from flowhawk.sim.site import Site, SiteSpec, build_site
from flowhawk.sim.traffic import normal_streams

__all__ = ["KINDS", "VARIANTS", "SimSettings", "Simulation", "simulate"]

DEFAULT_START = date(2026, 3, 2)  # a Monday


@dataclass
class SimSettings:
    """Everything a simulation depends on (same settings, same output)."""

    days: int = 7
    seed: int = 1
    start: date = DEFAULT_START
    site: SiteSpec = field(default_factory=SiteSpec)
    anomalies: tuple[str, ...] = KINDS
    per_kind: int = 2
    clean_days: int = 3

    def check(self) -> None:
        if not 1 <= self.days <= 366:
            raise ValueError("days must be 1 to 366")
        unknown = [k for k in self.anomalies if k not in INJECTORS]
        if unknown:
            raise ValueError(f"unknown anomaly kinds {unknown}; known: {', '.join(KINDS)}")
        if self.anomalies and self.per_kind < 1:
            raise ValueError("per kind: at least 1 anomaly of each kind asked for")
        if self.anomalies and not 0 <= self.clean_days < self.days:
            raise ValueError(
                f"anomalies need a day after the {self.clean_days} clean days "
                f"(--days {self.days}); lower --clean-days or use --anomalies none"
            )
        self.site.check()


@dataclass
class Simulation:
    """Flows (raw frame, with each flow's ``stream`` and ``_anom``), labels, the site."""

    settings: SimSettings
    site: Site
    flows: pl.DataFrame
    labels: pl.DataFrame
    anomalies: dict[int, Injected]

    def raw(self) -> pa.Table:
        """The flows as :data:`~flowhawk.schema.RAW_FLOW_SCHEMA` (what readers produce)."""
        return conform(self.flows.drop("stream", "_anom").to_arrow(), RAW_FLOW_SCHEMA)


def simulate(settings: SimSettings) -> Simulation:
    """Generate the site's flows, inject the anomalies and label them."""
    settings.check()
    start = datetime(settings.start.year, settings.start.month, settings.start.day, tzinfo=UTC)
    site = build_site(settings.site, settings.seed)
    rng = np.random.default_rng([settings.seed, 1])
    streams = normal_streams(site, start, settings.days, rng)
    frame = generate_frame(streams, start, settings.days * 24, rng)
    frame = frame.with_columns(_anom=pl.lit(None, pl.Int32))
    done: dict[int, Injected] = {}
    labels = pl.DataFrame(schema=LABEL_SCHEMA)
    world = World(site, streams, frame, np.random.default_rng([settings.seed, 2]))
    if settings.anomalies:
        slots = plan(
            list(settings.anomalies),
            settings.per_kind,
            start,
            settings.days,
            settings.clean_days,
            world.rng,
        )
        done = inject(world, slots, INJECTORS, VARIANTS)
    flows = world.result().sort("ts_start", maintain_order=True)  # stable: deterministic
    flows = flows.with_columns(flow_id=pl.int_range(pl.len()).cast(pl.String))
    if done:
        removed = pl.concat(world.removed) if world.removed else flows.clear()
        labels = label_rows(flows, removed, done, start)
    return Simulation(settings, site, flows, labels, done)
