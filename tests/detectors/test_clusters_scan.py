"""Scoring the clustering models (M10-M25) fast, with the results of the plain way.

Rows are put in key order by a radix spread (:mod:`~flowhawk.detectors.clusters_rows`),
a range is scored in one pass that only scores rows that can alarm
(:func:`~flowhawk.detectors.clusters_scan.scan`), and the velocity methods'
last vectors are merged rather than searched. Each is compared here with the plain
computation: a polars sort of the frame, every row scored then the alarm rule applied
with numpy, a search per key.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from flowhawk.behavior.views import MEASURES
from flowhawk.detectors import clusters_model as cm
from flowhawk.detectors.base import Batch
from flowhawk.detectors.clusters_features import key_hash, prepare
from flowhawk.detectors.clusters_live import NO_VECTORS, LastVectors, Previous
from flowhawk.detectors.clusters_scan import Rule, scan

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _log(keys: int, buckets: int, seed: int, fill: float = 0.7) -> pl.DataFrame:
    """Comm rows of ``keys`` communications over ``buckets`` minutes, each key active in
    about ``fill`` of them, in random row order; measures of every magnitude, zeros,
    counts past the lookup table, fractional durations, Int32 and Int64 columns."""
    rng = np.random.default_rng(seed)
    key = np.repeat(np.arange(keys), buckets)
    minute = np.tile(np.arange(buckets), keys)
    keep = rng.random(len(key)) < fill
    key, minute = key[keep], minute[keep]
    n = len(key)
    kind = key % 3  # three kinds of behavior, so that there are clusters to find
    scale = np.array([1.0, 100.0, 10_000.0])[kind] * rng.lognormal(0, 0.3, n)
    pkts = np.round(scale * rng.lognormal(0, 0.2, (2, n))).astype(np.int64)
    pkts[1, rng.random(n) < 0.1] = 0
    df = pl.DataFrame(
        {
            "bucket": pl.Series(
                [T0 + timedelta(minutes=int(m)) for m in minute], dtype=pl.Datetime("us", "UTC")
            ),
            "site": np.where(key % 7 == 0, "lab", "default"),
            "src_ip": [f"10.0.{k // 250}.{k % 250}" for k in key],
            "dst_ip": [f"198.51.100.{k % 5}" for k in key],
            "dst_port": pl.Series(443 + key % 2, dtype=pl.Int32),
            "proto": pl.Series(np.full(n, 6), dtype=pl.Int16),
            "pkts_out": pkts[0],
            "pkts_in": pkts[1],
            "bytes_out": pkts[0] * rng.integers(40, 1500, n),
            "bytes_in": pkts[1] * rng.integers(40, 1500, n),
            "flows": pl.Series(rng.integers(1, 70_000, n), dtype=pl.Int32),
            "peers": np.ones(n, dtype=np.int64),
            "ports": rng.integers(1, 5, n),
            "duration": np.where(rng.random(n) < 0.2, np.round(scale), scale * 0.37),
        }
    )
    return df[rng.permutation(n)]


def _prepare_plainly(rows: pl.DataFrame, view: str) -> dict[str, np.ndarray]:
    """The arrays of :func:`prepare`, by a polars sort of the whole frame."""
    df = (
        rows.lazy()
        .select(
            key_hash(view),
            pl.col("bucket").dt.epoch("s").alias("_b"),
            *[pl.col(m).cast(pl.Float32).log1p() for m in MEASURES],
        )
        .with_row_index("_row")
        .sort("_key", "_b")
        .collect()
    )
    keys = df.get_column("_key").to_numpy()
    new = np.ones(len(keys), dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    return {
        "order": df.get_column("_row").to_numpy().astype(np.int64),
        "keys": keys,
        "buckets": df.get_column("_b").to_numpy(),
        "X": df.select(MEASURES).to_numpy().astype(np.float32),
        "prev": np.where(new, -1, np.arange(len(keys)) - 1),
        "group": np.cumsum(new) - 1,
    }


@pytest.mark.parametrize("keys,buckets", [(1, 1), (2, 3), (300, 8), (5000, 3)])
def test_prepare_sorts_by_key_then_bucket_as_a_sort_of_the_frame_would(keys, buckets):
    rows = _log(keys, buckets, seed=keys, fill=1.0 if keys < 3 else 0.7)
    got, want = prepare(rows, "comm"), _prepare_plainly(rows, "comm")
    for name, plain in want.items():
        mine = getattr(got, name)
        assert mine.dtype == plain.dtype, name
        assert np.array_equal(mine, plain), name
    assert got.X.tobytes() == want["X"].tobytes(), "the same float32 bits"


def test_prepare_of_no_rows():
    rows = _log(3, 2, seed=0).clear()
    got = prepare(rows, "comm")
    assert got.n == 0 and got.X.shape == (0, len(MEASURES))


# -- scanning a range against a model ----------------------------------------------------------

P = cm.Params(min_clusters=2, max_clusters=4, budget=0.01, min_threshold=0.5)


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    return _log(400, 40, seed=1)


@pytest.fixture(scope="module")
def fresh() -> pl.DataFrame:
    """The next ten minutes of the same keys (and some new ones), busier; some keys
    move to the behavior of another kind."""
    rows = _log(450, 50, seed=2).filter(pl.col("bucket") >= T0 + timedelta(minutes=40))
    moved = pl.col("src_ip").str.ends_with("7")
    bigger = [pl.when(moved).then(pl.col(m) * 100).otherwise(pl.col(m) * 3) for m in PB]
    return rows.with_columns(bigger)


PB = ("pkts_out", "pkts_in", "bytes_out", "bytes_in")


def _alarming_plainly(
    model: cm.Model, prep, prev_l, live, rule: Rule
) -> tuple[np.ndarray, cm.Scores, np.ndarray]:
    """Every row scored, then the alarm rule in numpy: (alarming rows, scores, thresholds)."""
    s = model.score(prep, prev_l, live)
    p = rule.p
    thr = s.threshold if rule.fixed is None else np.full(prep.n, rule.fixed)
    if rule.per_row is not None:
        thr = np.where(np.isnan(rule.per_row), thr, rule.per_row)
    jumped = s.nearest != s.own
    jump = cm.jumps(jumped, s.used, s.history, s.value, p) if p.jumps else np.zeros(prep.n, bool)
    with np.errstate(invalid="ignore"):
        hit = s.known & (s.history >= p.min_history) & ((s.value > thr) | jump)
        hit &= s.value / (1.0 + s.value) >= rule.min_score
    return np.flatnonzero(hit), s, thr


def _live(prep, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored last vectors for about half the keys of ``prep`` (their first rows)."""
    rng = np.random.default_rng(seed)
    heads = prep.heads
    chosen = heads[rng.random(len(heads)) < 0.5]
    prev_l = np.full(prep.n, -1, dtype=np.int64)
    prev_l[chosen] = np.arange(len(chosen))
    live = (prep.X[chosen] * rng.uniform(0.5, 1.5, (len(chosen), 1))).astype(np.float32)
    return prev_l, live


