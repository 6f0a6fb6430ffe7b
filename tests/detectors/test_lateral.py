"""N10: lateral movement, many new east-west admin-service targets in a short time."""

from __future__ import annotations

import polars as pl

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.lateral import LateralMovement, LateralSettings
from flowhawk.netaddr import NetworkSet
from tests.flowbuild import canonical

SRC = "10.0.0.23"
ADMIN = "10.0.0.2"


def _det(**settings) -> LateralMovement:
    cfg = config.load(None)
    ctx = DetectorContext(NetworkSet(cfg.network.internal), NetworkSet(cfg.network.local_scope))
    return LateralMovement(LateralSettings(**settings), ctx)


def _flow(t: float, src: str, dst: str, port: int = 445, **kw) -> dict:
    return {"t": t, "src_ip": src, "dst_ip": dst, "dst_port": port, **kw}


def _learned(**settings) -> LateralMovement:
    """The admin reaches 10 servers on SSH and RDP; SRC uses the file server over SMB."""
    det = _det(**settings)
    rows = [_flow(i, ADMIN, f"10.0.1.{i}", 22) for i in range(10)]
    rows += [_flow(20 + i, ADMIN, f"10.0.1.{i}", 3389) for i in range(10)]
    rows += [_flow(40, SRC, "10.0.0.20", 445)]
    det.learn(Batch(canonical(rows)))
    return det


def _spread(n: int, start: float, step: float, port: int = 445, src: str = SRC) -> list[dict]:
    return [_flow(start + i * step, src, f"10.0.2.{i}", port) for i in range(n)]


def test_many_new_targets_alarm_with_those_that_led_there():
    rows = [*_spread(7, 1000, 60), _flow(1500, SRC, "10.0.2.0", 3389)]
    alarms = _learned().score(Batch(canonical(rows)))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    assert alarms.height == 8  # every new pair, the first four included
    assert (alarms.get_column("method") == "N10").all()
    assert (alarms.get_column("entity") == SRC).all()
    assert (alarms.get_column("direction") == "east-west").all()
    scores = alarms.sort("ts").get_column("score").to_list()
    assert scores[:5] == [0.5] * 5 and scores[-1] > 0.5 and max(scores) <= 1
    rdp = alarms.filter(pl.col("dst_port") == 3389).row(0, named=True)
    assert "never used before" in rdp["reason"] and "RDP, SMB" in rdp["reason"]
    assert rdp["observed_value"] == 7 and rdp["threshold"] == 5


def test_few_or_slow_or_known_targets_do_not_alarm():
    det = _learned()
    assert det.score(Batch(canonical(_spread(4, 1000, 60)))).height == 0
    slow = _learned()  # six targets, but 20 minutes apart: at most 3 in an hour
    assert slow.score(Batch(canonical(_spread(6, 1000, 1200)))).height == 0
    known = _learned()  # the admin's usual servers
    rows = [_flow(5000 + i, ADMIN, f"10.0.1.{i}", 22) for i in range(10)]
    assert known.score(Batch(canonical(rows))).height == 0
    other = _learned()  # web and north-south traffic are not admin services
    rows = [_flow(5000 + i, SRC, f"10.0.3.{i}", 443) for i in range(10)]
    rows += [_flow(6000 + i, SRC, f"198.51.100.{i}", 22) for i in range(10)]
    assert other.score(Batch(canonical(rows))).height == 0


def test_probes_without_a_session_do_not_count_unless_asked():
    rows = [_flow(1000 + i, SRC, f"10.0.2.{i}", dst_pkts=0, dst_bytes=0, dur=0) for i in range(3)]
    rows += [_flow(1010 + i, SRC, f"10.0.3.{i}", dst_pkts=1, dst_bytes=40) for i in range(3)]
    rows += [_flow(1020 + i, SRC, f"10.0.4.{i}", dst_pkts=2, dst_bytes=120) for i in range(3)]
    assert _learned().score(Batch(canonical(rows))).height == 0
    assert _learned(require_session=False).score(Batch(canonical(rows))).height == 9


def test_batches_and_restarts_do_not_change_alarms():
    rows = _spread(9, 1000, 300) + _spread(6, 1100, 1, port=5985, src="10.0.0.24")
    flows = canonical(rows)
    whole = _learned().score(Batch(flows))
    assert set(whole.get_column("src_ip")) == {SRC, "10.0.0.24"}
    one = _learned()
    parts = pl.concat([one.score(Batch(flows[i : i + 1])) for i in range(flows.height)])
    assert parts.sort(pl.all()).equals(whole.sort(pl.all()))
    first = _learned()
    out = [first.score(Batch(flows[:5]))]
    second = _det()
    second.load_state(first.state())
    out.append(second.score(Batch(flows[5:])))
    assert pl.concat(out).sort(pl.all()).equals(whole.sort(pl.all()))


def test_settable_ports_and_bad_input():
    rows = _spread(6, 1000, 10, port=8080)
    assert _learned().score(Batch(canonical(rows))).height == 0
    assert _learned(ports=[8080]).score(Batch(canonical(rows))).height == 6
    flows = canonical(_spread(6, 1000, 10)).with_columns(
        dst_tcp_flags=pl.lit(None, dtype=pl.Int16),
        dst_pkts=pl.Series([None, 2, 2, 3, 2, 2], dtype=pl.Int64),
        site=pl.lit(None, dtype=pl.String),
    )
    out = _learned().score(Batch(flows))
    assert out.schema == pl.Schema(ALARM_SCHEMA) and out.height == 5
    det = _learned()
    assert det.score(Batch(flows.clear())).height == 0
    det.learn(Batch(flows.clear()))


def test_settings_are_documented():
    for name, field in LateralSettings.model_fields.items():
        assert field.description, name
