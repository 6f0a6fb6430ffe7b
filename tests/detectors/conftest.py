"""Fixtures for detector tests: realistic canonical flows from the demo simulator."""

from __future__ import annotations

import polars as pl
import pytest

from flowhawk import config
from flowhawk.demo import demo_data
from flowhawk.demo.dnslog import write_dns_log
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import read_dns
from flowhawk.normalize import Normalizer


@pytest.fixture(scope="session")
def demo_flows() -> pl.DataFrame:
    """About 120 k canonical flows: two simulated days, incidents on day two."""
    raw, _ = demo_data()
    df = pl.from_arrow(Normalizer(config.load(None), Diagnostics()).process(raw))
    assert isinstance(df, pl.DataFrame)
    return df.sort("ts_start", maintain_order=True)


@pytest.fixture(scope="session")
def demo_dns(tmp_path_factory) -> pl.DataFrame:
    """The demo resolver's DNS transactions over the same two days, read back from the
    dns.log ``flowhawk demo`` writes."""
    path = tmp_path_factory.mktemp("demo-dns") / "acme-dns.log"
    write_dns_log(demo_data()[1], path)
    diag = Diagnostics()
    df = pl.concat([pl.from_arrow(t) for t in read_dns(path, diag)])  # type: ignore[misc]
    assert isinstance(df, pl.DataFrame) and not diag.inputs
    return df.sort("ts", maintain_order=True)
