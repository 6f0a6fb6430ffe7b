"""Merging alarms into events; risk; ids; guarded servers."""

from __future__ import annotations

import polars as pl

from flowhawk import config
from flowhawk.detectors.base import conform_alarms
from flowhawk.events import build_events
from tests.flowbuild import at


def _alarm(method, t, src="10.0.0.5", dst="8.8.8.8", port=53, score=1.0, entity=None):
    return {
        "method": method,
        "name": method,
        "ts": at(t),
        "ts_end": at(t + 1),
        "site": "default",
        "src_ip": src,
        "dst_ip": dst,
        "dst_port": port,
        "proto": 17,
        "direction": "north-south",
        "score": score,
        "entity": entity,
        "observed": "o",
        "expected": "e",
        "reason": f"{method} fired",
    }


def _alarms(rows):
    return conform_alarms(pl.DataFrame(rows))


def test_alarms_of_one_communication_and_window_merge():
    cfg = config.load(None)
    events, alarms = build_events(
        _alarms(
            [
                _alarm("M1", 10, score=1.0),
                _alarm("M31", 11, entity="8.8.8.8"),
                _alarm("M1", 4000, score=0.5),  # next hour: another event
                _alarm("M1", 20, dst="1.1.1.1"),  # another communication
            ]
        ),
        cfg,
    )
    assert events.height == 3
    top = events.row(0, named=True)
    assert sorted(top["methods"]) == ["M1", "M31"]
    # M1 weight 30 * score 1 and M31 weight 20: 100 * (1 - 0.7 * 0.8) = 44
    assert top["risk"] == 44.0
    assert top["reason"] == "M1 fired"  # the strongest contribution explains first
    assert alarms.get_column("event_id").null_count() == 0
    assert set(alarms.get_column("event_id")) == set(events.get_column("id"))


def test_ids_are_stable_and_distinct():
    cfg = config.load(None)
    a, _ = build_events(_alarms([_alarm("M1", 10), _alarm("M1", 20, dst="1.1.1.1")]), cfg)
    b, _ = build_events(_alarms([_alarm("M1", 30), _alarm("M1", 25, dst="1.1.1.1")]), cfg)
    assert sorted(a.get_column("id")) == sorted(b.get_column("id"))
    assert a.get_column("id").n_unique() == 2


def test_weights_and_min_risk_from_config():
    cfg = config.from_dict({"detectors": {"M1": {"weight": 100}}, "events": {"min_risk": 60}})
    events, _ = build_events(
        _alarms([_alarm("M1", 10, score=0.5), _alarm("M1", 20, dst="1.1.1.1", score=0.7)]), cfg
    )
    assert events.get_column("risk").to_list() == [70.0]


def test_guarded_server_raises_risk():
    cfg = config.from_dict(
        {"host_groups": [{"name": "db", "networks": ["10.0.0.30"], "guarded": True}]}
    )
    events, _ = build_events(_alarms([_alarm("M1", 10, src="10.0.0.30"), _alarm("M1", 10)]), cfg)
    by_src = {r["src_ip"]: r for r in events.iter_rows(named=True)}
    assert by_src["10.0.0.30"]["guarded"] and by_src["10.0.0.30"]["src_groups"] == ["db"]
    assert by_src["10.0.0.30"]["risk"] > by_src["10.0.0.5"]["risk"] == 30.0
    assert round(100 * (1 - 0.7**1.5), 1) == by_src["10.0.0.30"]["risk"]


def test_no_alarms_no_events():
    events, _ = build_events(_alarms([]), config.load(None))
    assert events.height == 0
