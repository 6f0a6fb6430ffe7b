"""Address parsing, formatting and network membership on columns."""

from __future__ import annotations

import numpy as np
import polars as pl

from flowhawk import netaddr


def test_parse_and_canonical_spellings():
    s = pl.Series(
        [
            "10.0.0.1",
            "::ffff:1.2.3.4",
            "FE80::1%eth0",
            "2001:DB8::1",
            None,
            "garbage",
            "256.1.1.1",
            "1.2.3",
        ]
    )
    out = netaddr.canonical(s).to_list()
    assert out == ["10.0.0.1", "1.2.3.4", "fe80::1", "2001:db8::1", None, None, None, None]


def test_roundtrip_many():
    ips = pl.Series(
        [f"10.{i % 256}.{i // 256 % 256}.{i % 7}" for i in range(50_000)]
        + ["2001:db8::" + format(i, "x") for i in range(1, 100)]
    )
    hi, lo, ok = netaddr.parse(ips)
    assert ok.all()
    assert (netaddr.format(hi, lo) == ips).all()


def test_v4_is_mapped():
    hi, lo, _ = netaddr.parse(pl.Series(["1.2.3.4"]))
    assert hi[0] == 0 and lo[0] == (0xFFFF << 32) | 0x01020304


def test_network_membership_v4_v6():
    ns = netaddr.NetworkSet(["10.0.0.0/8", "fc00::/7", "192.168.1.7"])
    hi, lo, _ = netaddr.parse(
        pl.Series(["10.255.0.1", "11.0.0.1", "fd00::5", "fe00::1", "192.168.1.7", "192.168.1.8"])
    )
    assert ns.contains(hi, lo).tolist() == [True, False, True, False, True, False]
    assert ns.match(hi, lo).tolist() == [0, -1, 1, -1, 2, -1]


def test_v4_network_does_not_match_v6_address():
    ns = netaddr.NetworkSet(["0.0.0.0/0"])
    hi, lo, _ = netaddr.parse(pl.Series(["2001:db8::1", "8.8.8.8"]))
    assert ns.contains(hi, lo).tolist() == [False, True]
    assert isinstance(ns.contains(hi, lo), np.ndarray)
