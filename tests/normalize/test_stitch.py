"""Stitching unidirectional records into biflows, with lineage."""

from __future__ import annotations

import polars as pl

from flowhawk.normalize.stitch import stitch
from tests.flowbuild import raw


def _uni(rows):
    return pl.from_arrow(
        raw([{**r, "uni": True, "dst_pkts": 0, "dst_bytes": 0, "orient": None} for r in rows])
    )


def test_request_and_response_become_one_flow():
    df = _uni(
        [
            {
                "t": 0.0,
                "src_ip": "10.0.0.5",
                "dst_ip": "8.8.8.8",
                "src_port": 5555,
                "dst_port": 53,
                "proto": 17,
                "src_pkts": 1,
                "src_bytes": 60,
            },
            {
                "t": 0.01,
                "src_ip": "8.8.8.8",
                "dst_ip": "10.0.0.5",
                "src_port": 53,
                "dst_port": 5555,
                "proto": 17,
                "src_pkts": 1,
                "src_bytes": 90,
            },
        ]
    )
    flows, lineage = stitch(df)
    assert flows.height == 1
    f = flows.row(0, named=True)
    assert (f["src_ip"], f["dst_ip"], f["dst_port"]) == ("10.0.0.5", "8.8.8.8", 53)
    assert (f["src_bytes"], f["dst_bytes"], f["orient"]) == (60, 90, "start")
    assert sorted(lineage.get_column("flow_id").to_list()) == ["0", "1"]
    assert lineage.get_column("biflow_id").n_unique() == 1


def test_active_timeout_slices_merge_and_far_apart_split():
    base = {"src_ip": "10.0.0.5", "dst_ip": "1.1.1.1", "src_port": 4000, "dst_port": 443}
    df = _uni(
        [
            {**base, "t": 0, "dur": 300, "src_tcp_flags": 0x12},
            {**base, "t": 300.5, "dur": 300, "src_tcp_flags": 0x10},
            {**base, "t": 5000, "dur": 10, "src_tcp_flags": 0x10},
        ]
    )
    flows, lineage = stitch(df, gap_seconds=60)
    assert flows.height == 2
    assert sorted(flows.get_column("src_pkts").to_list()) == [3, 6]
    assert lineage.height == 3


def test_tcp_client_is_earlier_syn_side_even_on_high_ports():
    df = _uni(
        [
            {
                "t": 1.0,
                "src_ip": "10.0.0.7",
                "dst_ip": "10.0.0.5",
                "src_port": 8080,
                "dst_port": 50001,
                "src_tcp_flags": 0x12,
            },
            {
                "t": 0.9,
                "src_ip": "10.0.0.5",
                "dst_ip": "10.0.0.7",
                "src_port": 50001,
                "dst_port": 8080,
                "src_tcp_flags": 0x02 | 0x10,
            },
        ]
    )
    flows, _ = stitch(df)
    f = flows.row(0, named=True)
    assert (f["src_ip"], f["dst_port"], f["orient"]) == ("10.0.0.5", 8080, "start")


def test_simultaneous_start_left_to_port_rule():
    df = _uni(
        [
            {
                "t": 0.0,
                "src_ip": "10.0.0.5",
                "dst_ip": "10.0.0.7",
                "src_port": 443,
                "dst_port": 50001,
                "proto": 17,
            },
            {
                "t": 0.0,
                "src_ip": "10.0.0.7",
                "dst_ip": "10.0.0.5",
                "src_port": 50001,
                "dst_port": 443,
                "proto": 17,
            },
        ]
    )
    flows, _ = stitch(df)
    assert flows.row(0, named=True)["orient"] is None


def test_icmp_echo_request_and_reply():
    df = _uni(
        [
            {
                "t": 0.0,
                "src_ip": "10.0.0.9",
                "dst_ip": "10.0.0.5",
                "src_port": 0,
                "dst_port": 0,
                "proto": 1,
            },
            {
                "t": 0.0,
                "src_ip": "10.0.0.5",
                "dst_ip": "10.0.0.9",
                "src_port": 0,
                "dst_port": 2048,
                "proto": 1,
            },
        ]
    )
    flows, _ = stitch(df)
    f = flows.row(0, named=True)
    assert (flows.height, f["src_ip"], f["dst_port"], f["orient"]) == (1, "10.0.0.5", 2048, "start")


def test_lone_syn_is_a_connection_attempt():
    df = _uni(
        [
            {
                "t": 0,
                "src_ip": "10.0.0.5",
                "dst_ip": "10.0.0.9",
                "src_port": 40000,
                "dst_port": 22,
                "src_tcp_flags": 0x02,
            }
        ]
    )
    flows, _ = stitch(df)
    assert flows.row(0, named=True)["orient"] == "start"
