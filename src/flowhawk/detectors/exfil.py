"""N8: exfiltration (uploads far above the host's baseline, to rare destinations) and data
hoarding (one internal host pulling far more than usual from internal servers).

Exfiltration. In each window (one hour by default, aligned in event time) an internal
host's *upload* is what it sent as the client of north-south flows. The part sent to
*rare* destinations counts: destinations that at most ``rare_clients`` internal hosts
had talked to before the window (:class:`~flowhawk.detectors.popularity.Popularity`;
a destination nobody had contacted is new). The host alarms once that part reaches
``max(upload_floor, upload_factor * baseline)``, the baseline being the
``quantile`` (0.99) of the host's total upload per window over its past windows
(:class:`~flowhawk.detectors.volbaseline.WindowBaseline`, half-life ``half_life``).
The floor (20 MB) keeps hosts that upload almost nothing from alarming on a few
megabytes; the factor (10) asks for an order of magnitude above the most the host
usually sends. Uploads to popular services are left out of the count (cloud suites
every host uses), not out of the baseline.

Data hoarding. A host's bytes *received* as the client of east-west flows (what it
pulled from internal servers) in a window alarm once they reach
``max(hoard_floor, hoard_factor * baseline)`` (200 MB, 10x), or once it pulled
``hoard_server_share`` of that (a quarter) from more distinct servers than
``max(hoard_min_servers, hoard_server_factor * its usual servers per window)``.

Both alarm the moment the window's sum crosses the limit (:mod:`.volwindow`), one row
per communication carrying at least ``min_share`` of the limit; the entity is the
internal host. Score: ``0.4 + 0.4 * min(1, log10(sent / b) / 3)`` with ``b`` the
baseline, at least ``floor / factor`` (so the volume term starts near 0.13 at the limit
and is full at a thousand times the baseline), ``+ 0.2`` for a destination nobody had
contacted (``+ 0.1`` when one or two hosts had), ``+ 0.2`` for hoarding from many
servers.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk.config import Duration, format_duration
from flowhawk.detectors.base import (
    Batch,
    Detector,
    DetectorContext,
    DetectorSettings,
    conform_alarms,
    empty_alarms,
)
from flowhawk.detectors.popularity import Popularity, address_hash
from flowhawk.detectors.text import endpoint
from flowhawk.detectors.volbaseline import host_hash
from flowhawk.detectors.volwindow import ROW_SCHEMA, Limits, WindowedVolume


class ExfilSettings(DetectorSettings):
    weight: float = Field(
        default=70.0, ge=0, le=100, description="Risk (0-100) an alarm with score 1 contributes."
    )
    window: Duration = Field(
        default=3600.0, gt=0, description="Window of event time volumes are summed over."
    )
    quantile: float = Field(
        default=0.99,
        gt=0,
        le=1,
        description="Quantile of a host's past windows taken as its baseline.",
    )
    half_life: Duration = Field(
        default=14 * 86400.0, gt=0, description="Half-life of a past window in the baselines."
    )
    min_history: float = Field(
        default=3.0,
        ge=0,
        description="Windows of history a host needs before its baseline counts (else floors).",
    )
    upload_floor: float = Field(
        default=20e6, ge=0, description="Bytes to rare destinations in a window always needed."
    )
    upload_factor: float = Field(
        default=10.0, ge=1, description="Times the host's upload baseline to alarm."
    )
    rare_clients: int = Field(
        default=2,
        ge=0,
        description="A destination is rare while at most this many internal hosts used it.",
    )
    hoard_floor: float = Field(
        default=200e6, ge=0, description="Bytes pulled from internal servers always needed."
    )
    hoard_factor: float = Field(
        default=10.0, ge=1, description="Times the host's pulled-bytes baseline to alarm."
    )
    hoard_min_servers: int = Field(
        default=5, ge=1, description="Fewest distinct internal servers that count as many."
    )
    hoard_server_factor: float = Field(
        default=3.0, ge=1, description="Times the host's usual servers per window that is many."
    )
    hoard_server_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Share of the byte limit enough when pulling from many servers.",
    )
    min_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of the limit a communication must carry to be named in an alarm.",
    )


EXFIL_NAME = "exfiltration"
HOARD_NAME = "data hoarding"


class ExfiltrationHoarding(Detector):
    """N8: uploads far above a host's baseline to rare destinations; data hoarding."""

    method = "N8"
    title = "exfiltration or data hoarding"
    Settings = ExfilSettings

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        assert isinstance(settings, ExfilSettings)
        s = settings
        windows = 1.0 / s.window
        common = {
            "window_seconds": s.window,
            "quantile": s.quantile,
            "half_life_windows": s.half_life * windows,
            "min_history": s.min_history,
        }
        self.upload = WindowedVolume(
            limits=Limits(s.upload_floor, s.upload_factor, s.min_share), **common
        )
        self.hoard = WindowedVolume(
            limits=Limits(
                s.hoard_floor,
                s.hoard_factor,
                s.min_share,
                min_peers=float(s.hoard_min_servers),
                peer_factor=s.hoard_server_factor,
                peer_share=s.hoard_server_share,
            ),
            **common,
        )
        self.popularity = Popularity(s.rare_clients)

    def learn(self, batch: Batch) -> None:
        self._run(batch.flows, scoring=False)

    def score(self, batch: Batch) -> pl.DataFrame:
        return self._run(batch.flows, scoring=True)

    def _run(self, flows: pl.DataFrame, scoring: bool) -> pl.DataFrame:
        flows = _clean(flows)
        if flows.height == 0:
            return empty_alarms()
        up = _rows(flows.filter(pl.col("src_internal") & ~pl.col("dst_internal")), "src_bytes")
        pulls = _rows(
            flows.filter(
                pl.col("src_internal")
                & pl.col("dst_internal")
                & (pl.col("src_ip") != pl.col("dst_ip"))
            ),
            "dst_bytes",
        )
        fired_up = []
        for w, part in self.upload.split(up):
            closed = self.upload.advance(w)
            if closed is not None and closed.height:
                self.popularity.update(address_hash(closed.get_column("peer")), host_hash(closed))
            fired_up.append(self.upload.add(self._rarity(part), scoring))
        fired_hoard = []
        for w, part in self.hoard.split(pulls):
            self.hoard.advance(w)
            fired_hoard.append(self.hoard.add(part, scoring))
        if not scoring:
            return empty_alarms()
        alarms = [_exfil_alarms(f, self.settings) for f in fired_up if f.height]
        alarms += [_hoard_alarms(f, self.settings) for f in fired_hoard if f.height]
        if not alarms:
            return empty_alarms()
        out = conform_alarms(pl.concat(alarms, how="vertical_relaxed"))
        out = out.filter(pl.col("score") >= self.settings.min_score)
        return out.sort("ts", "src_ip", "dst_ip", "dst_port", "proto", "name")

    def _rarity(self, part: pl.DataFrame) -> pl.DataFrame:
        """Mark uploads to rare destinations (as they stood when the window opened)."""
        assert isinstance(self.settings, ExfilSettings)
        clients, own = self.popularity.lookup(
            address_hash(part.get_column("peer")), host_hash(part)
        )
        rare = clients <= self.settings.rare_clients
        return part.with_columns(
            clients=pl.Series(clients, dtype=pl.Int64),
            own=pl.Series(own, dtype=pl.Boolean),
            track=pl.Series(rare, dtype=pl.Boolean),
            counted=pl.when(pl.Series(rare)).then("total").otherwise(0),
        )

    def state(self) -> dict[str, pa.Table]:
        pairs, popular = self.popularity.to_arrow()
        return {
            **self.upload.state("upload_"),
            **self.hoard.state("hoard_"),
            "popularity_pairs": pairs,
            "popularity_popular": popular,
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.upload.load_state(state, "upload_")
        self.hoard.load_state(state, "hoard_")
        self.popularity.load(state.get("popularity_pairs"), state.get("popularity_popular"))


def _clean(flows: pl.DataFrame) -> pl.DataFrame:
    """Flows with the columns used here usable: no null addresses or times, byte
    counters null or negative read as 0, null internal flags as False."""
    if flows.height == 0:
        return flows
    return flows.filter(
        pl.col("src_ip").is_not_null()
        & pl.col("dst_ip").is_not_null()
        & pl.col("ts_start").is_not_null()
    ).with_columns(
        pl.col("src_bytes", "dst_bytes").fill_null(0).clip(lower_bound=0),
        pl.col("src_internal", "dst_internal").fill_null(False),
        pl.col("site").fill_null(""),
        pl.col("direction").fill_null(""),
        pl.col("ts_end").fill_null(pl.col("ts_start")),
        pl.col("dst_port").fill_null(0),
        pl.col("proto").fill_null(0),
    )


def _rows(flows: pl.DataFrame, sent: str) -> pl.DataFrame:
    """Per-flow rows for :class:`WindowedVolume`: the client is the host, ``sent`` bytes."""
    return flows.select(
        "site",
        host=pl.col("src_ip"),
        peer=pl.col("dst_ip"),
        dst_port="dst_port",
        proto="proto",
        direction="direction",
        ts_start="ts_start",
        ts_end="ts_end",
        counted=pl.col(sent),
        total=pl.col(sent),
        track=pl.lit(True),
        clients=pl.lit(None, dtype=pl.Int64),
        own=pl.lit(None, dtype=pl.Boolean),
    ).cast(ROW_SCHEMA)  # type: ignore[arg-type]


def fmt_bytes(b: pl.Expr) -> pl.Expr:
    """``812 B``, ``3.4 kB``, ``66.4 MB``, ``1.2 GB`` (decimal units)."""
    b = b.cast(pl.Float64)

    def unit(div: float, name: str) -> pl.Expr:
        return pl.concat_str([(b / div).round(1).cast(pl.String), pl.lit(f" {name}")])

    return (
        pl.when(b < 1e3)
        .then(pl.concat_str([b.round(0).cast(pl.Int64).cast(pl.String), pl.lit(" B")]))
        .when(b < 1e6)
        .then(unit(1e3, "kB"))
        .when(b < 1e9)
        .then(unit(1e6, "MB"))
        .otherwise(unit(1e9, "GB"))
    )


def _window_text(seconds: float) -> str:
    return format_duration(seconds)


def _volume_score(floor: float, factor: float) -> pl.Expr:
    """0..0.8: 0.4 + 0.4 * min(1, log10(sent / baseline) / 3), baseline at least
    floor / factor."""
    base = pl.max_horizontal(pl.col("baseline"), pl.lit(max(floor / factor, 1.0)))
    ratio = (pl.col("host_bytes") / base).clip(lower_bound=1.0)
    return 0.4 + 0.4 * (ratio.log10() / 3.0).clip(upper_bound=1.0)


def _usual(unit_text: str) -> pl.Expr:
    """``40x its usual 1.6 MB/1h`` or ``no baseline yet``."""
    return (
        pl.when(pl.col("baseline") > 0)
        .then(
            pl.concat_str(
                [
                    pl.when(pl.col("host_bytes") >= 1000 * pl.col("baseline"))
                    .then(pl.lit("over 1000"))
                    .otherwise(
                        (pl.col("host_bytes") / pl.col("baseline"))
                        .round(0)
                        .cast(pl.Int64)
                        .cast(pl.String)
                    ),
                    pl.lit("x its usual "),
                    fmt_bytes(pl.col("baseline")),
                    pl.lit(f"/{unit_text}"),
                ]
            )
        )
        .otherwise(pl.lit("no baseline yet"))
    )


def _exfil_alarms(fired: pl.DataFrame, settings: DetectorSettings) -> pl.DataFrame:
    assert isinstance(settings, ExfilSettings)
    w = _window_text(settings.window)
    new = pl.col("clients") == 0
    rarity = (
        pl.when(new)
        .then(pl.lit("a destination no internal host had contacted before"))
        .when(pl.col("own") & (pl.col("clients") == 1))
        .then(pl.lit("a destination only this host had contacted before"))
        .otherwise(
            pl.concat_str(
                [
                    pl.lit("a destination only "),
                    pl.col("clients").cast(pl.String),
                    pl.lit(" internal hosts had contacted before"),
                ]
            )
        )
    )
    score = _volume_score(settings.upload_floor, settings.upload_factor) + pl.when(new).then(
        0.2
    ).otherwise(0.1)
    dest = endpoint(pl.col("peer"), pl.col("dst_port"), pl.col("proto"))
    return fired.select(
        **_identity(EXFIL_NAME, score),
        observed=pl.concat_str(
            [
                fmt_bytes(pl.col("host_bytes")),
                pl.lit(f" sent to rare external destinations in {w}, "),
                fmt_bytes(pl.col("comm_bytes")),
                pl.lit(" of it to "),
                dest,
            ]
        ),
        expected=pl.concat_str(
            [
                pl.lit("usually at most "),
                fmt_bytes(pl.col("baseline")),
                pl.lit(f"/{w}; limit "),
                fmt_bytes(pl.col("threshold")),
            ]
        ),
        observed_value=pl.col("host_bytes"),
        expected_value=pl.col("baseline"),
        threshold=pl.col("threshold"),
        reason=pl.concat_str(
            [
                pl.col("host"),
                pl.lit(" uploaded "),
                fmt_bytes(pl.col("host_bytes")),
                pl.lit(f" to rare external destinations within {w} ("),
                _usual(w),
                pl.lit(", limit "),
                fmt_bytes(pl.col("threshold")),
                pl.lit("); "),
                fmt_bytes(pl.col("comm_bytes")),
                pl.lit(" to "),
                dest,
                pl.lit(", "),
                rarity,
            ]
        ),
    )


def _identity(name: str, score: pl.Expr) -> dict[str, pl.Expr]:
    """The alarm columns that name the method, the host, its peer and the score."""
    return {
        "method": pl.lit(ExfiltrationHoarding.method),
        "name": pl.lit(name),
        "ts": pl.col("ts_start"),
        "ts_end": pl.max_horizontal("ts_start", "ts_end"),
        "site": pl.col("site"),
        "src_ip": pl.col("host"),
        "dst_ip": pl.col("peer"),
        "dst_port": pl.col("dst_port"),
        "proto": pl.col("proto"),
        "direction": pl.col("direction"),
        "score": score.clip(0.0, 1.0),
        "entity": pl.col("host"),
    }


def _hoard_alarms(fired: pl.DataFrame, settings: DetectorSettings) -> pl.DataFrame:
    assert isinstance(settings, ExfilSettings)
    w = _window_text(settings.window)
    many = pl.col("peers") >= pl.col("peer_threshold")
    score = _volume_score(settings.hoard_floor, settings.hoard_factor) + pl.when(many).then(
        0.2
    ).otherwise(0.0)
    servers = pl.col("peers").cast(pl.Int64).cast(pl.String)
    return fired.select(
        **_identity(HOARD_NAME, score),
        observed=pl.concat_str(
            [
                fmt_bytes(pl.col("host_bytes")),
                pl.lit(" pulled from "),
                servers,
                pl.lit(f" internal servers in {w}, "),
                fmt_bytes(pl.col("comm_bytes")),
                pl.lit(" of it from "),
                endpoint(pl.col("peer"), pl.col("dst_port"), pl.col("proto")),
            ]
        ),
        expected=pl.concat_str(
            [
                pl.lit("usually at most "),
                fmt_bytes(pl.col("baseline")),
                pl.lit(" from "),
                pl.col("peer_baseline").round(0).cast(pl.Int64).cast(pl.String),
                pl.lit(f" servers/{w}; limit "),
                fmt_bytes(pl.col("threshold")),
            ]
        ),
        observed_value=pl.col("host_bytes"),
        expected_value=pl.col("baseline"),
        threshold=pl.col("threshold"),
        reason=pl.concat_str(
            [
                pl.col("host"),
                pl.lit(" pulled "),
                fmt_bytes(pl.col("host_bytes")),
                pl.lit(" from "),
                servers,
                pl.lit(f" internal servers within {w} ("),
                _usual(w),
                pl.lit(", limit "),
                fmt_bytes(pl.col("threshold")),
                pl.when(many)
                .then(
                    pl.concat_str(
                        [
                            pl.lit("; many servers: at least "),
                            pl.col("peer_threshold").round(0).cast(pl.Int64).cast(pl.String),
                        ]
                    )
                )
                .otherwise(pl.lit("")),
                pl.lit("); "),
                fmt_bytes(pl.col("comm_bytes")),
                pl.lit(" from "),
                endpoint(pl.col("peer"), pl.col("dst_port"), pl.col("proto")),
            ]
        ),
    )
