"""N1 beaconing and N2 C2 candidates: the score, the beats, the detectors in the engine,
series per DNS name (a beacon whose addresses rotate), live detection as ``analyze``."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from flowhawk import c2export, config
from flowhawk.demo.dnslog import write_dns_log
from flowhawk.demo.zeekfmt import write_conn_log
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.beacon import NAME_OBSERVED
from flowhawk.detectors.beacon_core import KEY
from flowhawk.detectors.beacon_score import beat_stats, beats_of
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import read_dns
from flowhawk.engine import DetectionEngine
from flowhawk.intel import load
from flowhawk.live import LiveDetection
from flowhawk.pipeline import run
from flowhawk.state import StateStore
from tests.flowbuild import at, canonical, raw


def _series(times: np.ndarray, sizes: np.ndarray | float = 1000.0) -> pl.DataFrame:
    sizes = np.broadcast_to(np.asarray(sizes, dtype=float), times.shape)
    return pl.DataFrame(
        {"k": 0, "t": (np.sort(times) * 1e6).astype(np.int64), "bytes": sizes.astype(np.int64)}
    )


def _score(times: np.ndarray, sizes: np.ndarray | float = 1000.0) -> dict:
    stats = beat_stats(_series(times, sizes), ["k"])
    return stats.row(0, named=True) if stats.height else {"score": None}


RNG = np.random.default_rng(3)


def test_clean_beacon_scores_high_with_its_period():
    got = _score(np.arange(60) * 60.0)
    assert got["score"] > 0.95 and got["period"] == pytest.approx(60.0)
    assert got["jitter"] == 0 and got["missed"] == 0 and got["other"] == 0


def test_jittered_beacon_still_regular():
    got = _score(np.cumsum(300 * (1 + RNG.uniform(-0.2, 0.2, 100))))
    assert got["score"] > 0.6 and 270 < got["period"] < 330
    assert 0.05 < got["jitter"] < 0.15  # uniform ±20 % → about 0.10


def test_missed_beats_are_not_irregularity():
    t = np.arange(100) * 900.0
    got = _score(t[RNG.random(100) > 0.3])  # 30 % of beats missing
    assert got["period"] == pytest.approx(900.0) and got["missed"] > 0.15
    assert got["score"] > 0.75


def test_other_traffic_between_beats_is_tolerated():
    t = np.concatenate([np.arange(60) * 60.0, RNG.uniform(0, 3600, 12)])
    got = _score(t, np.concatenate([np.full(60, 1000.0), RNG.lognormal(8, 1, 12)]))
    assert got["period"] == pytest.approx(60.0) and 0.1 < got["other"] < 0.25
    assert got["score"] > 0.6


@pytest.mark.parametrize("seed", range(5))
def test_random_contacts_score_low(seed):
    rng = np.random.default_rng(seed)
    got = _score(np.cumsum(rng.exponential(60, 150)), rng.lognormal(8, 1, 150))
    assert got["score"] < 0.3


def test_too_few_beats_are_not_scored():
    assert _score(np.arange(9) * 60.0)["score"] is None
    assert beat_stats(_series(np.zeros(0)), ["k"]).height == 0


def test_bursts_become_one_beat():
    contacts = pl.DataFrame({"k": 0, "t": [0, 200_000, 400_000, 5_000_000], "bytes": [1, 2, 3, 4]})
    beats = beats_of(contacts, ["k"], burst_gap=0.5)
    assert beats.get_column("t").to_list() == [0, 5_000_000]
    assert beats.get_column("bytes").to_list() == [6, 4]


# -- the detectors in the engine ------------------------------------------------------

BOT, C2, BOT2 = "10.0.0.5", "198.51.100.7", "10.0.0.6"


def _cfg(**n1) -> config.Config:
    on = {"N1", "N2"}
    detectors = {m: {"enabled": m in on} for m in DETECTORS.names()}
    detectors["N1"] |= n1
    return config.from_dict({"learning": {"period": "1h"}, "detectors": detectors})


def _flows(rows: list[dict]) -> pl.DataFrame:
    return canonical(rows)


def _beacon(src: str, start: float, stop: float, period: float = 60.0, port: int = 8443):
    return [
        {"src_ip": src, "dst_ip": C2, "dst_port": port, "t": t}
        for t in np.arange(start, stop, period)
    ]


def _noise(n: int = 400) -> list[dict]:
    rng = np.random.default_rng(1)
    return [
        {"src_ip": f"10.0.0.{20 + i % 10}", "dst_ip": f"203.0.113.{i % 50}", "dst_port": 443,
         "t": float(t)}
        for i, t in enumerate(np.sort(rng.uniform(0, 5 * 3600, n)))
    ]  # fmt: skip


def _run(cfg: config.Config, flows: pl.DataFrame, tmp_path, batch: int = 0) -> pl.DataFrame:
    eng = DetectionEngine(cfg, StateStore(tmp_path))
    if batch:
        parts = [flows.slice(i, batch) for i in range(0, flows.height, batch)]
    else:
        hours = flows.with_columns(_h=pl.col("ts_start").dt.truncate("1h"))
        parts = [p.drop("_h") for p in hours.partition_by("_h", maintain_order=True)]
    out = [eng.process(p) for p in parts] + [eng.finish()]
    return pl.concat(out)


def test_new_beacon_alarms_n1_and_n2_with_its_bots(tmp_path):
    flows = _flows(_beacon(BOT, 7200, 5 * 3600) + _beacon(BOT2, 7230, 5 * 3600) + _noise())
    alarms = _run(_cfg(), flows, tmp_path)
    n1 = alarms.filter(pl.col("method") == "N1")
    assert set(n1.get_column("src_ip")) == {BOT, BOT2} and (n1.get_column("dst_ip") == C2).all()
    assert n1.height == 6  # hours 2, 3 and 4 (the last closed at the end of the input)
    assert (n1.get_column("entity") == n1.get_column("src_ip")).all()
    assert "every 60.0 s" in n1.get_column("reason")[0]
    assert n1.get_column("observed_value").to_list() == pytest.approx([60.0] * 6)
    n2 = alarms.filter(pl.col("method") == "N2")
    assert n2.height == 6
    last = n2.sort("ts").get_column("reason")[-1]
    assert f"{C2} is a C2 candidate" in last and BOT in last and BOT2 in last
    assert not alarms.filter(pl.col("dst_ip") != C2).height, "random browsing is no beacon"


def test_batching_and_restart_do_not_change_alarms(tmp_path):
    flows = _flows(_beacon(BOT, 7200, 5 * 3600) + _noise())
    whole = _run(_cfg(), flows, tmp_path / "a").sort(pl.all())
    odd = _run(_cfg(), flows, tmp_path / "b", batch=37).sort(pl.all())
    assert whole.drop("expected").equals(odd.drop("expected")) and whole.height
    eng = DetectionEngine(_cfg(), StateStore(tmp_path / "c"))
    first = eng.process(flows.filter(pl.col("ts_start") < flows["ts_start"][0].replace(hour=3)))
    eng.checkpoint()
    eng = DetectionEngine(_cfg(), StateStore(tmp_path / "c"))
    rest = flows.filter(pl.col("ts_start") >= flows["ts_start"][0].replace(hour=3))
    again = pl.concat([first, eng.process(rest), eng.finish()]).sort(pl.all())
    assert again.equals(whole)


def test_beacons_established_while_learning_are_left_out(tmp_path):
    flows = _flows(_beacon(BOT, 0, 5 * 3600) + _noise())
    assert _run(_cfg(), flows, tmp_path / "a").height == 0
    kept = _run(_cfg(skip_established=False), flows, tmp_path / "b")
    assert kept.filter(pl.col("method") == "N1").height == 4  # hours 1-4, after learning


def test_popular_servers_are_no_c2_candidates(tmp_path):
    rows = _beacon(BOT, 7200, 5 * 3600)
    rows += [
        {"src_ip": f"10.0.1.{i}", "dst_ip": C2, "dst_port": 443, "t": 100.0 + i} for i in range(5)
    ]
    alarms = _run(_cfg(), _flows(rows + _noise()), tmp_path)
    assert alarms.filter(pl.col("method") == "N1").height == 3
    assert alarms.filter(pl.col("method") == "N2").height == 0


def test_core_beats_match_whole_table_merging(tmp_path):
    """Bursts cut by batch boundaries are merged as if the flows came at once."""
    rows = []
    for t in np.arange(7200, 4 * 3600, 60.0):
        rows += [{"src_ip": BOT, "dst_ip": C2, "dst_port": 8443, "t": t + d} for d in (0, 0.2, 0.4)]
    flows = _flows(rows)
    eng = DetectionEngine(_cfg(), StateStore(tmp_path))
    for i in range(0, flows.height, 7):
        eng.process(flows.slice(i, 7))
    core = eng.detectors[0].core
    expect = beats_of(
        flows.select(
            *KEY,
            t=pl.col("ts_start").dt.epoch("us"),
            bytes=pl.col("src_bytes") + pl.col("dst_bytes"),
        ),
        KEY,
        0.5,
    )
    assert core.beats.height == expect.height
    assert core.beats.get_column("t").to_list() == expect.get_column("t").to_list()


# -- series per DNS name ----------------------------------------------------------------

NAME = "evil.example"
ADDRS = [f"198.51.100.{i}" for i in range(10, 15)]


def _rotating(
    start: float = 7200, stop: float = 5 * 3600, pick: str = "random", client: str = BOT
) -> tuple[list[dict], pl.DataFrame]:
    """A beacon every 60 s ± 10 % to NAME that resolves the name before each check-in and
    gets one of five addresses (``random``, ``round-robin`` or ``first``): the flows
    and its lookups (dns.log columns)."""
    rng = np.random.default_rng(5)
    times = start + np.cumsum(60 * (1 + rng.uniform(-0.1, 0.1, int((stop - start) / 60))))
    times = times[times < stop]
    idx = {
        "random": rng.integers(0, len(ADDRS), len(times)),
        "round-robin": np.arange(len(times)) % len(ADDRS),
        "first": np.zeros(len(times), dtype=int),
    }[pick]
    flows = [
        {"src_ip": client, "dst_ip": ADDRS[i], "dst_port": 443, "t": float(t)}
        for t, i in zip(times, idx, strict=True)
    ]
    lookups = pl.DataFrame(
        {
            "ts": [at(t - 0.05) for t in times],
            "orig_h": client,
            "query": NAME,
            "answers": [[ADDRS[i]] for i in idx],
        }
    )
    return flows, lookups


def _dns_log(lookups: pl.DataFrame, path: Path) -> Path:
    """Lookups (ts, orig_h, query, answers) written as a Zeek dns.log."""
    ttls = pl.col("answers").list.eval(pl.element().str.len_bytes() * 0 + 30.0)
    frame = lookups.select(
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        uid=pl.lit(None, pl.String),
        **{"id.orig_h": pl.col("orig_h"), "id.orig_p": pl.lit(53535),
           "id.resp_h": pl.lit("10.0.0.1"), "id.resp_p": pl.lit(53)},
        proto=pl.lit("udp"), trans_id=pl.int_range(pl.len()), rtt=pl.lit(0.004),
        query="query", qclass=pl.lit(1), qclass_name=pl.lit("C_INTERNET"), qtype=pl.lit(1),
        qtype_name=pl.lit("A"), rcode=pl.lit(0), rcode_name=pl.lit("NOERROR"),
        AA=pl.lit(False), TC=pl.lit(False), RD=pl.lit(True), RA=pl.lit(True), Z=pl.lit(0),
        answers="answers", TTLs=ttls,
        rejected=pl.lit(False),
    )  # fmt: skip
    write_dns_log(frame, path)
    return path


def _dns(lookups: pl.DataFrame, tmp_path: Path) -> pl.DataFrame:
    """Lookups as the dns package reads them back from a dns.log (DNS_SCHEMA)."""
    diag = Diagnostics()
    tables = read_dns(_dns_log(lookups, tmp_path / "dns.log"), diag)
    frame = pl.concat([pl.from_arrow(t) for t in tables])  # type: ignore[misc]
    assert isinstance(frame, pl.DataFrame) and not diag.inputs
    return frame.sort("ts", maintain_order=True)


def _batches(
    flows: pl.DataFrame, dns: pl.DataFrame, size: int = 0
) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """Flow batches (hours, or ``size`` rows) each with the DNS from its first flow's
    start to the next batch's, as analyze and live detection hand them over."""
    if size:
        parts = [flows.slice(i, size) for i in range(0, flows.height, size)]
    else:
        hours = flows.with_columns(_h=pl.col("ts_start").dt.truncate("1h"))
        parts = [p.drop("_h") for p in hours.partition_by("_h", maintain_order=True)]
    starts = [p.get_column("ts_start").min() for p in parts[1:]] + [None]
    out, rest = [], dns
    for part, nxt in zip(parts, starts, strict=True):
        now = rest if nxt is None else rest.filter(pl.col("ts") < nxt)
        rest = rest.clear() if nxt is None else rest.filter(pl.col("ts") >= nxt)
        out.append((part, now))
    return out


