"""Golden tests: a capture or log in, events out, compared with a checked-in expectation.

Set FLOWHAWK_UPDATE_GOLDEN=1 to rewrite the expectations after a deliberate change in
detection; review the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from flowhawk import config
from flowhawk.demo import make_demo
from flowhawk.pipeline import run

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FLOWHAWK_UPDATE_GOLDEN") == "1"


def _summary(out: Path, top: int = 40) -> dict:
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    methods: dict[str, int] = {}
    for e in events:
        for a in e["alarms"]:
            methods[a["method"]] = methods.get(a["method"], 0) + 1
    hosts = pl.read_csv(out / "hosts.csv").head(10)
    return {
        "events": len(events),
        "alarms_by_method": dict(sorted(methods.items())),
        "top_events": [
            {k: e[k] for k in ("id", "ts_start", "src_ip", "dst_ip", "dst_port", "proto", "risk")}
            | {"methods": sorted(a["method"] for a in e["alarms"])}
            for e in events[:top]
        ],
        "top_hosts": [
            {"ip": r["ip"], "risk": r["risk"], "methods": r["methods"]}
            for r in hosts.iter_rows(named=True)
        ],
    }


def _check(name: str, got: dict) -> None:
    path = GOLDEN / f"{name}.json"
    if UPDATE or not path.exists():
        path.write_text(json.dumps(got, indent=1) + "\n")
        if not UPDATE:
            pytest.fail(f"wrote new expectation {path}; review and commit it")
    expected = json.loads(path.read_text())
    assert got == expected


def test_demo_conn_log(tmp_path):
    logs, cfg = make_demo(tmp_path / "input")
    run(logs, config.load(cfg), tmp_path, tmp_path)
    _check("demo", _summary(tmp_path))


def test_ctu_labeled_conn_log(shared_data, tmp_path):
    src = shared_data / "labeled/stratosphere_scenarios/010-zeek-mixed/data/conn.log.labeled"
    run([src], config.from_dict({"learning": {"period": "30m"}}), tmp_path, tmp_path)
    _check("ctu_010", _summary(tmp_path))


def test_beacon_capture_pcap(shared_data, tmp_path):
    src = shared_data / "labeled/slips_dataset/dataset_HEAD/test-cc/test-cc-capture-1.pcap"
    run([src], config.from_dict({"learning": {"period": "2m"}}), tmp_path, tmp_path)
    _check("test_cc_capture_1", _summary(tmp_path))
