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


@cache
def _rules() -> tuple[pl.Series, int]:
    """The ICANN rules of the Public Suffix List bundled with ``publicsuffixlist`` (as
    that package reads them: lower case, IDN rules also in ``xn--`` form) and the most
    labels a rule has."""
    import publicsuffixlist

    rules: set[str] = set()
    icann = False
    with open(publicsuffixlist.PSLFILE, encoding="utf-8") as fh:
        for line in fh:
            text = line.rstrip()
            if text == "// ===BEGIN ICANN DOMAINS===":
                icann = True
            elif text == "// ===END ICANN DOMAINS===":
                break
            rule = text.lower().split(" ")[0]
            if not icann or not rule or rule.startswith("//"):
                continue
            rules.add(rule)
            encoded = publicsuffixlist.encode_idn(rule.lstrip("!"))
            rules.add("!" + encoded if rule.startswith("!") else encoded)
    depth = max(r.count(".") + 1 for r in rules)
    return pl.Series(sorted(rules), dtype=pl.String), depth


def icann_registered_domains(domains: pl.Series) -> pl.Series:
    """The registered domain of every name under an ICANN public suffix, else null.

    The same answer as ``publicsuffixlist``'s ``privatesuffix(name, accept_unknown=False)``
    computed for the whole column at once: for
    each depth from the deepest rule down, the name's last labels are looked up among
    the exception (``!``), wildcard (``*.``) and exact rules; the first depth that
    matches decides the public suffix. Names must be lower case without a trailing dot.
    """
    rules, depth = _rules()
    labels = domains.str.split(".")
    frame = pl.DataFrame({"l": labels}).with_columns(n=pl.col("l").list.len())
    suffix = {
        d: pl.when(pl.col("n") >= d).then(pl.col("l").list.slice(-d).list.join("."))
        for d in range(1, depth + 2)
    }
    frame = frame.with_columns(**{f"s{d}": e for d, e in suffix.items()})
    public: pl.Expr = pl.lit(0)
    for d in range(1, depth + 2):  # shallowest first: deeper matches wrap and win
        s = pl.col(f"s{d}")
        public = (
            pl.when(pl.concat_str([pl.lit("!"), s]).is_in(rules.implode()))
            .then(pl.lit(d - 1))
            .when(pl.concat_str([pl.lit("*."), s]).is_in(rules.implode()))
            .then(pl.when(pl.col("n") > d).then(pl.lit(d + 1)).otherwise(pl.lit(d)))
            .when(s.is_in(rules.implode()))
            .then(pl.lit(d))
            .otherwise(public)
        )
    frame = frame.with_columns(_p=public)
    out = frame.select(
        pl.when((pl.col("_p") > 0) & (pl.col("n") > pl.col("_p")))
        .then(pl.col("l").list.slice(-(pl.col("_p") + 1)).list.join("."))
        .alias("registered")
    ).to_series()
    return out.alias(domains.name)


def registered_domain(name: str) -> str:
    """The registered domain of one lower-case name without trailing dot."""
    return registered_domains(pl.Series([name])).item() or ""


def registered_domains(names: pl.Series) -> pl.Series:
    """The registered domain of every name: under an ICANN public suffix as the list
    says, otherwise the last two labels (a single label is its own)."""
    names = names.cast(pl.String).str.strip_chars(".")
    found = icann_registered_domains(names)
    labels = names.str.split(".")
    fallback = labels.list.slice(-2).list.join(".")
    return (
        pl.DataFrame({"f": found, "b": fallback})
        .select(pl.coalesce("f", "b"))
        .to_series()
        .alias(names.name)
    )


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