def _detect(
    eng: DetectionEngine, batches: list[tuple[pl.DataFrame, pl.DataFrame]], finish: bool = True
) -> pl.DataFrame:
    out = [eng.process(f, d) for f, d in batches] + ([eng.finish()] if finish else [])
    return pl.concat(out)


def test_rotating_addresses_are_one_beacon_by_name(tmp_path):
    rows, lookups = _rotating()
    flows, dns = _flows(rows + _noise()), _dns(lookups, tmp_path)
    blind = _detect(DetectionEngine(_cfg(), StateStore(tmp_path / "a")), _batches(flows, dns[:0]))
    assert blind.height == 0, "per address the check-ins are scattered, no series is regular"
    alarms = _detect(DetectionEngine(_cfg(), StateStore(tmp_path / "b")), _batches(flows, dns))
    n1 = alarms.filter(pl.col("method") == "N1").sort("ts")
    assert n1.height == 3  # hours 2, 3 and 4 (the last closed at the end of the input)
    assert set(n1.get_column("dst_ip")) <= set(ADDRS) and (n1.get_column("src_ip") == BOT).all()
    reason = n1.get_column("reason")[-1]
    assert f"{BOT} contacts {NAME}:443/tcp (5 addresses: " in reason
    assert all(a in reason for a in ADDRS) and "every 60." in reason
    assert n1.get_column("observed_value").to_list() == pytest.approx([60.0] * 3, abs=1)
    assert (n1.get_column("score") > 0.8).all()
    n2 = alarms.filter(pl.col("method") == "N2").sort("ts")
    assert n2.height == 3
    found = re.match(NAME_OBSERVED, n2.get_column("observed")[-1])
    assert found and found.group(1) == NAME and set(found.group(2).split(", ")) == set(ADDRS)
    assert n2.get_column("reason")[-1].startswith(f"{NAME} (")


