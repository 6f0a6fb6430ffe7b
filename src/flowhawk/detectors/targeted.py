"""N3: targeted or random, for external sources reaching into the network and external
destinations the network reaches.

Sources: an external address that opens connections to many internal hosts
(``min_targets`` in a window) is probing the network. Whether it matters depends on its
reach: the internet's background scanners hit every site an organisation has alike,
while an attacker who chose this organisation, or one of its sites, shows up at that
site only. With two or more sites (``[[sites]]`` in the config) each such source is
classified over the ``horizon``: seen at one site only while other sites had traffic
too is *targeted* (scored high), seen at several sites is *random* (scored low, kept so
an analyst can see it was weighed). With a single site nothing is said.

Destinations (``destinations``): an external address that several internal clients
reach (``min_clients`` in a window) is classified the same way by the sites whose
clients reached it within the horizon, among the sites that reached the internet at
all: from one site only is *targeted* (a lure or C2 that only that site's hosts were
sent to), from several is *random* (the internet everyone uses). A destination is
judged when it first has that many clients in a window, and again only once it has
gone a whole horizon without (otherwise every popular service would be weighed every
window); destinations judged while learning are known from then on.

Windows are fixed in event time (the last one is closed when the input ends); the
memory is the sites each external source or destination reached within the horizon
(destinations as stable 64-bit hashes), the sites with traffic, and the destinations
already judged.
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
from flowhawk.keyhash import stable_hash
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
#: Outbound contacts of the window being filled: the first of each (destination, client).
_OUT: dict[str, pl.DataType] = {
    "ext": pl.String(),
    "site": pl.String(),
    "client": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
    "t": pl.Int64(),
    "t_end": pl.Int64(),
}
#: (destination hash, site) → last reached; destination hash → last judged.
_DSEEN: dict[str, pl.DataType] = {"dest": pl.UInt64(), "site": pl.String(), "last": pl.Int64()}
_JUDGED: dict[str, pl.DataType] = {"dest": pl.UInt64(), "last": pl.Int64()}
#: Clients named in a destination's reason at most.
_CLIENTS_SHOWN = 5


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
    destinations: bool = Field(
        default=True, description="Also judge external destinations internal clients reach."
    )
    min_clients: int = Field(
        default=3,
        ge=1,
        description="Internal clients that must reach an external destination in a window "
        "for it to be judged.",
    )


class TargetedOrRandom(Detector):
    """N3: an external source probing, or a destination reached from, one site only
    (targeted) or many (random)."""

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
        self.out = pl.DataFrame(schema=_OUT)  # its outbound contacts
        self.dseen = pl.DataFrame(schema=_DSEEN)  # (destination, site) → last reached
        self.out_sites = pl.DataFrame(schema=_SITES)  # site → last outbound traffic
        self.judged = pl.DataFrame(schema=_JUDGED)  # destination → last judged
        self.clock = WindowClock(settings.window)

    def learn(self, batch: Batch) -> None:
        self._ingest(batch.flows, batch.scoring_from)

    def score(self, batch: Batch) -> pl.DataFrame:
        return self._ingest(batch.flows, batch.scoring_from)

    def finish(self, score_from: datetime | None) -> pl.DataFrame:
        if (self.open.height == 0 and self.out.height == 0) or (
            end := self.clock.close_open()
        ) is None:
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
        outbound = flows.filter(pl.col("src_internal") & ~pl.col("dst_internal"))
        if not self.s.destinations:
            outbound = outbound.clear()
        outbound = outbound.select(
            ext=pl.col("dst_ip"),
            site="site",
            client=pl.col("src_ip"),
            dst_port="dst_port",
            proto="proto",
            t=pl.col("ts_start").cast(UTC_US).dt.epoch("us"),
            t_end=pl.col("ts_end").cast(UTC_US).dt.epoch("us"),
        )
        found = []
        start = micros(scoring_from)
        parts = [(inbound, "t"), (sites, "last"), (outbound, "t")]
        for (probes, traffic, contacts), end in self.clock.split(times.min(), times.max(), parts):  # type: ignore[arg-type]
            self._add(probes)
            self._sites(traffic)
            self._add_out(contacts)
            if end is not None:
                found.append(self._close(end, start))
        return pl.concat(found) if found else empty_alarms()

    def _sites(self, rows: pl.DataFrame) -> None:
        """Remember when each site last had traffic."""
        if rows.height:
            latest = rows.group_by("site").agg(pl.col("last").max())
            both = pl.concat([self.sites, latest])
            self.sites = both.group_by("site").agg(pl.col("last").max()).sort("site")

    def _add_out(self, rows: pl.DataFrame) -> None:
        """Keep the window's first contact of each client with each destination, and
        when each site last reached the internet."""
        if rows.height == 0:
            return
        first = rows.sort("t", "dst_port", "proto", "t_end").unique(
            ["ext", "site", "client"], keep="first", maintain_order=True
        )
        both = pl.concat([self.out, first.select(_OUT.keys())])
        order = ["t", "dst_port", "proto", "t_end"]
        self.out = both.sort(order).unique(["ext", "site", "client"], keep="first")
        latest = rows.group_by("site").agg(last=pl.col("t").max())
        self.out_sites = (
            pl.concat([self.out_sites, latest]).group_by("site").agg(pl.col("last").max())
        ).sort("site")

    def _add(self, rows: pl.DataFrame) -> None:
        if rows.height:  # the first contact of each source with each target is enough
            both = pl.concat([self.open, rows.select(_OPEN.keys())])
            order = ["t", "dst_port", "proto", "t_end"]
            self.open = both.sort(order).unique(["ext", "site", "target"], keep="first")

    def _close(self, end: int, scoring_from: int | None) -> pl.DataFrame:
        learning = scoring_from is None or end <= scoring_from
        found = [self._close_sources(end, learning), self._close_destinations(end, learning)]
        return pl.concat(found).sort("ts", "src_ip", "dst_ip", maintain_order=True)

    def _close_sources(self, end: int, learning: bool) -> pl.DataFrame:
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
        reason = pl.concat_str(
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
        )
        return self._verdicts(
            df, n_sites, count="targets", minimum=self.s.min_targets,
            client="ext", server="target", entity="target", observed=": reached ",
            expected=f"internet background reaches all {n_sites} sites alike", reason=reason,
            order="src_ip",
        )  # fmt: skip

    def _close_destinations(self, end: int, learning: bool) -> pl.DataFrame:
        window, self.out = self.out, pl.DataFrame(schema=_OUT)
        horizon = end - int(self.s.horizon * US)
        window = window.with_columns(dest=_dest_hash(window))
        if window.height:
            reached = window.group_by("dest", "site").agg(last=pl.col("t").max())
            self.dseen = (
                pl.concat([self.dseen, reached]).group_by("dest", "site").agg(pl.col("last").max())
            )
        self.dseen = self.dseen.filter(pl.col("last") >= horizon)
        self.out_sites = self.out_sites.filter(pl.col("last") >= horizon)
        self.judged = self.judged.filter(pl.col("last") >= horizon)
        if window.height == 0:
            return empty_alarms()
        busy = (
            window.sort("t", "site", "client")
            .group_by("ext", "dest")
            .agg(
                clients=pl.col("client").n_unique(),
                first=pl.col("t").min(),
                last_end=pl.col("t_end").max(),
                site=pl.col("site").first(),
                client=pl.col("client").first(),
                dst_port=pl.col("dst_port").first(),
                proto=pl.col("proto").first(),
                ports=pl.col("dst_port").unique().sort().head(5).cast(pl.String).str.join(", "),
                who=pl.col("client")
                .unique(maintain_order=True)
                .head(_CLIENTS_SHOWN)
                .str.join(", "),
                here=pl.col("site").unique().sort().str.join(", "),
            )
            .filter(pl.col("clients") >= self.s.min_clients)
        )
        fresh = busy.join(self.judged, on="dest", how="anti")
        if busy.height:  # judged once; known while they keep being busy within the horizon
            marked = busy.select("dest", last=pl.lit(end, pl.Int64))
            self.judged = pl.concat([self.judged.join(marked, on="dest", how="anti"), marked])
        n_sites = self.out_sites.height
        if learning or n_sites < 2 or fresh.height == 0:
            return empty_alarms()
        spread = (
            self.dseen.join(fresh.select("dest"), on="dest", how="semi")
            .group_by("dest")
            .agg(spread=pl.len(), where=pl.col("site").sort().str.join(", "))
        )
        df = fresh.join(spread, on="dest", how="left")
        targeted = pl.col("spread") == 1
        more = pl.col("clients").cast(pl.Int64) - _CLIENTS_SHOWN
        who = pl.concat_str(
            pl.col("who"),
            pl.when(more > 0)
            .then(pl.concat_str(pl.lit(" +"), more.cast(pl.String), pl.lit(" more")))
            .otherwise(pl.lit("")),
        )
        reason = pl.concat_str(
            pl.col("ext"),
            pl.lit(" was reached by "),
            pl.col("clients").cast(pl.String),
            pl.lit(" internal hosts at site "),
            pl.col("here"),
            pl.lit(" ("),
            who,
            pl.lit("; ports "),
            pl.col("ports"),
            pl.lit(") and, within the horizon, from "),
            pl.col("spread").cast(pl.String),
            pl.lit(f" of the {n_sites} sites that reach the internet: "),
            pl.when(targeted)
            .then(pl.lit("targeted, only this site's hosts go there"))
            .otherwise(pl.lit("random, other sites reach it too")),
        )
        return self._verdicts(
            df, n_sites, count="clients", minimum=self.s.min_clients,
            client="client", server="ext", entity="client",
            observed=" destination: reached from ",
            expected=f"internet services are reached from all {n_sites} sites alike",
            reason=reason, order="dst_ip",
        )  # fmt: skip

    def _verdicts(
        self,
        df: pl.DataFrame,
        n_sites: int,
        *,
        count: str,
        minimum: int,
        client: str,
        server: str,
        entity: str,
        observed: str,
        expected: str,
        reason: pl.Expr,
        order: str,
    ) -> pl.DataFrame:
        """Alarms of judged sources or destinations (``spread``: sites that saw them)."""
        targeted = pl.col("spread") == 1
        strength = (pl.col(count) / (4.0 * minimum)).clip(upper_bound=1.0)
        verdict = pl.when(targeted).then(pl.lit("targeted")).otherwise(pl.lit("random"))
        out = df.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=pl.col("first").cast(UTC_US),
            ts_end=pl.max_horizontal("first", "last_end").cast(UTC_US),
            site="site",
            src_ip=pl.col(client),
            dst_ip=pl.col(server),
            dst_port="dst_port",
            proto="proto",
            direction=pl.lit("north-south"),
            score=pl.when(targeted).then(0.5 + 0.5 * strength).otherwise(0.1 + 0.1 * strength),
            entity=pl.col(entity),
            observed=pl.concat_str(
                verdict,
                pl.lit(observed),
                pl.col("spread").cast(pl.String),
                pl.lit(f" of {n_sites} sites ("),
                pl.col("where"),
                pl.lit(")"),
            ),
            expected=pl.lit(expected),
            observed_value=pl.col("spread").cast(pl.Float64),
            expected_value=pl.lit(float(n_sites)),
            threshold=pl.lit(1.0),
            reason=reason,
        )
        out = out.filter(pl.col("score") >= self.settings.min_score)
        return conform_alarms(out.sort("ts", order))

    def state(self) -> dict[str, pa.Table]:
        return {
            "seen": self.seen.to_arrow(),
            "sites": self.sites.to_arrow(),
            "open": self.open.to_arrow(),
            "out": self.out.to_arrow(),
            "dseen": self.dseen.to_arrow(),
            "out_sites": self.out_sites.to_arrow(),
            "judged": self.judged.to_arrow(),
            "clock": self.clock.state(),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.seen = restore_frame(state.get("seen"), _SEEN)
        self.open = restore_frame(state.get("open"), _OPEN)
        self.sites = restore_frame(state.get("sites"), _SITES)
        self.out = restore_frame(state.get("out"), _OUT)
        self.dseen = restore_frame(state.get("dseen"), _DSEEN)
        self.out_sites = restore_frame(state.get("out_sites"), _SITES)
        self.judged = restore_frame(state.get("judged"), _JUDGED)
        self.clock.load(state.get("clock"))


def _dest_hash(rows: pl.DataFrame) -> pl.Series:
    """The stable 64-bit hash of each row's destination address (``ext``)."""
    return pl.Series("dest", stable_hash(rows, ["ext"], {"ext": pl.String()}), dtype=pl.UInt64)
