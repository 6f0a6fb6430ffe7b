"""The simulated site: determinism, realism of the normal traffic, speed."""

from __future__ import annotations

import hashlib
import io
import time
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow.ipc as ipc
import pytest

from flowhawk.demo.simulate import ALWAYS, Stream, generate
from flowhawk.sim import SimSettings, simulate
from flowhawk.sim.site import SiteSpec, build_site
from flowhawk.sim.write import labels_path, write_flows, write_labels
from tests.sim.conftest import TINY


def _files(tmp_path, seed: int, formats=(".log", ".parquet", ".csv")) -> dict[str, bytes]:
    sim = simulate(SimSettings(days=2, clean_days=1, seed=seed, site=TINY, per_kind=1))
    out = {}
    for ext in formats:
        for written in write_flows(sim, tmp_path / f"s{ext}"):
            out[written.name] = written.read_bytes()
    out["labels"] = write_labels(sim, labels_path(tmp_path / "s.log")).read_bytes()
    return out


def test_same_arguments_and_seed_give_byte_identical_outputs(tmp_path):
    first, again = _files(tmp_path / "a", 3), _files(tmp_path / "b", 3)
    assert first.keys() == again.keys()
    assert len(first) == 5  # .log, .parquet, .csv, .toml, labels
    for name in first:
        assert first[name] == again[name], name
    other = _files(tmp_path / "c", 4, formats=(".log",))
    assert other["s.log"] != first["s.log"]
    assert other["labels"] != first["labels"]


def test_anomaly_free_run_is_the_same_site_without_the_anomalies():
    settings = SimSettings(days=3, clean_days=2, seed=5, site=TINY, per_kind=1)
    dirty = simulate(settings)
    clean = simulate(SimSettings(**{**vars(settings), "anomalies": ()}))
    assert clean.labels.height == 0 and not clean.anomalies
    assert clean.flows.get_column("_anom").is_null().all()
    key = ["ts_start", "src_ip", "dst_ip", "src_port", "dst_port", "proto"]
    untouched = dirty.flows.filter(pl.col("_anom").is_null())
    # Every flow the anomalies did not touch is a flow of the clean run, unchanged...
    same = untouched.join(clean.flows, on=[*key, "src_pkts", "dst_pkts", "src_bytes"], how="anti")
    assert same.height == 0
    # ...and the clean flows missing from it are exactly those anomalies changed or removed.
    missing = clean.flows.join(untouched, on=key, how="anti")
    changed = dirty.flows.filter(pl.col("_anom").is_not_null()).join(
        clean.flows, on=key, how="semi"
    )
    removed = clean.flows.height - untouched.height - changed.height
    assert missing.height == changed.height + removed
    assert removed >= 0


def test_generate_of_the_demo_streams_is_unchanged():
    """Streams with only the demo's fields give what the original generator gave."""
    streams = [
        Stream("web", ["10.0.0.1", "10.0.0.2"], ["203.0.113.1", "203.0.113.2"], 443, 6,
               rate=30, zipf=1.2, service="ssl"),
        Stream("beat", ["10.0.0.3"], ["10.0.0.9"], 502, 6, period=30, jitter=0.02,
               stop=20 * 3600, answered=0.5),
        Stream("dns", ["10.0.0.1"], ["10.0.0.53"], 53, 17, rate=60, profile=ALWAYS),
        Stream("ping", ["10.0.0.9"], ["10.0.0.1"], 2048, 1, period=60),
    ]  # fmt: skip
    table = generate(streams, datetime(2026, 3, 2, tzinfo=UTC), 24, 11)
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    # Recorded from the generator before the extensions (flowhawk 0.1.0, commit fdd56f8).
    assert table.num_rows == 5920
    assert hashlib.sha256(sink.getvalue()).hexdigest() == (
        "6bd945f880310f1d26d6ef776da76239592ce98398b8b84c831587aa96a9da08"
    )


def test_site_sizes_and_roles():
    site = build_site(SiteSpec(workstations=250, servers=3, iot=12, plcs=3, hmis=2), 1)
    assert len(site.workstations) == 250 and len(set(site.workstations)) == 250
    assert set(site.role.values()) == set(site.servers)  # 3 servers share the 10 roles
    assert sum(len(v) for v in site.iot.values()) == 12
    hosts = site.internal_hosts
    assert len(hosts) == len(set(hosts))
    assert all(h.startswith("10.") for h in hosts)
    ext = [*site.web_sites, *site.web_visitors, *site.mail_peers]
    assert all(a.startswith(("198.18.", "198.19.")) for a in ext)
    with pytest.raises(ValueError, match="workstations"):
        SiteSpec(workstations=0).check()


