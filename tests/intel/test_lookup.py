"""Lookups: exact addresses, networks (v4/v6) and parent domains, checked against a slow
reference written with :mod:`ipaddress` and plain strings."""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import polars as pl

from flowhawk import netaddr
from flowhawk.intel import IntelSet
from flowhawk.intel.schema import CATEGORIES

from .conftest import NOW, make_feed


def _one(intel: IntelSet, kind: str, value: str | None) -> tuple[int | None, str | None]:
    """(reputation, matched indicator value) of one lookup."""
    lookup = {"ip": intel.lookup_ips, "domain": intel.lookup_domains, "url": intel.lookup_urls}
    row = lookup[kind](pl.Series([value], dtype=pl.String)).row(0)
    if row[1] is None:
        return None, None
    return row[0], intel.indicators.row(row[1], named=True)["value"]


def test_parent_domains_match_and_riskiest_then_longest_wins() -> None:
    intel = IntelSet.build(
        [
            make_feed("c2", ["evil.com"], "c2"),
            make_feed("scan", ["scan.evil.com", "b.scan.evil.com", "other.org"], "scanner"),
            make_feed("sus", ["deep.b.scan.evil.com"], "scanner"),
        ]
    )
    assert _one(intel, "domain", "evil.com") == (10, "evil.com")
    assert _one(intel, "domain", "A.B.EVIL.com.") == (10, "evil.com")
    assert _one(intel, "domain", "x.scan.evil.com")[1] == "evil.com", "riskier parent wins"
    assert _one(intel, "domain", "x.other.org")[1] == "other.org"
    assert _one(intel, "domain", "notevil.com") == (None, None), "labels, not characters"
    assert _one(intel, "domain", "evil.com.au") == (None, None)
    assert _one(intel, "domain", "com") == (None, None)
    assert _one(intel, "domain", None) == (None, None)
    assert _one(intel, "domain", "") == (None, None)
    # Equal risk: the most specific name.
    same = IntelSet.build([make_feed("s", ["scan.net", "a.scan.net"], "scanner")])
    assert _one(same, "domain", "x.a.scan.net")[1] == "a.scan.net"
    assert _one(same, "domain", "x.b.scan.net")[1] == "scan.net"


def test_networks_contain_addresses_v4_and_v6() -> None:
    intel = IntelSet.build(
        [
            make_feed("scan", ["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"], "scanner"),
            make_feed("c2", ["10.1.2.0/24", "2001:db8:1::/48", "10.1.2.3"], "c2"),
            make_feed("tor", ["10.1.2.4", "2001:db8:1::5"], "c2"),
        ]
    )
    lookup = {
        "10.200.0.1": "10.0.0.0/8",
        "10.1.9.9": "10.1.0.0/16",  # most specific of equally risky
        "10.1.2.200": "10.1.2.0/24",  # riskier and more specific
        "10.1.2.3": "10.1.2.3",  # exact beats the /24 of the same risk
        "10.1.2.4": "10.1.2.4",
        "::ffff:10.1.2.3": "10.1.2.3",  # IPv4-mapped spelling
        "11.0.0.1": None,
        "9.255.255.255": None,
        "2001:db8:ffff::1": "2001:db8::/32",
        "2001:db8:1::1": "2001:db8:1::/48",
        "2001:db8:1:0:0:0:0:5": "2001:db8:1::5",
        "2001:db9::1": None,
        "not an address": None,
        "10.1.2": None,
    }
    for address, want in lookup.items():
        assert _one(intel, "ip", address)[1] == want, address


def test_riskiest_covering_network_wins_over_a_milder_exact_address() -> None:
    intel = IntelSet.build(
        [make_feed("c2", ["198.51.100.0/24"], "c2"), make_feed("tor", ["198.51.100.7"], "tor")]
    )
    assert _one(intel, "ip", "198.51.100.7") == (10, "198.51.100.0/24")
    assert len(intel.explain(intel.lookup_ips(pl.Series(["198.51.100.7"]))["indicator"][0])) == 1


