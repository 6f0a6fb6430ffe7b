"""Indicator text normalization and the STIX patterns that name network indicators."""

from __future__ import annotations

import polars as pl
import pytest

from flowhawk.intel.formats.stix_pattern import PatternError, map_pattern
from flowhawk.intel.tokens import BAD_VALUE, classify, url_keys

CASES = [
    ("1.2.3.4", "ip", "1.2.3.4"),
    (" 1.2.3.4:443 ", "ip", "1.2.3.4"),
    ("010.1.1.1", "ip", "10.1.1.1"),
    ("1.2.3.4/24", "cidr", "1.2.3.0/24"),
    ("1.2.3.4/32", "ip", "1.2.3.4"),
    ("2001:0DB8:0000::1", "ip", "2001:db8::1"),
    ("[2001:db8::1]:443", "ip", "2001:db8::1"),
    ("2001:db8::1/32", "cidr", "2001:db8::/32"),
    ("::ffff:1.2.3.0/120", "cidr", "1.2.3.0/24"),
    ("::ffff:1.2.3.4", "ip", "1.2.3.4"),
    ("Evil.COM.", "domain", "evil.com"),
    ("www.evil.com", "domain", "www.evil.com"),
    ("*.evil.com", "domain", "evil.com"),
    ("evil.com:8080", "domain", "evil.com"),
    ("a_b.example.com", "domain", "a_b.example.com"),
    ("bücher.de", "domain", "xn--bcher-kva.de"),
    ("http://Evil.COM/Path?Q=1#frag", "url", "http://evil.com/Path?Q=1"),
    ("HTTPS://evil.com:443/x", "url", "https://evil.com/x"),
    ("http://evil.com:8080/x", "url", "http://evil.com:8080/x"),
    ("http://[2001:db8::1]:80/a", "url", "http://[2001:db8::1]/a"),
    ("http://user@evil.com/x", "url", "http://evil.com/x"),
    ("evil.com/gate.php", "url", "http://evil.com/gate.php"),
    ("1.2.3.4:8080/x", "url", "http://1.2.3.4:8080/x"),
    ("http://1.2.3.4", "ip", "1.2.3.4"),
    ("http://evil.com/", "domain", "evil.com"),
    ("ftp://ftp.example.com", "domain", "ftp.example.com"),
]
BAD = [
    ("1.2.3.256", "invalid IP address or network"),
    ("1.2.3.0/33", "invalid IP address or network"),
    ("localhost", BAD_VALUE),
    ("example.123", BAD_VALUE),
    ("-bad.com", BAD_VALUE),
    ("a..b", BAD_VALUE),
    ("http://", "URL without a valid host"),
    ("", "empty value"),
    (None, "empty value"),
]
IGNORED = [
    ("/365-Stealer/", "URL path without a host"),
    (r"q(l|r)[0-9]{5,6}\.pw", "regular expression trail"),
]


def test_indicators_are_normalized() -> None:
    got = classify(pl.Series([c[0] for c in CASES]))
    assert got.select("type", "value").rows() == [c[1:] for c in CASES]
    assert got.get_column("reason").is_null().all()


def test_bad_and_ignored_values_say_why() -> None:
    got = classify(pl.Series([b[0] for b in BAD + IGNORED], dtype=pl.String))
    assert got.get_column("type").is_null().all()
    assert got.get_column("reason").to_list() == [b[1] for b in BAD + IGNORED]
    assert got.get_column("ignored").to_list() == [False] * len(BAD) + [True] * len(IGNORED)


def test_url_keys_drop_the_scheme_and_name_the_host() -> None:
    got = url_keys(pl.Series(["HTTPS://Evil.com:443/a?b", "http://[2001:db8::1]/x", "evil.com"]))
    assert got.rows() == [
        ("evil.com/a?b", "evil.com", "domain"),
        ("[2001:db8::1]/x", "2001:db8::1", "ip"),
        (None, "evil.com", "domain"),
    ]


@pytest.mark.parametrize(
    ("pattern", "values", "unsupported"),
    [
        ("[ipv4-addr:value = '1.2.3.4']", ["1.2.3.4"], None),
        ("[ipv4-addr:value = '1.2.3.4' OR ipv6-addr:value = '::1'] OR [domain-name:value = 'a.b']",
         ["1.2.3.4", "::1", "a.b"], None),
        (r"[url:value = 'http://x.com/a\'b']", ["http://x.com/a'b"], None),
        ("[ipv4-addr:value ISSUBSET '10.0.0.0/8']", ["10.0.0.0/8"], None),
        ("[network-traffic:dst_ref.value = '5.5.5.5' AND network-traffic:dst_port = 443]",
         ["5.5.5.5"], None),
        ("[file:hashes.'SHA-256' = 'aa' OR ipv4-addr:value = '9.9.9.9']", ["9.9.9.9"], None),
        ("[file:hashes.MD5 = 'aa']", [], "file hash comparisons"),
        ("[ipv4-addr:value = '1.2.3.4' AND domain-name:value = 'x.com']", [],
         "AND across objects or values"),
        ("[ipv4-addr:value = '1.2.3.4'] FOLLOWEDBY [ipv4-addr:value = '5.6.7.8']", [],
         "patterns with FOLLOWEDBY"),
        ("[ipv4-addr:value = '1.2.3.4'] WITHIN 300 SECONDS", [], "patterns with WITHIN"),
        ("[domain-name:value LIKE '%.evil.com']", [], "LIKE tests"),
        ("[email-addr:value = 'a@b.c']", [], "email-addr comparisons"),
        ("[ipv4-addr:value NOT = '1.2.3.4']", [], "comparisons with NOT"),
    ],
)  # fmt: skip
def test_stix_patterns(pattern: str, values: list[str], unsupported: str | None) -> None:
    mapped = map_pattern(pattern)
    assert mapped.values == values
    assert mapped.unsupported == unsupported


@pytest.mark.parametrize(
    "pattern", ["[ipv4-addr:value = '1.2.3.4'", "[ipv4-addr:value = '1.2.3.4']]", "[a:b = 'x' ~]"]
)
def test_broken_stix_patterns_raise(pattern: str) -> None:
    with pytest.raises(PatternError):
        map_pattern(pattern)
