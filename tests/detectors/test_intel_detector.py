"""M27: flows whose client or server threat intelligence lists."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.intel import IntelHitSettings, IntelligenceHit
from flowhawk.engine import DetectionEngine
from flowhawk.intel import FeedSettings, load
from flowhawk.netaddr import NetworkSet
from flowhawk.state import StateStore
from tests.flowbuild import canonical

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def intel(tmp_path: Path):
    c2 = tmp_path / "c2-servers.txt"
    c2.write_text("# C2\n198.51.100.7\n")
    tor = tmp_path / "tor-exit.txt"
    tor.write_text("203.0.113.0/24\n")
    feeds = [FeedSettings(source=str(c2), category="c2"), str(tor)]
    return load(feeds, now=NOW)


FLOWS = [
    {"src_ip": "10.0.0.5", "dst_ip": "198.51.100.7", "dst_port": 443, "t": 0},  # server listed
    {"src_ip": "203.0.113.9", "dst_ip": "10.0.0.6", "dst_port": 22, "t": 1},  # client in /24
    {"src_ip": "10.0.0.5", "dst_ip": "192.0.2.1", "dst_port": 443, "t": 2},  # nothing listed
    {"src_ip": "10.0.0.7", "dst_ip": "198.51.100.7", "dst_port": 8443, "t": 3},  # server again
]


def _detector(intel, **settings) -> IntelligenceHit:
    ctx = DetectorContext(NetworkSet(["10.0.0.0/8"]), NetworkSet([]), intel=intel)
    return IntelligenceHit(IntelHitSettings(**settings), ctx)


def test_hits_on_either_side_and_networks(intel):
    alarms = _detector(intel).score(Batch(canonical(FLOWS)))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    got = alarms.select("src_ip", "dst_ip", "entity").rows()
    assert got == [
        ("10.0.0.5", "198.51.100.7", "198.51.100.7"),
        ("203.0.113.9", "10.0.0.6", "203.0.113.9"),
        ("10.0.0.7", "198.51.100.7", "198.51.100.7"),
    ]
    c2, tor = alarms.row(0, named=True), alarms.row(1, named=True)
    assert c2["reason"].startswith("server 198.51.100.7 is listed by c2-servers (v")
    assert c2["reason"].endswith(" as c2; reputation 10")
    assert c2["score"] == pytest.approx(0.9)
    assert tor["reason"].startswith("client 203.0.113.9 (in 203.0.113.0/24) is listed by tor-exit")
    assert tor["reason"].endswith(" as tor; reputation 64")
    version = intel.feed_versions()["c2-servers"]
    assert f"(v{version[:8]})" in c2["reason"]
    assert (alarms.get_column("method") == "M27").all()


def test_reputation_threshold_and_sides(intel):
    flows = canonical(FLOWS)
    risky = _detector(intel, max_reputation=19).score(Batch(flows))
    assert set(risky.get_column("entity")) == {"198.51.100.7"}
    clients = _detector(intel, sides=["client"]).score(Batch(flows))
    assert clients.get_column("entity").to_list() == ["203.0.113.9"]


def test_no_intel_no_alarms(intel):
    flows = canonical(FLOWS)
    assert _detector(None).score(Batch(flows)).height == 0
    empty = load([], now=NOW)
    assert _detector(empty).score(Batch(flows)).height == 0


def test_alarms_during_learning_but_never_in_learn_only_runs(intel, tmp_path):
    cfg = config.from_dict({"learning": {"period": "1d"}})
    flows = canonical(FLOWS)
    eng = DetectionEngine(cfg, StateStore(tmp_path / "a"), intel=intel)
    alarms = eng.process(flows)
    assert alarms.filter(pl.col("method") == "M27").height == 3
    learn = DetectionEngine(cfg, StateStore(tmp_path / "b"), learn_only=True, intel=intel)
    assert learn.process(flows).height == 0


def test_servers_named_by_dns_for_a_listed_domain(tmp_path: Path):
    from datetime import timedelta

    from flowhawk.dns.passive import PassiveDns

    feed = tmp_path / "c2-domains.txt"
    feed.write_text("evil.example\n")
    intel = load([FeedSettings(source=str(feed), category="c2")], now=NOW)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    pdns = PassiveDns(
        pl.DataFrame(
            {
                "ip": ["192.0.2.80", "192.0.2.81"],
                "name": ["cdn.evil.example", "news.example"],
                "cname": [False, False],
                "first_seen": [t0 - timedelta(hours=1), t0 - timedelta(hours=1)],
                "last_seen": [t0, t0],
                "count": [3, 1],
            }
        )
    )
    flows = canonical(
        [
            {"src_ip": "10.0.0.5", "dst_ip": "192.0.2.80", "dst_port": 443, "t": 0},
            {"src_ip": "10.0.0.5", "dst_ip": "192.0.2.81", "dst_port": 443, "t": 1},
        ]
    )
    ctx = DetectorContext(NetworkSet(["10.0.0.0/8"]), NetworkSet([]), intel=intel)
    assert IntelligenceHit(IntelHitSettings(), ctx).score(Batch(flows)).height == 0
    ctx.passive_dns = pdns
    alarms = IntelligenceHit(IntelHitSettings(), ctx).score(Batch(flows))
    (row,) = alarms.rows(named=True)
    assert (row["dst_ip"], row["entity"], row["observed_value"]) == ("192.0.2.80", "192.0.2.80", 10)
    assert row["reason"].startswith("server 192.0.2.80 (DNS name cdn.evil.example) is listed by")
    off = IntelligenceHit(IntelHitSettings(names=False), ctx).score(Batch(flows))
    assert off.height == 0
    # a name first answered after the flow does not count
    later = PassiveDns(pdns.table.with_columns(first_seen=pl.lit(t0 + timedelta(hours=2))))
    ctx.passive_dns = later
    assert IntelligenceHit(IntelHitSettings(), ctx).score(Batch(flows)).height == 0
