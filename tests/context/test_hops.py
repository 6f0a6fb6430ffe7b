"""East-west hops and relays around risky north-south events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from flowhawk import archive
from flowhawk.archive import ArchiveWriter
from flowhawk.context import hops
from flowhawk.netaddr import NetworkSet
from tests.flowbuild import at, canonical

H, A, B, C, D = "10.0.0.5", "10.0.0.9", "10.0.0.20", "10.0.0.30", "10.0.0.40"
C2 = "198.51.100.7"
WEB, DB, OUTSIDER = "10.0.0.80", "10.0.0.90", "203.0.113.50"

FLOWS = [
    # outbound event: H reaches the C2 at t=7200..7300
    {"src_ip": H, "dst_ip": C2, "dst_port": 443, "t": 7200, "dur": 100},
    {"src_ip": A, "dst_ip": H, "dst_port": 22, "t": 6000, "src_bytes": 5000},  # 2nd hop
    {"src_ip": A, "dst_ip": H, "dst_port": 22, "t": 6500, "src_bytes": 7000},  # same edge
    {"src_ip": B, "dst_ip": A, "dst_port": 3389, "t": 5000},  # 3rd hop: before A's last
    {"src_ip": C, "dst_ip": A, "dst_port": 445, "t": 6800},  # after A's last edge: not
    {"src_ip": D, "dst_ip": H, "dst_port": 22, "t": 100},  # too early for the window
    {"src_ip": H, "dst_ip": D, "dst_port": 80, "t": 7000},  # H's own outgoing: not a hop
    # inbound event: an outsider calls a web server, which calls its database each time
    *[
        {
            "src_ip": OUTSIDER,
            "dst_ip": WEB,
            "dst_port": 443,
            "t": 8000 + 60 * k,
            "src_bytes": 1000 * (k + 1),
            "dst_bytes": 500,
        }
        for k in range(5)
    ],
    *[
        {
            "src_ip": WEB,
            "dst_ip": DB,
            "dst_port": 5432,
            "t": 8000.2 + 60 * k,
            "src_bytes": 900 * (k + 1),
            "dst_bytes": 400,
        }
        for k in range(5)
    ],
    {"src_ip": WEB, "dst_ip": "10.0.0.91", "dst_port": 53, "t": 8030},  # unrelated call
]


def _event(id_, src, dst, start, end, risk=90.0):
    return {
        "id": id_,
        "direction": "north-south",
        "src_ip": src,
        "dst_ip": dst,
        "ts_start": at(start),
        "ts_end": at(end),
        "risk": risk,
    }


@pytest.fixture
def reader(tmp_path: Path):
    writer = ArchiveWriter(tmp_path / "flows", "t")
    writer.write(canonical(FLOWS).to_arrow())
    return lambda hours: archive.scan_hours(tmp_path / "flows", hours)


def _build(events, reader, **kw):
    settings = (
        dict(
            min_risk=50.0,
            window=3600.0,
            max_edges=20,
            relay_delay=2.0,
            relay_ratio=4.0,
            relay_correlation=0.7,
        )
        | kw
    )
    return hops.build(pl.DataFrame(events), reader, NetworkSet(["10.0.0.0/8"]), **settings)


def test_outbound_event_gets_its_upstream_hops(reader):
    out = _build([_event("e1", H, C2, 7200, 7300)], reader)
    graph = out.row(0, named=True)["hops"]
    edges = {(e["hop"], e["src"], e["dst"], e["dst_port"]): e for e in graph["edges"]}
    assert set(edges) == {(2, A, H, 22), (3, B, A, 3389)}
    assert edges[(2, A, H, 22)]["flows"] == 2
    assert edges[(2, A, H, 22)]["bytes"] == 5000 + 7000 + 2 * 200
    assert edges[(2, A, H, 22)]["first"] == at(6000)
    roles = {n["ip"]: n["role"] for n in graph["nodes"]}
    assert roles == {C2: "risky", H: "host", A: "hop2", B: "hop3"}


def test_window_limits_how_far_back(reader):
    out = _build([_event("e1", H, C2, 7200, 7300)], reader, window=1000.0)
    edges = out.row(0, named=True)["hops"]["edges"]
    assert [(e["src"], e["dst"]) for e in edges] == [(A, H)]  # 6500 in, 6000 and 5000 out


def test_low_risk_and_east_west_events_get_nothing(reader):
    low = _event("low", H, C2, 7200, 7300, risk=10.0)
    ew = _event("ew", A, H, 6000, 6001) | {"direction": "east-west"}
    assert _build([low, ew], reader).height == 0


def test_max_edges_keeps_the_largest(reader):
    out = _build([_event("e1", H, C2, 7200, 7300)], reader, max_edges=1)
    edges = out.row(0, named=True)["hops"]["edges"]
    assert [(e["hop"], e["src"]) for e in edges] == [(2, A), (3, B)]


def test_inbound_event_relay_into_the_database(reader):
    out = _build([_event("in", OUTSIDER, WEB, 8000, 8300, risk=80.0)], reader)
    row = out.row(0, named=True)
    edges = {(e["hop"], e["src"], e["dst"]) for e in row["hops"]["edges"]}
    assert (2, WEB, DB) in edges and (2, WEB, "10.0.0.91") in edges
    (relay,) = row["relays"]
    assert relay["host"] == WEB
    assert relay["inbound"] == f"{OUTSIDER}→{WEB}:443"
    assert relay["outbound"] == f"{WEB}→{DB}:5432"
    assert relay["pairs"] == 5
    assert relay["delay_s"] == pytest.approx(0.2)
    assert relay["correlation"] > 0.99


def test_uncorrelated_volumes_are_no_relay(tmp_path: Path):
    flows = [
        {
            "src_ip": OUTSIDER,
            "dst_ip": WEB,
            "dst_port": 443,
            "t": 60 * k,
            "src_bytes": 1000 * (k + 1),
        }
        for k in range(5)
    ] + [
        {
            "src_ip": WEB,
            "dst_ip": DB,
            "dst_port": 5432,
            "t": 60 * k + 0.5,
            "src_bytes": [9000, 100, 7000, 300, 5000][k],
        }
        for k in range(5)
    ]
    writer = ArchiveWriter(tmp_path / "flows", "t")
    writer.write(canonical(flows).to_arrow())
    read = lambda hours: archive.scan_hours(tmp_path / "flows", hours)  # noqa: E731
    out = _build([_event("in", OUTSIDER, WEB, 0, 300)], read)
    assert out.row(0, named=True)["relays"] == []
    # the same calls 5 s later are outside the relay delay
    late = _build([_event("in", OUTSIDER, WEB, 0, 300)], read, relay_delay=0.1)
    assert late.row(0, named=True)["relays"] == []


def test_no_archived_flows(tmp_path: Path):
    read = lambda hours: archive.scan_hours(tmp_path / "none", hours)  # noqa: E731
    assert _build([_event("e1", H, C2, 0, timedelta(hours=1).total_seconds())], read).height == 0


def _archive(tmp_path: Path, flows: list[dict]):
    writer = ArchiveWriter(tmp_path / "flows", "t")
    writer.write(canonical(flows).to_arrow())
    return lambda hours: archive.scan_hours(tmp_path / "flows", hours)


def test_one_coincidence_is_no_relay_unless_asked(tmp_path: Path):
    read = _archive(
        tmp_path,
        [
            {"src_ip": OUTSIDER, "dst_ip": WEB, "dst_port": 443, "t": 0},
            {"src_ip": WEB, "dst_ip": DB, "dst_port": 5432, "t": 0.5},
        ],
    )
    event = [_event("in", OUTSIDER, WEB, 0, 1)]
    assert _build(event, read).row(0, named=True)["relays"] == []
    (relay,) = _build(event, read, min_pairs=1).row(0, named=True)["relays"]
    assert relay["pairs"] == 1 and relay["correlation"] is None


def test_multicast_and_broadcast_are_not_hosts(tmp_path: Path):
    flows = [{"src_ip": OUTSIDER, "dst_ip": WEB, "dst_port": 554, "t": 60 * k} for k in range(3)]
    flows += [
        {
            "src_ip": WEB,
            "dst_ip": "239.255.255.250",
            "dst_port": 1900,
            "t": 60 * k + 0.5,
            "proto": 17,
        }
        for k in range(3)
    ]
    read = _archive(tmp_path, flows)
    scope = NetworkSet(["224.0.0.0/4", "255.255.255.255/32"])
    event = [_event("in", OUTSIDER, WEB, 0, 200)]
    internal = NetworkSet(["10.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32"])
    kw = dict(min_risk=50.0, window=3600.0, max_edges=20, relay_delay=2.0, relay_ratio=4.0,
              relay_correlation=0.7)  # fmt: skip
    seen = hops.build(pl.DataFrame(event), read, internal, **kw)
    assert seen.row(0, named=True)["hops"]["edges"][0]["dst"] == "239.255.255.250"
    assert hops.build(pl.DataFrame(event), read, internal, local_scope=scope, **kw).height == 0
