"""N8: exfiltration to rare destinations and data hoarding from internal servers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.exfil import ExfilSettings, ExfiltrationHoarding
from flowhawk.detectors.popularity import Popularity
from flowhawk.detectors.volbaseline import WindowBaseline, bin_top, value_bin
from flowhawk.netaddr import NetworkSet
from tests.flowbuild import canonical

H = 3600
HOST, OTHER = "10.0.0.5", "10.0.0.6"
FILES = "10.0.1.20"
DROP = "198.51.100.200"


def _det(**settings) -> ExfiltrationHoarding:
    cfg = config.load(None)
    ctx = DetectorContext(NetworkSet(cfg.network.internal), NetworkSet(cfg.network.local_scope))
    return ExfiltrationHoarding(ExfilSettings(**settings), ctx)


def _up(t: float, src: str, dst: str, sent: int, port: int = 443) -> dict:
    return {"t": t, "src_ip": src, "dst_ip": dst, "dst_port": port, "src_bytes": sent}


def _pull(t: float, src: str, dst: str, got: int) -> dict:
    return {"t": t, "src_ip": src, "dst_ip": dst, "dst_port": 445, "dst_bytes": got}


def _history(hours: int = 6) -> list[dict]:
    """Each hour: both hosts upload ~1 MB to a popular web server (and three other hosts
    use it too), pull ~2 MB from the file server."""
    rows = []
    for h in range(hours):
        for i, src in enumerate((HOST, OTHER, "10.0.0.7", "10.0.0.8")):
            rows.append(_up(h * H + 60 + i, src, "203.0.113.10", 1_000_000))
            rows.append(_pull(h * H + 120 + i, src, FILES, 2_000_000))
    return rows


def _learned(**settings) -> ExfiltrationHoarding:
    det = _det(**settings)
    det.learn(Batch(canonical(_history())))
    return det


EXFIL = [
    _up(6 * H + 100, HOST, DROP, 8_000_000),
    _up(6 * H + 200, HOST, DROP, 8_000_000),
    _up(6 * H + 300, HOST, DROP, 8_000_000),  # crosses 20 MB here
    _up(6 * H + 400, HOST, DROP, 8_000_000),
    _up(6 * H + 500, OTHER, "203.0.113.10", 40_000_000),  # popular destination
]


def test_upload_to_a_new_destination_far_above_baseline_alarms_once():
    alarms = _learned().score(Batch(canonical(EXFIL)))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    assert alarms.height == 1
    a = alarms.row(0, named=True)
    assert a["method"] == "N8" and a["name"] == "exfiltration"
    assert (a["src_ip"], a["dst_ip"], a["dst_port"], a["entity"]) == (HOST, DROP, 443, HOST)
    assert a["ts"] == canonical([EXFIL[2]]).get_column("ts_start")[0]  # the crossing flow
    assert a["observed_value"] == 24_000_000 and a["threshold"] == 20e6
    assert a["direction"] == "north-south"
    assert 0.7 <= a["score"] <= 1.0
    assert "no internal host had contacted before" in a["reason"]
    assert "24.0 MB" in a["reason"] and DROP in a["reason"]


def test_popular_destination_and_usual_volume_do_not_alarm():
    det = _learned()
    # 40 MB to a service four hosts use: not rare
    assert det.score(Batch(canonical([EXFIL[-1]]))).height == 0
    # a host that uploads 60 MB an hour to its own destination every hour
    rows = [_up(h * H + 10, HOST, "192.0.2.50", 60_000_000) for h in range(8)]
    det = _det()
    det.learn(Batch(canonical(rows[:6])))
    assert det.score(Batch(canonical(rows[6:]))).height == 0


def test_batches_and_restarts_do_not_change_alarms():
    flows = canonical(EXFIL + [_pull(6 * H + 600 + i, HOST, FILES, 60_000_000) for i in range(5)])
    whole = _learned().score(Batch(flows))
    assert set(whole.get_column("name")) == {"exfiltration", "data hoarding"}
    one_by_one = _learned()
    parts = [one_by_one.score(Batch(flows[i : i + 1])) for i in range(flows.height)]
    assert pl.concat(parts).drop("expected").equals(whole.drop("expected"))
    first = _learned()
    out = [first.score(Batch(flows[:3]))]
    second = _det()
    second.load_state(first.state())
    out.append(second.score(Batch(flows[3:])))
    assert pl.concat(out).equals(whole)


def test_hoarding_by_volume_and_by_many_servers():
    det = _learned()
    pulls = [_pull(6 * H + 10 + i, HOST, FILES, 60_000_000) for i in range(5)]
    alarms = det.score(Batch(canonical(pulls)))
    assert alarms.height == 1
    a = alarms.row(0, named=True)
    assert a["name"] == "data hoarding" and a["entity"] == HOST and a["dst_ip"] == FILES
    assert a["observed_value"] == 240_000_000 and a["direction"] == "east-west"
    assert "from 1 internal servers" in a["reason"]
    # 10 servers (usually 1) and 60 MB: a quarter of the 200 MB limit is enough
    det = _learned()
    many = [_pull(6 * H + 10 + i, OTHER, f"10.0.2.{i}", 6_000_000) for i in range(10)]
    alarms = det.score(Batch(canonical(many)))
    assert alarms.height >= 1
    assert set(alarms.get_column("entity")) == {OTHER}
    assert "many servers" in alarms.get_column("reason")[0]
    assert alarms.get_column("score").min() >= 0.6


def test_alarmed_window_does_not_teach_the_baseline():
    det = _learned()
    det.score(Batch(canonical(EXFIL[:4])))
    # the next hour closes the alarmed window; the same upload again still alarms
    again = [_up(7 * H + 100 + i, HOST, "198.51.100.201", 8_000_000) for i in range(4)]
    assert det.score(Batch(canonical(again))).height == 1


def test_bad_input_never_crashes():
    det = _learned()
    flows = canonical(EXFIL).with_columns(
        src_bytes=pl.Series([None, -5, 2**62, 8_000_000, None], dtype=pl.Int64),
        site=pl.lit(None, dtype=pl.String),
    )
    out = det.score(Batch(flows))
    assert out.schema == pl.Schema(ALARM_SCHEMA)
    assert det.score(Batch(flows.clear())).height == 0
    det.learn(Batch(flows.clear()))


def test_baseline_quantile_decay_and_round_trip():
    base = WindowBaseline(quantile=0.99, half_life=10, min_history=3)
    keys = np.array([7, 3], dtype=np.uint64)
    for w in range(5):
        base.update(keys, np.array([1_000, 1_000_000 if w == 4 else 2_000]), w)
    value, weight = base.baseline(keys, 5)
    assert value[0] == bin_top(value_bin(np.array([1_000])))[0]
    assert value[1] >= 1_000_000  # the top of its windows
    assert 3 < weight[0] < 5
    fresh, _ = base.baseline(np.array([99], dtype=np.uint64), 5)
    assert fresh[0] == 0
    copy = WindowBaseline(0.99, 10, 3)
    copy.load(base.to_arrow())
    assert np.array_equal(copy.baseline(keys, 9)[0], base.baseline(keys, 9)[0])
    short = WindowBaseline(0.99, 10, 3)
    short.update(keys, np.array([5, 5]), 0)
    assert (short.baseline(keys, 0)[0] == 0).all()  # one window is not a baseline yet


def test_popularity_caps_and_remembers():
    pop = Popularity(cap=2)
    dst = np.array([1, 1, 1, 2], dtype=np.uint64)
    cli = np.array([10, 11, 12, 10], dtype=np.uint64)
    pop.update(dst, cli)
    clients, own = pop.lookup(
        np.array([1, 2, 2, 3], np.uint64), np.array([10, 10, 11, 10], np.uint64)
    )
    assert clients.tolist() == [3, 1, 1, 0]
    assert own.tolist() == [False, True, False, False]
    copy = Popularity(cap=2)
    copy.load(*pop.to_arrow())
    assert copy.lookup(np.array([1, 2], np.uint64), np.array([10, 10], np.uint64))[0].tolist() == [
        3,
        1,
    ]


@pytest.mark.parametrize("field", list(ExfilSettings.model_fields))
def test_settings_are_documented(field):
    assert ExfilSettings.model_fields[field].description
