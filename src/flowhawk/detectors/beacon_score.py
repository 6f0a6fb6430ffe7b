"""How regular a series of connections is: the beacon score of N1.

Input: *beats* per key (a pair of hosts and a service), each the start time of one
contact (connections closer than a burst gap already merged into one beat) and the
bytes it moved. Output per key: the period found, the jitter around it, how much of
the series is other traffic or missing beats, how regular the sizes are, and a score
in [0, 1].

Why not a plain dispersion of the intervals (as RITA's published score does with
Bowley skewness and the median absolute deviation of intervals in seconds):

* **period**: the median of the intervals *weighted by their length* (the interval a
  random moment of the series falls in). Short intervals of other traffic between
  beats (a user browsing the same server) are many but cover little time, so they
  do not pull the period down; missed beats make a few long intervals that do not
  dominate either;
* **missed beats**: each interval is read as ``k`` periods (``k = round(d / P)``), so
  an interval of two or three periods is a beat that did not happen, not an
  irregularity; the share of such intervals is a mild penalty. When beats are missed
  so often that double periods cover most of the time, the weighted median lands on
  them: half and a third of it are tried too, and the period that explains the series
  best (the score below without its count and size terms, and missed beats counting
  fully) is kept;
* **cycles of two**: malware that checks in twice a cycle (8 s, then 14 s, again and
  again) has two interval lengths but a regular sum; every-other-beat intervals are
  scored too and win when they explain the series clearly better (``per_cycle = 2``);
* **jitter** is relative: the median of ``|d / P - k|`` over the intervals, so a
  one-hour beacon jittered by ±10 minutes is as regular as a one-minute beacon
  jittered by ±10 seconds (an absolute deviation in seconds would call the first
  irregular). Random (Poisson) contacts give about 0.25, a beacon jittered uniformly
  by ±j about j / 2;
* **other traffic**: intervals shorter than half a period are contacts between the
  beats; their share is a penalty (traffic with no period at all has about 30 % of
  them, and its "missed beats" share is high too).

``score = count × regularity × (1 − other) × (1 − missed / 2) × (0.75 + 0.25 × sizes)``
where ``regularity = clip(1 − jitter / 0.25)^0.5``, ``sizes = clip(1 − size MAD /
median)`` and ``count = min(1, beats / (2 × min_beats))^0.5``. Keys with fewer than
``min_beats`` beats are not scored.
"""

from __future__ import annotations

import polars as pl

#: A two-beat cycle must explain a series this much better than single beats to win
#: (sums of two random intervals are smoother than one, so the cycle is not free).
_LAG2 = 0.85

#: Columns of :func:`beat_stats` besides the key.
STAT_COLUMNS = (
    "beats",
    "per_cycle",
    "first",
    "last",
    "period",
    "jitter",
    "other",
    "missed",
    "size",
    "size_dev",
    "score",
)


def beats_of(contacts: pl.DataFrame, key: list[str], burst_gap: float) -> pl.DataFrame:
    """Contacts (``key``, ``t`` in microseconds, ``bytes``) merged into beats: a contact
    starting within ``burst_gap`` seconds of the previous one of its key joins its beat
    (what N1 does as flows arrive, here over a whole table at once)."""
    gap = int(burst_gap * 1e6)
    prev = pl.col("t").shift(1).over(key)
    return (
        contacts.sort([*key, "t"])
        .with_columns(_beat=((pl.col("t") - prev > gap) | prev.is_null()).cum_sum().over(key))
        .group_by([*key, "_beat"], maintain_order=True)
        .agg(t=pl.col("t").min(), bytes=pl.col("bytes").sum())
        .drop("_beat")
    )


