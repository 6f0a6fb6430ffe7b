"""Reputation: all evidence about one indicator value combined into a score 0-100.

Lower is riskier; below 20 is high risk (:data:`HIGH_RISK`). 100 means no adverse
evidence left, which is where evidence decays to: feeds only ever list bad things,
so an indicator no feed lists has no reputation at all (lookups give null).

Each piece of evidence (one feed listing the value) has a risk in [0, 1)::

    risk = min(CAP, BASE * severity(category) * weight * trust(confidence) * decay(age))
    trust(c) = 0.25 + 0.75 * c / 100          (1 when the feed gives no confidence)
    decay(a) = 0.5 ** (a / half_life)         (a = as_of - seen, never negative)

* ``severity``: :data:`SEVERITY`; C2, botnet and malware infrastructure are the
  worst, Tor, scanners and merely suspicious entries mild;
* ``weight``: the feed's trust (1 by default; a weight above 1 can raise a mild
  category's risk but never past :data:`CAP`);
* ``seen``: the entry's last-seen time, else its first-seen time, else the time the
  feed was loaded (an undated list vouches for its entries now);
* ``half_life``: per feed (default 30 days); entries older than the feed's
  ``max_age`` are dropped before scoring.

Feeds are combined as independent witnesses, a feed counting once per value (its
riskiest entry). Feeds that agree on a category make it worse, but only up to
:data:`AGREEMENT` times the strongest of them: three Tor lists are one fact (a Tor
relay) told three times, and must not turn a Tor relay into a C2 server. Different
categories are different facts and combine fully::

    risk_category = min(CAP, AGREEMENT * max(risk_feed), 1 - prod(1 - risk_feed))
    reputation = round(100 * prod over categories (1 - risk_category))

With the defaults, one fresh C2 listing gives 10, malware 19 (both high risk), a Tor
relay 64 (46 on three Tor lists), a scanner 60 (39 on two lists); two feeds agreeing
on a C2 give 3; a C2 listing 30 days old gives 55 and keeps rising toward 100.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

#: Reputations below this are high risk (product rule M28/M29).
HIGH_RISK = 20
#: Risk of one fresh, fully trusted listing of the most severe category.
BASE = 0.9
#: No evidence is certainty: the most any category's feeds can say together.
CAP = 0.97
#: Agreeing feeds raise a category's risk to at most this multiple of the strongest.
AGREEMENT = 1.5

SEVERITY: dict[str, float] = {
    "c2": 1.0,
    "botnet": 0.95,
    "malware": 0.9,
    "compromised": 0.85,
    "phishing": 0.85,
    "malicious": 0.8,
    "spam": 0.55,
    "scanner": 0.45,
    "anonymizer": 0.4,
    "tor": 0.4,
    "suspicious": 0.35,
}


def evidence_risk(as_of: datetime) -> pl.Expr:
    """Risk of each evidence row: columns ``category``, ``weight``, ``confidence``,
    ``seen`` (UTC datetime) and ``half_life`` (seconds)."""
    severity = pl.col("category").replace_strict(SEVERITY, default=0.5, return_dtype=pl.Float64)
    trust = (0.25 + 0.75 * pl.col("confidence").cast(pl.Float64) / 100.0).fill_null(1.0)
    age = ((pl.lit(as_of) - pl.col("seen")).dt.total_microseconds() / 1e6).clip(lower_bound=0)
    decay = pl.lit(0.5).pow(age / pl.col("half_life"))
    return (BASE * severity * pl.col("weight") * trust * decay).clip(upper_bound=CAP)


def age_seconds(as_of: datetime) -> pl.Expr:
    """Age of each evidence row's ``seen`` time at ``as_of`` (negative if in the future)."""
    return (pl.lit(as_of) - pl.col("seen")).dt.total_microseconds() / 1e6


EVIDENCE_COLUMNS = ("indicator", "feed", "feed_version", "category", "family", "first_seen",
                    "last_seen", "confidence", "risk")  # fmt: skip


def _starts(*keys: np.ndarray) -> np.ndarray:
    """Indices where any of the (sorted) ``keys`` changes, 0 included."""
    n = len(keys[0])
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for key in keys:
        new[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(new)


def score(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Indicators with their reputation, and the evidence behind each.

    ``rows`` holds every listing: ``type``, ``value``, ``feed``, ``category``, ``risk``
    and the evidence columns. One sort by value and feed puts each feed's riskiest
    listing first (a feed counts once per value); the rest is integer work:
    categories are combined with :data:`AGREEMENT`, then multiplied per value.
    Returns ``indicators`` (``indicator`` numbered in ``(type, value)`` order,
    ``type``, ``value``, ``reputation``, ``feeds``) and ``evidence``
    (:data:`EVIDENCE_COLUMNS`, by indicator, riskiest first).
    """
    rows = rows.sort(["type", "value", "feed", "risk"], descending=[False, False, False, True])
    same = (
        (pl.col("type") == pl.col("type").shift()) & (pl.col("value") == pl.col("value").shift())
    ).fill_null(False)
    rows = rows.with_columns(new_value=~same).filter(
        ~(same & (pl.col("feed") == pl.col("feed").shift())).fill_null(False)
    )
    group = np.cumsum(rows.get_column("new_value").to_numpy()) - 1
    category = (
        rows.get_column("category")
        .replace_strict(
            {c: i for i, c in enumerate(SEVERITY)}, default=len(SEVERITY), return_dtype=pl.Int64
        )
        .to_numpy()
    )
    risk = rows.get_column("risk").to_numpy()
    order = np.lexsort((-risk, category, group))  # stable: feeds stay in name order
    g, c, r = group[order], category[order], risk[order]
    per_category = _starts(g, c)
    agreed = 1.0 - np.multiply.reduceat(1.0 - r, per_category)
    combined = np.minimum(np.minimum(CAP, AGREEMENT * r[per_category]), agreed)
    per_value = _starts(g[per_category])
    remaining = np.multiply.reduceat(1.0 - combined, per_value)
    firsts = rows.filter(pl.col("new_value"))
    indicators = firsts.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("indicator"),
        "type",
        "value",
        pl.Series("reputation", np.round(100.0 * remaining).astype(np.uint8)),
        pl.Series("feeds", np.bincount(group).astype(np.uint32)),
    )
    by_risk = np.lexsort((-risk, group))
    evidence = (
        rows.with_columns(indicator=pl.Series(group.astype(np.uint32)))
        .select(EVIDENCE_COLUMNS)
        .gather(by_risk)
    )
    return indicators, evidence
