"""M26: Tor, to listed relays and by its flow shape.

Two ways a flow becomes a Tor alarm, both per flow and without memory:

* **Listed relay.** A side of the flow is an address the run's intel set lists with
  category ``tor`` (feeds named like ``tor-nodes``, ``tor-exit``). An internal client
  talking to a relay on a port Tor uses (the model's relay ports, 443, or a port from
  10000 up, where many relays and bridges listen) scores ``listed_score``; any other
  flow with a listed relay (another port, or a relay, e.g. an exit, as the client of
  an internal server) scores ``listed_other_score``.
* **Shape.** Relay lists are never complete (bridges are unlisted by design, and lists
  age), so every TCP flow also gets the shape score of :mod:`.tor_model`, a supervised
  model of Tor's flow shape (server port, packet sizes each way against the cell size,
  duration, packets, two-way traffic) fitted on real Tor connections captured from a
  private Tor network against ordinary traffic. An unlisted flow alarms when the score
  reaches the model's threshold (or ``shape_threshold``); a listed flow keeps the
  larger of its listing score and its shape score. What the model catches and misses,
  on relays and captures it never saw, is in eval/README.md: it is strong on long-lived
  circuits on relay and high ports, weak on short connections on 443, where listed
  relays remain what M26 relies on.

The alarm's entity is the internal host (the client, or the internal server a relay
reaches). Nothing is learned: M26 scores from the first flow (``learns = False``), and
without intel loaded only the shape part works.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from pydantic import Field

from flowhawk import netaddr
from flowhawk.detectors.base import (
    Batch,
    DetectorContext,
    DetectorSettings,
    StatelessDetector,
    comm_columns,
    conform_alarms,
    empty_alarms,
)
from flowhawk.detectors.intel import listed_values
from flowhawk.detectors.text import endpoint, service
from flowhawk.detectors.tor_model import ShapeModel

TOR = "tor"
_PORT_TEXT = {"relay": "a relay port", "tls": "TLS port 443"}


class TorSettings(DetectorSettings):
    weight: float = Field(default=60.0, ge=0, le=100)
    listed_score: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Score of an internal client's flow to a listed relay on a Tor port.",
    )
    listed_other_score: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Score of any other flow with a listed relay on one side.",
    )
    model: bool = Field(default=True, description="Also alarm on unlisted Tor-shaped flows.")
    shape_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Shape score from which an unlisted flow alarms (None: the model's own).",
    )
    model_file: str | None = Field(
        default=None, description="Shape-model parameter file instead of the shipped one."
    )
    internal_only: bool = Field(
        default=True, description="Only flows with at least one internal side."
    )


def _duration() -> pl.Expr:
    seconds = (pl.col("ts_end") - pl.col("ts_start")).dt.total_seconds()
    return (
        pl.when(seconds < 120)
        .then(pl.concat_str([seconds.cast(pl.String), pl.lit(" s")]))
        .when(seconds < 5400)
        .then(
            pl.concat_str([(seconds / 60).round(0).cast(pl.Int64).cast(pl.String), pl.lit(" min")])
        )
        .otherwise(pl.concat_str([(seconds / 3600).round(1).cast(pl.String), pl.lit(" h")]))
    )


def _shape_text() -> pl.Expr:
    """``shape score 0.93: a relay port, packets of 586/560 bytes, 35 min``."""
    port = pl.col("tor_port").replace_strict(
        _PORT_TEXT,
        default=pl.concat_str([pl.lit("port "), service(pl.col("dst_port"), pl.col("proto"))]),
        return_dtype=pl.String,
    )
    return pl.concat_str(
        [
            pl.lit("shape score "),
            pl.col("tor_shape").round(2).cast(pl.String),
            pl.lit(": "),
            port,
            pl.lit(", packets of "),
            pl.col("tor_mean_c").round(0).cast(pl.Int64).cast(pl.String),
            pl.lit("/"),
            pl.col("tor_mean_s").round(0).cast(pl.Int64).cast(pl.String),
            pl.lit(" bytes, "),
            _duration(),
        ]
    )


class Tor(StatelessDetector):
    method = "M26"
    title = "Tor"
    Settings = TorSettings

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        assert isinstance(settings, TorSettings)
        self.shape = ShapeModel.load(Path(settings.model_file) if settings.model_file else None)
        self.threshold = (
            self.shape.threshold if settings.shape_threshold is None else settings.shape_threshold
        )
        self._relay_feeds: pl.DataFrame | None = None

    def relay_feeds(self) -> pl.DataFrame:
        """Indicators the intel set lists as Tor, with the feeds that do (text)."""
        if self._relay_feeds is None:
            intel = self.context.intel
            schema = {"indicator": pl.UInt32(), "_feeds": pl.String()}
            if intel is None or len(intel) == 0:
                self._relay_feeds = pl.DataFrame(schema=schema)
            else:
                tor = intel.evidence.filter(pl.col("category") == TOR)
                self._relay_feeds = (
                    tor.select(pl.col("indicator").cast(pl.UInt32), "feed")
                    .unique()
                    .sort("indicator", "feed")
                    .group_by("indicator", maintain_order=True)
                    .agg(_feeds=pl.col("feed").str.join(", "))
                )
        return self._relay_feeds

    def _listed(self, flows: pl.DataFrame) -> pl.DataFrame:
        """``flows`` with ``_dst_feeds``/``_src_feeds``: who lists that side as Tor."""
        feeds = self.relay_feeds()
        intel = self.context.intel
        if feeds.height == 0 or intel is None:
            none = pl.lit(None, dtype=pl.String)
            return flows.with_columns(_dst_feeds=none, _src_feeds=none)
        addresses = pl.concat([flows.get_column("src_ip"), flows.get_column("dst_ip")])
        hits = listed_values(intel, addresses, "ip").join(feeds, on="indicator", how="inner")
        return netaddr.join_endpoints(
            flows, hits.select("ip", "_feeds"), {"_feeds": "_{side}_feeds"}
        )

    def score(self, batch: Batch) -> pl.DataFrame:
        s = self.settings
        assert isinstance(s, TorSettings)
        flows = batch.flows
        if s.internal_only:
            flows = flows.filter(pl.col("src_internal") | pl.col("dst_internal"))
        if flows.height == 0:
            return empty_alarms()
        df = self._listed(self.shape.features(flows))
        to_relay = pl.col("_dst_feeds").is_not_null()
        from_relay = pl.col("_src_feeds").is_not_null() & ~to_relay
        on_tor_port = ((pl.col("tor_port") != "other") | (pl.col("tor_high_port") > 0)) & (
            pl.col("proto") == 6
        )
        listing = (
            pl.when(to_relay & on_tor_port & pl.col("src_internal"))
            .then(pl.lit(s.listed_score))
            .when(to_relay | from_relay)
            .then(pl.lit(s.listed_other_score))
        )
        shaped = pl.col("tor_shape") >= self.threshold if s.model else pl.lit(False)
        df = df.with_columns(
            _listing=listing, _score=pl.max_horizontal(listing, pl.col("tor_shape"))
        ).filter(pl.col("_listing").is_not_null() | shaped)
        df = df.filter(pl.col("_score") >= s.min_score)
        if df.height == 0:
            return empty_alarms()
        return conform_alarms(self._alarms(df, to_relay, from_relay))

    def _alarms(self, df: pl.DataFrame, to_relay: pl.Expr, from_relay: pl.Expr) -> pl.DataFrame:
        server = endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto"))
        arrow = pl.concat_str([pl.col("src_ip"), pl.lit(" → "), server])
        shape = _shape_text()
        reason = (
            pl.when(to_relay)
            .then(
                pl.concat_str(
                    [arrow, pl.lit(" is a Tor relay (listed by "), pl.col("_dst_feeds"),
                     pl.lit("); "), shape]
                )
            )
            .when(from_relay)
            .then(
                pl.concat_str(
                    [pl.lit("Tor relay "), pl.col("src_ip"), pl.lit(" (listed by "),
                     pl.col("_src_feeds"), pl.lit(") connects to "), server, pl.lit("; "), shape]
                )
            )
            .otherwise(pl.concat_str([arrow, pl.lit(" looks like Tor ("), shape,
                                      pl.lit(") to an unlisted address")]))
        )  # fmt: skip
        inside = pl.when(from_relay | (~pl.col("src_internal") & pl.col("dst_internal")))
        return df.select(
            **comm_columns(self.method, self.title),
            score=pl.col("_score"),
            entity=inside.then(pl.col("dst_ip")).otherwise(pl.col("src_ip")),
            observed=pl.when(to_relay | from_relay)
            .then(pl.concat_str([arrow, pl.lit(", a listed Tor relay; "), shape]))
            .otherwise(pl.concat_str([arrow, pl.lit(", "), shape])),
            expected=pl.lit(f"no Tor: no listed relay, shape score below {self.threshold:.2f}"),
            observed_value=pl.col("tor_shape"),
            expected_value=pl.lit(0.0),
            threshold=pl.lit(self.threshold),
            reason=reason,
        ).sort("ts", "src_ip", "dst_ip", "dst_port", maintain_order=True)
