"""M29 (high-risk north-south traffic) and M28 (the same, on anomalous traffic)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext, comm_columns
from flowhawk.detectors.northsouth import HighRiskNormal, HighRiskSettings
from flowhawk.events import build_events, correlate
from flowhawk.intel import FeedSettings, load
from flowhawk.netaddr import NetworkSet
from tests.flowbuild import canonical

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def intel(tmp_path: Path):
    c2 = tmp_path / "c2-servers.txt"
    c2.write_text("198.51.100.7\n")
    tor = tmp_path / "tor-exit.txt"
    tor.write_text("203.0.113.0/24\n")
    return load([FeedSettings(source=str(c2), category="c2"), str(tor)], now=NOW)


FLOWS = [
    {"src_ip": "10.0.0.5", "dst_ip": "198.51.100.7", "dst_port": 443, "t": 0},  # out to C2
    {"src_ip": "198.51.100.7", "dst_ip": "10.0.0.6", "dst_port": 22, "t": 1},  # in from C2
    {"src_ip": "10.0.0.5", "dst_ip": "203.0.113.9", "dst_port": 443, "t": 2},  # Tor: 64
    {"src_ip": "10.0.0.5", "dst_ip": "10.0.0.7", "dst_port": 445, "t": 3},  # east-west
    {"src_ip": "10.0.0.5", "dst_ip": "192.0.2.1", "dst_port": 443, "t": 7200},  # not listed
]


def _detector(intel, **settings) -> HighRiskNormal:
    ctx = DetectorContext(NetworkSet(["10.0.0.0/8"]), NetworkSet([]), intel=intel)
    return HighRiskNormal(HighRiskSettings(**settings), ctx)


def test_high_risk_external_side_either_way(intel):
    alarms = _detector(intel).score(Batch(canonical(FLOWS)))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    assert alarms.select("src_ip", "dst_ip", "entity", "observed_value").rows() == [
        ("10.0.0.5", "198.51.100.7", "10.0.0.5", 10.0),
        ("198.51.100.7", "10.0.0.6", "10.0.0.6", 10.0),
    ]
    out, inbound = alarms.get_column("reason").to_list()
    assert out.startswith("10.0.0.5 talked to high-risk server 198.51.100.7 (reputation 10 < 20;")
    assert "listed by c2-servers" in out and out.endswith("as c2)")
    assert inbound.startswith("10.0.0.6 talked to high-risk client 198.51.100.7")
    assert alarms.get_column("score").to_list() == [pytest.approx(0.9)] * 2


def test_threshold_is_a_setting(intel):
    flows = canonical(FLOWS)
    # the Tor exit (reputation 64) becomes high risk under a threshold of 70
    alarms = _detector(intel, high_risk=70).score(Batch(flows))
    assert "203.0.113.9" in alarms.get_column("dst_ip").to_list()
    assert _detector(None).score(Batch(flows)).height == 0


def _m29_and(other: str, flows: pl.DataFrame, intel, other_row: int) -> pl.DataFrame:
    m29 = _detector(intel).score(Batch(flows))
    row = flows.slice(other_row, 1)
    other_alarm = row.select(
        **comm_columns(other, "other"), score=pl.lit(0.8), reason=pl.lit("something changed")
    )
    return pl.concat([m29, other_alarm], how="diagonal_relaxed")


def test_m29_becomes_m28_with_a_behavioral_alarm_in_the_same_window(intel):
    flows = canonical(FLOWS)
    cfg = config.from_dict({})
    # M1 (a learning detector) on the outbound C2 communication, same window
    out = correlate(_m29_and("M1", flows, intel, 0), cfg)
    by = {(r["method"], r["dst_ip"]): r["reason"] for r in out.iter_rows(named=True)}
    assert by[("M28", "198.51.100.7")].endswith("; also anomalous: M1")
    assert by[("M29", "10.0.0.6")].endswith("; otherwise normal")  # the inbound one
    # M27 (intel, learns nothing) is not behavioral: M29 stays
    out = correlate(_m29_and("M27", flows, intel, 0), cfg)
    assert set(out.get_column("method")) == {"M29", "M27"}


def test_behavioral_alarm_in_another_window_does_not_count(intel):
    flows = canonical(
        [*FLOWS, {"src_ip": "10.0.0.5", "dst_ip": "198.51.100.7", "dst_port": 443, "t": 7300}]
    )
    alarms = _m29_and("M13", flows, intel, flows.height - 1)  # M13 two hours later
    events, merged = build_events(alarms, config.from_dict({}))
    first = events.filter(pl.col("window_start") == pl.lit(NOW).cast(pl.Datetime("us", "UTC")))
    methods = first.filter(pl.col("dst_ip") == "198.51.100.7").get_column("methods").item()
    assert methods.to_list() == ["M29"]
    later = merged.filter(pl.col("ts") > pl.lit(NOW).cast(pl.Datetime("us", "UTC")))
    assert "M28" in later.get_column("method").to_list()


def test_m28_disabled_keeps_m29_and_weighs_less(intel):
    flows = canonical(FLOWS)
    alarms = _m29_and("M1", flows, intel, 0)
    off = correlate(alarms, config.from_dict({"detectors": {"M28": {"enabled": False}}}))
    assert "M28" not in off.get_column("method").to_list()
    on, _ = build_events(alarms, config.from_dict({"detectors": {"M1": {"weight": 0}}}))
    off, _ = build_events(
        alarms,
        config.from_dict({"detectors": {"M1": {"weight": 0}, "M28": {"enabled": False}}}),
    )
    c2 = pl.col("dst_ip") == "198.51.100.7"
    assert on.filter(c2).get_column("risk").item() > off.filter(c2).get_column("risk").item()
