"""Per-key volume baselines: levels, spreads, seasonality, self-tuned thresholds, regularity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from flowhawk.behavior import baseline as bl
from flowhawk.behavior.views import MEASURES

DAY = datetime(2024, 1, 1, tzinfo=UTC)
P = bl.BaselineParams()


def _rows(
    buckets: list[datetime], sent: list[int] | int, recv: list[int] | int, src: str
) -> pl.DataFrame:
    """Comm log rows of the key ``src`` -> 203.0.113.7:443/tcp."""
    n = len(buckets)
    sent = [sent] * n if isinstance(sent, int) else sent
    recv = [recv] * n if isinstance(recv, int) else recv
    return pl.DataFrame(
        {
            "bucket": buckets,
            "site": ["default"] * n,
            "src_ip": [src] * n,
            "dst_ip": ["203.0.113.7"] * n,
            "dst_port": [443] * n,
            "proto": [6] * n,
            "pkts_out": sent,
            "pkts_in": recv,
            **{m: [1] * n for m in MEASURES[2:-1]},
            "duration": [1.0] * n,
        },
        schema={
            "bucket": pl.Datetime("us", "UTC"),
            "site": pl.String,
            "src_ip": pl.String,
            "dst_ip": pl.String,
            "dst_port": pl.Int32,
            "proto": pl.Int16,
            **{m: pl.Int64 for m in MEASURES[:-1]},
            "duration": pl.Float64,
        },
    )


def _minutes(start: datetime, count: int, step: int = 1) -> list[datetime]:
    return [start + timedelta(minutes=m * step) for m in range(count)]


def _model_of(model: pl.DataFrame, rows: pl.DataFrame) -> dict:
    key = rows.head(1).select(bl.key_hash(rows)).item()
    found = model.filter(pl.col("_key") == key)
    assert found.height == 1, "the key has a baseline"
    return found.row(0, named=True)


def _has(model: pl.DataFrame, rows: pl.DataFrame) -> bool:
    key = rows.head(1).select(bl.key_hash(rows)).item()
    return model.filter(pl.col("_key") == key).height == 1


def _robust(x: np.ndarray) -> tuple[float, float]:
    med = float(np.median(x))
    return med, float(np.median(np.abs(x - med)) * bl.MAD_SCALE)


# -- levels and spreads ------------------------------------------------------------------------


def test_median_and_mad_of_log_packets():
    rng = np.random.default_rng(3)
    sent = rng.integers(50, 400, size=90).tolist()
    recv = rng.integers(5, 40, size=90).tolist()
    rows = _rows(_minutes(DAY, 90), sent, recv, "10.0.0.1")
    m = _model_of(bl.train(rows, DAY + timedelta(hours=2), 60, P), rows)
    for name, values in (
        ("sent", np.log1p(sent)),
        ("recv", np.log1p(recv)),
        ("total", np.log1p(np.add(sent, recv))),
    ):
        med, mad = _robust(values)
        assert m[f"{name}_med"] == pytest.approx(med, rel=1e-5), name
        assert m[f"{name}_mad"] == pytest.approx(mad, rel=1e-5), name
    assert m["n"] == 90 and m["bucket_s"] == 60
    assert m["first"] == DAY and m["last"] == DAY + timedelta(minutes=89)


def test_level_and_spread_are_robust_to_an_outlier():
    sent = [90, 95, 100, 105, 110] * 12  # 60 buckets around 100
    clean = _rows(_minutes(DAY, 60), sent, 10, "10.0.0.1")
    dirty = _rows(_minutes(DAY, 60), [*sent[:-1], 1_000_000], 10, "10.0.0.1")
    until = DAY + timedelta(hours=1)
    a = _model_of(bl.train(clean, until, 60, P), clean)
    b = _model_of(bl.train(dirty, until, 60, P), dirty)
    assert a["sent_med"] == pytest.approx(np.log1p(100), abs=1e-6)
    assert b["sent_med"] == pytest.approx(a["sent_med"], abs=0.03)
    assert b["sent_mad"] == pytest.approx(a["sent_mad"], abs=0.03)
    assert b["sent_mad"] < 0.15
    mean = np.log1p(dirty.get_column("pkts_out").to_numpy()).mean()
    assert mean > a["sent_med"] + 0.05, "a mean would have moved"


def test_recent_medians():
    days = [_rows(_minutes(DAY + timedelta(days=d), 24, 60), 99, 1, "10.0.0.1") for d in range(7)]
    last = _rows(_minutes(DAY + timedelta(days=7), 24, 60), 999, 1, "10.0.0.1")
    rows = pl.concat([*days, last])
    m = _model_of(bl.train(rows, DAY + timedelta(days=8), 60, P), rows)
    assert m["med_1d"] == pytest.approx(np.log1p(1000), rel=1e-6)
    assert m["med_7d"] == pytest.approx(np.log1p(100), rel=1e-6)
    assert m["total_med"] == pytest.approx(np.log1p(100), rel=1e-6)
    assert m["span_days"] == pytest.approx(8 - 1 / 24, rel=1e-5)


# -- seasonality -------------------------------------------------------------------------------


def _night_backup(days: int) -> pl.DataFrame:
    """A key every 10 minutes, ten times busier from 00:00 to 04:00 (day part 0)."""
    buckets = _minutes(DAY, days * 144, 10)
    sent = [1000 if b.hour < 4 else 100 for b in buckets]
    return _rows(buckets, sent, 0, "10.0.0.9")


def test_seasonal_offsets_per_day_part():
    rows = _night_backup(4)
    m = _model_of(bl.train(rows, DAY + timedelta(days=4), 600, P), rows)
    assert m["total_med"] == pytest.approx(np.log1p(100), rel=1e-6)
    assert m["off0"] == pytest.approx(np.log1p(1000) - np.log1p(100), rel=1e-5)
    assert [m[f"off{i}"] for i in range(1, bl.PARTS)] == [0.0] * (bl.PARTS - 1)


def test_no_seasonal_offsets_before_enough_days():
    rows = _night_backup(2)
    assert P.seasonal_days > 2
    m = _model_of(bl.train(rows, DAY + timedelta(days=2), 600, P), rows)
    assert [m[f"off{i}"] for i in range(bl.PARTS)] == [0.0] * bl.PARTS


def test_seasonal_offset_makes_the_usual_hour_normal():
    rows = _night_backup(4)
    model = bl.train(rows, DAY + timedelta(days=4), 600, P)
    busy = [DAY + timedelta(days=4, hours=1), DAY + timedelta(days=4, hours=13)]
    z = bl.z_scores(bl.with_metrics(_rows(busy, 1000, 0, "10.0.0.9")), model).sort("_part")
    night, noon = z.get_column("z_total").to_list()
    assert night == pytest.approx(0.0, abs=1e-5), "1000 packets at 01:00 is the usual backup"
    assert noon > 4.0, "the same 1000 packets at 13:00 is not"


# -- minimum history ---------------------------------------------------------------------------


def test_a_key_needs_min_history_active_buckets():
    short = _rows(_minutes(DAY, P.min_history - 1), 10, 10, "10.0.0.1")
    enough = _rows(_minutes(DAY, P.min_history), 10, 10, "10.0.0.2")
    model = bl.train(pl.concat([short, enough]), DAY + timedelta(hours=1), 60, P)
    assert model.height == 1
    assert not _has(model, short) and _has(model, enough)
    lower = bl.BaselineParams(min_history=5)
    assert bl.train(short, DAY + timedelta(hours=1), 60, lower).height == 1


def test_empty_or_too_short_history_gives_an_empty_typed_model():
    empty = bl.train(_rows([], 0, 0, "x").clear(), DAY, 60, P)
    short = bl.train(_rows(_minutes(DAY, 3), 1, 1, "10.0.0.1"), DAY, 60, P)
    trained = bl.train(_rows(_minutes(DAY, 40), 1, 1, "10.0.0.1"), DAY, 60, P)
    assert trained.height == 1
    for model in (empty, short):
        assert model.height == 0
        assert model.schema == trained.schema
    assert empty.schema["thr_hi"] == pl.Float32 and empty.schema["regular"] == pl.Boolean


# -- self-tuned thresholds ---------------------------------------------------------------------


def _alarm_rates(rows: pl.DataFrame, model: pl.DataFrame) -> tuple[float, float, dict]:
    m = _model_of(model, rows)
    z = bl.z_scores(bl.with_metrics(rows).select("_key", "_part", *bl.METRICS), model)
    hi = z.select(pl.max_horizontal("z_sent", "z_recv", "z_total")).to_series()
    lo = z.select(-pl.min_horizontal("lo_sent", "lo_recv", "lo_total")).to_series()
    return float((hi > m["thr_hi"]).mean()), float((lo > m["thr_lo"]).mean()), m  # type: ignore[arg-type]


def _long_history() -> pl.DataFrame:
    rng = np.random.default_rng(11)
    n = 2400  # more than 10 / budget buckets: the plain budget quantile
    sent = np.maximum(rng.lognormal(5, 0.8, n), 1).astype(int).tolist()
    recv = np.maximum(rng.lognormal(3, 1.2, n), 1).astype(int).tolist()
    return _rows(_minutes(DAY, n), sent, recv, "10.0.0.1")


@pytest.mark.parametrize("budget", [0.01, 0.05])
def test_threshold_is_the_budget_quantile_of_its_own_history(budget):
    rows = _long_history()
    p = bl.BaselineParams(budget=budget, floor=0.1)
    model = bl.train(rows, DAY + timedelta(days=2), 60, p)
    hi_rate, _, m = _alarm_rates(rows, model)
    z = bl.z_scores(bl.with_metrics(rows), model)
    hi = z.select(pl.max_horizontal("z_sent", "z_recv", "z_total")).to_series()
    lo = z.select(-pl.min_horizontal("lo_sent", "lo_recv", "lo_total")).to_series()
    assert m["thr_hi"] == pytest.approx(hi.quantile(1 - budget), rel=1e-5)
    assert m["thr_lo"] == pytest.approx(lo.quantile(1 - budget), rel=1e-5)
    assert m["thr_hi"] > 0.1 and m["thr_lo"] > 0.1, "the quantile, not the floor"
    one = 1 / rows.height
    assert budget - 2 * one <= hi_rate <= budget + one


@pytest.mark.parametrize("budget", [0.01, 0.05])
def test_threshold_allows_at_most_the_budget_of_its_own_history(budget):
    rows = _long_history()
    p = bl.BaselineParams(budget=budget, floor=0.1)
    hi_rate, lo_rate, _ = _alarm_rates(rows, bl.train(rows, DAY + timedelta(days=2), 60, p))
    assert hi_rate <= budget
    assert lo_rate <= budget


def test_threshold_with_little_history_stays_above_every_past_score():
    rng = np.random.default_rng(5)
    n = 200  # fewer than 10 / budget buckets: the tail is extrapolated
    sent = np.maximum(rng.lognormal(4, 1.0, n), 1).astype(int).tolist()
    rows = _rows(_minutes(DAY, n), sent, 7, "10.0.0.1")
    p = bl.BaselineParams(floor=0.1)
    model = bl.train(rows, DAY + timedelta(hours=4), 60, p)
    hi_rate, lo_rate, m = _alarm_rates(rows, model)
    assert hi_rate == 0.0 and lo_rate == 0.0
    z = bl.z_scores(bl.with_metrics(rows), model)
    hi = np.sort(z.select(pl.max_horizontal("z_sent", "z_recv", "z_total")).to_series())[::-1]
    # the tail beyond the 20 largest (10 %) past scores, extrapolated to the budget
    k, u = 20, hi[19]
    want = u + (hi[:k] - u).sum() / (k - 1) * np.log(k / (n * p.budget))
    assert m["thr_hi"] == pytest.approx(want, rel=1e-5)
    assert m["thr_hi"] > hi[0] * 1.25, "well above every past score"


def test_threshold_never_below_the_floor():
    rows = _rows(_minutes(DAY, 60), 100, 100, "10.0.0.1")  # identical buckets: z = 0
    m = _model_of(bl.train(rows, DAY + timedelta(hours=1), 60, P), rows)
    assert m["thr_hi"] == P.floor and m["thr_lo"] == P.floor
    assert m["sent_mad"] == 0.0


def test_z_scores_use_the_spread_floors():
    rows = _rows(_minutes(DAY, 60), 100, 100, "10.0.0.1")
    model = bl.train(rows, DAY + timedelta(hours=1), 60, P)
    probe = _rows([DAY + timedelta(hours=2)] * 2, [5000, 50], 100, "10.0.0.1")
    z = bl.z_scores(bl.with_metrics(probe), model).sort("sent")
    low, high = z.row(0, named=True), z.row(1, named=True)
    dev_hi = np.log1p(5000) - np.log1p(100)
    dev_lo = np.log1p(50) - np.log1p(100)
    assert high["z_sent"] == pytest.approx(dev_hi / bl.MIN_SPREAD_HI, rel=1e-5)
    assert low["lo_sent"] == pytest.approx(dev_lo / bl.MIN_SPREAD_LO, rel=1e-5)
    assert high["z_recv"] == pytest.approx(0.0, abs=1e-6)
    assert low["lo_sent"] < -P.floor, "half the usual packets is an underflow for a steady key"


# -- regularity --------------------------------------------------------------------------------


def test_periodic_key_is_regular():
    rows = _rows(_minutes(DAY, 288, 5), 12, 12, "10.0.0.1")  # every 5 minutes for a day
    m = _model_of(bl.train(rows, DAY + timedelta(days=1), 60, P), rows)
    assert m["regular"] is True
    assert m["gap_med"] == m["gap_p95"] == m["gap_max"] == 300.0
    assert m["coverage"] == pytest.approx(1.0)


def test_bursty_key_is_not_regular():
    rng = np.random.default_rng(2)
    buckets, t = [], DAY
    for _ in range(12):  # bursts of 10 minutes, hours apart
        buckets += _minutes(t, 10)
        t += timedelta(minutes=int(rng.integers(90, 400)))
    rows = _rows(buckets, 50, 50, "10.0.0.1")
    m = _model_of(bl.train(rows, t, 60, P), rows)
    assert m["regular"] is False
    assert m["gap_med"] == 60.0 and m["gap_max"] > 90 * 60
    assert m["coverage"] < P.regular_coverage


def test_office_hours_key_is_not_regular():
    """Active every minute from 08:00 to 16:00: steady gaps, but asleep most hours."""
    buckets = [b for d in range(3) for b in _minutes(DAY + timedelta(days=d, hours=8), 480)]
    rows = _rows(buckets, 30, 30, "10.0.0.1")
    m = _model_of(bl.train(rows, DAY + timedelta(days=3), 60, P), rows)
    assert m["gap_p99"] <= P.regular_ratio * m["gap_med"], "its gaps alone look regular"
    assert m["coverage"] < P.regular_coverage
    assert m["regular"] is False


def test_randomly_timed_key_is_not_regular():
    """Contacts at random times (a server's DNS lookups, about one every 2 minutes):
    active every hour, and 95 % of its gaps within 3x the median, but its longest gaps
    are not a heartbeat's: an hour-long quiet spell is ordinary for it, not a silence."""
    rng = np.random.default_rng(5)
    t = np.cumsum(rng.exponential(120.0, 3000))  # seconds, about 4 days
    minutes = np.unique((t // 60).astype(np.int64))
    buckets = [DAY + timedelta(minutes=int(m)) for m in minutes]
    rows = _rows(buckets, 2, 2, "10.0.0.1")
    m = _model_of(bl.train(rows, buckets[-1] + timedelta(minutes=1), 60, P), rows)
    assert m["coverage"] >= P.regular_coverage
    assert m["gap_p95"] <= P.regular_ratio * m["gap_med"] < m["gap_p99"]
    assert m["regular"] is False


def test_a_key_that_stopped_before_training_is_not_regular():
    rows = _rows(_minutes(DAY, 600), 5, 5, "10.0.0.1")  # every minute for 10 hours
    at_end = _model_of(bl.train(rows, DAY + timedelta(hours=10), 60, P), rows)
    later = _model_of(bl.train(rows, DAY + timedelta(hours=20), 60, P), rows)
    assert at_end["regular"] is True
    assert later["coverage"] == pytest.approx(0.5) and later["regular"] is False


def test_horizon_label():
    spans = pl.DataFrame({"d": [0.5, 1.9, 2.0, 13.9, 14.0, 30.0]})
    labels = spans.select(bl.horizon_label(pl.col("d"))).to_series().to_list()
    assert labels == ["1-day", "1-day", "7-day", "7-day", "30-day", "30-day"]


def test_keys_are_independent():
    a = _rows(_minutes(DAY, 60), 100, 10, "10.0.0.1")
    b = _rows(_minutes(DAY, 60), 5000, 10, "10.0.0.2")
    until = DAY + timedelta(hours=1)
    both = bl.train(pl.concat([a, b]), until, 60, P)
    assert both.height == 2
    alone = bl.train(a, until, 60, P)
    assert _model_of(both, a) == _model_of(alone, a)
    assert _model_of(both, b)["sent_med"] == pytest.approx(np.log1p(5000), rel=1e-6)
