"""Per-query features of DNS tunneling (N5): what a query name carries, computed per
distinct name with Polars expressions.

A tunnel writes its data into the labels left of a domain it controls, encoded with
an alphabet DNS accepts: hex (dnscat2), base32 (iodine, sods, dns2tcp), a base64-like
alphabet with ``-`` and ``_`` (DNSExfiltrator), or raw bytes escaped in the name
(iodine's raw mode). Each query therefore asks for a *new*, *long*, *high-entropy*
subdomain, often with a record type that can carry data back (TXT, NULL, CNAME, MX,
private types). Names people and ordinary software look up have short labels made of
words, or repeat the same names.

For each query the subdomain (the part left of the registered domain, Public Suffix
List) is reduced to its longest label, and the query is *encoded* when

* the subdomain holds characters a host name never has (``=``, ``+``, ``/``, spaces,
  escaped bytes ``\\ddd``): raw or base64 data; or
* the longest label has at least ``min_label`` characters (16 by default) and it is not
  all digits (reversed addresses of DNSBL and PTR-like lookups), not an IDN
  (``xn--``), and either
  - hex with at least three digits and three letters (hashes, hex-encoded data), or
  - its character entropy is at least 4.2 bits (base32/base64 data: 4.3 to 4.7 bits in
    labels of 40 characters or more; words reach 3.6 bits at the 90th percentile of
    the labels of 16 characters or more in 20,000 popular and random registered
    domains), or at least 3.6 bits with a digit and at most 30 % vowels among its
    letters (random letters have 19 % vowels, words about 38 %; base32 has digits).

Names whose last label is no top-level domain (digits, over 24 letters, odd
characters) are grouped under :data:`NO_TLD` with the whole name as subdomain.

A host looking up one hash-named object now and then is common (CDN objects, GUIDs in
telemetry): the detector asks for many distinct encoded names of one domain, and for
the other signs, before it alarms.
"""

from __future__ import annotations

import polars as pl

from flowhawk.dns.names import registered_domains, subdomains

#: Record types a tunnel uses to carry data back: TXT, NULL, CNAME, MX, KEY, ANY, and
#: the private-use range 65280-65534.
DATA_TYPES: tuple[int, ...] = (16, 10, 5, 15, 25, 255)
PRIVATE_TYPES = (65280, 65534)
#: Record types left out: reverse lookups (PTR) say nothing about tunneling.
SKIPPED_TYPES: tuple[int, ...] = (12,)

#: Entropy (bits/char) of a long label above which it is taken for encoded data.
HIGH_ENTROPY = 4.2
#: Entropy of a long label that is encoded when few of its letters are vowels.
MID_ENTROPY = 3.6
MAX_VOWELS = 0.30

#: The domain of names whose last label is no top-level domain (letters only, or an
#: IDN): dnscat2 without a domain writes its data up to the last label.
NO_TLD = "(no top-level domain)"

#: Characters outside host names (letters, digits, hyphen, underscore, dot).
_ODD = r"[^a-z0-9_.\-]"


