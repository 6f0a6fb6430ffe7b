"""The allow-list: what no feed may list."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flowhawk import config, intelstore
from flowhawk.errors import ConfigError
from flowhawk.intel import load
from flowhawk.intel.allow import AllowList

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    path = tmp_path / "attackers.txt"
    path.write_text("8.8.8.8\n198.51.100.0/24\n2001:db8::/32\nevil.example\ncdn.example\n")
    return path


def _reps(frame: pl.DataFrame) -> list[int | None]:
    return frame.get_column("reputation").to_list()


def test_allowed_addresses_networks_and_domains_find_nothing(feed):
    intel = load([feed], now=NOW)
    ips = pl.Series(["8.8.8.8", "198.51.100.7", "198.51.100.200", "2001:db8::1", "192.0.2.1"])
    before = _reps(intel.lookup_ips(ips))
    assert [r is not None for r in before] == [True, True, True, True, False]
    intel.allowed = AllowList(["8.8.8.8", "198.51.100.0/25", "2001:db8::1", "cdn.example"])
    after = _reps(intel.lookup_ips(ips))
    # the listed /24 still counts outside the allowed /25
    assert [r is not None for r in after] == [False, False, True, False, False]
    hi, lo = np.array([0, 0], np.uint64), np.array([0xFFFF08080808, 0xFFFFC63364C8], np.uint64)
    assert [r is not None for r in _reps(intel.lookup_ips((hi, lo)))] == [False, True]
    names = pl.Series(["a.cdn.example", "CDN.example.", "evil.example", "x.evil.example"])
    assert [r is not None for r in _reps(intel.lookup_domains(names))] == [
        False,
        False,
        True,
        True,
    ]


def test_config_checks_entries_and_runs_apply_them(feed, tmp_path):
    with pytest.raises(ConfigError, match=r"intel\.allow"):
        config.from_dict({"intel": {"allow": ["not an address!"]}})
    cfg = config.from_dict(
        {"intel": {"allow": ["8.8.8.8", "Partner.Example."], "feeds": [{"source": str(feed)}]}}
    )
    assert cfg.intel.allow == ["8.8.8.8", "partner.example"]
    intel = intelstore.for_run(cfg, tmp_path)
    assert intel is not None and intel.allowed is not None
    assert _reps(intel.lookup_ips(pl.Series(["8.8.8.8"]))) == [None]
    # the feed's evidence is kept: what lists 8.8.8.8 is still there to explain
    listed = intel.indicators.filter(pl.col("value") == "8.8.8.8")
    assert listed.height == 1
