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
reaches ``min_evidence`` (5) the client alarms at the query that crossed it, so the alarm
is timely: it names the domains counted so far with their scores (the resolved ones
first), the time they took and the resolver. Its score is the mean DGA score of the
counted domains. Names under no public suffix (single labels: a browser's random
intranet probes; ``.local``, ``corp.lan``) are never counted.

A burst goes on after the threshold: a bot tries dozens of names until one resolves.
Like Zeek's SumStats (a threshold callback, then the epoch's result), the window that
alarmed is reported again when it closes (event time one window past its end, the
grace late answers get), if more domains were counted after the crossing: a *closing*
alarm of the same client, resolver, port and first query time, so it joins the same
event, whose observed value and reason cover the whole window (every domain counted,
over how long, the resolved ones first among the examples, where the threshold was
crossed). Its score is the crossing's raised towards 1 by the share of the evidence that
came after it, ``s + (1 - s) * (1 - E_crossing / E_window) / 2``, but at least the whole
window's mean DGA score: it is higher, so it leads the event. The end of the input
(``finish``) closes the windows still open.

Nothing is learned (``learns = False``: it alarms from the first query, during the
learning period too). State: the counted domains of each client's open windows, the
windows that alarmed (with what their last alarm reported) and the newest query time,
so windows straddling batches give the same alarms as one batch would; all are
checkpointed as Arrow tables.
"""

from __future__ import annotations

from datetime import datetime, timedelta

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
    note_reported,
    regrown_score,
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
_ALARMED: dict[str, pl.DataType] = {
    "src_ip": pl.String(),
    "window": UTC_US,
    # the crossing alarm's resolver, port and protocol: the closing alarm joins its event
    "dst_ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
    "cross_ts": UTC_US,  # the query that crossed the threshold
    "cross_ev": pl.Float64(),  # evidence at the crossing
    "rep_ev": pl.Float64(),  # evidence the window's last alarm reported
    "rep_score": pl.Float64(),  # and that alarm's score
}
_NEWEST: dict[str, pl.DataType] = {"newest": UTC_US}
_WIN = ["src_ip", "window"]


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
        self.alarmed = pl.DataFrame(schema=_ALARMED)  # open windows that alarmed
        self.newest: datetime | None = None  # newest query time seen

    @property
    def _s(self) -> DgaSettings:
        assert isinstance(self.settings, DgaSettings)
        return self.settings

    def learn(self, batch: Batch) -> None:
        return None

    def score(self, batch: Batch) -> pl.DataFrame:
        dns = batch.dns
        if dns.height == 0 or "ts" not in dns.columns:
            return empty_alarms()
        latest = dns.get_column("ts").cast(UTC_US).max()
        if not isinstance(latest, datetime):
            return empty_alarms()
        new = self._evidence(dns)
        if self.newest is not None:  # windows already closed: too late to count
            new = new.filter(pl.col("window") > self._closed_until(self.newest))
            latest = max(latest, self.newest)
        rows = pl.concat([self.rows, new]).sort(
            "src_ip", "window", "ts", "registered", "query", maintain_order=True
        )
        rows = rows.unique([*_WIN, "registered"], keep="first", maintain_order=True)
        crossing = self._crossings(rows)
        closed = pl.col("window") <= self._closed_until(latest)
        closing = self._closing(rows, closed)
        self.newest = latest
        self.rows = rows.filter(~closed)
        self.alarmed = self.alarmed.filter(~closed)
        return self._finish_alarms([crossing, closing])

    def finish(self, score_from: datetime | None) -> pl.DataFrame:
        """The input ended: the windows that alarmed and grew since are reported whole
        (they stay open, so a continued input reports them again only if they grow)."""
        if score_from is None or self.alarmed.height == 0:
            return empty_alarms()
        return self._finish_alarms([self._closing(self.rows, pl.lit(True))])

    def _closed_until(self, latest: datetime) -> datetime:
        """Windows starting at or before this are closed: event time passed their end by
        one more window (the grace late answers get)."""
        return latest - timedelta(seconds=2 * self._s.window)

    def _crossings(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Alarms of the windows whose evidence reaches the threshold, at the query that
        crossed it; the windows are remembered as alarmed."""
        s = self._s
        pending = rows.join(self.alarmed.select(_WIN), on=_WIN, how="anti", maintain_order="left")
        weight = pl.when(pl.col("nx")).then(1.0).otherwise(s.resolved_weight)
        pending = pending.with_columns(_ev=weight.cum_sum().over(_WIN))
        first = (
            pending.filter(pl.col("_ev") >= s.min_evidence - 1e-9)
            .group_by(_WIN)
            .agg(_cross=pl.col("ts").min())
        )
        if first.height == 0:
            return empty_alarms()
        counted = pending.join(first, on=_WIN, how="inner").filter(
            pl.col("ts") <= pl.col("_cross")  # every query up to the crossing time
        )
        g = self._summary(counted.drop("_ev", "_cross"))
        fresh = g.select(
            *_WIN,
            "dst_ip",
            "dst_port",
            "proto",
            cross_ts="ts_end",
            cross_ev="evidence",
            rep_ev="evidence",
            rep_score="score",
        )
        self.alarmed = pl.concat([self.alarmed, fresh.cast(_ALARMED)]).sort(_WIN)  # type: ignore[arg-type]
        return self._describe(g, closing=False)

    def _closing(self, rows: pl.DataFrame, which: pl.Expr) -> pl.DataFrame:
        """Closing alarms of the alarmed windows ``which`` selects whose evidence grew
        since their last alarm: the whole window, as the crossing alarm's communication."""
        due = self.alarmed.filter(which)
        if due.height == 0:
            return empty_alarms()
        g = self._summary(rows.join(due.select(_WIN), on=_WIN, how="semi"))
        g = g.drop("dst_ip", "dst_port", "proto").join(due, on=_WIN, how="inner")
        g = g.filter(pl.col("evidence") > pl.col("rep_ev") + 1e-9)
        if g.height == 0:
            return empty_alarms()
        raised = regrown_score("rep_ev", "evidence")
        g = g.with_columns(score=pl.max_horizontal(pl.col("score"), raised))
        self.alarmed = note_reported(
            self.alarmed, g, _WIN, {"rep_ev": "evidence", "rep_score": "score"}
        )
        return self._describe(g, closing=True)

    def _finish_alarms(self, parts: list[pl.DataFrame]) -> pl.DataFrame:
        alarms = pl.concat([p for p in parts if p.height] or [empty_alarms()])
        alarms = alarms.filter(pl.col("score") >= self._s.min_score)
        return alarms.sort("ts", "src_ip", maintain_order=True)

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

    def _summary(self, counted: pl.DataFrame) -> pl.DataFrame:
        """Per (client, window) of ``counted`` rows: times, counts, evidence, mean DGA
        score, examples (resolved names first, then the highest scores), the resolver of
        the last query."""
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
            *_WIN, "nx", "dga_score", "query", descending=[False, False, False, True, False]
        )
        g = counted.group_by(_WIN, maintain_order=True).agg(
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
        return g.with_columns(
            evidence=pl.col("n_nx").cast(pl.Float64) + pl.col("n_res") * s.resolved_weight
        )

    def _describe(self, g: pl.DataFrame, closing: bool) -> pl.DataFrame:
        """Alarm rows of :meth:`_summary` rows; ``closing``: the whole window (``g`` also
        carries the crossing's ``cross_ts`` and ``cross_ev``)."""
        s = self._s
        g = g.with_columns(direction=self._direction(g))
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
        total = (pl.col("n_nx") + pl.col("n_res")).cast(pl.String)
        evidence = pl.col("evidence").round(1).cast(pl.String)
        start = pl.col("window").dt.strftime("%H:%M")
        if closing:
            observed = [total, pl.lit(" random-looking domains ("), counts, pl.lit(") in ")]
            observed += [span, pl.lit(f", the whole {win} window")]
            detail = [
                pl.lit(" over its "),
                pl.lit(win),
                pl.lit(" window from "),
                start,
                pl.lit(" ("),
                counts,
                pl.lit("; evidence "),
                evidence,
                pl.lit(f", threshold {s.min_evidence:g} crossed at "),
                pl.col("cross_ts").dt.strftime("%H:%M:%S"),
                pl.lit(" with "),
                pl.col("cross_ev").round(1).cast(pl.String),
                pl.lit(")"),
            ]
        else:
            observed = [total, pl.lit(" random-looking domains ("), counts, pl.lit(") in "), span]
            detail = [
                pl.lit(" ("),
                counts,
                pl.lit("; evidence "),
                evidence,
                pl.lit(f" >= {s.min_evidence:g} in a {win} window from "),
                start,
                pl.lit(")"),
            ]
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
            observed=pl.concat_str(observed),
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
                    total,
                    pl.lit(" random-looking registered domains in "),
                    span,
                    *detail,
                    pl.lit(" via resolver "),
                    pl.col("dst_ip").fill_null("?"),
                    pl.lit(": "),
                    pl.col("examples"),
                ]
            ),
        )
        alarms = alarms.sort("ts", "src_ip")
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

    def state(self) -> dict[str, pa.Table]:
        newest = pl.DataFrame({"newest": [self.newest]}, schema=_NEWEST)
        return {
            "rows": self.rows.to_arrow(),
            "alarmed": self.alarmed.to_arrow(),
            "newest": newest.to_arrow(),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.rows = restore_frame(state.get("rows"), _ROWS)
        # a checkpoint from before closing alarms: its windows report none
        self.alarmed = restore_frame(state.get("alarmed"), _ALARMED, missing_as_null=True)
        newest = restore_frame(state.get("newest"), _NEWEST)
        value = newest.item(0, "newest") if newest.height else None
        self.newest = value if isinstance(value, datetime) else None