def name_features(names: pl.Series, min_label: int = 16) -> pl.DataFrame:
    """Features of each distinct query name in ``names`` (nulls left out).

    Columns: ``query``, ``domain`` (registered), ``sub`` (subdomain, "" when none),
    ``sub_len`` (characters), ``label`` (the longest label), ``label_len``,
    ``entropy`` (bits per character of ``label``), ``odd`` (characters a host name
    never has), ``encoded``.
    """
    distinct = names.drop_nulls().unique().sort()
    frame = pl.DataFrame({"query": distinct}, schema={"query": pl.String})
    if frame.height == 0:
        return frame.with_columns(
            domain=pl.lit(None, pl.String),
            sub=pl.lit(None, pl.String),
            sub_len=pl.lit(None, pl.Int64),
            label=pl.lit(None, pl.String),
            label_len=pl.lit(None, pl.Int64),
            entropy=pl.lit(None, pl.Float64),
            odd=pl.lit(None, pl.Boolean),
            encoded=pl.lit(None, pl.Boolean),
        )
    tld = pl.col("query").str.extract(r"([^.]*)$")
    real_tld = tld.str.contains("^(?:[a-z]{1,24}|xn--[a-z0-9-]{1,59})$")
    frame = frame.with_columns(
        domain=pl.when(real_tld)
        .then(pl.col("query").map_batches(registered_domains, return_dtype=pl.String))
        .otherwise(pl.lit(NO_TLD))
    ).with_columns(
        sub=pl.when(pl.col("domain") == NO_TLD)
        .then(pl.col("query"))
        .otherwise(
            pl.struct("query", "domain").map_batches(
                lambda s: subdomains(
                    s.struct.field("query"), s.struct.field("domain").fill_null("")
                ),
                return_dtype=pl.String,
            )
        )
    )
    frame = frame.with_columns(
        sub_len=pl.col("sub").str.len_chars().cast(pl.Int64),
        label=pl.col("sub")
        .str.split(".")
        .list.eval(
            pl.element()
            .sort_by([pl.element().str.len_chars(), pl.element()], descending=[True, False])
            .first()
        )
        .list.first()
        .fill_null(""),
    ).with_columns(label_len=pl.col("label").str.len_chars().cast(pl.Int64))
    frame = frame.join(_entropy(frame.get_column("label")), on="label", how="left")
    lab = pl.col("label")
    letters = lab.str.count_matches("[a-z]")
    digits = lab.str.count_matches("[0-9]")
    vowels = lab.str.count_matches("[aeiou]")
    vowel_share = pl.when(letters > 0).then(vowels / letters).otherwise(pl.lit(1.0))
    hexlike = lab.str.contains("^[0-9a-f]+$") & (digits >= 3) & (letters >= 3)
    wordy = lab.str.starts_with("xn--") | lab.str.contains("^[0-9]+$")
    random = (pl.col("entropy") >= HIGH_ENTROPY) | (
        (pl.col("entropy") >= MID_ENTROPY) & (vowel_share <= MAX_VOWELS) & (digits > 0)
    )
    long = pl.col("label_len") >= min_label
    odd = pl.col("sub").str.contains(_ODD)
    return frame.with_columns(
        entropy=pl.col("entropy").fill_null(0.0),
        odd=odd,
        encoded=odd | (long & ~wordy & (hexlike | random)),
    )


def _entropy(labels: pl.Series) -> pl.DataFrame:
    """Shannon entropy (bits per character) of each distinct non-empty label."""
    distinct = labels.filter(labels.str.len_chars() > 0).unique()
    if distinct.len() == 0:
        return pl.DataFrame(schema={"label": pl.String, "entropy": pl.Float64})
    chars = (
        pl.DataFrame({"label": distinct})
        .with_columns(ch=pl.col("label").str.split(""))
        .explode("ch")
        .group_by("label", "ch")
        .agg(k=pl.len())
    )
    p = pl.col("k") / pl.col("k").sum().over("label")
    return chars.group_by("label").agg(entropy=-(p * p.log(2)).sum())


def is_data_type(qtype: pl.Expr) -> pl.Expr:
    """True for record types that carry data back (:data:`DATA_TYPES`, private use)."""
    lo, hi = PRIVATE_TYPES
    return qtype.is_in(list(DATA_TYPES)) | qtype.is_between(lo, hi)


def allowed(query: pl.Expr, domains: list[str]) -> pl.Expr:
    """True where ``query`` is one of ``domains`` or a name under one of them."""
    if not domains:
        return pl.lit(False)
    parts = []
    for d in domains:
        d = d.strip().strip(".").lower()
        if d:
            parts.append((query == d) | query.str.ends_with("." + d))
    return pl.any_horizontal(parts) if parts else pl.lit(False)
