"""N7: long connections, joined across exporter records and batches, measured against what
is usual for their destination."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.longconn import LongConnection, LongConnSettings
from flowhawk.diagnostics import Diagnostics
from flowhawk.netaddr import NetworkSet
from flowhawk.normalize import Normalizer
from flowhawk.pipeline import read_inputs
from tests.flowbuild import canonical

CFG = config.load(None)
H = 3600.0


def _ctx() -> DetectorContext:
    return DetectorContext(NetworkSet(CFG.network.internal), NetworkSet(CFG.network.local_scope))


def _det(**settings: Any) -> LongConnection:
    return LongConnection(LongConnSettings(**settings), _ctx())


def _records(start: float, n: int, length: float = 1799.0, step: float = 1800.0, **kw: Any) -> list:
    """``n`` consecutive records of one connection (an exporter's active timeout)."""
    row = {"src_ip": "10.0.0.5", "dst_ip": "192.0.2.7", "dst_port": 22, "src_port": 50000}
    return [row | kw | {"t": start + i * step, "dur": length} for i in range(n)]


def test_one_long_record_alarms_at_its_start():
    flows = canonical(
        [
            {
                "src_ip": "10.0.0.5",
                "dst_ip": "192.0.2.7",
                "dst_port": 22,
                "t": 60,
                "dur": 2 * H,
                "src_bytes": 5_000_000,
                "dst_bytes": 300,
            }
        ]
    )
    alarms = _det().score(Batch(flows))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    row = alarms.row(0, named=True)
    assert alarms.height == 1 and row["method"] == "N7"
    assert row["ts"] == flows.item(0, "ts_start") and row["observed_value"] == 2 * H
    assert row["entity"] == "10.0.0.5" and row["threshold"] == H
    assert "open 2.0 h" in row["reason"] and "5.0 MB sent, 300 B received" in row["reason"]
    assert row["score"] > 0.4


def test_records_are_joined_across_batches():
    flows = canonical(_records(0, 6))
    det = _det()
    alarms = pl.concat([det.score(Batch(flows[i : i + 1])) for i in range(flows.height)])
    assert alarms.height == 1
    row = alarms.row(0, named=True)
    assert row["ts"] == flows.item(2, "ts_start")  # the third record made it an hour
    assert "3 records joined" in row["reason"]
    assert alarms.equals(_det().score(Batch(flows)))


def test_records_with_a_gap_are_separate_connections():
    flows = canonical(_records(0, 6, length=1700.0))  # 100 s between records
    assert _det().score(Batch(flows)).height == 0
    assert _det(join_gap=120).score(Batch(flows)).height == 1


def test_alarms_again_when_four_times_longer():
    alarms = _det().score(Batch(canonical(_records(0, 10))))  # 5 hours
    assert alarms.get_column("threshold").to_list() == [H, 4 * H]
    assert "grew" not in alarms.item(1, "reason")


def test_learned_long_destinations_alarm_only_far_longer():
    det = _det()
    det.learn(Batch(canonical(_records(0, 4))))  # 2 h to 192.0.2.7:22 while learning
    assert det.score(Batch(canonical(_records(86400.0, 4, src_port=50001)))).height == 0
    # another client, another address of the same /24: the same destination, 8 h bar
    same = canonical(_records(2 * 86400.0, 17, src_ip="10.0.0.6", dst_ip="192.0.2.8"))
    out = det.score(Batch(same))
    assert out.height == 1 and out.item(0, "threshold") == 4 * (2 * H - 1)
    assert "its longest while learning 2.0 h" in out.item(0, "reason")
    other = canonical(_records(3 * 86400.0, 4, dst_ip="198.51.100.8"))
    assert det.score(Batch(other)).height == 1


def test_east_west_scores_lower_and_ignored_ports_stay_quiet():
    out = _det().score(Batch(canonical(_records(0, 4))))
    inside = _det().score(Batch(canonical(_records(0, 4, dst_ip="10.0.0.9"))))
    assert inside.item(0, "score") == out.item(0, "score") * 0.6
    assert _det(ignore_ports=[22]).score(Batch(canonical(_records(0, 4)))).height == 0


def test_multicast_and_short_flows_do_not_alarm():
    mc = canonical(_records(0, 4, dst_ip="239.255.255.250", dst_port=1900, proto=17))
    assert _det().score(Batch(mc)).height == 0
    short = canonical(_records(0, 30, length=60.0, step=120.0))
    assert _det().score(Batch(short)).height == 0


def test_state_round_trip_and_pruning():
    flows = canonical(_records(0, 6))
    det = _det()
    out = []
    for i in range(flows.height):
        out.append(det.score(Batch(flows[i : i + 1])))
        restored = _det()
        restored.load_state(det.state())
        det = restored
    assert pl.concat(out).equals(_det().score(Batch(flows)))
    later = canonical([{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": 80, "t": 86400}])
    det.score(Batch(later))
    assert det.state()["chains"].num_rows == 1  # the old connection was dropped


def test_bad_input_does_not_crash():
    flows = canonical(_records(0, 4))
    nulls = flows.with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("ts_end", "src_port", "src_bytes", "site", "direction")
    )
    assert _det().score(Batch(nulls)).schema == pl.Schema(ALARM_SCHEMA)
    backwards = flows.with_columns(ts_end=pl.col("ts_start") - pl.duration(hours=3))
    assert _det().score(Batch(backwards)).height == 0
    assert _det().score(Batch(flows.clear())).height == 0


def test_parallel_connections_of_one_communication_alarm_once():
    rows = [r for port in (50000, 50001, 50002) for r in _records(0, 3, src_port=port)]
    alarms = _det().score(Batch(canonical(rows)))
    assert alarms.height == 1
    later = _det(repeat_after=600).score(Batch(canonical(rows)))
    assert later.height == 1  # all three cross within ten minutes of each other
    rows += _records(3 * H, 3, src_port=50003)  # reopened 3 h later, past repeat_after
    assert _det(repeat_after=600).score(Batch(canonical(rows))).height == 2


def test_session_services_alarm_from_four_hours():
    web = {"dst_ip": "203.0.113.9", "dst_port": 443}
    quiet = _det().score(Batch(canonical(_records(0, 7, **web))))  # 3.5 h of TLS
    assert quiet.height == 0
    out = _det().score(Batch(canonical(_records(0, 9, **web))))  # 4.5 h
    assert out.height == 1 and out.item(0, "threshold") == 4 * H
    assert out.item(0, "score") == pytest.approx(0.4 + 0.6 * math.log(4.5 / 4) / math.log(24), 1e-3)
    assert "alarms from 4.0 h (443/tcp holds long sessions by design" in out.item(0, "reason")
    assert _det(session_services=[]).score(Batch(canonical(_records(0, 3, **web)))).height == 1
    with pytest.raises(ValidationError, match="'443': expected PORT/PROTOCOL"):
        LongConnSettings(session_services=["443"])


def test_popular_destinations_alarm_later_counted_per_hour():
    hosts = [f"10.0.1.{i}" for i in range(1, 13)]  # 12 internal hosts, an earlier hour
    visits = [
        {"src_ip": h, "dst_ip": "198.51.100.20", "dst_port": 22, "t": 60.0 + i, "dur": 5.0}
        for i, h in enumerate(hosts)
    ]
    session = _records(2 * H, 6, dst_ip="198.51.100.20")  # 3 h from 10.0.0.5
    det = _det()
    assert det.score(Batch(canonical(visits + session))).height == 0  # bar 4 h: popular
    longer = _records(2 * H, 10, dst_ip="198.51.100.20", src_port=50009)  # 5 h
    out = _det().score(Batch(canonical(visits + longer)))
    assert out.height == 1 and "popular: more than 10 internal hosts" in out.item(0, "reason")
    # the same hour: the popularity counts whole hours, so the 12 visits do not count yet
    same_hour = {"src_ip": "10.0.0.5", "dst_ip": "198.51.100.20", "dst_port": 22, "t": 120.0}
    fresh = _det().score(Batch(canonical([*visits, same_hour | {"dur": 2 * H}])))
    assert fresh.height == 1 and "no internal host talked to it before" in fresh.item(0, "reason")
    cut = _det()  # batches and checkpoints do not change it
    flows = canonical(visits + longer)
    parts = []
    for i in range(flows.height):
        parts.append(cut.score(Batch(flows[i : i + 1])))
        restored = _det()
        restored.load_state(cut.state())
        cut = restored
    assert pl.concat(parts).equals(out)


def test_ctu_normal_day_quiet_on_cloud_sessions(shared_data):
    """CTU-Normal-42 (010): one workstation's day, its TLS sessions of 1-6.6 h to cloud
    services (these thresholds were chosen looking at it: a check, not an evaluation)."""
    path = shared_data / "labeled/stratosphere_scenarios/010-zeek-mixed/data/conn.log.labeled"
    cfg = config.from_dict({"network": {"internal": [*CFG.network.internal, "147.32.0.0/16"]}})
    diag = Diagnostics()
    norm = Normalizer(cfg, diag)
    frames = []
    for name, tables in read_inputs([path], cfg, diag):
        frames += [pl.from_arrow(norm.process(t)) for t in tables]
        frames.append(pl.from_arrow(norm.end_input(name)[0]))
    flows = pl.concat([f for f in frames if f.height], how="vertical_relaxed")
    flows = flows.sort("ts_start", maintain_order=True)
    det = LongConnection(
        LongConnSettings(),
        DetectorContext(NetworkSet(cfg.network.internal), NetworkSet(cfg.network.local_scope)),
    )
    hours = flows.with_columns(_h=pl.col("ts_start").dt.truncate("1h"))
    alarms = pl.concat(
        [det.score(Batch(p.drop("_h"))) for p in hours.partition_by("_h", maintain_order=True)]
    )
    assert alarms.get_column("dst_port").to_list() == [443] * 4
    assert (alarms.get_column("observed_value") >= 4 * H).all()
