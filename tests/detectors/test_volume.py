"""M2-M9 through the real engine: overflow, underflow and silence of communications.

Five hours of one-minute buckets; the first three teach (learning period), the last two
are scored. Every communication below is built so exactly what it should raise is known:

- ``SENT``: 10/10 packets a minute, then 500 sent in one bucket (50x): M3 and M4;
- ``BOTH``: 10/10, then 500/500 in one bucket: M2, M3, M4 and M5;
- ``DROP``: 40/40 every minute, then 10/10 in one bucket: M6-M9 (underflow);
- ``BEAT``: a heartbeat every minute that stops twice for 20 minutes: M6-M9 once per
  silence;
- ``BURSTY``: bursts of a few minutes hours apart, then almost nothing and quiet:
  it has a baseline but is not regular, so nothing;
- ``FEW``: only 10 buckets of history, then 50x: no baseline, nothing;
- ``NEWBIE``: first seen while scoring, sending a lot: nothing;
- ``SMALL``: 1 packet a minute, then 15 (z above the threshold, fewer than
  ``min_packets``): nothing.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flowhawk import config
from flowhawk.behavior import baseline as bl
from flowhawk.behavior.log import LogStore
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.base import ALARM_SCHEMA
from flowhawk.engine import DetectionEngine
from flowhawk.state import StateStore
from tests.flowbuild import T0, canonical

VOLUME = tuple(f"M{i}" for i in range(2, 10))
OVER, UNDER = VOLUME[:4], VOLUME[4:]
SERVER = "10.0.0.9"
SENT, BOTH, DROP, BEAT = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
BURSTY, FEW, NEWBIE, SMALL = "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"
PORT = {SENT: 8080, BOTH: 8081, DROP: 8082, BEAT: 9100, BURSTY: 443, FEW: 8084}
PORT |= {NEWBIE: 8085, SMALL: 8086}
END = 300  # minutes of traffic
LEARN = 180  # minutes of learning
BEAT_OFF = ((220, 240), (255, 275))  # BEAT's two silences, [from, to) minutes


def _minute(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def _flow(src: str, minute: int, out: int, inn: int) -> dict:
    dst = "203.0.113.50" if src == BURSTY else SERVER
    return {
        "src_ip": src,
        "dst_ip": dst,
        "dst_port": PORT[src],
        "t": minute * 60 + 5,
        "src_pkts": out,
        "dst_pkts": inn,
        "src_bytes": out * 100,
        "dst_bytes": inn * 100,
    }


def _scenario() -> pl.DataFrame:
    rows = []
    for m in range(END):
        rows.append(_flow(SENT, m, 500 if m == 200 else 10, 10))
        rows.append(_flow(BOTH, m, *((500, 500) if m == 210 else (10, 10))))
        rows.append(_flow(DROP, m, *((10, 10) if m == 230 else (40, 40))))
        if not any(a <= m < b for a, b in BEAT_OFF):
            rows.append(_flow(BEAT, m, 4, 4))
        rows.append(_flow(SMALL, m, 15 if m == 215 else 1, 1))
    for start in (0, 25, 70, 100, 150):  # 40 active buckets, gaps of up to 45 minutes
        rows += [_flow(BURSTY, m, 100, 100) for m in range(start, start + 8)]
    rows.append(_flow(BURSTY, 190, 1, 1))
    rows += [_flow(FEW, m, 10, 10) for m in range(30, 40)]
    rows.append(_flow(FEW, 205, 500, 500))
    rows.append(_flow(NEWBIE, 205, 5000, 5000))
    return canonical(rows)


def _engine(data: Path, **settings: dict) -> DetectionEngine:
    detectors = {m: {"enabled": m in VOLUME, **settings.get(m, {})} for m in DETECTORS.names()}
    cfg = config.from_dict({"learning": {"period": f"{LEARN}m"}, "detectors": detectors})
    return DetectionEngine(cfg, StateStore(data), log_store=LogStore(data / "behavior", "t"))


def _batches(flows: pl.DataFrame, minutes: int) -> list[pl.DataFrame]:
    steps = flows.with_columns(_s=pl.col("ts_start").dt.truncate(f"{minutes}m"))
    return steps.partition_by("_s", maintain_order=True, include_key=False)


def _run(eng: DetectionEngine, flows: pl.DataFrame, minutes: int) -> pl.DataFrame:
    return pl.concat([*(eng.process(b) for b in _batches(flows, minutes)), eng.finish()])


@pytest.fixture(scope="module")
def flows() -> pl.DataFrame:
    return _scenario()


@pytest.fixture(scope="module")
def run(flows, tmp_path_factory) -> tuple[DetectionEngine, pl.DataFrame]:
    """The scenario in five-minute batches (as a live collector would close buckets)."""
    eng = _engine(tmp_path_factory.mktemp("volume"))
    return eng, _run(eng, flows, 5)


@pytest.fixture(scope="module")
def alarms(run) -> pl.DataFrame:
    return run[1].sort("method", "ts", "src_ip")


def _of(alarms: pl.DataFrame, src: str) -> pl.DataFrame:
    return alarms.filter(pl.col("src_ip") == src)


def _baseline(run: tuple[DetectionEngine, pl.DataFrame], src: str) -> dict | None:
    eng, _ = run
    assert eng.log_store is not None
    det = next(d for d in eng.detectors if d.method == "M9")
    rows = eng.log_store.read("comm", T0, _minute(END + 1)).filter(pl.col("src_ip") == src)
    key = rows.head(1).select(bl.key_hash(rows)).item()
    found = det.model["baseline"].filter(pl.col("_key") == key)
    return found.row(0, named=True) if found.height else None


def test_alarm_table_is_well_formed(alarms):
    assert alarms.schema == pl.Schema(ALARM_SCHEMA)
    assert (alarms.get_column("ts") >= _minute(LEARN)).all(), "nothing alarms while learning"
    assert alarms.get_column("score").is_between(0, 1).all()
    assert set(alarms.get_column("method")) == set(VOLUME)


def test_only_the_planned_communications_alarm(alarms):
    assert set(alarms.get_column("src_ip")) == {SENT, BOTH, DROP, BEAT}


def test_fifty_times_more_sent_fires_sent_and_total_overflow(alarms):
    got = _of(alarms, SENT)
    assert got.get_column("method").to_list() == ["M3", "M4"]
    for row in got.iter_rows(named=True):
        key = (row["site"], row["src_ip"], row["dst_ip"], row["dst_port"], row["proto"])
        assert key == ("default", SENT, SERVER, 8080, 6)
        assert row["ts"] == _minute(200) and row["ts_end"] == _minute(201)
        assert row["direction"] == "east-west"
        assert row["threshold"] == 4.0
    m3, m4 = got.row(0, named=True), got.row(1, named=True)
    assert m3["observed_value"] == 500.0
    assert m3["expected_value"] == pytest.approx(10.0, rel=1e-5)
    assert m4["observed_value"] == 510.0
    assert m4["expected_value"] == pytest.approx(20.0, rel=1e-5)
    z3 = (math.log(501) - math.log(11)) / bl.MIN_SPREAD_HI  # the spread floor: steady key
    assert m3["score"] == pytest.approx(1 - 4.0 / z3, rel=1e-4)
    assert m3["observed"] == "sent 500 packets in 1 min"
    assert m3["expected"] == "1-day baseline for this time of day: 10 packets (x/÷ 1.0)"
    assert m3["reason"] == (
        "10.0.0.1 -> 10.0.0.9:8080/tcp sent 500 packets in 1 min, above its 1-day baseline "
        "of 10 (robust z 7.6, threshold 4.0)"
    )
    assert m4["reason"] == (
        "10.0.0.1 -> 10.0.0.9:8080/tcp sent and received 510 packets in 1 min, above its "
        "1-day baseline of 20 (robust z 6.4, threshold 4.0)"
    )


def test_fifty_times_more_both_ways_fires_every_overflow(alarms):
    got = _of(alarms, BOTH)
    assert got.get_column("method").to_list() == list(OVER)
    assert (got.get_column("ts") == _minute(210)).all()
    by = {r["method"]: r for r in got.iter_rows(named=True)}
    assert by["M2"]["observed"] == "received 500 packets in 1 min"
    assert by["M5"]["observed_value"] == 1000.0, "M5 reports the total"
    assert "sent and received 1000 packets" in by["M5"]["reason"]
    assert by["M5"]["score"] == pytest.approx(min(by["M2"]["score"], by["M4"]["score"]))


def test_a_drop_of_a_regular_key_fires_underflow(alarms, run):
    got = _of(alarms, DROP)
    assert got.get_column("method").to_list() == list(UNDER)
    assert (got.get_column("ts") == _minute(230)).all()
    by = {r["method"]: r for r in got.iter_rows(named=True)}
    assert by["M6"]["observed_value"] == 10.0
    assert by["M6"]["expected_value"] == pytest.approx(40.0, rel=1e-5)
    assert by["M6"]["reason"].startswith(
        "10.0.0.3 -> 10.0.0.9:8082/tcp sent 10 packets in 1 min, below its 1-day baseline of 40"
    )
    assert "(robust z -8.8, threshold 4.0)" in by["M6"]["reason"]
    assert by["M9"]["observed_value"] == 20.0 and "sent and received 20" in by["M9"]["reason"]
    assert _baseline(run, DROP)["regular"] is True  # type: ignore[index]


def test_a_silent_heartbeat_alarms_once_per_silence(alarms, run):
    got = _of(alarms, BEAT)
    assert got.height == 2 * len(UNDER)
    allowed = 3 * 60  # max(2 x its longest gap of 60 s, 3 buckets)
    for method in UNDER:
        mine = got.filter(pl.col("method") == method)
        starts = [_minute(a) for a, _ in BEAT_OFF]
        assert mine.get_column("ts").to_list() == starts, method
        ends = [_minute(a + 4) for a, _ in BEAT_OFF]  # first boundary past the allowance
        assert mine.get_column("ts_end").to_list() == ends, method
        for row in mine.iter_rows(named=True):
            assert row["threshold"] == allowed and row["observed_value"] == 0.0
            assert row["expected_value"] == pytest.approx(8.0, rel=1e-5)
            assert row["score"] == 1.0
            assert row["observed"] == "silent for 240 s"
            assert row["expected"] == "active at least every 60 s (1-day history)"
            assert row["reason"] == (
                "10.0.0.4 -> 10.0.0.9:9100/tcp went silent: nothing for 240 s where it is "
                "normally active at least every 60 s"
            )
    model = _baseline(run, BEAT)
    assert model is not None and model["regular"] is True and model["gap_max"] == 60.0


def test_a_bursty_key_going_quiet_does_not_alarm(alarms, run):
    assert _of(alarms, BURSTY).height == 0
    model = _baseline(run, BURSTY)
    assert model is not None, "it has a baseline: its quiet is judged, and forgiven"
    assert model["regular"] is False
    assert model["gap_p99"] > bl.BaselineParams().regular_ratio * model["gap_med"]


def test_keys_without_enough_history_do_not_alarm(alarms, run):
    for src in (FEW, NEWBIE):
        assert _of(alarms, src).height == 0
        assert _baseline(run, src) is None


def test_overflow_needs_min_packets(alarms, run):
    """15 packets where 1 is usual is far above the baseline, but too few to matter."""
    assert _of(alarms, SMALL).height == 0
    eng, _ = run
    det = next(d for d in eng.detectors if d.method == "M3")
    rows = eng.log_store.read("comm", _minute(215), _minute(216))
    z = bl.z_scores(bl.with_metrics(rows), det.model["baseline"]).filter(pl.col("src_ip") == SMALL)
    row = z.row(0, named=True)
    assert row["pkts_out"] == 15 < det.settings.min_packets
    assert row["z_sent"] > row["thr_hi"]


@pytest.fixture(scope="module")
def hourly(flows, tmp_path_factory) -> pl.DataFrame:
    """The same flows in hour batches (as ``analyze`` feeds a file)."""
    return _run(_engine(tmp_path_factory.mktemp("hourly")), flows, 60)


def _same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    return a.sort(pl.all()).equals(b.sort(pl.all()))


def test_alarms_do_not_depend_on_batching(alarms, hourly):
    """Hour batches close buckets an hour at a time: a silence that begins and ends
    inside one closed range is still found, at the same bucket boundary."""
    assert hourly.filter(pl.col("src_ip") == BEAT).height == 2 * len(UNDER)
    assert _same(hourly, alarms)


def test_fixed_threshold_replaces_the_tuned_one(flows, tmp_path):
    eng = _engine(tmp_path, M3={"threshold": 8.0}, M4={"threshold": 2.0})
    got = _run(eng, flows, 60).filter(pl.col("src_ip") == SENT)
    assert got.get_column("method").to_list() == ["M4"], "z 7.6 < 8 for M3, 6.4 > 2 for M4"
    assert got.get_column("threshold").to_list() == [2.0]


def test_a_restart_during_a_silence_does_not_alarm_it_again(flows, alarms, tmp_path):
    """The live state remembers a silence was alarmed; a restart continues from it.

    Buckets stay open five minutes for late flows, so the first silence (alarmed at
    03:44) is noticed by the 03:45 batch; the restart comes before 04:00, while the
    heartbeat is still silent."""
    batches = _batches(flows, 15)
    cut = next(i for i, b in enumerate(batches) if b.item(0, "ts_start") >= _minute(240))
    first = _engine(tmp_path)
    before = [first.process(b) for b in batches[:cut]]
    assert pl.concat(before).filter(pl.col("src_ip") == BEAT).height == len(UNDER)
    first.checkpoint()
    second = _engine(tmp_path)
    after = [second.process(b) for b in batches[cut:]] + [second.finish()]
    assert _same(pl.concat(before + after), alarms)


def test_the_eight_detectors_share_one_core(run):
    """One baseline frame, one scoring per range and one live state for M2-M9."""
    eng, _ = run
    vols = [d for d in eng.detectors if d.method in VOLUME]
    assert len({id(d.core) for d in vols}) == 1  # type: ignore[attr-defined]
    assert len({id(d.model["baseline"]) for d in vols}) == 1  # type: ignore[attr-defined]
    lives = [d.state()["live"] for d in vols if d.method in UNDER]
    assert len(lives) == 4 and all(t is lives[0] for t in lives)
    assert all("live" not in d.state() for d in vols if d.method in OVER)
    assert lives[0].column_names == ["_key", "last", "alarmed"]  # 17 bytes a regular key


def test_the_order_of_the_detectors_does_not_change_their_alarms(flows, alarms, tmp_path):
    eng = _engine(tmp_path)
    eng.log_detectors.reverse()
    assert _same(_run(eng, flows, 5), alarms)


def test_a_silence_whose_key_left_the_log_is_counted_not_lost(flows, alarms, tmp_path, caplog):
    """A silent key is named from the log's rows of its last active bucket; if retention
    removed them, the silence is counted and logged, not raised nameless. (In one-minute
    batches the silence is noticed three ranges after the one holding that bucket.)"""
    batches = _batches(flows, 1)
    eng = _engine(tmp_path)
    cut = next(i for i, b in enumerate(batches) if b.item(0, "ts_start") >= _minute(226))
    got = [eng.process(b) for b in batches[:cut]]
    last = _minute(BEAT_OFF[0][0] - 1)  # BEAT's last bucket before its first silence
    hour = tmp_path / "behavior" / "view=comm" / f"date={last:%Y-%m-%d}" / f"hour={last:%H}"
    for f in hour.glob("*.parquet"):
        f.unlink()
    got += [eng.process(b) for b in batches[cut:]] + [eng.finish()]
    core = next(d for d in eng.detectors if d.method == "M9").core  # type: ignore[attr-defined]
    assert core.unnamed == 1
    assert "1 silences not reported" in caplog.text
    first = (pl.col("src_ip") == BEAT) & (pl.col("ts") == _minute(BEAT_OFF[0][0]))
    assert _same(pl.concat(got), alarms.filter(~first))
    assert alarms.filter(first).height == len(UNDER)


def test_the_scan_only_skips_rows_and_keys_the_exact_tests_would_pass_over(
    flows, alarms, run, tmp_path, monkeypatch
):
    """The numba scan sends only some rows (and keys) to the exact tests; with every row
    and every regular key sent, the alarms and the live state are the same."""
    from flowhawk.detectors import volume_scan

    sent = {"rows": 0, "of": 0, "keys": 0}
    candidates, quiet = volume_scan.Scan.candidates, volume_scan.Scan.quiet

    def every_row(self, idx, keyed, fixed, min_packets):  # type: ignore[no-untyped-def]
        sent["rows"] += int(candidates(self, idx, keyed, fixed, min_packets).sum())
        sent["of"] += keyed.height
        return np.ones(keyed.height, bool)

    def every_key(self, idx, keyed, live, b, until_us):  # type: ignore[no-untyped-def]
        maybe, active, kept = quiet(self, idx, keyed, live, b, until_us)
        sent["keys"] += int(maybe.sum())
        return self.regular.copy(), active, kept

    monkeypatch.setattr(volume_scan.Scan, "candidates", every_row)
    monkeypatch.setattr(volume_scan.Scan, "quiet", every_key)
    eng = _engine(tmp_path)
    assert _same(_run(eng, flows, 5), alarms)
    assert 0 < sent["rows"] < sent["of"] / 10 and sent["keys"] > 0
    core = next(d for d in eng.detectors if d.method == "M9").core  # type: ignore[attr-defined]
    fast = next(d for d in run[0].detectors if d.method == "M9").core  # type: ignore[attr-defined]
    assert core.live.sort("_key").equals(fast.live.sort("_key"))