RULES = {
    "tuned": dict(fixed=None, sites=None, jumps=True, min_score=0.0),
    "fixed": dict(fixed=0.7, sites=None, jumps=True, min_score=0.0),
    "jumps alone": dict(fixed=1e6, sites=None, jumps=True, min_score=0.0),
    "sites": dict(fixed=None, sites={"lab": 0.6}, jumps=True, min_score=0.0),
    "no jumps, min score": dict(fixed=None, sites=None, jumps=False, min_score=0.4),
}


@pytest.mark.parametrize("velocity", [False, True], ids=["magnitude", "velocity"])
@pytest.mark.parametrize("mixture", [False, True], ids=["k-means", "mixture"])
@pytest.mark.parametrize("how", list(RULES))
def test_scan_finds_the_rows_the_alarm_rule_picks(history, fresh, velocity, mixture, how):
    spec = cm.Spec("comm", velocity, mixture)
    params = P if not mixture else cm.Params(min_clusters=1, max_clusters=3, budget=0.01)
    r = RULES[how]
    params = cm.Params(**{**params.__dict__, "jumps": r["jumps"], "budget": 0.1})
    model = cm.Model.from_tables(spec, cm.train(history, spec, params, T0))
    assert model is not None
    prep = prepare(fresh, "comm")
    prev_l, live = _live(prep, seed=3) if velocity else (np.full(prep.n, -1), NO_VECTORS)
    per_row = None
    if r["sites"]:
        site = fresh.get_column("site").replace_strict(
            r["sites"], default=None, return_dtype=pl.Float64
        )
        per_row = np.ascontiguousarray(site.to_numpy()[prep.order])
    rule = Rule(params, r["fixed"], per_row, r["min_score"])
    idx, s, thr = _alarming_plainly(model, prep, prev_l, live, rule)
    assert 0 < len(idx) < prep.n / 2, "some rows alarm, not most"

    hits = scan(model, prep, Previous(prev_l, live, np.zeros(len(live), np.int64)), rule)
    assert np.array_equal(hits.idx, idx)
    assert hits.value.dtype == np.float32 and np.array_equal(hits.value, s.value[idx])
    assert np.array_equal(hits.threshold, thr[idx])
    assert np.array_equal(hits.nearest, s.nearest[idx])
    assert np.array_equal(hits.own, s.own[idx])
    assert np.array_equal(hits.history, s.history[idx])
    assert np.array_equal(hits.used, s.used[idx])


# -- the last vectors of velocity ----------------------------------------------------------------


def _batch(rows: pl.DataFrame) -> Batch:
    lo = rows.get_column("bucket").min()
    hi = rows.get_column("bucket").max() + timedelta(minutes=1)
    return Batch(pl.DataFrame(), {"comm": rows}, lo, hi, 60)  # type: ignore[arg-type]


def test_last_vectors_find_and_remember_as_searches_would(history, fresh):
    later = _log(500, 60, seed=4).filter(pl.col("bucket") >= T0 + timedelta(minutes=50))
    last = LastVectors("comm", 30 * 86400.0)
    member = object()
    last._steps.join(member)
    stored: dict[int, tuple[np.ndarray, int]] = {}
    for part in (history, fresh, later):
        prep = prepare(part, "comm")
        before = last.step(member, _batch(part), None)
        heads = set(prep.heads.tolist())
        for i in range(prep.n):
            j = before.prev[i]
            if i not in heads or int(prep.keys[i]) not in stored:
                assert j == -1
                continue
            vector, when = stored[int(prep.keys[i])]
            assert np.array_equal(before.vectors[j], vector) and before.times[j] == when
        for t in prep.tails:
            stored[int(prep.keys[t])] = (prep.X[t].copy(), int(prep.buckets[t]))
        keys = np.array(sorted(stored), dtype=np.uint64)
        assert np.array_equal(last.keys, keys)
        assert np.array_equal(last.vectors, np.array([stored[int(k)][0] for k in keys]))
        assert np.array_equal(last.times, np.array([stored[int(k)][1] for k in keys]))
