"""M1 new communication, M30 new internal device, M31 new external device."""

from __future__ import annotations

from flowhawk import config
from flowhawk.detectors.base import Batch
from flowhawk.engine import build_detectors
from tests.flowbuild import canonical


class _OnFlows:
    """A flow detector driven with plain flow frames (each one step of event time)."""

    def __init__(self, det):
        self.det = det

    def learn(self, flows):
        self.det.learn(Batch.of_flows(flows))

    def score(self, flows):
        return self.det.score(Batch.of_flows(flows))


def _dets():
    return {d.method: _OnFlows(d) for d in build_detectors(config.load(None))}


BASE = [
    {"t": 0, "src_ip": "10.0.0.5", "dst_ip": "10.0.0.9", "dst_port": 445},
    {"t": 1, "src_ip": "10.0.0.6", "dst_ip": "10.0.0.9", "dst_port": 22},
    {"t": 2, "src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53, "proto": 17},
    {"t": 3, "src_ip": "10.0.0.6", "dst_ip": "10.0.0.10", "dst_port": 445},
]


def test_m1_scores_how_new():
    det = _dets()["M1"]
    det.learn(canonical(BASE))
    alarms = det.score(
        canonical(
            [
                {"t": 10, "src_ip": "10.0.0.5", "dst_ip": "10.0.0.9", "dst_port": 445},  # seen
                {
                    "t": 11,
                    "src_ip": "10.0.0.6",
                    "dst_ip": "10.0.0.9",
                    "dst_port": 445,
                },  # new pair, known services
                {
                    "t": 12,
                    "src_ip": "10.0.0.5",
                    "dst_ip": "10.0.0.9",
                    "dst_port": 22,
                },  # client new svc
                {"t": 13, "src_ip": "10.0.0.6", "dst_ip": "10.0.0.5", "dst_port": 3389},  # both new
                {"t": 14, "src_ip": "10.0.0.6", "dst_ip": "10.0.0.5", "dst_port": 3389},  # repeat
                {
                    "t": 15,
                    "src_ip": "10.0.0.77",
                    "dst_ip": "10.0.0.9",
                    "dst_port": 4444,
                },  # new host
            ]
        )
    )
    got = {(r["src_ip"], r["dst_port"]): r["score"] for r in alarms.iter_rows(named=True)}
    assert got == {
        ("10.0.0.6", 445): 0.5,
        ("10.0.0.5", 22): 0.75,
        ("10.0.0.6", 3389): 1.0,
        ("10.0.0.77", 4444): 0.75,
    }
    reason = alarms.filter(alarms["dst_port"] == 3389).row(0, named=True)["reason"]
    assert "client never used 3389/tcp before" in reason
    assert "server never answered on 3389/tcp before" in reason


def test_m1_same_batch_first_occurrence_only_and_sites_separate():
    det = _dets()["M1"]
    cfg = config.from_dict(
        {
            "sites": [
                {"name": "a", "networks": ["10.1.0.0/16"]},
                {"name": "b", "networks": ["10.2.0.0/16"]},
            ]
        }
    )
    flows = canonical(
        [
            {"t": 0, "src_ip": "10.1.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
            {"t": 1, "src_ip": "10.1.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
            {"t": 2, "src_ip": "10.2.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
        ],
        cfg,
    )
    alarms = det.score(flows)
    assert alarms.height == 2
    assert alarms.get_column("site").to_list() == ["a", "b"]


def test_m30_needs_the_device_to_speak_and_ignores_local_scope():
    det = _dets()["M30"]
    det.learn(canonical(BASE))
    alarms = det.score(
        canonical(
            [
                {
                    "t": 10,
                    "src_ip": "10.0.0.5",
                    "dst_ip": "10.0.0.200",
                    "dst_port": 445,
                    "dst_pkts": 0,
                    "dst_bytes": 0,
                },  # probe: no answer
                {
                    "t": 11,
                    "src_ip": "10.0.0.5",
                    "dst_ip": "10.0.0.201",
                    "dst_port": 445,
                },  # answered
                {"t": 12, "src_ip": "10.0.0.99", "dst_ip": "8.8.8.8", "dst_port": 53},  # new client
                {
                    "t": 13,
                    "src_ip": "10.0.0.5",
                    "dst_ip": "224.0.0.251",
                    "dst_port": 5353,
                    "proto": 17,
                },
                {"t": 14, "src_ip": "169.254.3.3", "dst_ip": "10.0.0.5", "dst_port": 80},
            ]
        )
    )
    assert alarms.get_column("entity").to_list() == ["10.0.0.201", "10.0.0.99"]
    assert alarms.row(0, named=True)["reason"] == (
        "new internal device 10.0.0.201, first seen as server for 10.0.0.5 on 445/tcp"
    )


def test_m31_counts_attempts_to_new_external_addresses():
    det = _dets()["M31"]
    det.learn(canonical(BASE))
    alarms = det.score(
        canonical(
            [
                {"t": 10, "src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53, "proto": 17},
                {
                    "t": 11,
                    "src_ip": "10.0.0.5",
                    "dst_ip": "192.0.2.66",
                    "dst_port": 4444,
                    "dst_pkts": 0,
                    "dst_bytes": 0,
                },
                {"t": 12, "src_ip": "2001:db8::7", "dst_ip": "fd00::1", "dst_port": 22},
            ]
        )
    )
    assert alarms.get_column("entity").to_list() == ["192.0.2.66", "2001:db8::7"]
    assert alarms.get_column("direction").to_list() == ["north-south", "north-south"]