def test_urls_match_exactly_or_by_host() -> None:
    intel = IntelSet.build(
        [
            make_feed("mal", ["http://files.example.org/a/payload.exe"], "malware"),
            make_feed("c2", ["c2.example.net", "203.0.113.9"], "c2"),
            make_feed("sus", ["example.org"], "suspicious"),
        ]
    )
    assert _one(intel, "url", "HTTPS://FILES.example.org:443/a/payload.exe#x")[1] == (
        "http://files.example.org/a/payload.exe"
    ), "scheme, case of the host, default port and fragment do not matter"
    assert _one(intel, "url", "http://files.example.org/a/other.exe")[1] == "example.org"
    assert _one(intel, "url", "http://files.example.org/a/Payload.exe")[1] == "example.org"
    assert _one(intel, "url", "http://x.c2.example.net/gate.php?id=1")[1] == "c2.example.net"
    assert _one(intel, "url", "http://203.0.113.9:8080/bins/x86")[1] == "203.0.113.9"
    assert _one(intel, "url", "http://[2001:db8::1]/x") == (None, None)
    assert _one(intel, "url", "nonsense") == (None, None)
    many = pl.Series(["http://c2.example.net/a", None, "http://c2.example.net/a", "http://ok.io/"])
    got = intel.lookup_urls(many)
    assert got.get_column("indicator").is_null().to_list() == [False, True, False, True]


def _random_set(rng: random.Random) -> tuple[IntelSet, list[tuple[str, str]]]:
    """A set of nested/overlapping networks and addresses in a small space, so that
    random addresses often hit."""
    feeds, listed = [], []
    for f in range(4):
        entries = []
        for _ in range(60):
            if rng.random() < 0.5:
                net = ipaddress.ip_network(f"10.{rng.randrange(4)}.{rng.randrange(256)}.0/24")
                plen = rng.randrange(14, 33)
            else:
                net = ipaddress.ip_network(f"2001:db8:{rng.randrange(4):x}::/48")
                plen = rng.randrange(40, 129)
            address = net.network_address + rng.randrange(net.num_addresses)
            entries.append(str(ipaddress.ip_network(f"{address}/{plen}", strict=False)))
        category = rng.choice(CATEGORIES)
        feeds.append(make_feed(f"f{f}", entries, category, weight=rng.choice([0.5, 1.0, 2.0])))
        listed += [(e, category) for e in entries]
    return IntelSet.build(feeds), listed


def _reference_ip(intel: IntelSet, text: str | None) -> str | None:
    """The winning indicator by brute force: every network containing the address."""
    try:
        address = ipaddress.ip_address(text.strip()) if text is not None else None
    except ValueError:
        return None
    if address is None:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    best = None
    for row in intel.indicators.filter(pl.col("type").is_in(["ip", "cidr"])).iter_rows(named=True):
        net = ipaddress.ip_network(row["value"])
        if net.version == address.version and address in net:
            key = (row["reputation"], -(net.prefixlen + (96 if net.version == 4 else 0)))
            if best is None or key < best[0]:
                best = (key, row["value"])
    return best[1] if best else None


def test_ip_lookups_equal_the_reference_on_random_inputs() -> None:
    rng = random.Random(11)
    intel, _ = _random_set(rng)
    queries: list[str | None] = []
    for _ in range(1500):
        r = rng.random()
        if r < 0.45:
            queries.append(f"10.{rng.randrange(5)}.{rng.randrange(256)}.{rng.randrange(256)}")
        elif r < 0.85:
            queries.append(str(ipaddress.ip_address(f"2001:db8:{rng.randrange(5):x}::")
                               + rng.randrange(2**80)))  # fmt: skip
        elif r < 0.9:
            queries.append(f"::ffff:10.{rng.randrange(4)}.{rng.randrange(256)}.1")
        elif r < 0.95:
            queries.append(rng.choice([None, "", "10.1.2.300", "fe80::1%eth0", " 10.1.1.1"]))
        else:
            queries.append(f"{rng.randrange(256)}.{rng.randrange(256)}.1.1")
    series = pl.Series(queries, dtype=pl.String)
    got = intel.lookup_ips(series)
    values = intel.indicators.get_column("value")
    found = [None if i is None else values[i] for i in got.get_column("indicator").to_list()]
    want = [_reference_ip(intel, q) for q in queries]
    assert found == want
    reps = got.get_column("reputation").to_list()
    by_value = dict(intel.indicators.select("value", "reputation").rows())
    assert reps == [None if v is None else by_value[v] for v in want]
    # The same through (hi, lo) columns.
    hi, lo, ok = netaddr.parse(series)
    pairs = intel.lookup_ips((hi[ok], lo[ok])).get_column("indicator")
    assert pairs.to_list() == got.get_column("indicator").filter(pl.Series(ok)).to_list()


def _reference_domain(table: dict[str, tuple[int, int]], name: str | None) -> int | None:
    if not name:
        return None
    labels = name.lower().rstrip(".").split(".")
    best = None
    for i in range(len(labels) - 1):
        suffix = ".".join(labels[i:])
        if suffix in table:
            rep, ident = table[suffix]
            key = (rep, -len(suffix))
            if best is None or key < best[0]:
                best = (key, ident)
    return best[1] if best else None


