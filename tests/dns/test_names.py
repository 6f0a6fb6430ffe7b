"""Registered domains and subdomains by the Public Suffix List."""

from __future__ import annotations

import polars as pl
from publicsuffixlist import PublicSuffixList

from flowhawk.dns.names import (
    icann_registered_domains,
    registered_domain,
    registered_domains,
    subdomains,
)


def test_registered_domains_agree_with_the_public_suffix_list():
    names = pl.Series(
        [
            "www.bbc.co.uk", "a.www.ck", "b.c.ck", "c.ck", "city.kawasaki.jp", "x.y.kawasaki.jp",
            "kawasaki.jp", "1.2.3.4.in-addr.arpa", "com", "foo.lan", "s3.amazonaws.com",
            "abc.xn--p1ai", "a.b.nom.br", "deep.sub.example.com",
        ]
    )  # fmt: skip
    psl = PublicSuffixList(only_icann=True)
    expected = [psl.privatesuffix(n, accept_unknown=False) for n in names.to_list()]
    assert icann_registered_domains(names).to_list() == expected
    assert icann_registered_domains(names.clear()).len() == 0


def test_unknown_suffixes_fall_back_to_the_last_two_labels():
    names = pl.Series(["www.bbc.co.uk", "a.b.evil.com", "x.corp.lan", "foo", None, "co.uk."])
    got = registered_domains(names)
    assert got.to_list() == ["bbc.co.uk", "evil.com", "corp.lan", "foo", None, "co.uk"]
    assert subdomains(names, got).to_list() == ["www", "a.b", "x", "", "", ""]
    assert registered_domain("deep.sub.example.com") == "example.com"
