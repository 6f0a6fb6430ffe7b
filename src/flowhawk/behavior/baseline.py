"""Per-key volume baselines of the communication view, learned from the behavioral log.

For every communication with enough history (``min_history`` active buckets):

- level: median and MAD of ``log1p`` packets sent, received and total over its active
  buckets in the longest horizon it has (up to 30 days), and the medians of total
  packets over the last 1, 7 and 30 days, for explanations;
- seasonality: once it has ``seasonal_days`` of history, an offset of its level for
  each 4-hour part of the day (robust: the median of the part minus the overall median),
  so a backup at night or office hours are normal at their time;
- a threshold tuned to the false-alarm budget on the key's own history: the robust
  z-scores of its past buckets are computed against this very baseline and the
  threshold is their ``1 - budget`` quantile, never below a floor;
- regularity: the median, 95th, 99th percentile and largest gaps between its active
  buckets, and the share of the hours from its first bucket to the training time in
  which it was active; a key is regular when it
  was active in at least ``regular_coverage`` of those hours and its 99th percentile gap
  is at most ``regular_ratio`` times the median: heartbeats, polls, reports, not office
  traffic that sleeps at night, nor contacts at random times (a server's DNS lookups),
  whose rare long gaps are ordinary. Underflow and silence apply to regular keys only.
- thresholds where the history is too short to hold the budget (fewer than
  ``10 / budget`` buckets): the budget quantile would be about the largest past score,
  which a new bucket of the same behavior beats with probability 1/n, so the tail is
  extrapolated instead (peaks over threshold, as in SPOT): an exponential tail fitted
  to the k largest scores (10 % of them, 5-200) gives ``u + mean excess x
  ln(k / (n x budget))``, ``u`` the k-th largest, never below the largest past score.

Keys are identified by a 64-bit hash of the view's key columns (collisions: about
n^2/2^65 pairs), so the model table holds numbers only: about 100 bytes per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from flowhawk.behavior.views import COMM

KEY_SEED = 0xBA5E
MAD_SCALE = 1.4826
#: Minimum spread (log units) for overflow: a key whose buckets are nearly alike still
#: tolerates e^(floor * 0.5) ~ 7x at the default floor before it can overflow (bursts of
#: a few flows are normal for sparse keys).
MIN_SPREAD_HI = 0.5
#: Minimum spread for underflow, which is judged on regular keys only (stable by
#: definition): with the default floor, a drop to about a half alarms.
MIN_SPREAD_LO = 0.15
PARTS = 6  # 4-hour parts of the day
METRICS = ("sent", "recv", "total")


@dataclass(frozen=True)
class BaselineParams:
    min_history: int = 30  # active buckets before a key can alarm
    seasonal_days: float = 3.0
    budget: float = 0.001
    floor: float = 4.0  # smallest robust z a threshold may be
    regular_ratio: float = 3.0
    regular_coverage: float = 0.9


def key_hash(df: pl.DataFrame, key: tuple[str, ...] = COMM.key) -> pl.Expr:
    return pl.struct([pl.col(k) for k in key]).hash(KEY_SEED).alias("_key")


def with_metrics(rows: pl.DataFrame) -> pl.DataFrame:
    """``_key``, ``_part`` (4-hour part of the day) and log1p of sent/recv/total packets."""
    return with_metric_values(keyed(rows))


def keyed(rows: pl.DataFrame) -> pl.DataFrame:
    """``_key`` and ``_part`` (4-hour part of the day)."""
    return rows.with_columns(key_hash(rows), _part=(pl.col("bucket").dt.hour() // 4).cast(pl.Int8))


def with_metric_values(rows: pl.DataFrame) -> pl.DataFrame:
    """log1p of sent/recv/total packets."""
    return rows.with_columns(
        sent=pl.col("pkts_out").log1p(),
        recv=pl.col("pkts_in").log1p(),
        total=(pl.col("pkts_out") + pl.col("pkts_in")).log1p(),
    )


def train(
    history: pl.DataFrame, until: datetime, bucket_seconds: int, p: BaselineParams
) -> pl.DataFrame:
    """One row per key with enough history: levels, spreads, offsets, threshold, gaps."""
    if history.height == 0:
        return _empty()
    h = with_metrics(history)
    span = (pl.col("bucket").max() - pl.col("bucket").min()).dt.total_seconds()
    stats = (
        h.group_by("_key")
        .agg(
            pl.len().cast(pl.Int32).alias("n"),
            pl.col("bucket").min().alias("first"),
            pl.col("bucket").max().alias("last"),
            (span / 86400.0).cast(pl.Float32).alias("span_days"),
            *[pl.col(m).median().alias(f"{m}_med") for m in METRICS],
            _recent("total", until, 1).alias("med_1d"),
            _recent("total", until, 7).alias("med_7d"),
            _gaps().median().alias("gap_med"),
            _gaps().quantile(0.95).alias("gap_p95"),
            _gaps().quantile(0.99).alias("gap_p99"),
            _gaps().max().alias("gap_max"),
            # hours active / hours from its first bucket to the training time (a key that
            # went quiet before training does not cover those hours)
            (pl.col("bucket").dt.truncate("1h").n_unique() / _hours_to(until))
            .cast(pl.Float32)
            .alias("coverage"),
        )
        .filter(pl.col("n") >= p.min_history)
    )
    if stats.height == 0:
        return _empty()
    h = h.join(stats.select("_key", *(f"{m}_med" for m in METRICS), "span_days"), on="_key")
    spread = h.group_by("_key").agg(
        *[
            ((pl.col(m) - pl.col(f"{m}_med")).abs().median() * MAD_SCALE).alias(f"{m}_mad")
            for m in METRICS
        ]
    )
    seasonal = (
        h.filter(pl.col("span_days") >= p.seasonal_days)
        .group_by("_key", "_part")
        .agg((pl.col("total") - pl.col("total_med")).median().alias("off"), pl.len().alias("c"))
        .filter(pl.col("c") >= 3)
        .pivot(on="_part", index="_key", values="off")
    )
    offsets = [f"off{i}" for i in range(PARTS)]
    seasonal = seasonal.rename({c: f"off{c}" for c in seasonal.columns if c != "_key"})
    for c in offsets:
        if c not in seasonal.columns:
            seasonal = seasonal.with_columns(pl.lit(None, pl.Float64).alias(c))
    model = stats.join(spread, on="_key").join(
        seasonal.select("_key", *offsets), on="_key", how="left"
    )
    model = model.with_columns([pl.col(c).fill_null(0.0) for c in offsets])
    # The model is stored as float32: tune against exactly what will be stored.
    stored32 = [c for c in model.columns if _TYPES.get(c) == pl.Float32()]
    model = model.with_columns([pl.col(c).cast(pl.Float32).cast(pl.Float64) for c in stored32])
    # Self-tuning: each key's own past z-scores against this baseline.
    past = z_scores(h.select("_key", "_part", *METRICS), model)
    hi = pl.max_horizontal(*(f"z_{m}" for m in METRICS))
    lo = -pl.min_horizontal(*(f"lo_{m}" for m in METRICS))
    tuned = past.group_by("_key").agg(
        tail_threshold(hi, p.budget).alias("thr_hi"), tail_threshold(lo, p.budget).alias("thr_lo")
    )
    model = model.join(tuned, on="_key").with_columns(
        pl.col("thr_hi").clip(lower_bound=p.floor),
        pl.col("thr_lo").clip(lower_bound=p.floor),
        regular=(pl.col("gap_p99") <= p.regular_ratio * pl.col("gap_med"))
        & (pl.col("coverage") >= p.regular_coverage),
        bucket_s=pl.lit(bucket_seconds, pl.Int32),
    )
    model = model.with_columns(
        thr_hi=_up32(model.get_column("thr_hi")), thr_lo=_up32(model.get_column("thr_lo"))
    )
    return model.select(_COLUMNS).cast(_TYPES)


def tail_threshold(score: pl.Expr, budget: float) -> pl.Expr:
    """The ``1 - budget`` quantile of a key's past scores when they hold at least ten
    scores above it; else extrapolated from an exponential tail fitted to its k largest
    scores (peaks over threshold, k = 10 % of them within 5-200): the k-th largest ``u``
    plus the mean excess over it times ``ln(k / (n * budget))``, never below the
    largest past score."""
    n = pl.len().cast(pl.Float64)
    k = (n * 0.1).round().clip(5, 200).cast(pl.Int64)
    top = score.top_k(k)
    u = top.min()
    excess = (top.sum() - u * top.len()) / (top.len() - 1).clip(lower_bound=1)
    reach = (k.cast(pl.Float64) / (n * budget)).log().clip(lower_bound=0.0)
    return (
        pl.when(n * budget >= 10)
        .then(score.quantile(1 - budget))
        .otherwise(pl.max_horizontal(u + excess * reach, score.max()))
    )


def _up32(x: pl.Series) -> pl.Series:
    """The float32 nearest each value that is not below it (a threshold rounded down
    would let the bucket at the budget quantile, and its ties, alarm)."""
    v = x.to_numpy().astype(np.float64)
    y = v.astype(np.float32)
    low = y.astype(np.float64) < v
    y[low] = np.nextafter(y[low], np.float32(np.inf))
    return pl.Series(x.name, y)


def _recent(metric: str, until: datetime, days: int) -> pl.Expr:
    return pl.col(metric).filter(pl.col("bucket") >= until - timedelta(days=days)).median()


def _hours_to(until: datetime) -> pl.Expr:
    seconds = (pl.lit(until) - pl.col("bucket").min()).dt.total_seconds()
    return (seconds / 3600.0).ceil().clip(lower_bound=1)


def _gaps() -> pl.Expr:
    """Seconds between a key's consecutive active buckets."""
    return pl.col("bucket").sort().diff().dt.total_seconds()