def test_domain_lookups_equal_the_reference_on_random_inputs() -> None:
    rng = random.Random(5)
    words = ["a", "b", "cdn", "evil", "x-1", "mail", "www", "update", "c2"]
    tlds = ["com", "net", "org", "ru"]

    def name(depth: int) -> str:
        return ".".join([rng.choice(words) for _ in range(depth)] + [rng.choice(tlds)])

    feeds = [
        make_feed(f"f{i}", sorted({name(rng.randrange(1, 4)) for _ in range(80)}), cat)
        for i, cat in enumerate(["c2", "scanner", "malware", "tor"])
    ]
    intel = IntelSet.build(feeds)
    table = {
        r["value"]: (r["reputation"], r["indicator"])
        for r in intel.indicators.filter(pl.col("type") == "domain").iter_rows(named=True)
    }
    queries: list[str | None] = [name(rng.randrange(1, 6)) for _ in range(3000)]
    queries += [q.upper() + "." for q in queries[:200] if q] + [None, "", ".", "com", "..com"]
    got = intel.lookup_domains(pl.Series(queries, dtype=pl.String))
    assert got.get_column("indicator").to_list() == [_reference_domain(table, q) for q in queries]
    assert got.get_column("indicator").is_not_null().mean() > 0.2, "the test must hit often"


def test_large_random_ip_table_against_numpy_reference() -> None:
    """Many disjoint and nested IPv4 networks: the interval sweep agrees with a direct
    per-address scan (vectorized reference over all indicators)."""
    rng = np.random.default_rng(3)
    starts = rng.integers(0, 2**20, 3000, dtype=np.uint64) << np.uint64(12)
    plens = rng.integers(12, 33, 3000)
    entries = sorted(
        {
            str(ipaddress.ip_network((int(s), int(p)), strict=False))
            for s, p in zip(starts, plens, strict=True)
        }
    )
    intel = IntelSet.build(
        [make_feed("big", entries, "scanner"), make_feed("c2", entries[::7], "c2")]
    )
    ind = intel.indicators
    nets = [ipaddress.ip_network(v) for v in ind.get_column("value")]
    first = np.array([int(n.network_address) for n in nets], dtype=np.int64)
    last = np.array([int(n.broadcast_address) for n in nets], dtype=np.int64)
    key = ind.get_column("reputation").to_numpy().astype(np.int64) * 256 - np.array(
        [n.prefixlen for n in nets]
    )
    near = first[rng.integers(0, len(first), 2000)] + rng.integers(-8, 4096, 2000)
    queries = np.clip(np.concatenate([rng.integers(0, 2**32, 2000), near]), 0, 2**32 - 1)
    inside = (queries[:, None] >= first[None, :]) & (queries[:, None] <= last[None, :])
    masked = np.where(inside, key[None, :], np.iinfo(np.int64).max)
    want = np.where(inside.any(axis=1), np.argmin(masked, axis=1), -1)
    text = pl.Series([str(ipaddress.IPv4Address(int(q))) for q in queries])
    got = intel.lookup_ips(text).get_column("indicator").fill_null(-1).to_numpy()
    assert (got == want).all()
    assert (want >= 0).mean() > 0.2


def test_as_of_is_reported() -> None:
    intel = IntelSet.build([make_feed("x", ["203.0.113.1"], "c2")])
    assert intel.as_of == NOW


def test_chunked_sliced_empty_and_null_inputs() -> None:
    intel = IntelSet.build([make_feed("x", ["10.0.0.0/8", "evil.com", "2001:db8::/32"], "c2")])
    rows = pl.Series(["10.1.1.1", "x.evil.com", None, "2001:db8::7"] * 3)
    chunked = pl.concat([rows[:5], rows[5:]], rechunk=False)
    assert chunked.n_chunks() == 2
    for lookup in (intel.lookup_ips, intel.lookup_domains, intel.lookup_urls):
        whole = lookup(rows)
        assert lookup(chunked).equals(whole)
        assert lookup(rows[3:]).equals(whole[3:])
        assert lookup(pl.Series([], dtype=pl.String)).height == 0
        assert lookup(pl.Series([None, None], dtype=pl.String)).null_count().row(0) == (2, 2)
    found = intel.lookup_ips(rows).get_column("indicator").is_not_null().to_list()
    assert found == [True, False, False, True] * 3
