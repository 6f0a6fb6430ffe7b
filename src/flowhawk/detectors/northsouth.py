"""M28 and M29: north-south traffic with a high-risk external side.

A north-south flow (one side internal) whose external side threat intelligence rates
high risk (reputation below ``high_risk``, 20 by default as in the seed) is an M29
alarm: "high risk on otherwise normal traffic". When the events are built, an M29
alarm whose communication also has an alarm from a detector that learned normal
behavior (M1-M25 and any other ``learns = True`` method) in the same event window
becomes M28, "high risk on anomalous traffic", and weighs more. That decision needs
every alarm of the window, which only the event builder sees (in a file run at the
end, live each time the window's event is rebuilt), so M28 has no flow logic of its
own: :meth:`HighRiskAnomalous.correlate` relabels. With M28 disabled M29 stays M29;
M28 needs M29 to run (give M29 weight 0 to keep M28 alone).

The score is ``1 - reputation / 100``; the entity is the internal host, the one an
analyst has to look at.
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from flowhawk.detectors.base import (
    Batch,
    DetectorSettings,
    StatelessDetector,
    comm_columns,
    conform_alarms,
    empty_alarms,
)
from flowhawk.detectors.intel import listed_values, listings
from flowhawk.normalize.context import NORTH_SOUTH


class HighRiskSettings(DetectorSettings):
    weight: float = Field(default=70.0, ge=0, le=100)
    high_risk: int = Field(
        default=20,
        ge=1,
        le=100,
        description="External addresses with a reputation below this are high risk.",
    )


class AnomalousHighRiskSettings(DetectorSettings):
    weight: float = Field(default=90.0, ge=0, le=100)


class HighRiskNormal(StatelessDetector):
    """M29: a north-south flow whose external side is high risk."""

    method = "M29"
    title = "high risk, otherwise normal"
    Settings = HighRiskSettings

    def score(self, batch: Batch) -> pl.DataFrame:
        assert isinstance(self.settings, HighRiskSettings)
        intel = self.context.intel
        flows = batch.flows.filter(pl.col("direction") == NORTH_SOUTH)
        if intel is None or len(intel) == 0 or flows.height == 0:
            return empty_alarms()
        flows = flows.with_columns(
            _ext=pl.when(pl.col("src_internal")).then("dst_ip").otherwise("src_ip"),
            _int=pl.when(pl.col("src_internal")).then("src_ip").otherwise("dst_ip"),
            _side=pl.when(pl.col("src_internal"))
            .then(pl.lit("server"))
            .otherwise(pl.lit("client")),
        )
        hits = listed_values(intel, flows.get_column("_ext"), "_ext").filter(
            pl.col("reputation") < self.settings.high_risk
        )
        if hits.height == 0:
            return empty_alarms()
        hits = hits.join(listings(intel, hits), on="indicator", how="left")
        listed = flows.join(hits, on="_ext", how="inner")
        rep = pl.col("reputation").cast(pl.String)
        risky = pl.concat_str([pl.lit("high-risk "), pl.col("_side"), pl.lit(" "), pl.col("_ext")])
        alarms = listed.select(
            **comm_columns(self.method, self.title),
            score=1.0 - pl.col("reputation").cast(pl.Float64) / 100.0,
            entity=pl.col("_int"),
            observed=pl.concat_str([risky, pl.lit(", reputation "), rep]),
            expected=pl.lit(f"reputation {self.settings.high_risk} or more"),
            observed_value=pl.col("reputation").cast(pl.Float64),
            expected_value=pl.lit(float(self.settings.high_risk)),
            threshold=pl.lit(float(self.settings.high_risk)),
            reason=pl.concat_str(
                [
                    pl.col("_int"),
                    pl.lit(" talked to "),
                    risky,
                    pl.lit(" (reputation "),
                    rep,
                    pl.lit(f" < {self.settings.high_risk}; "),
                    pl.col("_listing"),
                    pl.lit(")"),
                ]
            ),
        )
        alarms = alarms.sort("ts", "src_ip", "dst_ip", maintain_order=True)
        return conform_alarms(alarms.filter(pl.col("score") >= self.settings.min_score))


class HighRiskAnomalous(StatelessDetector):
    """M28: M29's high-risk traffic, on a communication that is also anomalous."""

    method = "M28"
    title = "high risk, anomalous"
    Settings = AnomalousHighRiskSettings
    #: Derived when events are built from the alarms of a whole window (not from flows).
    derived = True

    def score(self, batch: Batch) -> pl.DataFrame:
        return empty_alarms()

    @staticmethod
    def correlate(alarms: pl.DataFrame, key: list[str], behavioral: list[str]) -> pl.DataFrame:
        """``alarms`` (with the event ``key`` columns) where each M29 alarm that shares its
        key with an alarm of a ``behavioral`` method became M28, its reason naming those
        alarms; the other M29 alarms say the traffic is otherwise normal."""
        m29 = pl.col("method") == HighRiskNormal.method
        if alarms.height == 0 or not alarms.select(m29.any()).item():
            return alarms
        anomalous = (
            alarms.filter(pl.col("method").is_in(behavioral))
            .group_by(key)
            .agg(_why=pl.col("method").unique().sort().str.join(", "))
        )
        df = alarms.join(anomalous, on=key, how="left", nulls_equal=True, maintain_order="left")
        is28 = m29 & pl.col("_why").is_not_null()
        return df.with_columns(
            method=pl.when(is28).then(pl.lit(HighRiskAnomalous.method)).otherwise("method"),
            name=pl.when(is28).then(pl.lit(HighRiskAnomalous.title)).otherwise("name"),
            reason=pl.when(is28)
            .then(pl.concat_str([pl.col("reason"), pl.lit("; also anomalous: "), pl.col("_why")]))
            .when(m29)
            .then(pl.concat_str([pl.col("reason"), pl.lit("; otherwise normal")]))
            .otherwise("reason"),
        ).drop("_why")