def beat_stats(beats: pl.DataFrame, key: list[str], min_beats: int = 10) -> pl.DataFrame:
    """Per key of ``beats`` (columns ``key``, ``t``: Int64 microseconds, ``bytes``) with
    at least ``min_beats`` beats: the regularity figures and the beacon score."""
    if beats.height == 0:
        return _empty(beats, key)
    df = beats.sort([*key, "t"]).with_columns(
        d=(pl.col("t") - pl.col("t").shift(1).over(key)).cast(pl.Float64) / 1e6
    )
    counted = df.group_by(key).agg(
        beats=pl.len(),
        first=pl.col("t").min(),
        last=pl.col("t").max(),
        size=pl.col("bytes").cast(pl.Float64).median(),
    )
    counted = counted.filter(pl.col("beats") >= max(min_beats, 3))
    if counted.height == 0:
        return _empty(beats, key)
    series = df.join(counted.select(key), on=key, how="semi")
    # Lag 1: the intervals between beats; lag 2: between every other beat, for malware
    # that checks in twice a cycle (8 s then 14 s, again and again).
    gaps = pl.concat(
        [
            series.filter(pl.col("d") > 0).with_columns(_lag=pl.lit(1)),
            series.with_columns(
                d=(pl.col("t") - pl.col("t").shift(2).over(key)).cast(pl.Float64) / 1e6,
                _lag=pl.lit(2),
            ).filter(pl.col("d") > 0),
        ]
    )
    lagkey = [*key, "_lag"]
    period = (
        gaps.sort([*lagkey, "d"])
        .with_columns(_cw=pl.col("d").cum_sum().over(lagkey), _tot=pl.col("d").sum().over(lagkey))
        .filter(pl.col("_cw") >= pl.col("_tot") / 2)
        .group_by(lagkey)
        .agg(period=pl.col("d").first())
    )
    # The period or a half or third of it: many missed beats make intervals of two
    # periods cover most of the time; the candidate that explains the series best wins.
    period = period.join(pl.DataFrame({"_m": [1, 2, 3]}), how="cross").with_columns(
        period=pl.col("period") / pl.col("_m")
    )
    x = pl.col("d") / pl.col("period")
    k = x.round(0).clip(lower_bound=1.0)
    gaps = gaps.join(period, on=lagkey).with_columns(_x=x, _k=k)
    shape = gaps.group_by([*lagkey, "_m"]).agg(
        pl.col("period").first(),
        other=(pl.col("_x") < 0.5).mean(),
        missed=((pl.col("_x") >= 0.5) & (pl.col("_k") >= 2)).sum().cast(pl.Float64)
        / (pl.col("_x") >= 0.5).sum().clip(lower_bound=1).cast(pl.Float64),
        jitter=(pl.col("_x") - pl.col("_k")).abs().filter(pl.col("_x") >= 0.5).median(),
    )
    fit = (
        (1.0 - pl.col("jitter").fill_null(0.5) / 0.25).clip(0.0, 1.0).sqrt()
        * (1.0 - pl.col("other"))
        * (1.0 - pl.col("missed"))
        * pl.when(pl.col("_lag") == 1).then(1.0).otherwise(_LAG2)
    )
    shape = (
        shape.with_columns(_fit=fit)
        .sort([*key, "_fit", "_lag", "_m"], descending=[*([False] * len(key)), True, False, False])
        .group_by(key, maintain_order=True)
        .first()
        .rename({"_lag": "per_cycle"})
        .drop("_m", "_fit")
    )
    sizes = (
        df.join(counted.select(*key, "size"), on=key)
        .group_by(key)
        .agg(_mad=(pl.col("bytes").cast(pl.Float64) - pl.col("size")).abs().median())
    )
    out = (
        counted.join(shape, on=key, how="left")
        .join(sizes, on=key, how="left")
        .with_columns(
            pl.col("jitter").fill_null(0.5),
            pl.col("other").fill_null(1.0),
            pl.col("missed").fill_null(1.0),
            pl.col("period").fill_null(0.0),
            size_dev=pl.when(pl.col("size") > 0)
            .then(pl.col("_mad") / pl.col("size"))
            .otherwise(0.0),
        )
    )
    regular = (1.0 - pl.col("jitter") / 0.25).clip(0.0, 1.0).sqrt()
    sizes_ok = (1.0 - pl.col("size_dev")).clip(0.0, 1.0)
    count = (pl.col("beats").cast(pl.Float64) / (2.0 * min_beats)).clip(upper_bound=1.0).sqrt()
    score = (
        count
        * regular
        * (1.0 - pl.col("other"))
        * (1.0 - pl.col("missed") / 2.0)
        * (0.75 + 0.25 * sizes_ok)
    )
    out = out.with_columns(
        score=pl.when(pl.col("period") > 0).then(score).otherwise(0.0).clip(0.0, 1.0)
    )
    return (
        out.with_columns(pl.col("per_cycle").cast(pl.Int32)).select(*key, *STAT_COLUMNS).sort(key)
    )


def _empty(beats: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    schema = {k: beats.schema[k] for k in key} | {
        "beats": pl.UInt32(),
        "per_cycle": pl.Int32(),
        "first": pl.Int64(),
        "last": pl.Int64(),
        **{c: pl.Float64() for c in STAT_COLUMNS[4:]},
    }
    return pl.DataFrame(schema=schema)
