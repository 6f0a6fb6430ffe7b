"""N6: horizontal and vertical scans, slow scans, ICMP sweeps; what is not a scan."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.scan import Scan, ScanSettings
from flowhawk.detectors.scan_attempts import FAILED, PROBE, SUCCESS, weight
from flowhawk.netaddr import NetworkSet
from tests.flowbuild import canonical

CFG = config.load(None)


def _ctx() -> DetectorContext:
    return DetectorContext(NetworkSet(CFG.network.internal), NetworkSet(CFG.network.local_scope))


def _flows(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Canonical flows; every row gets the same keys (answered TCP with data by default)."""
    base = {"state": None, "proto": 6, "dst_pkts": 4, "dst_bytes": 3000, "src_pkts": 4}
    return canonical([base | {"src_bytes": 500} | r for r in rows])


def _unanswered(src: str, dst: str, port: int, t: float, **kw: Any) -> dict[str, Any]:
    return {
        "src_ip": src,
        "dst_ip": dst,
        "dst_port": port,
        "t": t,
        "dst_pkts": 0,
        "dst_bytes": 0,
        "src_pkts": 2,
        "src_bytes": 120,
        "state": "S0",
        **kw,
    }


def _score(flows: pl.DataFrame, **settings: Any) -> pl.DataFrame:
    return Scan(ScanSettings(**settings), _ctx()).score(Batch(flows))


def _sweep(src: str, n: int, port: int = 445, step: float = 10.0, t0: float = 0.0) -> list[dict]:
    return [
        _unanswered(src, f"10.9.{i // 250}.{i % 250 + 1}", port, t0 + i * step) for i in range(n)
    ]


def test_attempt_weights():
    flows = _flows(
        [
            _unanswered("10.0.0.1", "10.0.0.2", 80, 0),  # no answer
            {
                "src_ip": "10.0.0.1",
                "dst_ip": "10.0.0.3",
                "dst_port": 80,
                "t": 1,
                "dst_pkts": 1,
                "dst_bytes": 40,
                "src_pkts": 1,
                "src_bytes": 60,
                "state": "REJ",
            },
            {
                "src_ip": "10.0.0.1",
                "dst_ip": "10.0.0.4",
                "dst_port": 80,
                "t": 2,
                "dst_pkts": 1,
                "dst_bytes": 60,
                "src_pkts": 2,
                "src_bytes": 100,
            },  # handshake only
            {"src_ip": "10.0.0.1", "dst_ip": "10.0.0.5", "dst_port": 80, "t": 3},  # data
        ]
    )
    assert flows.select(weight(flows)).to_series().to_list() == [FAILED, FAILED, PROBE, SUCCESS]


def test_horizontal_scan_alarms_once_then_on_growth():
    alarms = _score(_flows(_sweep("10.0.0.5", 100)))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    assert alarms.height == 2  # 16 targets, then 4 x 16 = 64
    first, second = alarms.row(0, named=True), alarms.row(1, named=True)
    assert first["method"] == "N6" and first["entity"] == "10.0.0.5"
    assert first["observed_value"] == 16 and first["threshold"] == 16
    assert second["observed_value"] == 64 and second["threshold"] == 64
    assert "horizontal scan: 10.0.0.5 probed 16 hosts on 445/tcp" in first["reason"]
    assert "16 unanswered or rejected = 100%" in first["reason"]
    assert "e.g. 10.9.0.1, 10.9.0.2, 10.9.0.3" in first["reason"]
    assert "grew past 64" in second["reason"]
    assert 0.5 < first["score"] < second["score"] <= 1.0


def test_slow_scan_over_hours_is_seen():
    # one address every 15 minutes: 24 addresses over 6 hours
    alarms = _score(_flows(_sweep("10.0.0.5", 24, step=900.0)))
    assert alarms.height == 1
    assert "in 3.8 h" in alarms.item(0, "reason")


def test_busy_client_and_resolver_are_not_scanners():
    rows = []
    for i in range(400):  # a resolver: 400 servers answer, 30 time out
        rows.append(
            {
                "src_ip": "10.0.0.53",
                "dst_ip": f"198.51.{i // 200}.{i % 200}",
                "dst_port": 53,
                "proto": 17,
                "t": i * 5.0,
                "dst_pkts": 1,
                "dst_bytes": 200,
                "src_pkts": 1,
                "src_bytes": 80,
            }
        )
        if i % 13 == 0:
            rows.append(
                _unanswered(
                    "10.0.0.53", f"203.0.113.{i // 13}", 53, i * 5.0 + 1, proto=17, state=None
                )
            )
    assert _score(_flows(rows)).height == 0