def test_regular_both_per_address_and_per_name_alarms_once(tmp_path):
    """Round robin over five addresses makes each address regular too (every 5 min);
    one fixed address makes the address series the name series: one alarm a window."""
    for pick in ("round-robin", "first"):
        rows, lookups = _rotating(pick=pick)
        flows, dns = _flows(rows + _noise()), _dns(lookups, tmp_path)
        eng = DetectionEngine(_cfg(), StateStore(tmp_path / pick))
        n1 = _detect(eng, _batches(flows, dns)).filter(pl.col("method") == "N1")
        assert n1.height == 3, pick
        assert n1.get_column("reason").str.contains(f"contacts {NAME}:443/tcp").all()
        blind = DetectionEngine(_cfg(), StateStore(tmp_path / f"{pick}-blind"))
        per_address = _detect(blind, _batches(flows, dns[:0])).filter(pl.col("method") == "N1")
        assert per_address.height == (15 if pick == "round-robin" else 3)


def test_a_known_beacon_moving_to_a_new_address_stays_quiet(tmp_path):
    """Regular by name while learning (one address); after learning the name moves to
    new addresses: the new address series are covered by the established name series."""
    before, lookups_before = _rotating(0, 3600, pick="first")
    after, lookups_after = _rotating(3600, 5 * 3600, pick="round-robin")
    flows = _flows(before + after + _noise())
    dns = _dns(pl.concat([lookups_before, lookups_after]), tmp_path)
    quiet = _detect(DetectionEngine(_cfg(), StateStore(tmp_path / "a")), _batches(flows, dns))
    assert quiet.height == 0
    kept = _detect(
        DetectionEngine(_cfg(skip_established=False), StateStore(tmp_path / "b")),
        _batches(flows, dns),
    ).filter(pl.col("method") == "N1")
    assert kept.height == 4 and kept.get_column("reason").str.contains(NAME).all()


