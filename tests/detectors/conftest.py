"""Fixtures for detector tests: realistic canonical flows from the demo simulator."""

from __future__ import annotations

import polars as pl
import pytest

from flowhawk import config
from flowhawk.demo import DEMO_DAY, DEMO_SEED
from flowhawk.demo.scenario import streams
from flowhawk.demo.simulate import generate
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer


@pytest.fixture(scope="session")
def demo_flows() -> pl.DataFrame:
    """About 120 k canonical flows: two simulated days, incidents on day two."""
    raw = generate(streams(), DEMO_DAY, 48, DEMO_SEED)
    df = pl.from_arrow(Normalizer(config.load(None), Diagnostics()).process(raw))
    assert isinstance(df, pl.DataFrame)
    return df.sort("ts_start", maintain_order=True)
