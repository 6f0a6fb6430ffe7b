"""N3: targeted or random, for external sources reaching into the network.

An external address that opens connections to many internal hosts (``min_targets`` in a
window) is probing the network. Whether it matters depends on its reach: the internet's
background scanners hit every site an organisation has alike, while an attacker who
chose this organisation, or one of its sites, shows up at that site only. With two or
more sites (``[[sites]]`` in the config) each such source is classified over the
``horizon``: seen at one site only while other sites had inbound traffic too is
*targeted* (scored high), seen at several sites is *random* (scored low, kept so an
analyst can see it was weighed). With a single site nothing is said.

Windows are fixed in event time (the last one is closed when the input ends); the
memory is the sites each external source reached within the horizon.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk.detectors.base import (
    UTC_US,
    Batch,
    Detector,
    DetectorSettings,
    conform_alarms,
    empty_alarms,
    restore_frame,
)
from flowhawk.detectors.windows import US, WindowClock, micros
from flowhawk.settingtypes import Duration

_SEEN: dict[str, pl.DataType] = {"ext": pl.String(), "site": pl.String(), "last": pl.Int64()}
_SITES: dict[str, pl.DataType] = {"site": pl.String(), "last": pl.Int64()}
_OPEN: dict[str, pl.DataType] = {
    "ext": pl.String(),
    "site": pl.String(),
    "target": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
    "t": pl.Int64(),
    "t_end": pl.Int64(),
}


class TargetedSettings(DetectorSettings):
    weight: float = Field(default=50.0, ge=0, le=100)
    window: Duration = Field(default=3600.0, description="Sources are judged once a window.")
    horizon: Duration = Field(
        default=7 * 86400.0, description="How long the sites a source reached are remembered."
    )
    min_targets: int = Field(
        default=5,
        ge=1,
        description="Internal hosts an external source must reach in a window to be judged.",
    )


class TargetedOrRandom(Detector):
    """N3: an external source probing one site only (targeted) or many (random)."""

    method = "N3"
    title = "targeted vs random"
    Settings = TargetedSettings
    learns = True

    def __init__(self, settings: DetectorSettings, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, context)
        assert isinstance(settings, TargetedSettings)
        self.s = settings
        self.seen = pl.DataFrame(schema=_SEEN)  # (external source, site) → last seen
        self.sites = pl.DataFrame(schema=_SITES)  # site → last traffic
        self.open = pl.DataFrame(schema=_OPEN)  # the window being filled
        self.clock = WindowClock(settings.window)

    def learn(self, batch: Batch) -> None:
        self._ingest(batch.flows, batch.scoring_from)

    def score(self, batch: Batch) -> pl.DataFrame:
        return self._ingest(batch.flows, batch.scoring_from)

    def finish(self, score_from: datetime | None) -> pl.DataFrame:
        if self.open.height == 0 or (end := self.clock.close_open()) is None:
            return empty_alarms()
        return self._close(end, micros(score_from))

    def _ingest(self, flows: pl.DataFrame, scoring_from: datetime | None) -> pl.DataFrame:
        if flows.height == 0:
            return empty_alarms()
        times = flows.get_column("ts_start").cast(UTC_US).dt.epoch("us")
        sites = flows.select("site", last=times)
        inbound = flows.filter(~pl.col("src_internal") & pl.col("dst_internal")).select(
            ext=pl.col("src_ip"),
            site="site",
            target=pl.col("dst_ip"),
            dst_port="dst_port",
            proto="proto",
            t=pl.col("ts_start").cast(UTC_US).dt.epoch("us"),
            t_end=pl.col("ts_end").cast(UTC_US).dt.epoch("us"),
        )
        found = []
        start = micros(scoring_from)
        parts = [(inbound, "t"), (sites, "last")]
        for (probes, traffic), end in self.clock.split(times.min(), times.max(), parts):  # type: ignore[arg-type]
            self._add(probes)
            self._sites(traffic)
            if end is not None:
                found.append(self._close(end, start))
        return pl.concat(found) if found else empty_alarms()

    def _sites(self, rows: pl.DataFrame) -> None:
        """Remember when each site last had traffic."""
        if rows.height:
            latest = rows.group_by("site").agg(pl.col("last").max())
            both = pl.concat([self.sites, latest])
            self.sites = both.group_by("site").agg(pl.col("last").max()).sort("site")

    def _add(self, rows: pl.DataFrame) -> None:
        if rows.height:  # the first contact of each source with each target is enough
            both = pl.concat([self.open, rows.select(_OPEN.keys())])
            order = ["t", "dst_port", "proto", "t_end"]
            self.open = both.sort(order).unique(["ext", "site", "target"], keep="first")

    def _close(self, end: int, scoring_from: int | None) -> pl.DataFrame:
        learning = scoring_from is None or end <= scoring_from
        window, self.open = self.open, pl.DataFrame(schema=_OPEN)
        horizon = end - int(self.s.horizon * US)
        if window.height:
            reached = window.group_by("ext", "site").agg(last=pl.col("t").max())
            self.seen = (
                pl.concat([self.seen, reached]).group_by("ext", "site").agg(pl.col("last").max())
            )
        self.seen = self.seen.filter(pl.col("last") >= horizon)
        self.sites = self.sites.filter(pl.col("last") >= horizon)
        n_sites = self.sites.height
        if learning or n_sites < 2 or window.height == 0:
            return empty_alarms()
        probes = (
            window.sort("t", "site", "target")
            .group_by("ext")
            .agg(
                targets=pl.col("target").n_unique(),
                first=pl.col("t").min(),
                last_end=pl.col("t_end").max(),
                site=pl.col("site").first(),
                target=pl.col("target").first(),
                dst_port=pl.col("dst_port").first(),
                proto=pl.col("proto").first(),
                ports=pl.col("dst_port").unique().sort().head(5).cast(pl.String).str.join(", "),
                here=pl.col("site").unique().sort().str.join(", "),
            )
            .filter(pl.col("targets") >= self.s.min_targets)
        )
        if probes.height == 0:
            return empty_alarms()
        spread = (
            self.seen.join(probes.select("ext"), on="ext", how="semi")
            .group_by("ext")
            .agg(spread=pl.len(), where=pl.col("site").sort().str.join(", "))
        )
        df = probes.join(spread, on="ext", how="left")
        targeted = pl.col("spread") == 1
        strength = (pl.col("targets") / (4.0 * self.s.min_targets)).clip(upper_bound=1.0)
        verdict = pl.when(targeted).then(pl.lit("targeted")).otherwise(pl.lit("random"))
        out = df.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=pl.col("first").cast(UTC_US),
            ts_end=pl.max_horizontal("first", "last_end").cast(UTC_US),
            site="site",
            src_ip=pl.col("ext"),
            dst_ip=pl.col("target"),
            dst_port="dst_port",
            proto="proto",
            direction=pl.lit("north-south"),
            score=pl.when(targeted).then(0.5 + 0.5 * strength).otherwise(0.1 + 0.1 * strength),
            entity=pl.col("target"),
            observed=pl.concat_str(
                verdict,
                pl.lit(": reached "),
                pl.col("spread").cast(pl.String),
                pl.lit(f" of {n_sites} sites ("),
                pl.col("where"),
                pl.lit(")"),
            ),
            expected=pl.lit(f"internet background reaches all {n_sites} sites alike"),
            observed_value=pl.col("spread").cast(pl.Float64),
            expected_value=pl.lit(float(n_sites)),
            threshold=pl.lit(1.0),
            reason=pl.concat_str(
                pl.col("ext"),
                pl.lit(" reached "),
                pl.col("targets").cast(pl.String),
                pl.lit(" internal hosts at site "),
                pl.col("here"),
                pl.lit(" (ports "),
                pl.col("ports"),
                pl.lit(") and, within the horizon, "),
                pl.col("spread").cast(pl.String),
                pl.lit(f" of the {n_sites} sites: "),
                pl.when(targeted)
                .then(pl.lit("targeted at this site"))
                .otherwise(pl.lit("random, it reaches other sites too")),
            ),
        )
        out = out.filter(pl.col("score") >= self.settings.min_score)
        return conform_alarms(out.sort("ts", "src_ip"))

    def state(self) -> dict[str, pa.Table]:
        return {
            "seen": self.seen.to_arrow(),
            "sites": self.sites.to_arrow(),
            "open": self.open.to_arrow(),
            "clock": self.clock.state(),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.seen = restore_frame(state.get("seen"), _SEEN)
        self.open = restore_frame(state.get("open"), _OPEN)
        self.sites = restore_frame(state.get("sites"), _SITES)
        self.clock.load(state.get("clock"))
