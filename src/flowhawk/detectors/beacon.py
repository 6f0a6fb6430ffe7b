"""N1 beaconing and N2 command-and-control infrastructure.

N1: a communication whose contacts come at a regular period (malware checking in with
its C2 server), scored per window from its recent beats (see
:mod:`flowhawk.detectors.beacon_core` for the beats and windows and
:mod:`flowhawk.detectors.beacon_score` for the score, its tolerance of jitter, missed
beats and other traffic). The explanation gives the period, the jitter, the beats and
the sizes. Communications that were already regular while flowhawk learned
(monitoring, update checks) are left out (``skip_established``).

Series are kept per server address and, where the client looked the address up by a
DNS name shortly before (``name_memory``; :mod:`flowhawk.detectors.beacon_names`),
per name as well: a beacon to a name whose addresses rotate is found as one series,
and its alarm names the name and lists the addresses (its ``dst_ip`` is the address
reached last in the window). When the same beats are regular per address and per
name, only the name series alarms. Names come from DNS only (the run's dns.logs and
captures, or the collector's followed dns.logs): flows carry no TLS server name.

N2: an external server beaconed to by internal hosts that few internal hosts talk to
at all (at most ``rare_clients`` within the horizon) is a C2 candidate. Each of its
bots gets an alarm naming all bots known so far and when the candidate was first
seen; ``flowhawk c2`` exports the candidates as a blocklist (CSV, STIX 2.1). A
candidate found by its name is named in the alarm, with its addresses, as
:data:`NAME_OBSERVED` reads them back.

Both read the same beats: the first of them built creates the shared memory with its
settings (the beat settings of N1 and N2 should agree; N1's decide when both run).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk.detectors.base import (
    UTC_US,
    Batch,
    Detector,
    DetectorContext,
    DetectorSettings,
    conform_alarms,
    empty_alarms,
    restore_frame,
)
from flowhawk.detectors.beacon_core import ADDRESSES_SHOWN, KEY, BeaconCore
from flowhawk.detectors.clusters_text import seconds, size
from flowhawk.detectors.text import endpoint, history_span
from flowhawk.netaddr import NetworkSet
from flowhawk.settingtypes import Duration

#: How N2's ``observed`` starts for a candidate found by its DNS name: the name, then its
#: addresses (the latest first; ``+N more`` past the ones shown). Groups: name, addresses.
NAME_OBSERVED = r"^name (\S+) at ([^;+]*?)(?: \+\d+ more)?;"


class BeaconSettings(DetectorSettings):
    threshold: float = Field(
        default=0.6, ge=0, le=1, description="Beacon score (0-1) from which a series alarms."
    )
    window: Duration = Field(
        default=3600.0, description="Communications are scored once per window of event time."
    )
    horizon: Duration = Field(
        default=86400.0, description="How far back beats are kept and judged."
    )
    burst_gap: Duration = Field(
        default=0.5, description="Flows starting closer than this to the previous are one beat."
    )
    max_beats: int = Field(
        default=256, ge=10, description="Most recent beats kept per communication."
    )
    min_beats: int = Field(
        default=10, ge=3, description="Beats a communication needs before it is scored."
    )
    outbound_only: bool = Field(
        default=True,
        description="Only internal clients of external servers (else every communication).",
    )
    skip_established: bool = Field(
        default=True,
        description="Leave out communications already regular while learning.",
    )
    name_memory: Duration = Field(
        default=86400.0,
        description="How long a client's DNS answer names the address it got (name series).",
    )


class C2Settings(BeaconSettings):
    weight: float = Field(default=85.0, ge=0, le=100)
    rare_clients: int = Field(
        default=3,
        ge=1,
        description="A server is rare when at most this many internal hosts reached it "
        "within the horizon.",
    )


class _BeaconBase(Detector):
    Settings = BeaconSettings
    inputs: ClassVar[tuple[str, ...]] = ("flows", "dns")

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        s = settings
        assert isinstance(s, BeaconSettings)
        self.core: BeaconCore = context.shared.setdefault(
            "beacon",
            BeaconCore(
                window=s.window,
                horizon=s.horizon,
                burst_gap=s.burst_gap,
                max_beats=s.max_beats,
                min_beats=s.min_beats,
                outbound_only=s.outbound_only,
                established_score=s.threshold,
                name_memory=s.name_memory,
                internal=NetworkSet([*context.internal.networks, *context.local_scope.networks]),
            ),
        )
        self.core.join(self)

    def learn(self, batch: Batch) -> None:
        self.core.step(self, batch, batch.scoring_from)

    def score(self, batch: Batch) -> pl.DataFrame:
        return self._alarms(self.core.step(self, batch, batch.scoring_from))

    def finish(self, score_from: datetime | None) -> pl.DataFrame:
        return self._alarms(self.core.step(self, None, score_from))

    def _alarms(self, windows: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError

    def _candidates(self, windows: pl.DataFrame) -> pl.DataFrame:
        assert isinstance(self.settings, BeaconSettings)
        if windows.height == 0:
            return windows
        found = windows.filter((pl.col("score") >= self.settings.threshold) & ~pl.col("covered"))
        if self.settings.skip_established:
            found = found.filter(~pl.col("established"))
        return found.filter(pl.col("score") >= self.settings.min_score)

    def state(self) -> dict[str, pa.Table]:
        return self.core.state()

    def load_state(self, state: dict[str, pa.Table]) -> None:
        if state:
            self.core.load_state(state)


def _series_text() -> pl.Expr:
    """``every 60.0 s ± 2 % (47 beats over 46 min, 0 % missed, 0 % other traffic), 2.1 kB
    a beat ± 3 %``"""
    pct = lambda c: (pl.col(c) * 100).round(0).cast(pl.Int64).cast(pl.String)  # noqa: E731
    span = history_span(pl.col("first").cast(UTC_US), pl.col("last").cast(UTC_US))
    cycle = pl.when(pl.col("per_cycle") > 1).then(
        pl.concat_str(
            pl.lit(" ("), pl.col("per_cycle").cast(pl.String), pl.lit(" contacts a cycle)")
        )
    )
    return pl.concat_str(
        pl.lit("every "),
        seconds(pl.col("period")),
        cycle.fill_null(""),
        pl.lit(" ± "),
        pct("jitter"),
        pl.lit(" % ("),
        pl.col("beats").cast(pl.String),
        pl.lit(" beats over "),
        span,
        pl.lit(", "),
        pct("missed"),
        pl.lit(" % missed, "),
        pct("other"),
        pl.lit(" % other traffic), "),
        size(pl.col("size")),
        pl.lit(" a beat ± "),
        pct("size_dev"),
        pl.lit(" %"),
    )


def _addresses() -> pl.Expr:
    """A name series' addresses: ``198.51.100.7, 198.51.100.9 +3 more`` (null for an
    address series)."""
    more = pl.col("n_addresses") - ADDRESSES_SHOWN
    return pl.concat_str(
        pl.col("addresses"),
        pl.when(more > 0)
        .then(pl.concat_str(pl.lit(" +"), more.cast(pl.String), pl.lit(" more")))
        .otherwise(pl.lit("")),
    )


def _server() -> pl.Expr:
    """The server: ``198.51.100.7:8443/tcp``, or for a name series
    ``evil.example:8443/tcp (2 addresses: 198.51.100.7, 198.51.100.9)``."""
    named = pl.concat_str(
        endpoint(pl.col("dst"), pl.col("dst_port"), pl.col("proto")),
        pl.lit(" ("),
        pl.col("n_addresses").cast(pl.String),
        pl.when(pl.col("n_addresses") == 1)
        .then(pl.lit(" address: "))
        .otherwise(pl.lit(" addresses: ")),
        _addresses(),
        pl.lit(")"),
    )
    address = endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto"))
    return pl.when(pl.col("named")).then(named).otherwise(address)


def _common(method: str, title: str) -> dict[str, pl.Expr]:
    return {
        "method": pl.lit(method),
        "name": pl.lit(title),
        "ts": pl.col("w_first").cast(UTC_US),
        "ts_end": pl.max_horizontal("w_last", "w_first").cast(UTC_US),
        **{c: pl.col(c) for c in KEY},
        "direction": pl.col("direction"),
        "entity": pl.when(pl.col("src_internal") | ~pl.col("dst_internal"))
        .then(pl.col("src_ip"))
        .otherwise(pl.col("dst_ip")),
    }


class Beaconing(_BeaconBase):
    """N1: contacts at a regular period."""

    method = "N1"
    title = "beaconing"

    def _alarms(self, windows: pl.DataFrame) -> pl.DataFrame:
        assert isinstance(self.settings, BeaconSettings)
        found = self._candidates(windows)
        if found.height == 0:
            return empty_alarms()
        server = _server()
        threshold = self.settings.threshold
        out = found.select(
            **_common(self.method, self.title),
            score=pl.col("score"),
            observed=_series_text(),
            expected=pl.lit(f"irregular contacts (beacon score < {threshold:g})"),
            observed_value=pl.col("period"),
            expected_value=pl.col("jitter"),
            threshold=pl.lit(threshold),
            reason=pl.concat_str(
                pl.col("src_ip"),
                pl.lit(" contacts "),
                server,
                pl.lit(" "),
                _series_text(),
                pl.lit("; beacon score "),
                pl.col("score").round(2).cast(pl.String),
            ),
        )
        return conform_alarms(out.sort("ts", "src_ip", "dst_ip", "dst_port"))


_BOTS: dict[str, pl.DataType] = {
    "dst": pl.String(),
    "src_ip": pl.String(),
    "first_seen": pl.Int64(),
}


class C2Infrastructure(_BeaconBase):
    """N2: a rare external server that internal hosts beacon to (a C2 candidate)."""

    method = "N2"
    title = "C2 candidate"
    Settings = C2Settings

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        # (server address or name, bot) → first seen beaconing
        self.bots = pl.DataFrame(schema=_BOTS)

    def _alarms(self, windows: pl.DataFrame) -> pl.DataFrame:
        assert isinstance(self.settings, C2Settings)
        found = self._candidates(windows)
        if found.height:
            found = found.filter(
                pl.col("src_internal")
                & ~pl.col("dst_internal")
                & (pl.col("clients") <= self.settings.rare_clients)
            )
        if found.height == 0:
            return empty_alarms()
        seen = found.group_by("dst", "src_ip").agg(first_seen=pl.col("w_first").min())
        self.bots = (
            pl.concat([self.bots, seen.select(self.bots.columns)])
            .group_by("dst", "src_ip")
            .agg(pl.col("first_seen").min())
            .sort("dst", "first_seen", "src_ip")
        )
        c2 = self.bots.group_by("dst", maintain_order=True).agg(
            since=pl.col("first_seen").min(),
            n_bots=pl.len(),
            bot_list=pl.col("src_ip").head(10).str.join(", "),
        )
        found = found.join(c2, on="dst")
        since = pl.col("since").cast(UTC_US).dt.strftime("%Y-%m-%d %H:%M UTC")
        name = pl.when(pl.col("named")).then(
            pl.concat_str(
                pl.lit("name "), pl.col("dst"), pl.lit(" at "), _addresses(), pl.lit("; ")
            )
        )
        candidate = pl.when(pl.col("named")).then(
            pl.concat_str(pl.col("dst"), pl.lit(" ("), _addresses(), pl.lit(")"))
        )
        out = found.select(
            **_common(self.method, self.title),
            score=pl.col("score"),
            observed=pl.concat_str(
                name.otherwise(pl.lit("")),
                pl.col("n_bots").cast(pl.String),
                pl.lit(" internal host(s) beacon to it: "),
                pl.col("bot_list"),
                pl.lit("; "),
                pl.col("clients").cast(pl.String),
                pl.lit(" internal host(s) reached it in the horizon"),
            ),
            expected=pl.lit(
                f"servers that beacons reach are popular (> {self.settings.rare_clients} "
                "internal hosts)"
            ),
            observed_value=pl.col("clients").cast(pl.Float64),
            expected_value=pl.lit(float(self.settings.rare_clients)),
            threshold=pl.lit(self.settings.threshold),
            reason=pl.concat_str(
                candidate.otherwise(pl.col("dst_ip")),
                pl.lit(" is a C2 candidate since "),
                since,
                pl.lit(": rare ("),
                pl.col("clients").cast(pl.String),
                pl.lit(" internal host(s) reach it) and beaconed to by "),
                pl.col("n_bots").cast(pl.String),
                pl.lit(" ("),
                pl.col("bot_list"),
                pl.lit("); "),
                pl.col("src_ip"),
                pl.lit(" "),
                _series_text(),
            ),
        )
        return conform_alarms(out.sort("ts", "src_ip", "dst_ip", "dst_port"))

    def state(self) -> dict[str, pa.Table]:
        return {**super().state(), "bots": self.bots.to_arrow()}

    def load_state(self, state: dict[str, pa.Table]) -> None:
        super().load_state({k: v for k, v in state.items() if k != "bots"})
        bots = state.get("bots")
        if bots is not None and "dst_ip" in bots.column_names:  # before name series
            bots = bots.rename_columns(["dst" if c == "dst_ip" else c for c in bots.column_names])
        self.bots = restore_frame(bots, _BOTS)


BEACON_DETECTORS = (Beaconing, C2Infrastructure)
