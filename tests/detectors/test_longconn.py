"""N7: long connections, joined across exporter records and batches."""

from __future__ import annotations

from typing import Any

import polars as pl

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.longconn import LongConnection, LongConnSettings
from flowhawk.netaddr import NetworkSet
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


def test_learned_long_communications_are_normal():
    det = _det()
    det.learn(Batch(canonical(_records(0, 4))))
    assert det.score(Batch(canonical(_records(86400.0, 4, src_port=50001)))).height == 0
    other = canonical(_records(2 * 86400.0, 4, dst_ip="192.0.2.8"))
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