def test_names_do_not_depend_on_batches_or_restarts(tmp_path):
    rows, lookups = _rotating()
    flows, dns = _flows(rows + _noise()), _dns(lookups, tmp_path)
    hours = _batches(flows, dns)
    whole = _detect(DetectionEngine(_cfg(), StateStore(tmp_path / "a")), hours).sort(pl.all())
    odd = _detect(DetectionEngine(_cfg(), StateStore(tmp_path / "b")), _batches(flows, dns, 23))
    assert whole.height == 6 and odd.sort(pl.all()).drop("expected").equals(whole.drop("expected"))
    first = DetectionEngine(_cfg(), StateStore(tmp_path / "c"))
    early = _detect(first, hours[:3], finish=False)
    first.checkpoint()
    shutil.copytree(tmp_path / "c", tmp_path / "d")
    late = _detect(DetectionEngine(_cfg(), StateStore(tmp_path / "d")), hours[3:])
    assert pl.concat([early, late]).sort(pl.all()).equals(whole)
    state = first.detectors[0].core.state()
    assert state["names"].num_rows == 5  # one lookup per (client, address) is remembered
    assert state["addrs"].num_rows == 5


def test_client_names_come_from_that_clients_lookups(tmp_path):
    """Another client's lookup of the same addresses names nothing for this client."""
    rows, _ = _rotating()
    _, lookups = _rotating(client="10.0.0.99")
    flows, dns = _flows(rows + _noise()), _dns(lookups, tmp_path)
    alarms = _detect(DetectionEngine(_cfg(), StateStore(tmp_path)), _batches(flows, dns))
    assert alarms.height == 0