def test_vertical_scan_of_one_host():
    rows = [
        {
            "src_ip": "10.0.0.6",
            "dst_ip": "10.0.2.9",
            "dst_port": p,
            "t": i,
            "dst_pkts": 1,
            "dst_bytes": 40,
            "src_pkts": 1,
            "src_bytes": 60,
            "state": "REJ",
        }
        for i, p in enumerate(range(1, 41))
    ]
    alarms = _score(_flows(rows))
    assert alarms.height == 1
    row = alarms.row(0, named=True)
    assert row["dst_ip"] == "10.0.2.9" and row["dst_port"] == 16
    assert row["reason"].startswith("vertical scan: 10.0.0.6 probed 16 ports of 10.0.2.9/tcp")


def test_ping_sweep_counts_requests_not_unreachables():
    rows = [
        {
            "src_ip": "10.0.0.7",
            "dst_ip": f"10.1.0.{i}",
            "dst_port": 2048,
            "proto": 1,
            "src_port": 0,
            "t": i,
            "dst_pkts": 0,
            "dst_bytes": 0,
            "src_pkts": 1,
            "src_bytes": 84,
        }
        for i in range(1, 41)
    ]
    alarms = _score(_flows(rows))
    assert alarms.height == 1 and alarms.item(0, "reason").startswith("ping sweep")
    # destination unreachable messages (type 3) from many hosts are not a sweep
    unreach = [r | {"dst_port": 3 * 256 + 3} for r in rows]
    assert _score(_flows(unreach)).height == 0


def test_external_scanner_names_the_most_probed_internal_host():
    rows = _sweep("198.51.100.9", 20, port=22)
    rows += [_unanswered("198.51.100.9", "10.9.0.5", 22, 41.0 + i) for i in range(3)]
    alarms = _score(_flows(rows))
    row = alarms.row(0, named=True)
    assert row["entity"] == "10.9.0.5"
    assert "external scanner of the network, most probed internal host 10.9.0.5" in row["reason"]
    internal = _score(_flows(_sweep("10.0.0.5", 20, port=22)))
    assert row["score"] == pytest.approx(internal.item(0, "score") * 0.6)


def test_budget_limits_alarms_per_scanner():
    rows = [
        _unanswered("10.0.0.8", f"10.9.0.{h}", port, port * 100.0 + h)
        for port in range(1, 31)
        for h in range(1, 21)
    ]
    alarms = _score(_flows(rows), max_alarms=5)
    horizontal = alarms.filter(pl.col("reason").str.starts_with("horizontal"))
    vertical = alarms.filter(pl.col("reason").str.starts_with("vertical"))
    assert horizontal.height == 5 and vertical.height == 5


def test_multicast_and_broadcast_are_not_targets():
    rows = [_unanswered("10.0.0.9", f"239.255.0.{i}", 1900, i, proto=17) for i in range(1, 40)]
    assert _score(_flows(rows)).height == 0


def test_learned_level_is_normal_after_learning():
    det = Scan(ScanSettings(), _ctx())
    det.learn(Batch(_flows(_sweep("10.0.0.10", 30))))  # a monitoring round: 30 hosts
    later = _flows(_sweep("10.0.0.10", 30, t0=3 * 86400.0))
    assert det.score(Batch(later)).height == 0
    bigger = _flows(_sweep("10.0.0.10", 70, t0=6 * 86400.0))
    alarms = det.score(Batch(bigger))
    assert alarms.height == 1 and "above what it reached while learning" in alarms.item(0, "reason")


def test_batching_and_restart_do_not_change_alarms():
    rows = _sweep("10.0.0.5", 80, step=120.0)
    rows += [
        {"src_ip": "10.0.0.5", "dst_ip": "10.0.5.5", "dst_port": 445, "t": 50.0 * i}
        for i in range(40)
    ]
    flows = _flows(rows)
    whole = _score(flows)
    det = Scan(ScanSettings(), _ctx())
    parts = []
    for i in range(0, flows.height, 7):
        parts.append(det.score(Batch(flows[i : i + 7])))
        restored = Scan(ScanSettings(), _ctx())
        restored.load_state(det.state())
        det = restored
    assert pl.concat(parts).equals(whole)
    assert whole.height == 2


def test_windows_are_forgotten_after_the_horizon():
    det = Scan(ScanSettings(horizon=3600), _ctx())
    det.score(Batch(_flows(_sweep("10.0.0.5", 10))))
    det.score(Batch(_flows([_unanswered("10.0.0.1", "10.0.0.2", 80, 10 * 3600.0)])))
    sizes = {k: v.num_rows for k, v in det.state().items()}
    assert sizes["horizontal_targets"] == 2 and sizes["vertical_windows"] == 2


def test_bad_input_does_not_crash():
    flows = _flows(_sweep("10.0.0.5", 20))
    nulls = flows.with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("dst_pkts", "dst_bytes", "state", "site", "direction", "src_tcp_flags")
    )
    assert _score(nulls).schema == pl.Schema(ALARM_SCHEMA)
    assert _score(flows.clear()).height == 0
    odd = flows.with_columns(dst_ip=pl.lit("not an address"), dst_port=pl.lit(-5, pl.Int32))
    assert _score(odd).height == 0
