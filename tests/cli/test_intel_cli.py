"""``flowhawk intel`` and ``analyze --intel``, run as a user runs them, on real feeds and logs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import polars as pl

from flowhawk.intel import IntelSet
from tests.cli.test_cli import LABELED_008, fh

FIXTURES = Path(__file__).resolve().parents[1] / "intel" / "fixtures"


def test_update_stats_lookup_round_trip(shared_data, tmp_path):
    data = tmp_path / "data"
    feeds = shared_data / "intel" / "public_feeds"
    res = fh("intel", "update", "--data", str(data), "--intel", str(feeds),
             "--intel", str(FIXTURES))  # fmt: skip
    assert res.returncode == 0, res.stderr
    version = (data / "intel" / "current").read_text().strip()
    folder = data / "intel" / version
    assert {p.name for p in folder.iterdir()} == {
        "indicators.parquet",
        "evidence.parquet",
        "feeds.json",
    }
    assert f"intel set {version}:" in res.stdout
    for name in ("tor-exit", "abuse-ch-ipblocklist", "feodo", "stix_bundle", "zeek"):
        assert name in res.stdout
    stored = json.loads((folder / "feeds.json").read_text())
    assert stored["version"] == version
    feodo = next(f for f in stored["feeds"] if f["name"] == "feodo")
    row = re.search(r"^ feodo +│ csv +│ +(\d+) │ +(\d+) │", res.stdout, re.MULTILINE)
    assert row is not None and row.groups() == (str(feodo["indicators"]), "1")

    intel = IntelSet.open(folder)  # restored without parsing a feed
    assert intel.version == version and len(intel) > 10_000

    stats = fh("intel", "stats", "--data", str(data))
    assert stats.returncode == 0, stats.stderr
    assert f"intel set {version} (loaded " in stats.stdout
    assert "tor " in stats.stdout and "c2 " in stats.stdout and "threatfox" in stats.stdout

    tor_exit = (feeds / "tor-exit.txt").read_text().split()
    listed = next(v for v in tor_exit if v[0].isdigit())
    res = fh("intel", "lookup", "--data", str(data), listed, "192.0.2.250", "203.0.113.5")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(line.startswith(f"{listed} (ip): reputation ") for line in lines)
    assert "tor-exit" in res.stdout
    assert "192.0.2.250 (ip): not listed" in lines
    assert "203.0.113.5 (ip): reputation" in res.stdout and "via cidr 203.0.113.0/24" in res.stdout


def test_lookup_from_feed_files_detects_types(tmp_path):
    feed = tmp_path / "bad.txt"
    feed.write_text("evil.example\nhttp://198.51.100.9/gate.php\n198.51.100.10\n")
    res = fh("intel", "lookup", "--intel", str(feed), "www.evil.example",
             "http://198.51.100.9/gate.php", "198.51.100.10", "good.example")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "www.evil.example (domain): reputation" in res.stdout
    assert "via domain evil.example" in res.stdout
    assert "http://198.51.100.9/gate.php (url): reputation" in res.stdout
    assert "198.51.100.10 (ip): reputation" in res.stdout
    assert "good.example (domain): not listed" in res.stdout


def test_bad_feed_path_is_named_without_traceback(tmp_path):
    missing = tmp_path / "no-such-feed.txt"
    for args in (
        ["intel", "update", "--data", str(tmp_path / "d"), "--intel", str(missing)],
        ["intel", "lookup", "--intel", str(missing), "192.0.2.1"],
    ):
        res = fh(*args)
        assert res.returncode == 1
        assert f"error: {missing}: does not exist" in res.stderr
        assert "Traceback" not in res.stderr
    res = fh("intel", "stats", "--data", str(tmp_path / "empty"))
    assert res.returncode == 1 and "no intel snapshot" in res.stderr
    res = fh("intel", "update", "--data", str(tmp_path / "d"))
    assert res.returncode == 2 and "no feeds" in res.stderr


def test_analyze_with_intel_alarms_on_exactly_the_listed_flows(shared_data, tmp_path):
    log = shared_data / LABELED_008
    zeek = {"separator": "\t", "comment_prefix": "#", "quote_char": None}
    conn = pl.read_csv(log, has_header=False, infer_schema=False, **zeek)
    conn = conn.select(orig="column_2", resp="column_4")
    address = "91.228.167.171"
    listed = conn.filter((pl.col("orig") == address) | (pl.col("resp") == address)).height
    assert listed > 100
    feed = tmp_path / "c2-watch.txt"
    feed.write_text(f"# watched\n{address}\n")
    out = tmp_path / "out"
    res = fh("analyze", str(log), "--out", str(out), "--intel", str(feed), "-q")
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(out / "events.duckdb"), read_only=True)
    alarms = con.sql("SELECT entity, reason FROM alarms WHERE method = 'M27'").pl()
    assert alarms.height == listed
    assert (alarms.get_column("entity") == address).all()
    assert alarms.get_column("reason").str.contains(f"{address} is listed by c2-watch").all()

    again = fh("analyze", str(log), "--out", str(tmp_path / "o2"), "--intel",
               str(tmp_path / "missing.txt"), "-q")  # fmt: skip
    assert again.returncode == 1 and "missing.txt: does not exist" in again.stderr
