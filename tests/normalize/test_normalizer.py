"""The normalizer: validation, direction, sites, counts."""

from __future__ import annotations

import polars as pl

from flowhawk import config
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer
from flowhawk.schema import FLOW_SCHEMA
from tests.flowbuild import canonical, raw


def test_direction_and_internal_flags():
    df = canonical(
        [
            {"src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
            {"src_ip": "10.0.0.5", "dst_ip": "192.168.1.1", "dst_port": 22},
            {"src_ip": "1.1.1.1", "dst_ip": "8.8.8.8", "dst_port": 53},
            {"src_ip": "10.0.0.5", "dst_ip": "224.0.0.251", "dst_port": 5353},
            {"src_ip": "fd00::1", "dst_ip": "2001:db8::1", "dst_port": 443},
        ]
    )
    assert df.get_column("direction").to_list() == [
        "north-south",
        "east-west",
        "external",
        "east-west",
        "north-south",
    ]
    assert df.get_column("dst_internal").to_list() == [False, True, False, True, False]


def test_sites_by_exporter_then_network():
    cfg = config.from_dict(
        {
            "sites": [
                {"name": "hq", "networks": ["10.1.0.0/16"], "exporters": ["192.0.2.1"]},
                {"name": "plant", "networks": ["10.2.0.0/16"]},
            ],
            "default_site": "other",
        }
    )
    df = canonical(
        [
            {"src_ip": "10.2.0.5", "dst_ip": "8.8.8.8", "dst_port": 53, "exporter": "192.0.2.1"},
            {"src_ip": "8.8.8.8", "dst_ip": "10.2.0.5", "dst_port": 53},
            {"src_ip": "10.1.0.5", "dst_ip": "10.2.0.5", "dst_port": 53},
            {"src_ip": "10.9.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
        ],
        cfg,
    )
    assert df.get_column("site").to_list() == ["hq", "plant", "hq", "other"]


def test_invalid_addresses_are_counted_not_fatal():
    diag = Diagnostics()
    norm = Normalizer(config.load(None), diag)
    out = norm.process(
        raw(
            [
                {"src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
                {"src_ip": "999.0.0.1", "dst_ip": "8.8.8.8", "dst_port": 53},
                {"src_ip": "", "dst_ip": "8.8.8.8", "dst_port": 53},
            ]
        )
    )
    assert out.num_rows == 1 and out.schema == FLOW_SCHEMA
    assert diag.inputs["test"].skipped["invalid address"] == 2
    assert "test at record 1: invalid address" in str(diag.issues[0])


def test_end_before_start_is_clamped_and_counted():
    diag = Diagnostics()
    norm = Normalizer(config.load(None), diag)
    out = pl.from_arrow(
        norm.process(raw([{"src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53, "dur": -5}]))
    )
    assert out.row(0, named=True)["ts_end"] == out.row(0, named=True)["ts_start"]
    assert sum(diag.inputs["test"].ignored.values()) == 1


def test_unidirectional_records_wait_for_end_of_input():
    diag = Diagnostics()
    norm = Normalizer(config.load(None), diag)
    uni = [
        {
            "src_ip": "10.0.0.5",
            "dst_ip": "8.8.8.8",
            "src_port": 5000,
            "dst_port": 53,
            "proto": 17,
            "uni": True,
            "dst_pkts": 0,
            "dst_bytes": 0,
            "orient": None,
        },
        {
            "src_ip": "8.8.8.8",
            "dst_ip": "10.0.0.5",
            "src_port": 53,
            "dst_port": 5000,
            "proto": 17,
            "uni": True,
            "dst_pkts": 0,
            "dst_bytes": 0,
            "orient": None,
            "t": 0.001,
        },
    ]
    assert norm.process(raw(uni)).num_rows == 0
    flows, lineage = norm.end_input("test")
    assert flows.num_rows == 1 and lineage.height == 2
    assert diag.inputs["test"].flows == 1
