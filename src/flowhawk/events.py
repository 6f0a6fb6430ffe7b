"""Events: the alarms of one communication in one time window, merged, with a risk.

A communication is (site, client, server, server port, protocol); windows are
aligned to the epoch (``events.window``, default one hour). Each alarm contributes
``weight/100 * score`` (weight per method from its settings).

Evidence of one kind has diminishing returns: within a method's family (a method
alone, or related methods judging the same evidence, such as the clustering models
M10-M25: ``Detector.family``) the contributions are taken strongest first and the
k-th counts ``0.5**k`` as much (:func:`damped`), so a key that stays a little
unusual for sixty one-minute buckets, or one change that several related models all
see, does not add up to certainty. Families then combine like independent
probabilities: ``risk = 100 * (1 - prod_families(1 - f))``, where ``f`` combines the
family's damped contributions the same way. One strong alarm gives its weight;
different kinds of evidence agreeing push the risk towards 100. Event ids are a hash
of the communication and window, so the same input and configuration give the same
ids.
"""

from __future__ import annotations

import hashlib

import polars as pl

from flowhawk.config import Config
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.base import UTC_US
from flowhawk.groups import HostGroups

EVENT_KEY = ["site", "src_ip", "dst_ip", "dst_port", "proto", "window_start"]

ALARM_FIELDS = [
    "method",
    "name",
    "score",
    "observed",
    "expected",
    "threshold",
    "reason",
    "entity",
    "observed_value",
    "expected_value",
]


def method_families() -> dict[str, str]:
    """The risk family of every registered method (its own id unless it shares one)."""
    return {method: cls.family or method for method, cls in DETECTORS}


def damped(contribution: str, *group: str) -> pl.Expr:
    """``contribution`` scaled by ``0.5**k`` for the k-th strongest (from 0) per ``group``;
    the frame must already be sorted by the contribution, strongest first."""
    return pl.col(contribution) * 0.5 ** pl.int_range(pl.len()).over(*group)


def family_risk(frame: pl.DataFrame, contribution: str, *key: str) -> pl.DataFrame:
    """Risk 0-100 per ``key``: damped contributions per family, families combined.

    ``frame`` needs ``key``, ``method`` and ``contribution`` columns."""
    families = method_families()
    rows = frame.select(
        *key,
        pl.col(contribution).clip(0.0, 1.0),
        _family=pl.col("method").replace_strict(families, default=pl.col("method")),
    ).sort(contribution, descending=True, maintain_order=True)
    rows = rows.with_columns(_damped=damped(contribution, *key, "_family"))
    per_family = rows.group_by(*key, "_family").agg(_f=combine(pl.col("_damped")) / 100.0)
    return per_family.group_by(*key).agg(risk=combine(pl.col("_f")))


def method_weights(cfg: Config) -> dict[str, float]:
    """Risk weight of every registered method under ``cfg``."""
    return {
        method: cls.Settings.model_validate(cfg.detector_settings(method)).weight
        for method, cls in DETECTORS
    }


def correlate(alarms: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """The alarms after every enabled derived method (M28) derived its alarms from them."""
    derived = [
        cls
        for method, cls in DETECTORS
        if cls.derived and cls.Settings.model_validate(cfg.detector_settings(method)).enabled
    ]
    if not derived or alarms.height == 0:
        return alarms
    behavioral = [method for method, cls in DETECTORS if cls.learns and not cls.derived]
    df = with_window(alarms, cfg.events.window, "ts")
    for cls in derived:
        df = cls.correlate(df, EVENT_KEY, behavioral)
    return df.drop("window_start")


def with_window(df: pl.DataFrame, window_seconds: float, ts_col: str) -> pl.DataFrame:
    every = f"{max(1, round(window_seconds))}s"
    return df.with_columns(window_start=pl.col(ts_col).dt.truncate(every))


def contributions(alarms: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """Alarms with their window and risk contribution (0..1)."""
    weights = method_weights(cfg)
    df = with_window(alarms, cfg.events.window, "ts")
    return df.with_columns(
        contribution=(
            pl.col("method").replace_strict(weights, default=50.0, return_dtype=pl.Float64)
            / 100.0
            * pl.col("score").clip(0.0, 1.0)
        )
    )


def combine(contribution: pl.Expr) -> pl.Expr:
    """Risk 0-100 of independent contributions (an aggregation)."""
    return (100.0 * (1.0 - (1.0 - contribution.clip(0.0, 1.0)).log().sum().exp())).round(1)


def build_events(alarms: pl.DataFrame, cfg: Config) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(events, alarms with ``event_id`` and ``contribution``) from the alarms of a run."""
    if alarms.height == 0:
        return empty_events(), alarms.with_columns(
            event_id=pl.lit(None, pl.String),
            contribution=pl.lit(None, pl.Float64),
            window_start=pl.lit(None, UTC_US),
        )
    a = contributions(correlate(alarms, cfg), cfg)
    a = a.sort(["contribution", "method"], descending=[True, False], maintain_order=True)
    events = a.group_by(EVENT_KEY, maintain_order=True).agg(
        ts_start=pl.col("ts").min(),
        ts_end=pl.col("ts_end").max(),
        direction=pl.col("direction").first(),
        score=pl.col("score").max(),
        methods=pl.col("method").unique(maintain_order=True),
        reason=pl.col("reason").first(),
        alarms=pl.struct(ALARM_FIELDS),
    )
    order = events.columns
    order.insert(order.index("direction") + 1, "risk")
    events = events.join(
        family_risk(a, "contribution", *EVENT_KEY), on=EVENT_KEY, how="left", nulls_equal=True
    ).select(order)
    events = HostGroups(cfg).annotate(events, cfg.events.guarded_boost)
    events = events.filter(pl.col("risk") >= cfg.events.min_risk)
    events = events.with_columns(id=_ids(events)).sort(
        ["risk", "ts_start", "id"], descending=[True, False, False]
    )
    a = a.join(events.select([*EVENT_KEY, "id"]), on=EVENT_KEY, how="inner", nulls_equal=True)
    return events, a.rename({"id": "event_id"})


def _ids(events: pl.DataFrame) -> pl.Series:
    keys = events.select(
        pl.concat_str(
            [pl.col(c).cast(pl.String) for c in EVENT_KEY[:-1]]
            + [pl.col("window_start").dt.strftime("%Y-%m-%dT%H:%M:%S")],
            separator="|",
        )
    ).to_series()
    return pl.Series(
        "id", [hashlib.sha1(k.encode()).hexdigest()[:16] for k in keys.to_list()], pl.String
    )


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "site": pl.String,
            "src_ip": pl.String,
            "dst_ip": pl.String,
            "dst_port": pl.Int32,
            "proto": pl.Int16,
            "window_start": UTC_US,
            "ts_start": UTC_US,
            "ts_end": UTC_US,
            "direction": pl.String,
            "risk": pl.Float64,
            "score": pl.Float64,
            "methods": pl.List(pl.String),
            "reason": pl.String,
            "alarms": pl.List(
                pl.Struct(
                    {
                        "method": pl.String,
                        "name": pl.String,
                        "score": pl.Float64,
                        "observed": pl.String,
                        "expected": pl.String,
                        "threshold": pl.Float64,
                        "reason": pl.String,
                        "entity": pl.String,
                        "observed_value": pl.Float64,
                        "expected_value": pl.Float64,
                    }
                )
            ),
            "src_groups": pl.List(pl.String),
            "dst_groups": pl.List(pl.String),
            "guarded": pl.Boolean,
            "id": pl.String,
        }
    )
