"""Contract tests run over every registered detector."""

from __future__ import annotations

import re
from datetime import timedelta

import polars as pl
import pytest

from flowhawk import config
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.base import ALARM_SCHEMA, Detector, DetectorSettings
from flowhawk.engine import build_detectors

ALL = DETECTORS.names()


def _make(method: str) -> Detector:
    cfg = config.load(None)
    return next(d for d in build_detectors(cfg) if d.method == method)


def _split(flows: pl.DataFrame, hours: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    t0 = flows.get_column("ts_start").min()
    cut = t0 + timedelta(hours=hours)
    return flows.filter(pl.col("ts_start") < cut), flows.filter(pl.col("ts_start") >= cut)


@pytest.mark.parametrize("method", ALL)
def test_declares_identity_and_settings(method):
    cls = DETECTORS.get(method)
    assert re.fullmatch(r"[MNS]\d+", cls.method) and cls.method == method
    assert (cls.title and cls.__doc__ is None) or isinstance(cls.title, str)
    assert issubclass(cls.Settings, DetectorSettings)
    settings = cls.Settings()
    assert 0 <= settings.weight <= 100
    for name, field in cls.Settings.model_fields.items():
        assert field.description or name in DetectorSettings.model_fields, (
            f"{method} setting {name!r} is undocumented"
        )


@pytest.mark.parametrize("method", ALL)
def test_empty_batch_gives_empty_alarm_table(method, demo_flows):
    det = _make(method)
    out = det.score(demo_flows.clear())
    assert out.height == 0 and out.schema == pl.Schema(ALARM_SCHEMA)


@pytest.mark.parametrize("method", ALL)
def test_alarms_are_well_formed(method, demo_flows):
    learn, score = _split(demo_flows, 24)
    det = _make(method)
    det.learn(learn)
    before = score.clone()
    alarms = det.score(score)
    assert score.equals(before), "detectors must not change their input"
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    assert alarms.height > 0, "the demo day two has incidents every detector should see"
    assert (alarms.get_column("method") == method).all()
    assert alarms.get_column("score").is_between(0, 1).all()
    for col in ("reason", "observed", "expected", "src_ip", "dst_ip", "site", "direction"):
        assert alarms.get_column(col).null_count() == 0, col
    t0, t1 = score.get_column("ts_start").min(), score.get_column("ts_start").max()
    assert alarms.get_column("ts").is_between(t0, t1).all()


@pytest.mark.parametrize("method", ALL)
def test_deterministic(method, demo_flows):
    learn, score = _split(demo_flows, 24)
    outs = []
    for _ in range(2):
        det = _make(method)
        det.learn(learn)
        outs.append(det.score(score))
    assert outs[0].equals(outs[1])


@pytest.mark.parametrize("method", ALL)
def test_state_roundtrip_continues_identically(method, demo_flows):
    learn, score = _split(demo_flows, 24)
    first, second = _split(score, 6)
    a = _make(method)
    a.learn(learn)
    a.score(first)
    b = _make(method)
    b.load_state(a.state())
    assert a.score(second).equals(b.score(second))


@pytest.mark.parametrize("method", ALL)
def test_batching_does_not_change_results(method, demo_flows):
    """Event time, not batch boundaries, decides: one batch or many give the same alarms."""
    learn, score = _split(demo_flows, 24)
    whole = _make(method)
    whole.learn(learn)
    expected = whole.score(score)
    parts = _make(method)
    parts.learn(learn)
    got = pl.concat(
        [
            parts.score(p)
            for p in score.with_row_index("_i")
            .with_columns(_b=pl.col("_i") // 7919)
            .partition_by("_b", maintain_order=True, include_key=False)
        ]
    )
    assert got.drop("expected").equals(expected.drop("expected"))


@pytest.mark.parametrize("method", ALL)
def test_learned_batch_does_not_alarm_again(method, demo_flows):
    learn, _ = _split(demo_flows, 24)
    det = _make(method)
    det.learn(learn)
    assert det.score(learn).height == 0
