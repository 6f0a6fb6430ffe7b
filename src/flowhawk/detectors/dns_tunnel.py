"""N5: DNS tunneling, per client and registered domain.

A tunnel (dnscat2, iodine, dns2tcp, DNSExfiltrator, sods, ...) moves data through a
resolver by asking, again and again, for new names under a domain whose name server
it controls: the data rides in long, high-entropy subdomains, and comes back in
records that can carry it (TXT, NULL, CNAME, MX, private types). Each query is
described by :mod:`flowhawk.detectors.dns_tunnel_features` (is its subdomain
*encoded*?); the queries of a client for one registered domain are counted in windows
of event time (:mod:`flowhawk.detectors.dns_tunnel_windows`): ``window`` (10 min)
for tunnels in use, and ``long_window`` (1 day) for slow ones that stay below the
short window's counts.

The score of a window, from its running counts (n queries, e distinct encoded
subdomains, b DNS bytes both ways where the source knows them)::

    content = 0.4 * share of queries with an encoded name
            + 0.3 * min(1, max(0, mean subdomain length - 16) / 32)
            + 0.3 * share of queries of a data-carrying type
    volume  = max(log2(e / 4) / 8, log2(b / 4 KB) / 10), clipped to [0, 1]
    score   = content * (0.7 + 0.3 * volume)

Volume (1,024 distinct encoded names, or 4 MB) raises a window by at most 30 %, and
content decides. Hash-like names looked up with A/AAAA (GUIDs in telemetry, hashed CDN
objects: content about 0.55) stay below the threshold unless there are hundreds of
them; with data-carrying record types, or names of 48 characters and more, they
alarm. Tunnels that poll with short names between data queries (sods) still reach it
through the types and lengths. A window alarms at the first query after which it has
``min_encoded`` distinct encoded subdomains (6; the long window ``long_min_encoded``,
50) and a score of at least ``threshold`` (0.5), once per window; the long window
stays silent for a client and domain the short window already alarmed on that day.

That alarm is timely but tells little of the tunnel: six names of the hundreds it
moves. Like Zeek's SumStats (a threshold callback, then the epoch's result), a window
that alarmed is reported again when it closes (event time passed its end, or the input
ended) if it saw more queries after the crossing: a *closing* alarm with the same
client, resolver, port and first query time, so it joins the crossing alarm's event,
with the whole window's counts, bytes and score (and when the threshold was crossed).
Its score is the window's own, at least the crossing's raised towards 1 by the share of
the window's queries that came after it, so it leads the event. Both windows do this:
a 10-minute window's closing alarm comes minutes after the crossing; the one-day
window's (a slow tunnel) when the day ends, so the event gets the day's whole count
within the day that live detection keeps a window's alarms.

These numbers were set while looking at the five tunnel captures of the evaluation
(eval/eval_dns_tunnel.py, 12 to 493 queries each: the smallest, iodine's handshake,
has 6 encoded names) and at label statistics of popular domains; see eval/README.md.

Lookups that carry data by design are left out: reverse lookups (PTR, ``*.arpa``) and
the domains of ``allow`` (anti-virus and reputation services, DNS blocklists). Other
known shapes are kept out by the features: reversed addresses (all-digit labels),
IDNs, words.

The entity is the client; the alarm names the resolver it asked as server (port 53),
and its direction is east-west when that resolver is internal.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk.config import Duration
from flowhawk.detectors.base import (
    UTC_US,
    Batch,
    Detector,
    DetectorContext,
    DetectorSettings,
    conform_alarms,
    empty_alarms,
)
from flowhawk.detectors.dns_tunnel_features import (
    SKIPPED_TYPES,
    allowed,
    is_data_type,
    name_features,
)
from flowhawk.detectors.dns_tunnel_windows import KEY, Level, Windows
from flowhawk.netaddr import parse
from flowhawk.schema import EAST_WEST, EXTERNAL, NORTH_SOUTH

#: Domains whose lookups carry data by design (reputation services, DNS blocklists).
DEFAULT_ALLOW: list[str] = [
    "arpa",  # reverse lookups
    "sophosxl.net",  # Sophos live protection (hashes and URLs in names)
    "mcafee.com",  # McAfee GTI file and URL reputation
    "e5.sk",  # ESET LiveGrid
    "avts.mcafee.com",
    "spamhaus.org",
    "spamhaus.net",
    "sorbs.net",
    "spamcop.net",
    "barracudacentral.org",
    "surbl.org",
    "uribl.com",
    "dnswl.org",
    "mailspike.net",
    "senderbase.org",
    "cymru.com",  # Team Cymru malware hash and IP-to-ASN lookups
]


class DnsTunnelSettings(DetectorSettings):
    weight: float = Field(default=60.0, ge=0, le=100)
    window: Duration = Field(
        default=600.0, gt=0, description="Window of event time queries are counted in."
    )
    long_window: Duration = Field(
        default=86400.0,
        gt=0,
        description="Longer window for slow tunnels (only the encoded names are kept).",
    )
    min_encoded: int = Field(
        default=6,
        ge=1,
        description="Distinct encoded subdomains of one domain a window needs to alarm.",
    )
    long_min_encoded: int = Field(
        default=50,
        ge=1,
        description="Distinct encoded subdomains of one domain the long window needs.",
    )
    threshold: float = Field(default=0.5, ge=0, le=1, description="Score a window needs to alarm.")
    min_label: int = Field(
        default=16,
        ge=4,
        le=63,
        description="A subdomain label this long or longer can be encoded data.",
    )
    allow: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOW),
        description="Domains (and names under them) never counted: lookups that carry "
        "data by design (reputation services, DNS blocklists, reverse lookups).",
    )
    examples: int = Field(default=3, ge=0, le=10, description="Example names in a reason.")


class DnsTunnel(Detector):
    """N5: many distinct encoded subdomains of one domain, asked by one client."""

    method = "N5"
    title = "DNS tunneling"
    Settings = DnsTunnelSettings
    inputs = ("dns",)
    #: Nothing to learn: a tunnel seen while learning is still a tunnel.
    learns = False

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        assert isinstance(settings, DnsTunnelSettings)
        self.short = Windows(Level("short", settings.window, True), settings.examples)
        self.long = Windows(Level("long", settings.long_window, False), settings.examples)
        self.newest: int | None = None  # newest query time seen, epoch µs

    @property
    def _s(self) -> DnsTunnelSettings:
        assert isinstance(self.settings, DnsTunnelSettings)
        return self.settings

    def learn(self, batch: Batch) -> None:
        self._step(batch.dns)

    def score(self, batch: Batch) -> pl.DataFrame:
        hits = self._step(batch.dns)
        return self._report([hits] if hits.height else [])

    def _report(self, parts: list[pl.DataFrame]) -> pl.DataFrame:
        """Alarms of crossing rows and closing windows (:meth:`Windows.closing` rows)."""
        if not parts:
            return empty_alarms()
        hits = pl.concat(parts, how="diagonal_relaxed")
        alarms = self._alarms(hits)
        alarms = alarms.filter(pl.col("score") >= self.settings.min_score)
        alarms = alarms.with_columns(site=self.context.site_of(alarms.get_column("src_ip")))
        alarms = alarms.sort("ts", "src_ip", "ts_end", "observed", maintain_order=True)
        return conform_alarms(alarms)

    def finish(self, score_from: datetime | None) -> pl.DataFrame:
        """The input ended: windows that alarmed and grew since are reported whole (they
        stay open: a continued input reports them again only if they grow further)."""
        if score_from is None:
            return empty_alarms()
        parts = [
            self.short.closing(window_score(), None).with_columns(level=pl.lit("short")),
            self.long.closing(window_score(), None).with_columns(level=pl.lit("long")),
        ]
        parts = [p.with_columns(final=pl.lit(True)) for p in parts]
        return self._report([p for p in parts if p.height])

    def _step(self, dns: pl.DataFrame) -> pl.DataFrame:
        """Count a batch into both levels; the rows where a window alarms, and the windows
        that alarmed and closed (``final``)."""
        rows = self._rows(dns)
        s = self._s
        parts = []
        if rows.height:
            short = self.short.step(rows, window_score(), self._gate(s.min_encoded), s.min_encoded)
            blocked = None
            if short.height:  # a short alarm counts as the long window's alarm from its row on
                blocked = (
                    short.select(
                        "client",
                        "domain",
                        win=self.long.window_of(pl.col("ts")),
                        _from=pl.col("_r"),
                    )
                    .group_by(KEY)
                    .agg(pl.col("_from").min())
                )
            long = self.long.step(
                rows, window_score(), self._gate(s.long_min_encoded), s.long_min_encoded, blocked
            )
            parts += [
                short.with_columns(level=pl.lit("short")),
                long.with_columns(level=pl.lit("long")),
            ]
        if dns.height and "ts" in dns.columns:  # event time, from every query
            newest = dns.get_column("ts").dt.epoch("us").max()
            if isinstance(newest, int):
                self.newest = newest if self.newest is None else max(self.newest, newest)
        if self.newest is not None:
            parts += [
                self.short.closing(window_score(), self.newest).with_columns(
                    level=pl.lit("short"), final=pl.lit(True)
                ),
                self.long.closing(window_score(), self.newest).with_columns(
                    level=pl.lit("long"), final=pl.lit(True)
                ),
            ]
            self.short.expire(self.newest)
            self.long.expire(self.newest)
        parts = [p for p in parts if p.height]
        return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()

    def _rows(self, dns: pl.DataFrame) -> pl.DataFrame:
        """Queries that count, in event-time order, with their name's features."""
        if dns.height == 0 or "query" not in dns.columns:
            return pl.DataFrame()
        cols = {
            "ts": pl.col("ts"),
            "client": pl.col("src_ip").cast(pl.String),
            "server": pl.col("dst_ip").cast(pl.String),
            "port": pl.col("dst_port").cast(pl.Int32),
            "proto": pl.col("proto").cast(pl.Int16),
            "query": pl.col("query").cast(pl.String).str.to_lowercase().str.strip_chars("."),
            "qtype": pl.col("qtype").cast(pl.Int32),
            "bytes": pl.col("query_bytes").cast(pl.Int64).fill_null(0)
            + pl.col("response_bytes").cast(pl.Int64).fill_null(0),
        }
        rows = dns.select(**{k: v for k, v in cols.items()}).filter(
            pl.col("ts").is_not_null()
            & pl.col("client").is_not_null()
            & (pl.col("query").str.len_chars() > 0)
            & ~pl.col("qtype").fill_null(-1).is_in(list(SKIPPED_TYPES))
        )
        if self.newest is not None:  # windows already dropped: too late to count
            oldest = self.newest - int(self._s.window * 1e6)
            rows = rows.filter(pl.col("ts").dt.epoch("us") >= oldest)
        if rows.height == 0:
            return pl.DataFrame()
        feats = name_features(rows.get_column("query"), self._s.min_label)
        feats = feats.filter(
            (pl.col("sub").str.len_chars() > 0) & ~allowed(pl.col("query"), self._s.allow)
        )
        rows = rows.join(feats, on="query", how="inner")
        order = ["ts", "client", "server", "query", "qtype", "port", "proto", "bytes"]
        return (
            rows.sort(order, nulls_last=True)
            .with_columns(data=is_data_type(pl.col("qtype")).fill_null(False))
            .with_row_index("_r")
            .with_columns(pl.col("_r").cast(pl.Int64))
        )

    def summarize(self, dns: pl.DataFrame) -> pl.DataFrame:
        """Counts and score of every (client, domain) over all of ``dns`` at once, as
        one window (no state is changed): for ranking pairs and for evaluation."""
        rows = self._rows(dns)
        if rows.height == 0:
            return pl.DataFrame(
                schema={"client": pl.String, "domain": pl.String, "score": pl.Float64}
            )
        rows = rows.with_columns(_new=pl.struct("client", "domain", "sub").is_first_distinct())
        totals = rows.group_by("client", "domain").agg(
            n=pl.len(),
            enc_q=pl.col("encoded").sum(),
            data_q=pl.col("data").sum(),
            len_sum=pl.col("sub_len").sum(),
            bytes=pl.col("bytes").sum(),
            u=pl.col("_new").sum(),
            e=(pl.col("_new") & pl.col("encoded")).sum(),
        )
        return totals.with_columns(score=window_score()).sort(
            ["score", "client", "domain"], descending=[True, False, False]
        )

    def _gate(self, min_encoded: int) -> pl.Expr:
        """The alarm rule on a window's running counts."""
        return (pl.col("e") >= min_encoded) & (window_score() >= self._s.threshold)

    def _alarms(self, hits: pl.DataFrame) -> pl.DataFrame:
        s = self._s
        optional = {
            "final": pl.Boolean(),
            "ts": UTC_US,
            "last_ts": UTC_US,
            "cross_ts": UTC_US,
            "cross_e": pl.Int64(),
        }
        hits = hits.with_columns(
            pl.lit(None, t).alias(c) for c, t in optional.items() if c not in hits.columns
        )
        hits = hits.with_columns(
            direction=self._direction(hits), final=pl.col("final").fill_null(False)
        )
        final = pl.col("final")
        short = pl.col("level") == "short"
        start = pl.col("win").cast(UTC_US)
        since = (
            pl.when(short).then(start.dt.strftime("%H:%M")).otherwise(start.dt.strftime("%Y-%m-%d"))
        )
        crossed = (
            pl.when(final)
            .then(
                pl.concat_str(
                    [
                        pl.lit("; alarmed at "),
                        pl.when(short)
                        .then(pl.col("cross_ts").dt.strftime("%H:%M:%S"))
                        .otherwise(pl.col("cross_ts").dt.strftime("%Y-%m-%d %H:%M:%S")),
                        pl.lit(" with "),
                        pl.col("cross_e").cast(pl.String),
                        pl.lit(" names"),
                    ]
                )
            )
            .otherwise(pl.lit(""))
        )
        span = (
            pl.when(pl.col("level") == "short")
            .then(pl.lit(_span(s.window)))
            .otherwise(pl.lit(_span(s.long_window)))
        )
        mean_len = (pl.col("len_sum") / pl.col("n")).round(0).cast(pl.Int64).cast(pl.String)
        data_pct = (100 * pl.col("data_q") / pl.col("n")).round(0).cast(pl.Int64).cast(pl.String)
        enc_pct = (100 * pl.col("enc_q") / pl.col("n")).round(0).cast(pl.Int64).cast(pl.String)
        kb = (
            pl.when(pl.col("bytes") > 0)
            .then(
                pl.concat_str(
                    [pl.lit(", "), (pl.col("bytes") / 1024).round(1).cast(pl.String), pl.lit(" KB")]
                )
            )
            .otherwise(pl.lit(""))
        )
        examples = (
            pl.col("examples")
            .list.eval(
                pl.when(pl.element().str.len_chars() > 48)
                .then(pl.concat_str([pl.element().str.slice(0, 45), pl.lit("...")]))
                .otherwise(pl.element())
            )
            .list.join(", ")
        )
        observed = pl.concat_str(
            [
                pl.col("e").cast(pl.String),
                pl.lit(" distinct encoded subdomains of "),
                pl.col("domain"),
                pl.lit(" in "),
                pl.col("n").cast(pl.String),
                pl.lit(" queries ("),
                enc_pct,
                pl.lit(" % encoded, mean subdomain "),
                mean_len,
                pl.lit(" chars, "),
                data_pct,
                pl.lit(" % TXT/NULL/CNAME/MX/private"),
                kb,
                pl.lit(")"),
                pl.when(final)
                .then(pl.concat_str([pl.lit(", the whole "), span, pl.lit(" window")]))
                .otherwise(pl.lit("")),
            ]
        )
        need = (
            pl.when(pl.col("level") == "short")
            .then(pl.lit(s.min_encoded))
            .otherwise(pl.lit(s.long_min_encoded))
        )
        return hits.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=pl.col("first_ts"),
            ts_end=pl.when(final).then(pl.col("last_ts")).otherwise(pl.col("ts")),
            site=pl.lit("", pl.String),  # the client's site, set below
            src_ip=pl.col("client"),
            dst_ip=pl.col("server").fill_null(""),
            dst_port=pl.col("port").fill_null(53),
            proto=pl.col("proto").fill_null(17),
            direction=pl.col("direction"),
            score=pl.col("score").clip(0.0, 1.0),
            entity=pl.col("client"),
            observed=observed,
            expected=pl.concat_str(
                [
                    pl.lit("fewer than "),
                    need.cast(pl.String),
                    pl.lit(" distinct encoded subdomains of one domain per "),
                    span,
                    pl.lit(f", or a score under {s.threshold:g}"),
                ]
            ),
            observed_value=pl.col("e").cast(pl.Float64),
            expected_value=need.cast(pl.Float64),
            threshold=need.cast(pl.Float64),
            reason=pl.concat_str(
                [
                    pl.col("client"),
                    pl.lit(" asked "),
                    pl.col("server").fill_null("?"),
                    pl.lit(" for "),
                    pl.col("e").cast(pl.String),
                    pl.lit(" distinct encoded subdomains of "),
                    pl.col("domain"),
                    pl.when(final)
                    .then(
                        pl.concat_str(
                            [pl.lit(" over its whole "), span, pl.lit(" window from "), since]
                        )
                    )
                    .otherwise(pl.concat_str([pl.lit(" within "), span])),
                    pl.lit(" ("),
                    pl.col("n").cast(pl.String),
                    pl.lit(" queries, "),
                    enc_pct,
                    pl.lit(" % encoded, mean subdomain "),
                    mean_len,
                    pl.lit(" chars, "),
                    data_pct,
                    pl.lit(" % data-carrying types"),
                    kb,
                    pl.lit("; score "),
                    pl.col("score").round(2).cast(pl.String),
                    crossed,
                    pl.lit(")"),
                    pl.when(pl.col("examples").list.len() > 0)
                    .then(pl.concat_str([pl.lit(", e.g. "), examples]))
                    .otherwise(pl.lit("")),
                ]
            ),
        )

    def _direction(self, hits: pl.DataFrame) -> pl.Series:
        def internal(col: str) -> np.ndarray:
            hi, lo, ok = parse(hits.get_column(col).fill_null(""))
            inside = self.context.internal.contains(hi, lo) | self.context.local_scope.contains(
                hi, lo
            )
            return inside & ok

        ci, si = internal("client"), internal("server")
        out = np.where(ci & si, EAST_WEST, np.where(ci | si, NORTH_SOUTH, EXTERNAL))
        return pl.Series("direction", out, dtype=pl.String)

    def state(self) -> dict[str, pa.Table]:
        newest = pa.table({"newest": pa.array([self.newest], pa.int64())})
        return {**self.short.state(), **self.long.state(), "newest": newest}

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.short.load_state(state)
        self.long.load_state(state)
        table = state.get("newest")
        self.newest = table.column("newest")[0].as_py() if table is not None else None


def window_score() -> pl.Expr:
    """The score of a window from its running counts (see the module docstring)."""
    n = pl.col("n").cast(pl.Float64)
    enc = pl.col("enc_q") / n
    length = ((pl.col("len_sum") / n - 16.0) / 32.0).clip(0.0, 1.0)
    data = pl.col("data_q") / n
    content = 0.4 * enc + 0.3 * length + 0.3 * data
    by_names = (pl.col("e").cast(pl.Float64) / 4.0).log(2) / 8.0
    by_bytes = (pl.col("bytes").cast(pl.Float64).clip(1.0, None) / 4096.0).log(2) / 10.0
    volume = pl.max_horizontal(by_names, by_bytes).clip(0.0, 1.0)
    return (content * (0.7 + 0.3 * volume)).fill_nan(0.0).fill_null(0.0)


def _span(seconds: float) -> str:
    if seconds % 86400 == 0:
        return f"{int(seconds // 86400)} d"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
