"""Context on events through a whole ``analyze`` run: hops, relays, GeoIP/ASN, storage."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from flowhawk import config
from flowhawk.errors import InputError
from flowhawk.pipeline import run
from tests.flowbuild import raw

H, A, B = "10.0.0.5", "10.0.0.9", "10.0.0.20"
C2 = "81.2.69.7"
WEB, DB, OUTSIDER = "10.0.0.80", "10.0.0.90", "81.2.69.50"

FLOWS = [
    {"src_ip": B, "dst_ip": A, "dst_port": 3389, "t": 100},
    {"src_ip": A, "dst_ip": H, "dst_port": 22, "t": 200},
    {"src_ip": H, "dst_ip": C2, "dst_port": 443, "t": 300, "dur": 60},
    *[
        {
            "src_ip": OUTSIDER,
            "dst_ip": WEB,
            "dst_port": 443,
            "t": 400 + 30 * k,
            "src_bytes": 1000 * (k + 1),
        }
        for k in range(4)
    ],
    *[
        {
            "src_ip": WEB,
            "dst_ip": DB,
            "dst_port": 5432,
            "t": 400.3 + 30 * k,
            "src_bytes": 800 * (k + 1),
        }
        for k in range(4)
    ],
]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[config.Config, Path]:
    feed = tmp_path / "c2.txt"
    feed.write_text(f"{C2}\n{OUTSIDER}\n")
    geo = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    geo.insert_network(
        IPSet(["81.2.69.0/24"]),
        {
            "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
            "city": {"names": {"en": "London"}},
        },
    )
    geo.to_db_file(str(tmp_path / "city.mmdb"))
    path = tmp_path / "flowhawk.toml"
    path.write_text(
        '[network]\ninternal = ["10.0.0.0/8"]\n'
        '[context]\ngeoip = ["city.mmdb"]\nrelay_delay = "1s"\n'
        '[[intel.feeds]]\nsource = "c2.txt"\ncategory = "c2"\n'
    )
    return config.load(path), tmp_path


def _analyze(cfg: config.Config, tmp: Path) -> list[dict]:
    run([], cfg, tmp / "data", tmp / "out", tables=[("t", iter([raw(FLOWS)]))])
    return [json.loads(line) for line in (tmp / "out" / "events.jsonl").open()]


def test_risky_events_carry_hops_relays_and_geo(setup):
    cfg, tmp = setup
    events = _analyze(cfg, tmp)
    out = next(e for e in events if e["dst_ip"] == C2)
    assert {"M27", "M29"} <= set(out["methods"]) and out["risk"] >= 50
    edges = {(e["hop"], e["src"], e["dst"]) for e in out["hops"]["edges"]}
    assert edges == {(2, A, H), (3, B, A)}
    assert out["dst_geo"]["country"] == "GB" and out["dst_geo"]["city"] == "London"
    assert out["src_geo"] is None  # internal
    inbound = next(e for e in events if e["src_ip"] == OUTSIDER)
    (relay,) = inbound["relays"]
    assert (relay["host"], relay["pairs"]) == (WEB, 4)
    assert relay["outbound"] == f"{WEB}→{DB}:5432"
    con = duckdb.connect(str(tmp / "data" / "events.duckdb"), read_only=True)
    stored = con.execute(
        "SELECT hops->>'$.edges[0].src', dst_geo->>'$.country', json_array_length(relays) "
        f"FROM events WHERE dst_ip = '{C2}'"
    ).fetchone()
    assert stored == (A, "GB", 0)


@pytest.mark.parametrize("off", [{"hops_min_risk": 100.0}, {"hops": False}])
def test_context_off(setup, off):
    cfg, tmp = setup
    for key, value in off.items():
        setattr(cfg.context, key, value)
    events = _analyze(cfg, tmp)
    assert all(e["hops"] is None and e["relays"] == [] for e in events)
    assert any(e["dst_geo"] for e in events)  # the rest of the context stays


def test_missing_geoip_database_fails_before_reading(setup):
    cfg, tmp = setup
    (tmp / "city.mmdb").unlink()
    with pytest.raises(InputError, match=r"city\.mmdb"):
        _analyze(cfg, tmp)
    assert not (tmp / "data" / "flows").exists()


def test_passive_dns_counts_each_answer_once_per_run(shared_data, tmp_path):
    import polars as pl

    from flowhawk.diagnostics import Diagnostics
    from flowhawk.dns.passive import PDNS_FILE
    from flowhawk.pipeline import read_dns_inputs

    log = shared_data / "labeled/slips_dataset/dataset_HEAD/test10-mixed-zeek-dir/dns.log"
    cfg = config.from_dict({})
    counts = []
    for run_id in ("a", "b"):
        assert read_dns_inputs([log], cfg, tmp_path, run_id, Diagnostics()).rows == 93
        counts.append(pl.read_parquet(tmp_path / PDNS_FILE).get_column("count").sum())
    assert counts[1] == 2 * counts[0] > 0
