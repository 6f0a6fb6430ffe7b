"""Event-time detection: learning period, learn runs, persistence across runs."""

from __future__ import annotations

from flowhawk import config
from flowhawk.engine import DetectionEngine
from flowhawk.state import StateStore
from tests.flowbuild import canonical

CFG = config.from_dict({"learning": {"period": "1h"}})


def _flows(t_offset: float, dst: str):
    return canonical(
        [
            {"t": t_offset, "src_ip": "10.0.0.5", "dst_ip": "10.0.0.9", "dst_port": 445},
            {"t": t_offset + 10, "src_ip": "10.0.0.5", "dst_ip": dst, "dst_port": 443},
        ]
    )


def test_nothing_alarms_during_learning_period(tmp_path):
    eng = DetectionEngine(CFG, StateStore(tmp_path))
    assert eng.process(_flows(0, "1.1.1.1")).height == 0
    alarms = eng.process(_flows(3600, "2.2.2.2"))
    assert set(alarms.get_column("method")) == {"M1", "M31"}
    assert (alarms.get_column("dst_ip") == "2.2.2.2").all()
    assert eng.flows_learned == 2 and eng.flows_scored == 2


def test_learning_period_is_event_time_not_batches(tmp_path):
    eng = DetectionEngine(CFG, StateStore(tmp_path))
    both = canonical(
        [
            {"t": 0, "src_ip": "10.0.0.5", "dst_ip": "1.1.1.1", "dst_port": 443},
            {"t": 3599, "src_ip": "10.0.0.5", "dst_ip": "3.3.3.3", "dst_port": 443},
            {"t": 3601, "src_ip": "10.0.0.5", "dst_ip": "2.2.2.2", "dst_port": 443},
        ]
    )
    alarms = eng.process(both)
    assert set(alarms.get_column("dst_ip")) == {"2.2.2.2"}


def test_state_persists_across_runs(tmp_path):
    eng = DetectionEngine(CFG, StateStore(tmp_path))
    eng.process(_flows(0, "1.1.1.1"))
    eng.checkpoint({"run": "one"})
    again = DetectionEngine(CFG, StateStore(tmp_path))
    assert again.learning_until == eng.learning_until
    assert again.process(_flows(7200, "1.1.1.1")).height == 0  # all known
    assert again.process(_flows(7300, "4.4.4.4")).height == 2  # M1 + M31
    assert again.meta.runs == [{"run": "one"}]


def test_learn_run_ends_learning(tmp_path):
    eng = DetectionEngine(CFG, StateStore(tmp_path), learn_only=True)
    assert eng.process(_flows(0, "1.1.1.1")).height == 0
    assert eng.process(_flows(90000, "5.5.5.5")).height == 0
    eng.finish_learning()
    eng.checkpoint()
    after = DetectionEngine(CFG, StateStore(tmp_path))
    alarms = after.process(_flows(100, "6.6.6.6"))  # even inside the old hour: learning is over
    assert set(alarms.get_column("dst_ip")) == {"6.6.6.6"}


def test_disabled_detector_keeps_its_memory(tmp_path):
    eng = DetectionEngine(CFG, StateStore(tmp_path))
    eng.process(_flows(0, "1.1.1.1"))
    eng.checkpoint()
    off = config.from_dict({"detectors": {"M1": {"enabled": False}}})
    DetectionEngine(off, StateStore(tmp_path)).checkpoint()
    assert StateStore(tmp_path).load_tables("M1")["comms"].num_rows == 2
