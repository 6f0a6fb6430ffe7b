"""M2-M9: volume overflow and underflow of a communication against its own baseline.

FlowScape's methods 2-9, on the communication view (client, server, server port,
protocol) of the behavioral log, per closed bucket:

- M2 / M3 / M4: packets received / sent / total above what the key's baseline allows
  (robust z-score above its self-tuned threshold, and at least ``min_packets``);
- M5: all three at once;
- M6 / M7 / M8: packets sent / received / total below it, for *regular* keys only
  (heartbeats, polls, reports: see :mod:`flowhawk.behavior.baseline`);
- M9: all three at once, which includes a regular key going silent: no bucket for
  longer than ``silence_gaps`` times the longest gap in its history (and at least
  ``silence_buckets`` buckets), detected when the buckets close, alarmed once per
  silence (M6-M8 fire with it, since nothing was sent or received).

The eight detectors share their baseline, the scoring of each closed range and the live
state of silences through one :class:`~flowhawk.detectors.volume_core.VolumeCore`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk import netaddr
from flowhawk.behavior import baseline as bl
from flowhawk.detectors.base import Batch, conform_alarms, empty_alarms
from flowhawk.detectors.behavior_base import BehaviorDetector, BehaviorSettings
from flowhawk.detectors.text import endpoint
from flowhawk.detectors.volume_core import RAW, CoreKey, VolumeCore

_WORD = {"sent": "sent", "recv": "received", "total": "sent and received"}


class VolumeSettings(BehaviorSettings):
    weight: float = Field(default=35.0, ge=0, le=100)
    min_history: int = Field(default=30, ge=3, description="Active buckets before a key alarms.")
    seasonal_days: float = Field(default=3.0, description="History needed for time-of-day offsets.")
    floor: float = Field(default=4.0, gt=0, description="Lowest self-tuned threshold (robust z).")
    threshold: float | None = Field(
        default=None, description="Fixed threshold (robust z) instead of the self-tuned one."
    )
    min_packets: int = Field(default=20, ge=0, description="Overflow needs at least this many.")
    regular_ratio: float = Field(
        default=3.0, description="Regular key: 99th-percentile gap <= this x median gap."
    )
    regular_coverage: float = Field(
        default=0.9, description="Regular key: active in at least this share of its hours."
    )
    silence_buckets: int = Field(default=3, ge=1, description="Shortest silence alarmed (buckets).")
    silence_gaps: float = Field(
        default=2.0, description="Silence: gap > this x the longest gap in its history."
    )


class VolumeDetector(BehaviorDetector):
    """One of M2-M9 (see the module docstring)."""

    Settings = VolumeSettings
    views = ("comm",)
    direction: ClassVar[str]  # "over" or "under"
    metrics: ClassVar[tuple[str, ...]]  # the metrics that must all breach

    def __init__(self, settings, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, context)
        s = self.settings
        assert isinstance(s, VolumeSettings)
        key = CoreKey(
            bl.BaselineParams(
                s.min_history,
                s.seasonal_days,
                s.false_alarm_budget,
                s.floor,
                s.regular_ratio,
                s.regular_coverage,
            ),
            s.horizon,
            s.retrain_every,
            s.threshold,
            s.min_packets,
            s.silence_gaps,
            s.silence_buckets,
        )
        self.core = VolumeCore.join(context, key, self, self.direction == "under")

    # -- model -------------------------------------------------------------------------

    def train(self, history_until: datetime) -> dict[str, pl.DataFrame]:
        model = self.core.baseline(history_until, lambda: self.history("comm", history_until))
        return {"baseline": model}

    # -- scoring -------------------------------------------------------------------------

    def detect(self, batch: Batch) -> pl.DataFrame:
        model = self.model.get("baseline")
        if model is None or model.height == 0:
            return empty_alarms()
        step = self.core.step(self, batch, model)
        alarms = []
        if step.candidates.height:
            alarms.append(self._breaches(step.candidates, batch.bucket_seconds))
        if self.direction == "under" and step.silent.height:
            alarms.append(self._silences(step.silent, batch.bucket_seconds))
        alarms = [a for a in alarms if a.height]
        return conform_alarms(pl.concat(alarms)) if alarms else empty_alarms()

    def observe(self, batch: Batch) -> None:
        self.core.step(self, batch, self.model.get("baseline"))

    def _breaches(self, z: pl.DataFrame, bucket: int) -> pl.DataFrame:
        if self.direction == "over":
            thr = self.core.threshold("thr_hi")
            hit = [self.core.over(m) for m in self.metrics]
            strength = pl.min_horizontal(*(pl.col(f"z_{m}") for m in self.metrics))
        else:
            thr = self.core.threshold("thr_lo")
            hit = [self.core.under(m) for m in self.metrics]
            strength = -pl.max_horizontal(*(pl.col(f"lo_{m}") for m in self.metrics))
        found = z.filter(pl.all_horizontal(*hit)).with_columns(_strength=strength, _thr=thr)
        if found.height == 0:
            return empty_alarms()
        return self._explain(found, bucket)

    def _explain(self, f: pl.DataFrame, bucket: int) -> pl.DataFrame:
        lead = self.metrics[0] if len(self.metrics) == 1 else "total"
        observed = RAW[lead]
        expected = (pl.col(f"{lead}_med") + pl.col("_season")).exp() - 1
        factor = pl.col(f"{lead}_mad").exp()
        horizon = bl.horizon_label(pl.col("span_days"))
        minutes = f"{bucket // 60} min" if bucket % 60 == 0 else f"{bucket} s"
        word = "above" if self.direction == "over" else "below"
        f = f.with_columns(_obs=observed.cast(pl.Float64), _exp=expected.cast(pl.Float64))
        return f.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=pl.col("bucket"),
            ts_end=pl.col("bucket") + timedelta(seconds=bucket),
            site="site",
            src_ip="src_ip",
            dst_ip="dst_ip",
            dst_port="dst_port",
            proto="proto",
            direction=pl.lit("any"),
            score=(1 - pl.col("_thr") / pl.col("_strength")).clip(0, 1),
            observed=pl.concat_str(
                [pl.lit(f"{_WORD[lead]} "), _fmt(pl.col("_obs")), pl.lit(f" packets in {minutes}")]
            ),
            expected=pl.concat_str(
                [
                    horizon,
                    pl.lit(" baseline for this time of day: "),
                    _fmt(pl.col("_exp")),
                    pl.lit(" packets (x/÷ "),
                    factor.round(1).cast(pl.String),
                    pl.lit(")"),
                ]
            ),
            observed_value=pl.col("_obs"),
            expected_value=pl.col("_exp"),
            threshold=pl.col("_thr").cast(pl.Float64),
            reason=pl.concat_str(
                [
                    pl.col("src_ip"),
                    pl.lit(" -> "),
                    endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto")),
                    pl.lit(f" {_WORD[lead]} "),
                    _fmt(pl.col("_obs")),
                    pl.lit(f" packets in {minutes}, {word} its "),
                    horizon,
                    pl.lit(" baseline of "),
                    _fmt(pl.col("_exp")),
                    pl.lit(" (robust z "),
                    (pl.col("_strength") * (1 if self.direction == "over" else -1))
                    .round(1)
                    .cast(pl.String),
                    pl.lit(", threshold "),
                    pl.col("_thr").round(1).cast(pl.String),
                    pl.lit(")"),
                ]
            ),
        ).pipe(self._with_direction)

    def _silences(self, silent: pl.DataFrame, b: int) -> pl.DataFrame:
        quiet_from = pl.col("last") + timedelta(seconds=b)
        allowed = pl.col("_allowed")
        gap = (pl.col("_det") - quiet_from).dt.total_seconds()
        horizon = bl.horizon_label(pl.col("span_days"))
        usual = pl.col("gap_max").round(0).cast(pl.Int64).cast(pl.String)
        return silent.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=quiet_from,
            ts_end=pl.col("_det").cast(pl.Datetime("us", "UTC")),
            site="site",
            src_ip="src_ip",
            dst_ip="dst_ip",
            dst_port="dst_port",
            proto="proto",
            direction=pl.lit("any"),
            score=pl.lit(1.0),
            observed=pl.concat_str(
                [pl.lit("silent for "), gap.round(0).cast(pl.Int64).cast(pl.String), pl.lit(" s")]
            ),
            expected=pl.concat_str(
                [
                    pl.lit("active at least every "),
                    usual,
                    pl.lit(" s ("),
                    horizon,
                    pl.lit(" history)"),
                ]
            ),
            observed_value=pl.lit(0.0),
            expected_value=(pl.col("total_med").exp() - 1).cast(pl.Float64),
            threshold=allowed.cast(pl.Float64),
            reason=pl.concat_str(
                [
                    pl.col("src_ip"),
                    pl.lit(" -> "),
                    endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto")),
                    pl.lit(" went silent: nothing for "),
                    gap.round(0).cast(pl.Int64).cast(pl.String),
                    pl.lit(" s where it is normally active at least every "),
                    usual,
                    pl.lit(" s"),
                ]
            ),
        ).pipe(self._with_direction)

    def _with_direction(self, alarms: pl.DataFrame) -> pl.DataFrame:
        if alarms.height == 0:
            return alarms
        ips = pl.concat([alarms.get_column("src_ip"), alarms.get_column("dst_ip")]).unique()
        hi, lo, _ = netaddr.parse(ips)
        inside = self.context.internal.contains(hi, lo) | self.context.local_scope.contains(hi, lo)
        table = pl.DataFrame({"ip": ips, "in": inside})
        out = netaddr.join_endpoints(alarms, table, {"in": "_{side}_in"})
        return out.with_columns(
            direction=pl.when(pl.col("_src_in") & pl.col("_dst_in"))
            .then(pl.lit("east-west"))
            .when(pl.col("_src_in") | pl.col("_dst_in"))
            .then(pl.lit("north-south"))
            .otherwise(pl.lit("external"))
        ).drop("_src_in", "_dst_in")

    # -- state: the core holds one baseline and one live state for the group -----------

    def live_state(self) -> dict[str, pa.Table]:
        return self.core.live_tables() if self.direction == "under" else {}

    def load_state(self, state: dict[str, pa.Table]) -> None:
        super().load_state(state)
        model = self.model.get("baseline")
        if model is not None:
            self.model["baseline"] = self.core.adopt(self.trained_until, model)

    def load_live_state(self, state: dict[str, pa.Table]) -> None:
        if self.direction == "under":
            self.core.load_live(state)


def _fmt(x: pl.Expr) -> pl.Expr:
    """A count for people: 48,213 or 1.2 M."""
    return (
        pl.when(x >= 1e6)
        .then(pl.concat_str([(x / 1e6).round(1).cast(pl.String), pl.lit(" M")]))
        .otherwise(x.round(0).cast(pl.Int64).cast(pl.String))
    )


def _make(
    method: str, title: str, direction: str, metrics: tuple[str, ...], weight: float
) -> type[VolumeDetector]:
    settings = type(
        f"{method}Settings",
        (VolumeSettings,),
        {
            "__annotations__": {"weight": float},
            "weight": Field(default=weight, ge=0, le=100),
        },
    )
    return type(
        f"Volume{method}",
        (VolumeDetector,),
        {
            "method": method,
            "title": title,
            "direction": direction,
            "family": "M2-M5" if direction == "over" else "M6-M9",
            "metrics": metrics,
            "Settings": settings,
            "__doc__": f"{method}: {title}.",
        },
    )


OVERFLOW_RECEIVED = _make("M2", "overflow: packets received", "over", ("recv",), 35.0)
OVERFLOW_SENT = _make("M3", "overflow: packets sent", "over", ("sent",), 35.0)
OVERFLOW_TOTAL = _make("M4", "overflow: total packets", "over", ("total",), 30.0)
OVERFLOW_ALL = _make(
    "M5", "overflow: sent, received and total", "over", ("sent", "recv", "total"), 45.0
)
UNDERFLOW_SENT = _make("M6", "underflow: packets sent", "under", ("sent",), 25.0)
UNDERFLOW_RECEIVED = _make("M7", "underflow: packets received", "under", ("recv",), 25.0)
UNDERFLOW_TOTAL = _make("M8", "underflow: total packets", "under", ("total",), 25.0)
UNDERFLOW_ALL = _make(
    "M9",
    "underflow: sent, received and total (or silent)",
    "under",
    ("sent", "recv", "total"),
    40.0,
)
VOLUME_DETECTORS = (
    OVERFLOW_RECEIVED,
    OVERFLOW_SENT,
    OVERFLOW_TOTAL,
    OVERFLOW_ALL,
    UNDERFLOW_SENT,
    UNDERFLOW_RECEIVED,
    UNDERFLOW_TOTAL,
    UNDERFLOW_ALL,
)
