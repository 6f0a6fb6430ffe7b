"""Indicator text to ``(type, value)``: what each feed line or attribute value is.

:func:`classify` takes a column of raw values and decides, with vectorized regular
expressions and once per distinct address, what each one is:

* an IP address: IPv4, IPv6, ``[v6]``; a port (``1.2.3.4:443``, ``[v6]:443``) is
  dropped, as feeds of C2 endpoints write them;
* a network ``address/length`` (a host-length one is an address);
* a URL ``scheme://host[:port]/path`` or, as maltrail and Zeek write them, without
  the scheme (``evil.com/gate.php``, taken as ``http``). A URL with nothing after the
  host (``http://1.2.3.4``, ``http://evil.com/``) names the host: it becomes an
  address or domain indicator, so it matches all traffic to that host;
* a domain: LDH labels (underscores allowed, as DNS allows them), at least two,
  a top-level label that starts with a letter; ``*.evil.com`` is ``evil.com`` (a
  domain matches its subdomains anyway) and ``evil.com:8080`` drops the port.
  Names in Unicode are converted to their ASCII (IDNA) form.

What is not an indicator is either *ignored* (a URL path without a host, a
regular expression trail, which maltrail also lists; not errors) or *bad*, with the
reason. The original text is never trusted to be lowercase or stripped.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from flowhawk.intel.addresses import canonical_text, parse_ranges

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_TLD = r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = rf"^(?:{_LABEL}\.)+{_TLD}$"
_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_V6 = r"[0-9a-f]*:[0-9a-f:.]*:[0-9a-f:.]*(?:%[0-9a-z_.-]+)?"
_PORT = r"(?::\d{0,5})?"
_SCHEME_URL = r"^([a-z][a-z0-9+.-]*)://([^/?#]*)([^#]*)"
_BARE_URL = r"^((?:[a-z0-9_-]+\.)+[a-z0-9_-]+(?::\d{1,5})?)([/?][^#]*)"
_NETWORK = r"^[0-9a-f:.]+/\d{1,3}$"
_REGEX_CHARS = r"[\\()\[\]|{}^$+?*]"
DEFAULT_PORTS = {"http": "80", "https": "443", "ftp": "21", "ws": "80", "wss": "443"}

#: Reasons that are not errors: the value is not an indicator flowhawk can match.
IGNORED_REASONS = frozenset({"URL path without a host", "regular expression trail"})
BAD_VALUE = "not an IP address, network, domain or URL"


def _idna(text: str) -> str:
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        return text  # stays non-ASCII: reported as not an indicator


def _prepare(raw: pl.Series) -> pl.Series:
    """Stripped text; names in Unicode converted to IDNA (per value, rare)."""
    frame = pl.DataFrame({"r": raw.cast(pl.String)}).select(
        t=pl.col("r").str.strip_chars(),
        non_ascii=pl.col("r").str.contains(r"[^\x00-\x7f]").fill_null(False),
    )
    text = frame.get_column("t")
    non_ascii = frame.get_column("non_ascii")
    if non_ascii.any():
        idx = np.flatnonzero(non_ascii.to_numpy())
        text = text.scatter(idx, [_idna(v) for v in text.gather(idx).to_list()])
    return text


def _hosts(host: pl.Expr) -> list[pl.Expr]:
    """Kind and text of a host: ``ip`` (address), ``net``, ``domain`` or a bad reason."""
    h = host.str.to_lowercase()
    bracket = h.str.extract(r"^\[([0-9a-f:.%_-]+)\]" + _PORT + "$", 1)
    v4 = h.str.extract(rf"^({_V4})" + _PORT + "$", 1)
    net = h.str.extract(rf"^({_V4}/\d{{1,3}}|{_V6}/\d{{1,3}})$", 1)
    v6 = h.str.extract(rf"^({_V6})$", 1)
    name = h.str.replace(r"^\*\.", "").str.replace(r"(?::\d{1,5})?$", "").str.strip_suffix(".")
    is_domain = name.str.contains(_DOMAIN) & (name.str.len_bytes() <= 253)
    kind = (
        pl.when(h.is_null() | (h == ""))
        .then(pl.lit("empty"))
        .when(bracket.is_not_null() | v4.is_not_null() | v6.is_not_null())
        .then(pl.lit("ip"))
        .when(net.is_not_null())
        .then(pl.lit("net"))
        .when(is_domain)
        .then(pl.lit("domain"))
        .otherwise(pl.lit("bad"))
    )
    text = pl.coalesce(bracket, v4, v6, net, pl.when(is_domain).then(name))
    return [kind.alias("kind"), text.alias("text")]


def _stages() -> list[list[pl.Expr]]:
    """The classifying expressions, built once (building them costs more than running
    them on a short feed)."""
    low = pl.col("t").str.to_lowercase()
    scheme_url = pl.col("t").str.extract_groups("(?i)" + _SCHEME_URL)
    bare_url = pl.col("t").str.extract_groups("(?i)" + _BARE_URL)
    urls = [
        scheme_url.struct.field("1").str.to_lowercase().alias("scheme"),
        scheme_url.struct.field("2").str.replace(r"^[^@]*@", "").alias("authority"),
        scheme_url.struct.field("3").alias("rest"),
        # "1.2.3.0/24" is a network, not host "1.2.3.0" with path "/24".
        pl.when(~low.str.contains(_NETWORK)).then(bare_url.struct.field("1")).alias("bare_host"),
        bare_url.struct.field("2").alias("bare_rest"),
    ]
    merged = [
        (pl.col("scheme").is_not_null() | pl.col("bare_host").is_not_null()).alias("is_url"),
        pl.col("scheme").fill_null(pl.when(pl.col("bare_host").is_not_null()).then(pl.lit("http"))),
        pl.coalesce("authority", "bare_host").alias("authority"),
        pl.coalesce("rest", "bare_rest").alias("rest"),
    ]
    hosts = _hosts(pl.when(pl.col("is_url")).then(pl.col("authority")).otherwise(pl.col("t")))
    early = [
        pl.when(pl.col("is_url"))
        .then(pl.col("authority").str.extract(r":(\d{1,5})$", 1).str.strip_chars_start("0"))
        .alias("port"),
        pl.when(pl.col("t").is_null() | (pl.col("t") == ""))
        .then(pl.lit("empty value"))
        .when(~pl.col("is_url") & low.str.starts_with("/"))
        .then(pl.lit("URL path without a host"))
        .when(~pl.col("is_url") & (pl.col("kind") == "bad") & low.str.contains(_REGEX_CHARS))
        .then(pl.lit("regular expression trail"))
        .alias("early"),
    ]
    return [urls, merged, hosts, early]


_STAGES = _stages()


def classify(raw: pl.Series) -> pl.DataFrame:
    """Classify and normalize raw indicator values.

    Returns one row per input row: ``type`` and ``value`` (null unless it is an
    indicator), ``reason`` (null for an indicator) and ``ignored`` (the reason is in
    :data:`IGNORED_REASONS`).
    """
    plan = pl.LazyFrame({"t": _prepare(raw)})
    for stage in _STAGES:
        plan = plan.with_columns(stage)
    df = plan.collect()
    # Addresses and networks: canonical text, once per distinct value (netaddr).
    address_rows = df.get_column("kind").is_in(["ip", "net"]).to_numpy()
    canon = pl.Series("canon", [None] * df.height, dtype=pl.String)
    single = np.zeros(df.height, dtype=bool)
    if address_rows.any():
        idx = np.flatnonzero(address_rows)
        ranges = parse_ranges(df.get_column("text").gather(idx))
        texts, is_single = canonical_text(ranges)
        canon = canon.scatter(idx, texts)
        single[idx] = is_single
    return df.with_columns(canon=canon, single=pl.Series(single)).select(_ASSEMBLE)


def _assembly() -> list[pl.Expr]:
    kind = pl.col("kind")
    host_ok = pl.when(kind == "domain").then(pl.col("text")).otherwise(pl.col("canon"))
    host_type = (
        pl.when(kind == "domain")
        .then(pl.lit("domain"))
        .when(pl.col("canon").is_not_null() & pl.col("single"))
        .then(pl.lit("ip"))
        .when(pl.col("canon").is_not_null())
        .then(pl.lit("cidr"))
    )
    rest = pl.col("rest").fill_null("")
    path_only_host = rest.is_in(["", "/"])
    bracketed = (
        pl.when(pl.col("canon").str.contains(":"))
        .then("[" + pl.col("canon") + "]")
        .otherwise(host_ok)
    )
    default_port = pl.col("scheme").replace_strict(DEFAULT_PORTS, default=None)
    port = pl.when(
        pl.col("port").is_not_null() & (pl.col("port") != "") & (pl.col("port") != default_port)
    ).then(":" + pl.col("port"))
    url_value = pl.concat_str(
        [pl.col("scheme"), pl.lit("://"), bracketed, port.fill_null(""), rest], separator=""
    )
    is_url = pl.col("is_url")
    typ = (
        pl.when(pl.col("early").is_not_null())
        .then(None)
        .when(is_url & (host_type == "cidr"))
        .then(None)
        .when(is_url & ~path_only_host)
        .then(pl.lit("url"))
        .otherwise(host_type)
    )
    value = pl.when(typ == "url").then(url_value).when(typ.is_not_null()).then(host_ok)
    reason = (
        pl.when(typ.is_not_null())
        .then(None)
        .when(pl.col("early").is_not_null())
        .then(pl.col("early"))
        .when(is_url & (kind != "domain") & pl.col("canon").is_null())
        .then(pl.lit("URL without a valid host"))
        .when(kind.is_in(["ip", "net"]))
        .then(pl.lit("invalid IP address or network"))
        .otherwise(pl.lit(BAD_VALUE))
    )
    return [
        typ.alias("type"),
        value.alias("value"),
        reason.alias("reason"),
        reason.is_in(list(IGNORED_REASONS)).fill_null(False).alias("ignored"),
    ]


_ASSEMBLE = _assembly()


def url_keys(urls: pl.Series) -> pl.DataFrame:
    """For URLs to look up: ``key`` (the normalized URL without its scheme: a URL
    indicator matches whatever the scheme, as trails written without one must),
    ``host`` (canonical address or domain) and ``host_type`` (``ip``/``domain``)."""
    c = classify(urls)
    value = c.get_column("value")
    typ = c.get_column("type")
    frame = pl.DataFrame({"v": value, "t": typ}).with_columns(
        after=pl.col("v").str.replace(r"^[a-z][a-z0-9+.-]*://", "")
    )
    return frame.select(
        key=pl.when(pl.col("t") == "url").then(pl.col("after")),
        host=pl.when(pl.col("t") == "url")
        .then(
            pl.col("after")
            .str.extract(r"^(\[[^\]]*\]|[^:/?]*)", 1)
            .str.strip_prefix("[")
            .str.strip_suffix("]")
        )
        .when(pl.col("t").is_in(["ip", "domain"]))
        .then(pl.col("v")),
        host_type=pl.when(pl.col("t") == "url")
        .then(
            pl.when(pl.col("after").str.contains(r"^(\[|\d+\.\d+\.\d+\.\d+(?:[:/?]|$))"))
            .then(pl.lit("ip"))
            .otherwise(pl.lit("domain"))
        )
        .when(pl.col("t").is_in(["ip", "domain"]))
        .then(pl.col("t")),
    )
