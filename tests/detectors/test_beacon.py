"""N1 beaconing and N2 C2 candidates: the score, the beats, the detectors in the engine."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from flowhawk import config
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.beacon_core import KEY
from flowhawk.detectors.beacon_score import beat_stats, beats_of
from flowhawk.engine import DetectionEngine
from flowhawk.state import StateStore
from tests.flowbuild import canonical


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
