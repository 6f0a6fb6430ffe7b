"""Domain names: the registered domain of a name, by the Public Suffix List.

``www.bbc.co.uk`` is registered as ``bbc.co.uk`` (``co.uk`` is a public suffix); the
labels left of it (``www``) are its subdomain. DNS detectors group queries by
registered domain (tunnels use one domain with ever-new subdomains; a DGA generates
new registered domains). The list is the copy bundled with the ``publicsuffixlist``
package: no network access at run time.

Names whose suffix is unknown are kept whole after their last two labels (``x.corp.lan``
→ ``corp.lan``); a single label is its own registered domain.
"""

from __future__ import annotations

from functools import cache

import polars as pl
from publicsuffixlist import PublicSuffixList


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList(only_icann=True)


def registered_domain(name: str) -> str:
    """The registered domain of one lower-case name without trailing dot."""
    name = name.strip(".")
    if not name:
        return ""
    found = _psl().privatesuffix(name)
    if found is not None:
        return found
    labels = name.split(".")
    return ".".join(labels[-2:])


def registered_domains(names: pl.Series) -> pl.Series:
    """:func:`registered_domain` of every name (computed once per distinct name)."""
    distinct = names.drop_nulls().unique()
    mapping = [registered_domain(n) for n in distinct.to_list()]
    return names.replace_strict(distinct, mapping, default=None, return_dtype=pl.String)


def subdomains(names: pl.Series, registered: pl.Series) -> pl.Series:
    """The part of each name left of its registered domain ("" when there is none)."""
    frame = pl.DataFrame({"n": names, "r": registered})
    return frame.select(
        pl.when(pl.col("n").str.len_chars() > pl.col("r").str.len_chars())
        .then(
            pl.col("n").str.slice(0, pl.col("n").str.len_chars() - pl.col("r").str.len_chars() - 1)
        )
        .otherwise(pl.lit(""))
    ).to_series()