def test_office_hours_lunch_and_weekends_are_visible(sim):
    ws = sim.flows.filter(pl.col("stream").str.starts_with("ws-web"))
    per_hour = ws.group_by(
        day=pl.col("ts_start").dt.date(), hour=pl.col("ts_start").dt.hour()
    ).len()
    monday = per_hour.filter(pl.col("day") == datetime(2026, 3, 2).date())
    at = dict(zip(monday["hour"].to_list(), monday["len"].to_list(), strict=True))
    assert at.get(10, 0) >= 10 * max(at.get(3, 0), 1)
    assert at.get(12, 0) < 0.8 * at.get(10, 0)  # lunch dip
    days = ws.group_by(day=pl.col("ts_start").dt.weekday()).len()  # 6 = Saturday
    by = dict(zip(days["day"].to_list(), days["len"].to_list(), strict=True))
    assert by[6] < 0.2 * by[1]
    # Each user has their own day: per-workstation daily volume varies a lot.
    per_user = ws.filter(pl.col("ts_start").dt.weekday() == 2).group_by("src_ip").len()
    counts = per_user.get_column("len").to_numpy()
    assert counts.max() > 2 * np.median(counts)


def test_periodic_devices_report_on_their_period(sim):
    periods = np.array([15, 20, 30, 60, 120, 300, 600, 1024])
    for name in (r"mqtt-\d+s", r"coap-\d+s", "scada-", "meter-", "camera-", "ping-"):
        streams = sim.flows.filter(
            pl.col("stream").str.contains(f"^{name}"), pl.col("_anom").is_null()
        )
        comms = streams.partition_by(["src_ip", "dst_ip"], as_dict=True)
        assert comms, name
        for (src, dst), part in comms.items():
            t = part.sort("ts_start").get_column("ts_start").dt.epoch("us").to_numpy() / 1e6
            gaps = np.diff(t)
            step = float(np.median(gaps))
            assert np.min(np.abs(periods - step) / periods) < 0.01, (name, src, dst, step)
            assert np.mean(np.abs(gaps - step) < 0.05 * step) > 0.95, (name, src, dst)


def test_servers_answer_and_nights_have_backups(sim):
    role = sim.site.role
    # Every TCP flow to a server's service port is answered unless an anomaly says otherwise.
    normal = sim.flows.filter(pl.col("_anom").is_null() & (pl.col("proto") == 6))
    assert (normal.get_column("dst_pkts") > 0).all()
    backups = sim.flows.filter(pl.col("stream").str.starts_with("backup"))
    hours = backups.get_column("ts_start").dt.hour()
    assert backups.height == 6 * 9 and hours.is_between(1, 4).all()
    assert backups.get_column("dst_bytes").median() > 1e8
    dns = sim.flows.filter(pl.col("dst_ip") == role["dns"], pl.col("dst_port") == 53)
    assert dns.get_column("dst_pkts").min() >= 1 or dns.filter(pl.col("_anom").is_null()).height


def test_packets_follow_payload(sim):
    """Bytes are IP bytes: headers included, at most an MTU per packet; ACKs flow back."""
    df = sim.flows.filter(pl.col("_anom").is_null())
    tcp = df.filter(pl.col("proto") == 6, pl.col("dst_pkts") > 0)
    assert (tcp["src_bytes"] >= 52 * tcp["src_pkts"]).all()
    assert (tcp["src_bytes"] <= 1500 * tcp["src_pkts"]).all()
    big = tcp.filter(pl.col("dst_bytes") > 1_000_000)
    assert big.height and (big["src_pkts"] >= big["dst_pkts"] // 3).all()  # delayed ACKs
    udp = df.filter(pl.col("proto") == 17)
    assert (udp["src_bytes"] <= 1500 * udp["src_pkts"]).all()


def test_thirty_days_are_possible():
    site = SiteSpec(workstations=3, servers=4, iot=3, plcs=1, hmis=1, web_sites=40,
                    web_visitors=200)  # fmt: skip
    began = time.perf_counter()
    sim = simulate(SimSettings(days=30, seed=2, site=site, anomalies=()))
    took = time.perf_counter() - began
    days = sim.flows.group_by(pl.col("ts_start").dt.date()).len()
    assert days.height == 30
    assert days.get_column("len").min() > 20_000
    assert took < 60, f"30 days of a small site took {took:.1f} s"
