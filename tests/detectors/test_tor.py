"""M26: Tor, to listed relays and by its flow shape."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.tor import Tor, TorSettings
from flowhawk.detectors.tor_model import FEATURE_COLUMNS, FEATURES, MODEL_FILE, ShapeModel
from flowhawk.intel import FeedSettings, load
from flowhawk.netaddr import NetworkSet
from tests.flowbuild import canonical

NOW = datetime(2024, 1, 1, tzinfo=UTC)
RELAY = "198.51.100.9"
BRIDGE = "192.0.2.44"  # unlisted


def circuit(src: str, dst: str, port: int = 9001, t: float = 0) -> dict:
    """Five minutes of a client's guard connection, as eval/torlab.py's Tor network
    shows it: cells and ACKs up, cells and full segments down."""
    return {
        "src_ip": src, "dst_ip": dst, "dst_port": port, "t": t, "dur": 300.0,
        "src_pkts": 715, "src_bytes": 715 * 436, "dst_pkts": 1091, "dst_bytes": 1091 * 1310,
    }  # fmt: skip


def https(src: str, dst: str, t: float = 0) -> dict:
    """A page load: small requests, a 55 kB answer in full-size packets, two seconds."""
    return {
        "src_ip": src, "dst_ip": dst, "dst_port": 443, "t": t, "dur": 2.0,
        "src_pkts": 12, "src_bytes": 1500, "dst_pkts": 40, "dst_bytes": 55_000,
    }  # fmt: skip


@pytest.fixture
def intel(tmp_path: Path):
    relays = tmp_path / "tor-nodes.txt"
    relays.write_text(f"{RELAY}\n")
    c2 = tmp_path / "c2.txt"
    c2.write_text("203.0.113.5\n")
    return load([str(relays), FeedSettings(source=str(c2), category="c2")], now=NOW)


def _detector(intel, **settings) -> Tor:
    ctx = DetectorContext(NetworkSet(["10.0.0.0/8"]), NetworkSet([]), intel=intel)
    return Tor(TorSettings(**settings), ctx)


def _score(det: Tor, rows: list[dict]) -> pl.DataFrame:
    alarms = det.score(Batch(canonical(rows)))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    return alarms


def test_listed_relay_alarms(intel):
    alarms = _score(_detector(intel), [circuit("10.0.0.7", RELAY), https("10.0.0.8", RELAY)])
    rows = alarms.sort("src_ip").rows(named=True)
    assert [r["entity"] for r in rows] == ["10.0.0.7", "10.0.0.8"]
    tor, web = rows
    assert tor["method"] == "M26" and tor["name"] == "Tor"
    assert tor["score"] > 0.9  # listed on a relay port, Tor-shaped too
    assert tor["reason"].startswith(f"10.0.0.7 → {RELAY}:9001/tcp is a Tor relay (listed by ")
    assert "tor-nodes" in tor["reason"] and "packets of 436/1310 bytes, 5 min" in tor["reason"]
    assert web["score"] == pytest.approx(0.9)  # 443 is a port relays use; shape is not Tor


def test_relay_as_client_of_an_internal_server(intel):
    rows = [{"src_ip": RELAY, "dst_ip": "10.0.0.30", "dst_port": 22, "t": 0}]
    alarm = _score(_detector(intel), rows).row(0, named=True)
    assert alarm["entity"] == "10.0.0.30"
    assert alarm["score"] == pytest.approx(0.6)
    assert alarm["reason"].startswith(f"Tor relay {RELAY} (listed by tor-nodes")


def test_unlisted_tor_shape_alarms_through_the_model(intel):
    alarms = _score(_detector(intel), [circuit("10.0.0.7", BRIDGE)])
    alarm = alarms.row(0, named=True)
    assert alarm["entity"] == "10.0.0.7"
    assert alarm["score"] > 0.9 and alarm["observed_value"] == pytest.approx(alarm["score"])
    assert alarm["reason"] == (
        f"10.0.0.7 → {BRIDGE}:9001/tcp looks like Tor (shape score 1.0: a relay port, "
        "packets of 436/1310 bytes, 5 min) to an unlisted address"
    )


def test_ordinary_traffic_does_not_alarm(intel):
    rows = [https("10.0.0.8", BRIDGE, t=i) for i in range(5)]
    rows.append(https("10.0.0.8", "203.0.113.5"))  # listed, but not as Tor
    rows.append({**circuit("10.0.0.7", BRIDGE), "proto": 17})  # UDP is never Tor
    assert _score(_detector(intel), rows).height == 0


def test_no_intel_means_model_only():
    rows = [circuit("10.0.0.7", BRIDGE), https("10.0.0.8", RELAY)]
    for intel in (None, load([], now=NOW)):
        alarms = _score(_detector(intel), rows)
        assert alarms.get_column("dst_ip").to_list() == [BRIDGE]


def test_settings(intel):
    rows = [circuit("10.0.0.7", BRIDGE), https("10.0.0.8", RELAY)]
    no_model = _score(_detector(intel, model=False), rows)
    assert no_model.get_column("dst_ip").to_list() == [RELAY]
    strict = _score(_detector(intel, shape_threshold=0.999), rows)
    assert strict.get_column("dst_ip").to_list() == [RELAY]
    assert (strict.get_column("threshold") == 0.999).all()
    lower = _score(_detector(intel, listed_score=0.7), rows)
    assert lower.filter(pl.col("dst_ip") == RELAY).get_column("score").item() == pytest.approx(0.7)
    assert _score(_detector(intel, min_score=0.95), rows).height == 1
    outside = [circuit("198.51.100.1", BRIDGE)]
    assert _score(_detector(intel), outside).height == 0
    assert _score(_detector(intel, internal_only=False), outside).height == 1


def test_batching_and_empty(intel):
    rows = [circuit("10.0.0.7", BRIDGE, t=i * 60) for i in range(6)]
    rows += [circuit("10.0.0.9", RELAY, t=i * 60 + 1) for i in range(6)]
    det = _detector(intel)
    flows = canonical(rows)
    whole = det.score(Batch(flows))
    parts = pl.concat([det.score(Batch(flows.slice(i, 5))) for i in range(0, flows.height, 5)])
    assert whole.height == 12 and parts.equals(whole)
    assert det.score(Batch(flows.clear())).schema == pl.Schema(ALARM_SCHEMA)
    assert det.state() == {} and not Tor.learns


def test_shipped_parameters_load(tmp_path):
    model = ShapeModel.load()
    doc = json.loads(MODEL_FILE.read_text())
    assert ShapeModel.from_dict(model.to_dict()) == model
    assert doc["model"] == model.to_dict()
    assert 0 < model.threshold < 1 and 9001 in model.ports["relay"]
    features = model.features(canonical([circuit("10.0.0.7", BRIDGE)]))
    assert set(FEATURE_COLUMNS) <= set(features.columns)
    assert features.get_column("tor_port").item() == "relay"
    custom = tmp_path / "m.json"
    custom.write_text(json.dumps({"model": {**model.to_dict(), "threshold": 0.999}}))
    det = Tor(TorSettings(model_file=str(custom)), DetectorContext(NetworkSet([]), NetworkSet([])))
    assert det.threshold == 0.999


def _base(**params) -> dict:
    return {
        "ports": {"relay": [9001], "tls": [443]}, "cell_band": [180.0, 720.0],
        "long_seconds": 300.0, "busy_packets": 5000.0, "min_packets": 4, "threshold": 0.5,
        **params,
    }  # fmt: skip


def test_tree_model_scores_by_its_leaves():
    # one stump: long <= 0.5 → -2, else +2
    i = FEATURES.index("long")
    stump = {"depth": 1, "roots": [0], "feature": [i, -1, -1], "cut": [0.5, 0.0, 0.0],
             "left": [1, -1, -1], "right": [2, -1, -1], "value": [0.0, -2.0, 2.0]}  # fmt: skip
    model = ShapeModel.from_dict(_base(trees=stump))
    assert ShapeModel.from_dict(model.to_dict()) == model
    rows = [{**circuit("10.0.0.7", BRIDGE), "dur": d} for d in (2.0, 600.0)]
    rows.append({**circuit("10.0.0.7", BRIDGE), "proto": 17})
    scores = model.score(canonical(rows).sort("ts_end")).to_list()
    assert scores[0] == pytest.approx(1 / (1 + math.exp(2)))  # 2 s: log1p(2)/log1p(300) < 0.5
    assert 0.0 in scores and pytest.approx(1 / (1 + math.exp(-2))) in scores


def test_logistic_model_and_bad_files():
    model = ShapeModel.from_dict(_base(bias=-1.0, weights={"relay_port": 3.0}))
    scores = model.score(canonical([circuit("10.0.0.7", BRIDGE), https("10.0.0.8", BRIDGE)]))
    assert sorted(scores.to_list()) == pytest.approx([1 / (1 + math.e), 1 / (1 + math.exp(-2))])
    with pytest.raises(ValueError, match="unknown features"):
        ShapeModel.from_dict(_base(weights={"cells": 1.0}))
