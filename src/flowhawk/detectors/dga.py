"""N4: a host querying machine-generated (DGA) domains, most of which do not exist.

A bot with a domain generation algorithm looks for its controller by querying a long
list of pseudo-random names, of which its operator registered only a few: its resolver
answers NXDOMAIN again and again, each time for another random-looking registered
domain. One random-looking name alone says little (CDNs, typos, anti-virus lookups);
many distinct ones failing within minutes is the DGA's signature.

Per client host and window of event time (``window``, 5 minutes by default, aligned
to the epoch): each distinct registered domain the client queried counts once, as
evidence 1 when an answer was NXDOMAIN and its DGA score (:mod:`flowhawk.dns.dga`)
is at least ``name_score``, and as ``resolved_weight`` (0.5) when it resolved with a
score at least the model's ``dga`` verdict threshold (a generated name that resolved
may be the controller, but alone it is weaker evidence). When the evidence of a window
reaches ``min_evidence`` (5) the client alarms, once for that window, at the query that
crossed it: the alarm names the domains counted so far with their scores (the resolved
ones first), the time they took and the resolver. Its score is the mean DGA score of
the counted domains. Names under no public suffix (single labels: a browser's random
intranet probes; ``.local``, ``corp.lan``) are never counted.

Nothing is learned (``learns = False``: it alarms from the first query, during the
learning period too). State: the counted domains of each client's open window and the
windows that already alarmed, so windows straddling batches give the same alarm as
one batch would; both are checkpointed as Arrow tables.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk import netaddr
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
from flowhawk.dns.dga import shipped_model, split_names
from flowhawk.schema import EAST_WEST, EXTERNAL, NORTH_SOUTH
from flowhawk.settingtypes import Duration, format_duration

EXAMPLES = 4  # names shown in a reason

_ROWS: dict[str, pl.DataType] = {
    "src_ip": pl.String(),
    "window": UTC_US,
    "registered": pl.String(),
    "ts": UTC_US,
    "query": pl.String(),
    "dst_ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
    "nx": pl.Boolean(),
    "dga_score": pl.Float64(),
}
_ALARMED: dict[str, pl.DataType] = {"src_ip": pl.String(), "window": UTC_US}


class DgaSettings(DetectorSettings):
    weight: float = Field(default=60.0, ge=0, le=100)
    window: Duration = Field(
        default=300.0,
        gt=0,
        description="Window of event time in which a client's DGA evidence adds up "
        "(seconds or e.g. '5m'; aligned to the epoch).",
    )
    min_evidence: float = Field(
        default=5.0,
        gt=0,
        description="Evidence of one window from which the client alarms: 1 per distinct "
        "registered domain answered NXDOMAIN, resolved_weight per resolved one.",
    )
    name_score: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="DGA score from which an NXDOMAIN domain counts (default: the "
        "model's 'suspicious' verdict threshold).",
    )
    resolved_weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Evidence of a resolved domain scoring at least the model's 'dga' "
        "verdict threshold (0: resolved names never count).",
    )


class DgaDomains(Detector):
    """N4: bursts of NXDOMAIN answers for random-looking registered domains per client."""

    method = "N4"
    title = "DGA domains"
    Settings = DgaSettings
    learns = False
    inputs = ("dns",)

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        self.rows = pl.DataFrame(schema=_ROWS)  # counted domains of open windows
        self.alarmed = pl.DataFrame(schema=_ALARMED)  # windows that already alarmed

    @property
    def _s(self) -> DgaSettings:
        assert isinstance(self.settings, DgaSettings)
        return self.settings

    def learn(self, batch: Batch) -> None:
        return None

    def score(self, batch: Batch) -> pl.DataFrame:
        new = self._evidence(batch.dns)
        if new.height == 0:
            return empty_alarms()
        rows = pl.concat([self.rows, new]).sort(
            "src_ip", "window", "ts", "registered", "query", maintain_order=True
        )
        rows = rows.unique(["src_ip", "window", "registered"], keep="first", maintain_order=True)
        rows = rows.join(self.alarmed, on=["src_ip", "window"], how="anti", maintain_order="left")
        s = self._s
        weight = pl.when(pl.col("nx")).then(1.0).otherwise(s.resolved_weight)
        rows = rows.with_columns(_ev=weight.cum_sum().over("src_ip", "window"))
        crossed = rows.filter(pl.col("_ev") >= s.min_evidence - 1e-9)
        first = crossed.group_by("src_ip", "window").agg(_cross=pl.col("ts").min())
        counted = rows.join(first, on=["src_ip", "window"], how="inner").filter(
            pl.col("ts") <= pl.col("_cross")  # every query up to the crossing time
        )
        alarms = self._alarms(counted) if counted.height else empty_alarms()
        latest = new.get_column("ts").max()
        assert isinstance(latest, datetime)
        self._keep(rows.drop("_ev"), first.select("src_ip", "window"), latest)
        return alarms

    def _evidence(self, dns: pl.DataFrame) -> pl.DataFrame:
        """Rows of the batch that count as DGA evidence (see the module docstring)."""
        if dns.height == 0:
            return pl.DataFrame(schema=_ROWS)
        s = self._s
        model = shipped_model()
        name_score = model.suspicious if s.name_score is None else s.name_score
        q = dns.select(
            pl.col("ts").cast(UTC_US),
            pl.col("src_ip").cast(pl.String),
            pl.col("dst_ip").cast(pl.String),
            pl.col("dst_port").cast(pl.Int32),
            pl.col("proto").cast(pl.Int16),
            pl.col("query").cast(pl.String),
            nx=pl.col("rcode_name") == "NXDOMAIN",
            resolved=(pl.col("rcode_name") == "NOERROR") & (pl.col("answers").list.len() > 0),
        ).filter(
            pl.col("ts").is_not_null()
            & pl.col("src_ip").is_not_null()
            & pl.col("query").is_not_null()
            & (pl.col("nx").fill_null(False) | pl.col("resolved").fill_null(False))
        )
        if q.height == 0:
            return pl.DataFrame(schema=_ROWS)
        names = q.get_column("query").unique().sort()
        parts = split_names(names).with_columns(query=names).filter(pl.col("status") == "ok")
        parts = parts.with_columns(
            dga_score=pl.Series(model.score_labels(parts.get_column("label").to_arrow()))
        )
        q = q.join(
            parts.select("query", "registered", "dga_score"),
            on="query",
            how="inner",
            maintain_order="left",
        )
        keep = (pl.col("nx") & (pl.col("dga_score") >= name_score)) | (
            pl.col("resolved") & (pl.col("dga_score") >= model.dga) & (s.resolved_weight > 0)
        )
        every = f"{int(s.window * 1_000_000)}us"
        q = q.filter(keep.fill_null(False)).with_columns(
            window=pl.col("ts").dt.truncate(every),
            nx=pl.col("nx").fill_null(False),
        )
        return q.select(list(_ROWS)).cast(_ROWS)  # type: ignore[arg-type]

    def _alarms(self, counted: pl.DataFrame) -> pl.DataFrame:
        s = self._s
        seconds = (pl.col("ts").max() - pl.col("ts").min()).dt.total_seconds()
        example = pl.concat_str(
            [
                pl.col("query"),
                pl.lit(" "),
                pl.col("dga_score").round(2).cast(pl.String),
                pl.when(pl.col("nx")).then(pl.lit("")).otherwise(pl.lit(" resolved")),
            ]
        )
        counted = counted.sort(
            "src_ip",
            "window",
            "nx",
            pl.col("dga_score"),
            "query",
            descending=[False, False, False, True, False],
        )
        g = counted.group_by("src_ip", "window", maintain_order=True).agg(
            ts=pl.col("ts").min(),
            ts_end=pl.col("ts").max(),
            seconds=seconds,
            n_nx=pl.col("nx").sum(),
            n_res=(~pl.col("nx")).sum(),
            score=pl.col("dga_score").mean(),
            examples=example.head(EXAMPLES).str.join(", "),
            dst_ip=pl.col("dst_ip").sort_by("ts", "query").last(),
            dst_port=pl.col("dst_port").sort_by("ts", "query").last(),
            proto=pl.col("proto").sort_by("ts", "query").last(),
        )
        g = g.with_columns(
            evidence=pl.col("n_nx").cast(pl.Float64) + pl.col("n_res") * s.resolved_weight,
            direction=self._direction(g),
        )
        win = format_duration(s.window)
        counts = pl.concat_str(
            [
                pl.col("n_nx").cast(pl.String),
                pl.lit(" NXDOMAIN"),
                pl.when(pl.col("n_res") > 0)
                .then(
                    pl.concat_str(
                        [pl.lit(", "), pl.col("n_res").cast(pl.String), pl.lit(" resolved")]
                    )
                )
                .otherwise(pl.lit("")),
            ]
        )
        span = pl.concat_str(
            [pl.col("seconds").round(0).cast(pl.Int64).cast(pl.String), pl.lit(" s")]
        )
        alarms = g.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts="ts",
            ts_end="ts_end",
            site=pl.lit("", pl.String),  # the client's site, set below
            src_ip="src_ip",
            dst_ip=pl.col("dst_ip").fill_null(""),
            dst_port=pl.col("dst_port").fill_null(53),
            proto=pl.col("proto").fill_null(17),
            direction="direction",
            score=pl.col("score").clip(0.0, 1.0),
            entity="src_ip",
            observed=pl.concat_str(
                [
                    (pl.col("n_nx") + pl.col("n_res")).cast(pl.String),
                    pl.lit(" random-looking domains ("),
                    counts,
                    pl.lit(") in "),
                    span,
                ]
            ),
            expected=pl.lit(
                f"evidence below {s.min_evidence:g} per {win} (1 per NXDOMAIN domain, "
                f"{s.resolved_weight:g} per resolved one)"
            ),
            observed_value=pl.col("evidence"),
            expected_value=pl.lit(0.0),
            threshold=pl.lit(float(s.min_evidence)),
            reason=pl.concat_str(
                [
                    pl.col("src_ip"),
                    pl.lit(" queried "),
                    (pl.col("n_nx") + pl.col("n_res")).cast(pl.String),
                    pl.lit(" random-looking registered domains in "),
                    span,
                    pl.lit(" ("),
                    counts,
                    pl.lit(f"; evidence {{}} >= {s.min_evidence:g} in a {win} window from "),
                    pl.col("window").dt.strftime("%H:%M"),
                    pl.lit(") via resolver "),
                    pl.col("dst_ip").fill_null("?"),
                    pl.lit(": "),
                    pl.col("examples"),
                ]
            ).str.replace("{}", pl.col("evidence").round(1).cast(pl.String), literal=True),
        )
        alarms = alarms.filter(pl.col("score") >= s.min_score).sort("ts", "src_ip")
        alarms = alarms.with_columns(site=self.context.site_of(alarms.get_column("src_ip")))
        return conform_alarms(alarms)

    def _direction(self, g: pl.DataFrame) -> pl.Series:
        """east-west for an internal resolver and client, north-south when one is."""

        def internal(col: str) -> np.ndarray:
            hi, lo, ok = netaddr.parse(g.get_column(col))
            inside = self.context.internal.contains(hi, lo) | self.context.local_scope.contains(
                hi, lo
            )
            return inside & ok

        ci, si = internal("src_ip"), internal("dst_ip")
        out = np.where(ci & si, EAST_WEST, np.where(ci | si, NORTH_SOUTH, EXTERNAL))
        return pl.Series("direction", out, dtype=pl.String)

    def _keep(self, rows: pl.DataFrame, alarmed: pl.DataFrame, latest: datetime) -> None:
        """Carry what later batches of still-open windows need: the counted rows of
        windows that have not alarmed, the windows that alarmed (one window back too,
        for rows arriving slightly late)."""
        horizon = pl.lit(latest, dtype=UTC_US) - pl.duration(
            microseconds=int(2 * self._s.window * 1_000_000)
        )
        open_ = pl.col("window") > horizon
        rows = rows.join(alarmed, on=["src_ip", "window"], how="anti")
        self.rows = rows.filter(open_).select(list(_ROWS))
        self.alarmed = (
            pl.concat([self.alarmed, alarmed.cast(_ALARMED)])  # type: ignore[arg-type]
            .filter(open_)
            .unique(maintain_order=True)
            .sort("src_ip", "window")
        )

    def state(self) -> dict[str, pa.Table]:
        return {"rows": self.rows.to_arrow(), "alarmed": self.alarmed.to_arrow()}

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.rows = restore_frame(state.get("rows"), _ROWS)
        self.alarmed = restore_frame(state.get("alarmed"), _ALARMED)
