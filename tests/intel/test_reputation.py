"""Reputation: severity, agreement, weights, decay with age, and the kept evidence."""

from __future__ import annotations

import random
from datetime import timedelta

import polars as pl

from flowhawk.diagnostics import Diagnostics
from flowhawk.intel import HIGH_RISK, IntelSet
from flowhawk.intel.reputation import AGREEMENT, CAP, SEVERITY
from flowhawk.intel.schema import CATEGORIES

from .conftest import NOW, make_feed


def reputation_of(evidence: list[tuple[str, float]]) -> int:
    """The reputation of one value from its feeds' ``(category, risk)``: the formula of
    :mod:`flowhawk.intel.reputation`, one value at a time (what ``score`` computes for
    columns)."""
    by_category: dict[str, list[float]] = {}
    for category, risk in evidence:
        by_category.setdefault(category, []).append(risk)
    remaining = 1.0
    for risks in by_category.values():
        agreed = 1.0
        for r in risks:
            agreed *= 1.0 - r
        remaining *= 1.0 - min(CAP, AGREEMENT * max(risks), 1.0 - agreed)
    return round(100.0 * remaining)


def _rep(intel: IntelSet, value: str) -> int:
    return intel.indicators.filter(pl.col("value") == value).get_column("reputation").item()


def test_ordering_by_category_and_agreement() -> None:
    intel = IntelSet.build(
        [
            make_feed("c2-list", ["203.0.113.1", "203.0.113.2"], "c2"),
            make_feed("block-a", ["203.0.113.1"], "malicious"),
            make_feed("block-b", ["203.0.113.1"], "malicious"),
            make_feed("scanners", ["203.0.113.3"], "scanner"),
            make_feed("tor-1", ["203.0.113.4", "203.0.113.5"], "tor"),
            make_feed("tor-2", ["203.0.113.4"], "tor"),
            make_feed("tor-3", ["203.0.113.4"], "tor"),
            make_feed("malware", ["evil.example.com"], "malware"),
        ]
    )
    c2_three, c2_one = _rep(intel, "203.0.113.1"), _rep(intel, "203.0.113.2")
    scanner, tor_one, tor_three = (_rep(intel, f"203.0.113.{i}") for i in (3, 5, 4))
    assert c2_three < c2_one < scanner, "c2 + two more feeds is worse than c2 alone"
    assert c2_one < HIGH_RISK and _rep(intel, "evil.example.com") < HIGH_RISK
    assert scanner > 50 and tor_one > 50
    assert tor_three < tor_one, "agreement makes it worse"
    assert tor_three > 40, "but three Tor lists do not make a Tor relay high risk"
    assert intel.indicators.filter(pl.col("value") == "203.0.113.1")["feeds"].item() == 3


def test_documented_values() -> None:
    assert reputation_of([("c2", 0.9)]) == 10
    assert reputation_of([("tor", 0.36)] * 3) == 46
    intel = IntelSet.build([make_feed("c2", ["203.0.113.1"], "c2")])
    assert _rep(intel, "203.0.113.1") == 10


def test_weights_raise_and_lower_risk() -> None:
    intel = IntelSet.build(
        [
            make_feed("trusted", ["198.51.100.1"], "scanner", weight=2.0),
            make_feed("normal", ["198.51.100.2"], "scanner"),
            make_feed("doubtful", ["198.51.100.3"], "scanner", weight=0.25),
            make_feed("muted", ["198.51.100.4"], "c2", weight=0.0),
        ]
    )
    reps = [_rep(intel, f"198.51.100.{i}") for i in (1, 2, 3, 4)]
    assert reps[0] < reps[1] < reps[2] < reps[3] == 100


def test_old_evidence_decays_toward_neutral() -> None:
    ages = [0, 10, 30, 90, 365]
    feeds = [
        make_feed(f"c2-{age}", [f"192.0.2.{i}"], "c2", last_seen=NOW - timedelta(days=age))
        for i, age in enumerate(ages)
    ]
    intel = IntelSet.build(feeds, as_of=NOW)
    reps = [_rep(intel, f"192.0.2.{i}") for i in range(len(ages))]
    assert reps == sorted(reps) and len(set(reps)) == len(reps)
    assert reps[0] == 10 and reps[2] == 55, "half-life 30 days"
    assert reps[-1] == 100
    # Undated evidence is as old as its feed's load time.
    undated = make_feed("undated", ["192.0.2.99"], "c2", loaded_at=NOW - timedelta(days=30))
    assert _rep(IntelSet.build([undated], as_of=NOW), "192.0.2.99") == 55
    # The same set scored later has decayed.
    later = IntelSet.build(feeds, as_of=NOW + timedelta(days=30))
    assert _rep(later, "192.0.2.0") == 55


def test_max_age_drops_and_half_life_is_per_feed() -> None:
    diag = Diagnostics()
    old = NOW - timedelta(days=40)
    intel = IntelSet.build(
        [
            make_feed("short", ["192.0.2.1"], "c2", last_seen=old, max_age=30 * 86400),
            make_feed("slow", ["192.0.2.2"], "c2", last_seen=old, half_life=400 * 86400),
        ],
        as_of=NOW,
        diagnostics=diag,
    )
    assert intel.indicators.get_column("value").to_list() == ["192.0.2.2"]
    assert diag.stats("short").ignored == {"indicators older than max_age": 1}
    assert _rep(intel, "192.0.2.2") == 16, "40 days at a 400-day half-life: still high risk"


def test_combine_equals_the_formula_on_random_evidence() -> None:
    rng = random.Random(2)
    feeds, expected = [], {}
    values = [f"198.51.100.{i}" for i in range(40)]
    for f in range(8):
        category = rng.choice(CATEGORIES)
        listed = rng.sample(values, 15)
        weight = rng.choice([0.5, 1.0, 1.5])
        feeds.append(make_feed(f"f{f}", listed, category, weight=weight))
        risk = min(0.97, 0.9 * SEVERITY[category] * weight)
        for v in listed:
            expected.setdefault(v, []).append((category, risk))
    intel = IntelSet.build(feeds, as_of=NOW)
    got = dict(intel.indicators.select("value", "reputation").rows())
    assert got == {v: reputation_of(ev) for v, ev in expected.items()}


def test_evidence_names_feed_version_category_and_family() -> None:
    a = make_feed("c2-list", ["203.0.113.7", "203.0.113.7:443"], "c2")
    b = make_feed("tor-exits", ["203.0.113.7"], "tor")
    a = type(a)(**{**a.__dict__, "indicators": a.indicators.with_columns(family=pl.lit("Sliver"))})
    intel = IntelSet.build([a, b])
    hit = intel.lookup_ips(pl.Series(["203.0.113.7"])).row(0, named=True)
    evidence = intel.explain(hit["indicator"])
    assert evidence.select("feed", "feed_version", "category", "family").rows() == [
        ("c2-list", a.version, "c2", "Sliver"),
        ("tor-exits", b.version, "tor", None),
    ], "one row per feed (a feed listing it twice counts once), riskiest first"
    assert intel.feed_versions() == {"c2-list": a.version, "tor-exits": b.version}
