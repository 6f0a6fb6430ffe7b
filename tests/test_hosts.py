"""Host ranking by decaying, per-method damped risk."""

from __future__ import annotations

import polars as pl

from flowhawk.hosts import rank_hosts
from flowhawk.netaddr import NetworkSet
from tests.flowbuild import at


def _rows(specs):
    alarms = pl.DataFrame(
        [
            {
                "event_id": f"e{i}",
                "ts": at(t),
                "method": m,
                "entity": ent,
                "src_ip": s,
                "dst_ip": d,
                "contribution": c,
            }
            for i, (t, m, ent, s, d, c) in enumerate(specs)
        ],
        schema={
            "event_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "method": pl.String,
            "entity": pl.String,
            "src_ip": pl.String,
            "dst_ip": pl.String,
            "contribution": pl.Float64,
        },
    )
    events = pl.DataFrame(
        {
            "id": alarms["event_id"],
            "risk": alarms["contribution"] * 100,
            "site": ["default"] * alarms.height,
        }
    )
    return alarms, events


def test_many_weak_alarms_do_not_beat_strong_diverse_ones():
    noisy = [(i, "M1", None, "10.0.0.1", f"1.1.1.{i}", 0.15) for i in range(200)]
    strong = [
        (5, "M30", "10.0.0.2", "10.0.0.2", "9.9.9.9", 0.6),
        (6, "M1", None, "10.0.0.2", "9.9.9.9", 0.3),
    ]
    alarms, events = _rows(noisy + strong)
    hosts = rank_hosts(alarms, events, half_life=1e9, internal=NetworkSet(["10.0.0.0/8"]))
    assert hosts.row(0, named=True)["ip"] == "10.0.0.2"
    noisy_host = hosts.filter(pl.col("ip") == "10.0.0.1").row(0, named=True)
    assert noisy_host["risk"] < 31  # M1's damped sum is bounded by about twice its strongest
    assert noisy_host["events"] == 200 and noisy_host["internal"]


def test_entity_alarm_goes_to_its_host_only_and_old_alarms_fade():
    alarms, events = _rows(
        [
            (0, "M31", "8.8.8.8", "10.0.0.5", "8.8.8.8", 0.2),
            (0, "M1", None, "10.0.0.7", "8.8.4.4", 0.3),
            (86400 * 10, "M1", None, "10.0.0.8", "8.8.4.4", 0.3),
        ]
    )
    hosts = rank_hosts(alarms, events, half_life=86400, internal=NetworkSet(["10.0.0.0/8"]))
    ips = hosts.get_column("ip").to_list()
    assert "10.0.0.5" not in ips
    risk = dict(zip(ips, hosts.get_column("risk").to_list(), strict=True))
    assert risk["10.0.0.8"] == 30.0 and risk["10.0.0.7"] < 0.1