def z_scores(rows: pl.DataFrame, model: pl.DataFrame) -> pl.DataFrame:
    """Rows (``_key``, ``_part``, metrics) joined to their baseline, with robust z-scores."""
    offsets = [f"off{i}" for i in range(PARTS)]
    j = rows.join(model, on="_key", how="inner")
    season = pl.coalesce(
        *[pl.when(pl.col("_part") == i).then(pl.col(f"off{i}")) for i in range(PARTS)],
        pl.lit(0.0),
    )
    j = j.with_columns(_season=season).drop(offsets)
    dev = {m: pl.col(m) - pl.col(f"{m}_med") - pl.col("_season") for m in METRICS}
    return j.with_columns(
        # z_*: for overflow (wide spread floor); lo_*: for underflow (tight floor)
        *[
            (dev[m] / pl.col(f"{m}_mad").clip(lower_bound=MIN_SPREAD_HI)).alias(f"z_{m}")
            for m in METRICS
        ],
        *[
            (dev[m] / pl.col(f"{m}_mad").clip(lower_bound=MIN_SPREAD_LO)).alias(f"lo_{m}")
            for m in METRICS
        ],
    )


_TYPES: dict[str, pl.DataType] = {
    "_key": pl.UInt64(),
    "n": pl.Int32(),
    "first": pl.Datetime("us", "UTC"),
    "last": pl.Datetime("us", "UTC"),
    "span_days": pl.Float32(),
    **{f"{m}_med": pl.Float32() for m in METRICS},
    **{f"{m}_mad": pl.Float32() for m in METRICS},
    "med_1d": pl.Float32(),
    "med_7d": pl.Float32(),
    **{f"off{i}": pl.Float32() for i in range(PARTS)},
    "gap_med": pl.Float32(),
    "gap_p95": pl.Float32(),
    "gap_p99": pl.Float32(),
    "gap_max": pl.Float32(),
    "coverage": pl.Float32(),
    "thr_hi": pl.Float32(),
    "thr_lo": pl.Float32(),
    "regular": pl.Boolean(),
    "bucket_s": pl.Int32(),
}
_COLUMNS = list(_TYPES)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=_TYPES)


def horizon_label(span_days: pl.Expr) -> pl.Expr:
    """Which baseline horizon a key's history supports: 1, 7 or 30 days."""
    return (
        pl.when(span_days >= 14)
        .then(pl.lit("30-day"))
        .when(span_days >= 2)
        .then(pl.lit("7-day"))
        .otherwise(pl.lit("1-day"))
    )
