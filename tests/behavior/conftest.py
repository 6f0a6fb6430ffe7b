"""Fixtures for the behavioral engine tests: a few hours of a small simulated site."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from flowhawk import config
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer
from flowhawk.sim import SimSettings, simulate
from flowhawk.sim.site import SiteSpec

SMALL = SiteSpec(workstations=4, servers=10, iot=5, plcs=1, hmis=1, web_sites=40, web_visitors=200)


@pytest.fixture(scope="session")
def sim_flows() -> pl.DataFrame:
    """Canonical flows of the first six hours of a simulated day (normal traffic only)."""
    sim = simulate(SimSettings(days=1, clean_days=0, anomalies=(), site=SMALL, seed=3))
    df = pl.from_arrow(Normalizer(config.load(None), Diagnostics()).process(sim.raw()))
    assert isinstance(df, pl.DataFrame)
    start = df.get_column("ts_start").min()
    assert start is not None
    six = df.filter(pl.col("ts_start") < start + timedelta(hours=6))  # type: ignore[operator]
    return six.sort("ts_start", maintain_order=True)