def _stored_beacon_alarms(data: Path) -> pl.DataFrame:
    con = duckdb.connect(str(data / "events.duckdb"), read_only=True)
    try:
        return con.sql(
            "SELECT method, ts, src_ip, dst_ip, dst_port, score, reason, observed FROM alarms "
            "WHERE method IN ('N1', 'N2') ORDER BY ALL"
        ).pl()
    finally:
        con.close()


def test_live_detection_names_beacons_as_analyze_does(tmp_path):
    """``analyze`` of a conn.log and a dns.log, and live detection fed the same flows and
    DNS in two-minute rollovers, store the same N1/N2 alarms; the C2 export lists the
    name and every address."""
    rows, lookups = _rotating()
    conn = tmp_path / "conn.log"
    write_conn_log(raw(rows + _noise()), conn)
    dns_log = _dns_log(lookups, tmp_path / "dns.log")
    cfg = _cfg()
    run([conn, dns_log], cfg, tmp_path / "file", tmp_path / "out")
    flows = pl.read_parquet(tmp_path / "file" / "flows" / "**" / "*.parquet").sort("ts_start")
    dns = _dns(lookups, tmp_path)
    live = LiveDetection(cfg, tmp_path / "live", "live")
    step = timedelta(minutes=2)
    t, end = flows.get_column("ts_start").min(), flows.get_column("ts_start").max()
    while t <= end:
        part = flows.filter(pl.col("ts_start").is_between(t, t + step, closed="left"))
        near = dns.filter(pl.col("ts").is_between(t, t + step, closed="left"))
        live.submit(part.to_arrow(), near.to_arrow())
        t += step
    live.stop()
    analyzed = _stored_beacon_alarms(tmp_path / "file")
    assert analyzed.height == 6 and NAME in analyzed.get_column("reason")[0]
    assert _stored_beacon_alarms(tmp_path / "live").equals(analyzed)
    found = c2export.candidates(tmp_path / "file")
    assert set(found.get_column("indicator")) == {NAME, *ADDRS}
    named = found.filter(pl.col("type") == "domain-name").row(0, named=True)
    assert named["bots"] == [BOT] and set(named["addresses"]) == set(ADDRS)
    assert (
        found.filter(pl.col("type") == "ipv4-addr").get_column("names").list.first() == NAME
    ).all()
    bundle = tmp_path / "c2.json"
    c2export.write(found, "stix", bundle)
    intel = load([bundle])  # the name is an indicator flowhawk's own STIX reader takes
    assert intel.lookup_domains(pl.Series([NAME])).get_column("reputation").to_list() == [10]
    csv_rows = c2export.to_csv(found).splitlines()
    assert csv_rows[0].endswith(",names,addresses")
    assert any(r.startswith(f"{NAME},domain-name,") and ADDRS[0] in r for r in csv_rows)
