"""The loaded threat intelligence: indicators with reputations, their evidence, lookups.

:meth:`IntelSet.build` scores every value (:mod:`flowhawk.intel.reputation`) and
numbers the distinct ``(type, value)`` pairs: that number (``indicator``) is what a
lookup returns beside the reputation, and :meth:`IntelSet.explain` turns it into
the evidence: which feed, in which version, said what.

The set's ``version`` is a hash of what determines its scores: each feed's name,
content version and resolved options. Loading the same content again gives the
same version; any change of a feed or its weight gives another.

Lookups take columns and return one row per input row (``reputation`` UInt8 and
``indicator`` UInt32, both null when nothing matches):

* :meth:`lookup_ips`: address text or ``(hi, lo)`` arrays; exact addresses and
  containing networks (:mod:`flowhawk.intel.iptable`);
* :meth:`lookup_domains`: the name or any parent (:mod:`flowhawk.intel.domaintable`);
* :meth:`lookup_urls`: the normalized URL (scheme aside), or else its host as an
  address or domain; the riskier of the two wins.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk import netaddr
from flowhawk.diagnostics import Diagnostics
from flowhawk.intel import reputation as rep
from flowhawk.intel import snapshot
from flowhawk.intel.addresses import parse_ranges
from flowhawk.intel.allow import AllowList
from flowhawk.intel.domaintable import DomainTable, string_buffers
from flowhawk.intel.feeds import Feed, load_feeds
from flowhawk.intel.iptable import IpTable
from flowhawk.intel.schema import INDICATOR_SCHEMA
from flowhawk.intel.settings import FeedSettings, IntelSettings
from flowhawk.intel.tokens import url_keys
from flowhawk.jit import numba


@dataclass(frozen=True)
class FeedInfo:
    """What the set keeps of a feed: enough to say which version of it matched."""

    name: str
    origin: str
    format: str
    version: str
    loaded_at: datetime
    weight: float
    category: str
    indicators: int  # entries parsed (before max_age)


def _listings(feeds: Sequence[Feed], as_of: datetime, diag: Diagnostics) -> pl.DataFrame:
    """Every listing of every feed with its risk (listings older than max_age dropped)."""
    parts = []
    for feed in feeds:
        frame = feed.indicators.with_columns(
            feed=pl.lit(feed.name),
            feed_version=pl.lit(feed.version),
            category=pl.col("category").fill_null(feed.category),
            weight=pl.lit(feed.options.weight, pl.Float64),
            half_life=pl.lit(feed.options.half_life, pl.Float64),
            seen=pl.coalesce("last_seen", "first_seen", pl.lit(feed.loaded_at)).dt.cast_time_unit(
                "us"
            ),
        )
        if feed.options.max_age is not None:
            old = frame.get_column("seen") < as_of - timedelta(seconds=feed.options.max_age)
            if old.any():
                diag.ignore(feed.origin, "indicators older than max_age", int(old.sum()))
                frame = frame.filter(~old)
        parts.append(frame)
    if not parts:
        return pl.DataFrame()
    rows = pl.concat(parts, how="vertical_relaxed").with_columns(risk=rep.evidence_risk(as_of))
    return rows.drop("weight", "half_life", "seen", "source_line")


def _empty() -> tuple[pl.DataFrame, pl.DataFrame]:
    """The indicator and evidence tables of a set without indicators."""
    indicators = {"indicator": pl.UInt32(), "type": pl.String(), "value": pl.String()}
    indicators |= {"reputation": pl.UInt8(), "feeds": pl.UInt32()}
    evidence = {"indicator": pl.UInt32(), "feed": pl.String(), "feed_version": pl.String()}
    evidence |= {k: INDICATOR_SCHEMA[k] for k in ("category", "family", "first_seen",
                                                  "last_seen", "confidence")}  # fmt: skip
    return pl.DataFrame(schema=indicators), pl.DataFrame(schema=evidence | {"risk": pl.Float64()})


def _info(f: Feed) -> dict[str, object]:
    keys = ("name", "origin", "format", "version", "loaded_at", "category")
    return {**{k: getattr(f, k) for k in keys}, "weight": f.options.weight}


def _set_version(feeds: Sequence[Feed]) -> str:
    described = sorted(
        json.dumps(
            [f.name, f.version, f.format, f.category, f.options.model_dump(mode="json")],
            sort_keys=True,
        )
        for f in feeds
    )
    return hashlib.sha256("\n".join(described).encode()).hexdigest()[:16]


@numba.njit(cache=True, nogil=True)
def _fill(slots, reputation, reps, bitmap):  # type: ignore[no-untyped-def]
    """Reputation of each slot and the validity bitmap (Arrow's bit order), one pass."""
    nulls = 0
    for i in range(len(slots)):
        s = slots[i]
        if s >= 0:
            reps[i] = reputation[s]
            bitmap[i >> 3] |= np.uint8(1 << (i & 7))
        else:
            reps[i] = 0
            nulls += 1
    return nulls


def _result(slots: np.ndarray, reputation: np.ndarray) -> pl.DataFrame:
    """The lookup frame of int32 indicator slots (-1: none), built on the arrays
    themselves: the slots are the indicator column (a null's bits are never read), the
    reputations and the validity bitmap come from one compiled pass. Large temporary
    arrays are avoided on purpose: each costs page faults on first touch."""
    slots = np.ascontiguousarray(slots, dtype=np.int32)
    n = len(slots)
    reps = np.empty(n, np.uint8)
    bitmap = np.zeros((n + 7) // 8, np.uint8)
    nulls = _fill(slots, reputation, reps, bitmap)
    validity = pa.py_buffer(bitmap) if nulls else None
    columns = {
        "reputation": (pa.uint8(), reps),
        "indicator": (pa.uint32(), slots.view(np.uint32)),
    }
    arrays = {
        name: pa.Array.from_buffers(kind, n, [validity, pa.py_buffer(values)], null_count=nulls)
        for name, (kind, values) in columns.items()
    }
    frame = pl.from_arrow(pa.table(arrays))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _text(values: pl.Series) -> pa.Array:
    arr = values.cast(pl.String).rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


class IntelSet:
    """Indicators, reputations and evidence of a set of feeds, ready for lookups."""

    def __init__(
        self,
        feeds: list[FeedInfo],
        indicators: pl.DataFrame,
        evidence: pl.DataFrame,
        version: str,
        as_of: datetime,
    ):
        self.feeds = feeds
        self.indicators = indicators  # indicator, type, value, reputation, feeds
        self.evidence = evidence  # EVIDENCE_COLUMNS, sorted by indicator then risk
        self.version = version
        self.as_of = as_of
        self._reputation = np.ascontiguousarray(
            indicators.get_column("reputation").to_numpy(), np.uint8
        )
        #: What no feed may list (``[intel] allow``); lookups of it find nothing.
        self.allowed: AllowList | None = None
        self._build_tables()

    @classmethod
    def build(
        cls,
        feeds: Sequence[Feed],
        as_of: datetime | None = None,
        diagnostics: Diagnostics | None = None,
    ) -> IntelSet:
        """Score and index ``feeds``; reputations are as of ``as_of`` (default: the
        latest load time)."""
        as_of = as_of or max((f.loaded_at for f in feeds), default=datetime.now(UTC))
        listings = _listings(feeds, as_of, diagnostics or Diagnostics())
        if listings.height:
            indicators, evidence = rep.score(listings)
        else:
            indicators, evidence = _empty()
        counts = {f.name: f.indicators.height for f in feeds}
        infos = [FeedInfo(**_info(f), indicators=counts[f.name]) for f in feeds]
        return cls(infos, indicators, evidence, _set_version(feeds), as_of)

    def save(self, folder: Path) -> Path:
        """Write the set into ``folder`` (:mod:`flowhawk.intel.snapshot`)."""
        return snapshot.save(self, folder)

    @classmethod
    def open(cls, folder: Path) -> IntelSet:
        """The set saved in ``folder`` by :meth:`save`; no feed is parsed again."""
        return snapshot.open_set(folder)

    def _build_tables(self) -> None:
        ind = self.indicators
        ips = ind.filter(pl.col("type").is_in(["ip", "cidr"]))
        r = parse_ranges(ips.get_column("value"))
        assert r.ok.all(), "indicator values are canonical"
        self._ips = IpTable(
            (r.start_hi, r.start_lo, r.end_hi, r.end_lo),
            r.prefix,
            ips.get_column("reputation").to_numpy(),
            ips.get_column("indicator").to_numpy(),
        )
        names = ind.filter(pl.col("type") == "domain")
        self._domains = DomainTable(
            _text(names.get_column("value")),
            names.get_column("reputation").to_numpy(),
            names.get_column("indicator").to_numpy(),
        )
        self._urls = ind.filter(pl.col("type") == "url").select(
            key=pl.col("value").str.replace(r"^[a-z][a-z0-9+.-]*://", ""),
            url_slot=pl.col("indicator").cast(pl.Int64),
        )

    def __len__(self) -> int:
        return self.indicators.height

    def lookup_ips(self, ips: pl.Series | tuple[np.ndarray, np.ndarray]) -> pl.DataFrame:
        """Best reputation and its indicator for each address (text or ``(hi, lo)``)."""
        if isinstance(ips, tuple):
            slots = self._ips.lookup_pairs(*ips)
            if self.allowed:
                hit = np.flatnonzero(slots >= 0)
                slots[hit[self.allowed.addresses(ips[0][hit], ips[1][hit])]] = -1
            return _result(slots, self._reputation)
        slots, other = self._ips.lookup_text(*string_buffers(_text(ips)))
        if other.any():  # IPv6 and unusual spellings: netaddr, once per distinct value
            rows = np.flatnonzero(other)
            hi, lo, ok = netaddr.parse(ips.gather(rows))
            found = self._ips.lookup_pairs(hi, lo)
            slots[rows] = np.where(ok, found, -1)
        if self.allowed:  # only rows that hit are tested
            hit = np.flatnonzero(slots >= 0)
            slots[hit[self.allowed.address_text(ips.gather(hit))]] = -1
        return _result(slots, self._reputation)

    def lookup_domains(self, names: pl.Series) -> pl.DataFrame:
        """Best reputation and its indicator for each name (itself or a parent)."""
        slots = self._domains.lookup(*string_buffers(_text(names)))
        if self.allowed:
            hit = np.flatnonzero(slots >= 0)
            slots[hit[self.allowed.names(names.gather(hit))]] = -1
        return _result(slots, self._reputation)

    def lookup_urls(self, urls: pl.Series) -> pl.DataFrame:
        """Best of the exact URL (scheme aside) and its host, for each URL."""
        frame = pl.DataFrame({"u": urls.cast(pl.String)})
        distinct = frame.unique().filter(pl.col("u").is_not_null())
        keys = pl.concat([distinct, url_keys(distinct.get_column("u"))], how="horizontal")
        keys = keys.join(self._urls, on="key", how="left")
        host = keys.get_column("host")
        is_ip = (keys.get_column("host_type") == "ip").fill_null(False).to_numpy()
        by_ip = self.lookup_ips(host.set(pl.Series(~is_ip), None))  # type: ignore[arg-type]
        by_name = self.lookup_domains(host.set(pl.Series(is_ip), None))  # type: ignore[arg-type]
        candidates = np.stack(
            [
                keys.get_column("url_slot").fill_null(-1).to_numpy(),
                by_ip.get_column("indicator").cast(pl.Int64).fill_null(-1).to_numpy(),
                by_name.get_column("indicator").cast(pl.Int64).fill_null(-1).to_numpy(),
            ]
        )
        score = np.where(candidates >= 0, self._reputation[np.maximum(candidates, 0)], 999)
        best = candidates[np.argmin(score, axis=0), np.arange(candidates.shape[1])]
        table = keys.select("u").with_columns(slot=pl.Series(best, dtype=pl.Int64))
        slots = frame.join(table, on="u", how="left", maintain_order="left")
        return _result(slots.get_column("slot").fill_null(-1).to_numpy(), self._reputation)

    def explain(self, indicator: int | Sequence[int]) -> pl.DataFrame:
        """Evidence rows (feed, feed version, category, family, times, risk) of indicators."""
        wanted = [indicator] if isinstance(indicator, int) else list(indicator)
        return self.evidence.filter(pl.col("indicator").is_in(wanted))

    def feed_versions(self) -> dict[str, str]:
        """Feed name -> content version."""
        return {f.name: f.version for f in self.feeds}


def load(
    sources: Iterable[str | Path | FeedSettings],
    settings: IntelSettings | None = None,
    *,
    diagnostics: Diagnostics | None = None,
    now: datetime | None = None,
    as_of: datetime | None = None,
) -> IntelSet:
    """Load feeds (files, folders, http(s) URLs) and build the scored, indexed set.

    ``now`` fixes the load time of every feed (default: the clock); ``as_of`` the time
    reputations are computed at (default: the latest load time).
    """
    diagnostics = diagnostics or Diagnostics()
    feeds = load_feeds(sources, settings, diagnostics=diagnostics, now=now)
    return IntelSet.build(feeds, as_of=as_of, diagnostics=diagnostics)
