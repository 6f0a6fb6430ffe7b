"""M27: a flow to or from an address that threat intelligence lists.

Both ends of every flow are looked up in the run's intel set
(:class:`~flowhawk.intel.IntelSet`, exact addresses and containing networks), once per
distinct address of a batch. Each listed side of a flow raises one alarm about that
address: its score is ``1 - reputation / 100`` (a fresh C2 listing, reputation 10,
scores 0.9; a Tor relay, 64, scores 0.36) and its reason names the side, the
address, the feeds that list it with their versions, the categories and families
they give, and the reputation.

Nothing is learned and nothing is kept: M27 alarms from the first flow, and without
intel loaded it raises nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

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

if TYPE_CHECKING:
    from flowhawk.intel import IntelSet

Side = Literal["client", "server"]
_COLUMN = {"client": "src_ip", "server": "dst_ip"}
#: Feeds named in a reason at most (the rest are counted).
FEEDS_SHOWN = 3


class IntelHitSettings(DetectorSettings):
    weight: float = Field(default=60.0, ge=0, le=100)
    max_reputation: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Alarm on listed addresses whose reputation is at most this (100: any).",
    )
    sides: list[Side] = Field(
        default=["client", "server"], description="Which ends of a flow are looked up."
    )
    names: bool = Field(
        default=True,
        description=(
            "Also look up the names DNS gave for a server's address before the flow "
            "(passive DNS), for domain indicators."
        ),
    )


def _version(v: str) -> str:
    return f"v{v[:8]}"


def listed_values(
    intel: IntelSet, values: pl.Series, key: str, domains: bool = False
) -> pl.DataFrame:
    """The listed ones among the distinct ``values`` (addresses, or names with
    ``domains``): ``key`` (the value), ``reputation`` and ``indicator``."""
    distinct = values.unique()
    found = intel.lookup_domains(distinct) if domains else intel.lookup_ips(distinct)
    frame = pl.concat([pl.DataFrame({key: distinct}), found], how="horizontal")
    return frame.filter(pl.col("indicator").is_not_null())


def listings(intel: IntelSet, hits: pl.DataFrame) -> pl.DataFrame:
    """Per listed indicator of ``hits`` (an ``indicator`` column): what lists it, as text
    (``_listing``: feeds with versions, categories, families) and its network if it is
    one (``_network``); one row per indicator."""
    indicators = hits.get_column("indicator").unique().to_list()
    order = {"descending": [False, True, False]}
    evidence = intel.explain(indicators).sort("indicator", "risk", "feed", **order)
    values = intel.indicators.filter(pl.col("indicator").is_in(indicators))
    rows = []
    for (indicator,), ev in evidence.group_by("indicator", maintain_order=True):
        pairs = ev.select("feed", "feed_version").unique(maintain_order=True)
        feeds = [f"{name} ({_version(version)})" for name, version in pairs.iter_rows()]
        if len(feeds) > FEEDS_SHOWN:
            feeds = [*feeds[:FEEDS_SHOWN], f"{len(feeds) - FEEDS_SHOWN} more"]
        categories = ev.get_column("category").drop_nulls().unique(maintain_order=True)
        families = ev.get_column("family").drop_nulls().unique(maintain_order=True)
        listing = f"listed by {', '.join(feeds)} as {'/'.join(categories) or 'malicious'}"
        if families.len():
            listing += f" ({', '.join(families.head(FEEDS_SHOWN))})"
        rows.append((indicator, listing))
    described = pl.DataFrame(
        rows, schema={"indicator": pl.UInt32(), "_listing": pl.String()}, orient="row"
    )
    network = values.select(
        "indicator",
        _network=pl.when(pl.col("type") == "cidr").then(pl.col("value")),
    )
    return described.join(network, on="indicator", how="left")


class IntelligenceHit(StatelessDetector):
    method = "M27"
    title = "intelligence hit"
    Settings = IntelHitSettings

    def score(self, batch: Batch) -> pl.DataFrame:
        assert isinstance(self.settings, IntelHitSettings)
        intel = self.context.intel
        flows = batch.flows
        sides = [s for s in ("client", "server") if s in self.settings.sides]
        if intel is None or len(intel) == 0 or flows.height == 0 or not sides:
            return empty_alarms()
        addresses = pl.concat([flows.get_column(_COLUMN[s]) for s in sides])
        hits = listed_values(intel, addresses, "_ip").filter(
            pl.col("reputation") <= self.settings.max_reputation
        )
        parts = []
        if hits.height:
            hits = hits.join(listings(intel, hits), on="indicator", how="left")
        for side in sides:
            column = _COLUMN[side]
            listed = flows.join(hits, left_on=column, right_on="_ip", how="inner")
            if listed.height:
                parts.append(self._alarms(listed, side, column))
        if "server" in sides and self.settings.names:
            parts.append(self._by_name(flows, hits.get_column("_ip")))
        parts = [p for p in parts if p.height]
        if not parts:
            return empty_alarms()
        alarms = pl.concat(parts).sort("ts", "src_ip", "dst_ip", "entity", maintain_order=True)
        return conform_alarms(alarms.filter(pl.col("score") >= self.settings.min_score))

    def _by_name(self, flows: pl.DataFrame, listed_ips: pl.Series) -> pl.DataFrame:
        """Alarms on flows whose server is not listed itself but answered, by DNS before
        the flow, for a name a feed lists (the riskiest name counts)."""
        pdns, intel = self.context.passive_dns, self.context.intel
        assert isinstance(self.settings, IntelHitSettings) and intel is not None
        if pdns is None:
            return empty_alarms()
        cand = flows.filter(~pl.col("dst_ip").is_in(listed_ips.implode()))
        if cand.height == 0:
            return empty_alarms()
        names = pdns.names_for(cand.get_column("dst_ip"), at=cand.get_column("ts_start"), limit=5)
        named = (
            cand.with_columns(_name=names)
            .with_row_index("_f")
            .explode("_name")
            .filter(pl.col("_name").is_not_null())
        )
        if named.height == 0:
            return empty_alarms()
        hits = listed_values(intel, named.get_column("_name"), "_name", domains=True).filter(
            pl.col("reputation") <= self.settings.max_reputation
        )
        if hits.height == 0:
            return empty_alarms()
        best = (
            named.join(hits, on="_name", how="inner")
            .sort("_f", "reputation", "_name")
            .unique("_f", keep="first", maintain_order=True)
        )
        best = best.join(listings(intel, best), on="indicator", how="left")
        return self._alarms(best, "server", "dst_ip")

    def _alarms(self, listed: pl.DataFrame, side: str, column: str) -> pl.DataFrame:
        address = pl.col(column)
        where = pl.when(pl.col("_network").is_not_null()).then(
            pl.concat_str([pl.lit(" (in "), pl.col("_network"), pl.lit(")")])
        )
        if "_name" in listed.columns:  # listed by the name DNS gave for the address
            where = where.when(pl.col("_name").is_not_null()).then(
                pl.concat_str([pl.lit(" (DNS name "), pl.col("_name"), pl.lit(")")])
            )
        where = where.otherwise(pl.lit(""))
        rep = pl.col("reputation").cast(pl.String)
        return listed.select(
            **comm_columns(self.method, self.title),
            score=1.0 - pl.col("reputation").cast(pl.Float64) / 100.0,
            entity=address,
            observed=pl.concat_str(
                [pl.lit(f"{side} "), address, where, pl.lit(" listed, reputation "), rep]
            ),
            expected=pl.lit("an address no feed lists"),
            observed_value=pl.col("reputation").cast(pl.Float64),
            expected_value=pl.lit(100.0),
            threshold=pl.lit(float(self.settings.max_reputation)),  # type: ignore[attr-defined]
            reason=pl.concat_str(
                [
                    pl.lit(f"{side} "),
                    address,
                    where,
                    pl.lit(" is "),
                    pl.col("_listing"),
                    pl.lit("; reputation "),
                    rep,
                ]
            ),
        )
