"""Contract tests run over every registered sink."""

from __future__ import annotations

import json

import polars as pl
import pytest

from flowhawk import config
from flowhawk.detectors.base import conform_alarms
from flowhawk.events import build_events
from flowhawk.sinks import SINKS
from flowhawk.sinks.base import Sink, SinkPaths
from tests.flowbuild import at

ALL = SINKS.names()


def _events():
    rows = [
        {
            "method": "M1",
            "name": "new communication",
            "ts": at(i * 10),
            "ts_end": at(i * 10 + 1),
            "site": "default",
            "src_ip": "10.0.0.5",
            "dst_ip": f"8.8.8.{i}",
            "dst_port": 53,
            "proto": 17,
            "direction": "north-south",
            "score": 0.5 + i / 10,
            "observed": "o",
            "expected": "e",
            "reason": 'r, with "quotes"\nand newline',
        }
        for i in range(3)
    ]
    events, alarms = build_events(conform_alarms(pl.DataFrame(rows)), config.load(None))
    events = events.with_columns(
        flows=pl.lit(2, pl.UInt32),
        src_port=pl.lit(5000, pl.Int32),
        src_pkts=pl.lit(2),
        src_bytes=pl.lit(120),
        dst_pkts=pl.lit(2),
        dst_bytes=pl.lit(180),
        service=pl.lit("dns"),
    )
    return events, alarms


@pytest.mark.parametrize("name", ALL)
def test_sink_shape(name):
    cls = SINKS.get(name)
    assert issubclass(cls, Sink) and cls.name == name and cls.description


@pytest.mark.parametrize("name", ALL)
def test_sink_accepts_empty_then_real_events(name, tmp_path):
    events, alarms = _events()
    sink = SINKS.get(name)(SinkPaths(out=tmp_path / "out", data=tmp_path / "data"), top=2)
    sink.start()
    sink.write(events.clear(), alarms.clear())
    sink.write(events, alarms)
    sink.stop()
    files = [p for p in (tmp_path).rglob("*") if p.is_file()]
    assert files, f"{name} wrote nothing"


def test_jsonl_documents(tmp_path):
    events, alarms = _events()
    sink = SINKS.get("events-jsonl")(SinkPaths(tmp_path, tmp_path))
    sink.start()
    sink.write(events, alarms)
    sink.stop()
    docs = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(docs) == 3
    d = docs[0]
    for key in (
        "id",
        "ts_start",
        "ts_end",
        "site",
        "src_ip",
        "dst_ip",
        "dst_port",
        "proto",
        "direction",
        "risk",
        "alarms",
    ):
        assert key in d
    assert d["ts_start"].endswith("Z") and "T" in d["ts_start"]
    assert set(d["alarms"][0]) >= {"method", "name", "score", "observed", "expected", "reason"}
    assert d["alarms"][0]["method"] == "M1"


def test_suspicious_csv_keeps_top_n_in_spot_columns(tmp_path):
    events, alarms = _events()
    sink = SINKS.get("suspicious-csv")(SinkPaths(tmp_path, tmp_path), top=2)
    sink.start()
    sink.write(events, alarms)
    sink.stop()
    df = pl.read_csv(tmp_path / "suspicious.csv")
    assert df.height == 2
    for col in (
        "tstart",
        "sip",
        "dip",
        "sport",
        "dport",
        "proto",
        "ipkt",
        "ibyt",
        "opkt",
        "obyt",
        "score",
        "risk",
        "reasons",
    ):
        assert col in df.columns
    assert df.get_column("risk").is_sorted(descending=True)
    assert "newline" in df.get_column("reasons")[0]


def test_store_keeps_analyst_verdict_on_rewrite(tmp_path):
    events, alarms = _events()
    paths = SinkPaths(tmp_path, tmp_path)
    store = SINKS.get("duckdb")(paths)
    store.start()
    store.write(events, alarms)
    eid = events.get_column("id")[0]
    store.con.execute("UPDATE events SET verdict = 'benign', status = 'closed' WHERE id = ?", [eid])
    store.write(events, alarms)
    row = store.con.execute(
        "SELECT verdict, status, count(*) OVER () FROM events WHERE id = ?", [eid]
    ).fetchone()
    n_alarms = store.con.execute("SELECT count(*) FROM alarms").fetchone()[0]
    store.stop()
    assert row == ("benign", "closed", 1)
    assert n_alarms == 3
