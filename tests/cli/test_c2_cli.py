"""``flowhawk c2 export``: the C2 candidates of an analyzed data directory as a blocklist."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import polars as pl

from flowhawk import config
from flowhawk.intel import load
from flowhawk.pipeline import run
from tests.cli.test_cli import fh
from tests.flowbuild import raw

C2, BOT = "198.51.100.7", "10.0.0.5"


def _analyzed(tmp_path):
    rows = [{"src_ip": BOT, "dst_ip": C2, "dst_port": 8443, "t": float(t)}
            for t in np.arange(7200, 5 * 3600, 60.0)]  # fmt: skip
    rows += [{"src_ip": "10.0.0.9", "dst_ip": "203.0.113.9", "dst_port": 443, "t": float(t)}
             for t in np.sort(np.random.default_rng(0).uniform(0, 5 * 3600, 200))]  # fmt: skip
    cfg = config.from_dict({"learning": {"period": "1h"}})
    data = tmp_path / "data"
    run([], cfg, data, tmp_path / "out", tables=[("test", iter([raw(rows)]))])
    return data


def test_exports_csv_and_stix_that_flowhawk_reads_back(tmp_path):
    data = _analyzed(tmp_path)
    res = fh("c2", "export", "--data", str(data))
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 1
    assert rows[0]["indicator"] == C2 and rows[0]["bots"] == BOT and rows[0]["n_bots"] == "1"
    assert rows[0]["first_seen"] == "2024-01-01T02:00:00Z"
    out = tmp_path / "c2.json"
    res = fh("c2", "export", "--data", str(data), "--format", "stix", "--out", str(out))
    assert res.returncode == 0 and "1 C2 candidate(s)" in res.stderr
    bundle = json.loads(out.read_text())
    indicator = next(o for o in bundle["objects"] if o["type"] == "indicator")
    assert indicator["pattern"] == f"[ipv4-addr:value = '{C2}']"
    assert indicator["valid_from"] == "2024-01-01T02:00:00.000Z"
    intel = load([out])  # flowhawk's own STIX reader takes it as a feed
    hits = intel.lookup_ips(pl.Series([C2, "192.0.2.1"]))
    assert hits.get_column("reputation").to_list() == [10, None]  # listed: high risk
    again = tmp_path / "again.json"
    fh("c2", "export", "--data", str(data), "--format", "stix", "--out", str(again))
    ids = [o["id"] for o in json.loads(again.read_text())["objects"]]
    assert ids == [o["id"] for o in bundle["objects"]]  # stable ids: consumers update


def test_without_an_event_store_the_error_says_so(tmp_path):
    res = fh("c2", "export", "--data", str(tmp_path / "nothing"))
    assert res.returncode == 1 and "no event store" in res.stderr
