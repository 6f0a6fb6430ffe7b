"""N10: lateral movement, east-west use of admin services on hosts never contacted before.

Admin services (SMB 445/139, RDP 3389, SSH 22, WinRM 5985/5986, RPC/DCOM 135, VNC 5900,
telnet 23 over TCP; settable) are how an intruder moves from host to host. A *new
admin pair* is the first flow from an internal source to an internal target on one of
those ports that the source never used towards that target before (first-seen pairs,
:class:`~flowhawk.detectors.seen.SeenSet`, learned during the learning period too).
With ``require_session`` (the default) only flows in which the target sent data back
count: at least 2 packets and 64 bytes beyond 40 bytes a packet, which a bare
handshake (SYN-ACK, ACKs) or a reset never reach. A sweep that only opens connections
is a scan, not the use of a service; where targets' answers are not seen (one-way
exports) turn it off.

One new admin pair is weak evidence (an administrator reaching a new machine); many
in a short time are strong: each new pair alarms when its source reached at least
``min_targets`` distinct new targets within ``window`` (one hour) of event time ending
at it; the pairs that led there alarm with it. Score: ``0.5`` at ``min_targets`` (5),
rising linearly to 1 at ``full_targets`` (20) distinct new targets. The entity is the
source. The new pairs of the last ``window`` are kept (as a small table) so that the
count runs across batches in event time.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk.config import Duration, format_duration
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
from flowhawk.detectors.seen import SeenSet
from flowhawk.detectors.text import service

ADMIN_PORTS = [445, 139, 3389, 22, 5985, 5986, 135, 5900, 23]
SERVICE_NAMES = {
    445: "SMB",
    139: "SMB",
    3389: "RDP",
    22: "SSH",
    5985: "WinRM",
    5986: "WinRM",
    135: "RPC",
    5900: "VNC",
    23: "telnet",
}
#: A session: the target sent at least MIN_PAYLOAD bytes beyond HEADER_BYTES a packet
#: (a bare SYN-ACK, the ACKs of a handshake or a reset carry none).
HEADER_BYTES = 40
MIN_PAYLOAD = 64

_KEY_SCHEMA: dict[str, pl.DataType] = {
    "site": pl.String(),
    "src_ip": pl.String(),
    "dst_ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
}
PAIR = ("site", "src_ip", "dst_ip", "dst_port", "proto")
CLIENT_SERVICE = ("site", "src_ip", "dst_port", "proto")
_RECENT: dict[str, pl.DataType] = {
    **_KEY_SCHEMA,
    "direction": pl.String(),
    "ts_start": UTC_US,
    "ts_end": UTC_US,
    "service_new": pl.Boolean(),
    "alarmed": pl.Boolean(),
}


class LateralSettings(DetectorSettings):
    weight: float = Field(
        default=70.0, ge=0, le=100, description="Risk (0-100) an alarm with score 1 contributes."
    )
    ports: list[int] = Field(
        default_factory=lambda: list(ADMIN_PORTS),
        description="TCP ports of admin services (SMB, RDP, SSH, WinRM, RPC, VNC, telnet).",
    )
    window: Duration = Field(
        default=3600.0, gt=0, description="Event time over which a source's new targets count."
    )
    min_targets: int = Field(
        default=5, ge=1, description="Distinct new admin targets within the window to alarm."
    )
    full_targets: int = Field(
        default=20, ge=1, description="Distinct new admin targets that score 1."
    )
    require_session: bool = Field(
        default=True,
        description="Count only flows whose target sent data back (not a bare handshake).",
    )


class LateralMovement(Detector):
    """N10: a source reaching many internal hosts on admin services for the first time."""

    method = "N10"
    title = "lateral movement"
    Settings = LateralSettings

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        self.pairs = SeenSet(PAIR, _KEY_SCHEMA)
        self.client_services = SeenSet(CLIENT_SERVICE, _KEY_SCHEMA)
        self.recent = pl.DataFrame(schema=_RECENT)

    def _admin(self, flows: pl.DataFrame) -> pl.DataFrame:
        """East-west TCP flows to an admin port (sessions only, with ``require_session``)."""
        assert isinstance(self.settings, LateralSettings)
        if flows.height == 0:
            return flows
        keep = (
            pl.col("src_internal").fill_null(False)
            & pl.col("dst_internal").fill_null(False)
            & (pl.col("proto") == 6)
            & pl.col("dst_port").is_in(self.settings.ports)
            & (pl.col("src_ip") != pl.col("dst_ip"))
            & pl.col("src_ip").is_not_null()
            & pl.col("dst_ip").is_not_null()
            & pl.col("ts_start").is_not_null()
        )
        if self.settings.require_session:
            pkts = pl.col("dst_pkts").fill_null(0)
            keep = (
                keep
                & (pkts >= 2)
                & (pl.col("dst_bytes").fill_null(0) >= HEADER_BYTES * pkts + MIN_PAYLOAD)
            )
        return flows.filter(keep.fill_null(False)).with_columns(
            pl.col("site").fill_null(""),
            pl.col("direction").fill_null(""),
            pl.col("ts_end").fill_null(pl.col("ts_start")),
        )

    def learn(self, batch: Batch) -> None:
        flows = self._admin(batch.flows)
        self.pairs.add(flows)
        self.client_services.add(flows)

    def score(self, batch: Batch) -> pl.DataFrame:
        assert isinstance(self.settings, LateralSettings)
        flows = self._admin(batch.flows)
        if flows.height == 0:
            return empty_alarms()
        rows = flows.with_row_index("_row")
        new = self.pairs.first_new(rows, remember=True)
        service_new = self.client_services.first_new(rows, remember=True).get_column("_row")
        if new.height == 0:
            return empty_alarms()
        new = new.select(
            *PAIR,
            "direction",
            "ts_start",
            "ts_end",
            service_new=pl.col("_row").is_in(service_new.implode()),
            alarmed=pl.lit(False),
        )
        events = pl.concat(
            [self.recent.with_columns(_old=pl.lit(True)), new.with_columns(_old=pl.lit(False))],
            how="vertical_relaxed",
        ).with_row_index("_i")
        counted = self._count(events)
        firing = counted.filter(~pl.col("_old") & (pl.col("_n") >= self.settings.min_targets))
        rows = self._with_lead(counted, firing)
        self._keep(counted, rows.get_column("_i"))
        return self._alarms(rows)

    def _count(self, events: pl.DataFrame) -> pl.DataFrame:
        """Each event with ``_n``: the distinct new targets of its source within the
        window ending at it (itself included), and its services and example targets."""
        assert isinstance(self.settings, LateralSettings)
        period = timedelta(seconds=self.settings.window)
        svc = (
            pl.col("dst_port")
            .replace_strict(SERVICE_NAMES, default="admin", return_dtype=pl.String)
            .alias("_svc")
        )
        # equal times are ordered by arrival (a nanosecond apart), so an event never
        # counts one that came after it, wherever batches were cut
        ev = (
            events.with_columns(svc)
            .sort("ts_start", "_i")
            .with_columns(
                _t=pl.col("ts_start").cast(pl.Datetime("ns", "UTC"))
                + pl.duration(nanoseconds=pl.col("_i").rank("ordinal").over("ts_start") - 1)
            )
        )
        rolled = ev.rolling("_t", period=period, closed="right", group_by=["site", "src_ip"]).agg(
            _i=pl.col("_i").last(),
            _n=pl.col("dst_ip").n_unique(),
            _services=pl.col("_svc").unique().sort().str.join(", "),
            _examples=pl.col("dst_ip").unique(maintain_order=True).head(3).str.join(", "),
        )
        # rolling keeps one row per event in order; rows with equal times share a window
        out = ev.join(rolled.select("_i", "_n", "_services", "_examples"), on="_i", how="left")
        return out.drop("_t", "_svc")

    def _with_lead(self, counted: pl.DataFrame, firing: pl.DataFrame) -> pl.DataFrame:
        """The firing events, and the events not yet alarmed that led to them: of the same
        source, within the window before a firing event; each takes the count of the
        first firing event whose window holds it."""
        assert isinstance(self.settings, LateralSettings)
        if firing.height == 0:
            return firing
        period = timedelta(seconds=self.settings.window)
        fires = firing.select(
            "site",
            "src_ip",
            _ft=pl.col("ts_start"),
            _fi=pl.col("_i"),
            _fn="_n",
            _fs="_services",
            _fe="_examples",
        )
        lead = (
            counted.filter(
                ~pl.col("alarmed") & ~pl.col("_i").is_in(fires.get_column("_fi").implode())
            )
            .join(fires, on=["site", "src_ip"], how="inner")
            .filter(
                (pl.col("ts_start") > pl.col("_ft") - period)
                & (
                    (pl.col("ts_start") < pl.col("_ft"))
                    | ((pl.col("ts_start") == pl.col("_ft")) & (pl.col("_i") < pl.col("_fi")))
                )
            )
            .sort("_ft", "_fi")
            .group_by("_i", maintain_order=True)
            .first()
            .with_columns(_n=pl.col("_fn"), _services=pl.col("_fs"), _examples=pl.col("_fe"))
        )
        return pl.concat([firing, lead.select(firing.columns)], how="vertical_relaxed")

    def _alarms(self, rows: pl.DataFrame) -> pl.DataFrame:
        """One alarm per new admin pair in ``rows``."""
        assert isinstance(self.settings, LateralSettings)
        s = self.settings
        if rows.height == 0:
            return empty_alarms()
        span = s.full_targets - s.min_targets
        frac = ((pl.col("_n") - s.min_targets) / span).clip(0.0, 1.0) if span > 0 else pl.lit(1.0)
        w = format_duration(s.window)
        svc = service(pl.col("dst_port"), pl.col("proto"))
        n = pl.col("_n").cast(pl.String)
        alarms = rows.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=pl.col("ts_start"),
            ts_end=pl.max_horizontal("ts_start", "ts_end"),
            site="site",
            src_ip="src_ip",
            dst_ip="dst_ip",
            dst_port="dst_port",
            proto="proto",
            direction="direction",
            score=(0.5 + 0.5 * frac).clip(0.0, 1.0),
            entity=pl.col("src_ip"),
            observed=pl.concat_str(
                [n, pl.lit(f" new admin targets in {w} ("), pl.col("_services"), pl.lit(")")]
            ),
            expected=pl.lit(f"fewer than {s.min_targets} new admin targets in {w}"),
            observed_value=pl.col("_n").cast(pl.Float64),
            expected_value=pl.lit(0.0),
            threshold=pl.lit(float(s.min_targets)),
            reason=pl.concat_str(
                [
                    pl.col("src_ip"),
                    pl.lit(" reached "),
                    n,
                    pl.lit(f" internal hosts it never used admin services on, within {w} ("),
                    pl.col("_services"),
                    pl.lit("; e.g. "),
                    pl.col("_examples"),
                    pl.lit("); this one: "),
                    pl.col("dst_ip"),
                    pl.lit(" on "),
                    svc,
                    pl.when(pl.col("service_new"))
                    .then(pl.concat_str([pl.lit(", a service the source never used before")]))
                    .otherwise(pl.lit("")),
                ]
            ),
        )
        alarms = alarms.filter(pl.col("score") >= s.min_score)
        return conform_alarms(alarms.sort("ts", "src_ip", "dst_ip", "dst_port", "proto"))

    def _keep(self, counted: pl.DataFrame, alarmed: pl.Series) -> None:
        """Keep the new pairs of the last window, those just alarmed marked."""
        assert isinstance(self.settings, LateralSettings)
        newest = counted.get_column("ts_start").max()
        period = timedelta(seconds=self.settings.window)
        self.recent = (
            counted.with_columns(alarmed=pl.col("alarmed") | pl.col("_i").is_in(alarmed.implode()))
            .filter(pl.col("ts_start") > pl.lit(newest, dtype=UTC_US) - period)
            .select(list(_RECENT))
            .sort("ts_start", *PAIR)
        )

    def state(self) -> dict[str, pa.Table]:
        return {
            "pairs": self.pairs.to_arrow(),
            "client_services": self.client_services.to_arrow(),
            "recent": self.recent.to_arrow(),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.pairs.load(state.get("pairs"))
        self.client_services.load(state.get("client_services"))
        self.recent = restore_frame(state.get("recent"), _RECENT)
