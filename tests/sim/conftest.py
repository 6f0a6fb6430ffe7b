"""Fixtures for the simulator tests: one mid-sized simulation, normalized by flowhawk."""

from __future__ import annotations

import polars as pl
import pytest

from flowhawk import config
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer
from flowhawk.sim import SimSettings, Simulation, simulate
from flowhawk.sim.site import SiteSpec

#: Six days (three clean), two anomalies of each kind, a site a third of the default.
MID = SimSettings(
    days=6,
    clean_days=3,
    seed=7,
    per_kind=2,
    site=SiteSpec(workstations=20, servers=10, iot=10, plcs=4, hmis=1, web_visitors=2000),
)
#: A tiny site for tests that write and read files.
TINY = SiteSpec(workstations=4, servers=10, iot=5, plcs=1, hmis=1, web_sites=40, web_visitors=200)


@pytest.fixture(scope="session")
def sim() -> Simulation:
    return simulate(MID)


@pytest.fixture(scope="session")
def canon(sim: Simulation) -> pl.DataFrame:
    """The flows as flowhawk's own normalizer makes them (what ``analyze`` sees)."""
    df = pl.from_arrow(Normalizer(config.load(None), Diagnostics()).process(sim.raw()))
    assert isinstance(df, pl.DataFrame)
    return df
