"""Orientation by port when the start of a conversation was not seen."""

from __future__ import annotations

import polars as pl

from flowhawk.normalize.orient import orient_by_port
from tests.flowbuild import raw


def _oriented(rows):
    df = pl.from_arrow(raw(rows))
    return orient_by_port(df)


def test_well_known_port_is_server():
    df = _oriented(
        [
            {
                "src_ip": "1.2.3.4",
                "dst_ip": "10.0.0.5",
                "src_port": 443,
                "dst_port": 51000,
                "orient": None,
                "src_pkts": 9,
                "dst_pkts": 4,
            }
        ]
    )
    row = df.row(0, named=True)
    assert (row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"]) == (
        "10.0.0.5",
        51000,
        "1.2.3.4",
        443,
    )
    assert (row["src_pkts"], row["dst_pkts"]) == (4, 9)
    assert row["orient"] == "port"


def test_named_service_above_1024_beats_system_port_rank():
    df = _oriented(
        [{"src_ip": "a", "dst_ip": "b", "src_port": 3389, "dst_port": 600, "orient": None}]
    )
    assert df.row(0, named=True)["dst_port"] == 3389


def test_tie_lower_port_is_server_and_equal_ports_undecided():
    df = _oriented(
        [
            {"src_ip": "a", "dst_ip": "b", "src_port": 30000, "dst_port": 20001, "orient": None},
            {
                "src_ip": "a",
                "dst_ip": "b",
                "src_port": 123,
                "dst_port": 123,
                "orient": None,
                "proto": 17,
            },
        ]
    )
    assert df.get_column("dst_port").to_list() == [20001, 123]
    assert df.get_column("orient").to_list() == ["port", "none"]


def test_observed_start_is_kept():
    df = _oriented(
        [{"src_ip": "a", "dst_ip": "b", "src_port": 443, "dst_port": 50000, "orient": "start"}]
    )
    assert df.row(0, named=True)["src_port"] == 443


def test_lone_icmp_echo_reply_becomes_request_from_requester():
    df = _oriented(
        [
            {
                "src_ip": "10.0.0.9",
                "dst_ip": "10.0.0.5",
                "src_port": 0,
                "dst_port": 0,
                "proto": 1,
                "orient": None,
            }
        ]
    )
    row = df.row(0, named=True)
    assert (row["src_ip"], row["dst_ip"], row["src_port"], row["dst_port"]) == (
        "10.0.0.5",
        "10.0.0.9",
        0,
        8 * 256,
    )


def test_udp_first_sender_on_service_port_is_flipped_like_zeek():
    df = _oriented(
        [
            {
                "src_ip": "192.168.1.100",
                "dst_ip": "24.1.1.1",
                "src_port": 53,
                "dst_port": 58741,
                "proto": 17,
                "orient": "start",
            },
            {
                "src_ip": "10.0.0.5",
                "dst_ip": "10.0.0.1",
                "src_port": 53,
                "dst_port": 53,
                "proto": 17,
                "orient": "start",
            },
            {
                "src_ip": "10.0.0.5",
                "dst_ip": "10.0.0.1",
                "src_port": 80,
                "dst_port": 58741,
                "proto": 6,
                "orient": "start",
            },
        ]
    )
    assert df.get_column("dst_port").to_list() == [53, 53, 58741]
    assert df.get_column("orient").to_list() == ["port", "start", "start"]
