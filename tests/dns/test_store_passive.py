"""The DNS store under DATA/dns and passive DNS built from real answers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from flowhawk.dns.passive import PDNS_FILE, PassiveDns, build, merge
from flowhawk.dns.store import DnsWriter, dns_root, read_range
from tests.dns.helpers import read_all

TSV = Path("labeled/slips_dataset/dataset_HEAD/test10-mixed-zeek-dir/dns.log")
SODS = Path("dns/tunnel_pcaps/sods.pcap")


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_store_round_trip_by_hour(shared_data: Path, tmp_path: Path) -> None:
    df = read_all(shared_data / SODS)
    writer = DnsWriter(dns_root(tmp_path), "run1")
    half = df.height // 2
    writer.write(df.slice(0, half).to_arrow())
    writer.write(df.slice(half))
    assert writer.rows == df.height
    files = sorted(dns_root(tmp_path).glob("date=*/hour=*/*.parquet"))
    hours = {f.parent.name for f in files}
    expected = set(df.get_column("ts").dt.strftime("hour=%H").unique())
    assert hours == expected and len(files) >= 2
    back = read_range(dns_root(tmp_path))
    assert back.equals(df.sort("ts", maintain_order=True))
    start, end = df.get_column("ts").sort()[[100, 300]].to_list()
    part = read_range(dns_root(tmp_path), start, end, columns=["query", "answers"])
    inside = df.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    assert part.columns == ["query", "answers"] and part.height == inside.height
    assert read_range(tmp_path / "nothing").height == 0


def test_passive_dns_follows_cname_chains(shared_data: Path) -> None:
    df = read_all(shared_data / "conformance/dpkt_pcaps/truncated_dns.pcap")
    table = build(df)
    queried = table.filter(~pl.col("cname"))
    assert set(queried.get_column("name")) == {"api.spd.samsungdm.com"}
    assert sorted(queried.get_column("ip")) == sorted(df.row(0, named=True)["answers"][1:])
    targets = table.filter(pl.col("cname"))
    assert set(targets.get_column("name")) == {"api.samsungspd.com"} and targets.height == 5
    only_queried = build(df, cname_targets=False)
    assert only_queried.equals(queried)


def test_passive_dns_merges_and_persists(shared_data: Path, tmp_path: Path) -> None:
    df = read_all(shared_data / TSV)
    whole = build(df)
    assert whole.height > 0
    path = tmp_path / PDNS_FILE
    PassiveDns().update(df.slice(0, 40)).save(path)
    PassiveDns().update(df.slice(40)).save(path)
    stored = PassiveDns.in_data_dir(tmp_path).table
    assert stored.equals(whole)
    # Saving the same answers again doubles counts and keeps the times.
    PassiveDns().update(df).save(path)
    again = PassiveDns.load(path).table
    assert again.get_column("count").to_list() == [2 * c for c in whole.get_column("count")]
    assert again.select("first_seen", "last_seen").equals(whole.select("first_seen", "last_seen"))
    assert merge(whole, whole).get_column("count").sum() == 2 * whole.get_column("count").sum()


def test_names_for_orders_limits_and_respects_time() -> None:
    t = _utc(2024, 1, 1, 12)
    table = pl.DataFrame(
        {
            "ip": ["192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.1", "2001:db8::1"],
            "name": ["old.example", "new.example", "mid.example", "edge.example", "v6.example"],
            "cname": [False, False, False, True, False],
            "first_seen": [t, _utc(2024, 1, 1, 14), _utc(2024, 1, 1, 13), t, t],
            "last_seen": [t, _utc(2024, 1, 1, 15), _utc(2024, 1, 1, 13), t, t],
            "count": [1, 1, 1, 1, 1],
        }
    )
    pdns = PassiveDns(table)
    ips = pl.Series(["192.0.2.1", "198.51.100.9", None, "2001:DB8:0::1", "192.0.2.1"])
    names = pdns.names_for(ips)
    assert names.to_list() == [
        ["new.example", "mid.example", "old.example"],
        [],
        [],
        ["v6.example"],  # matched whatever the spelling of the address
        ["new.example", "mid.example", "old.example"],
    ]
    assert pdns.names_for(ips, limit=1)[0].to_list() == ["new.example"]
    at = pl.Series([_utc(2024, 1, 1, 13, 30)] * 5)
    assert pdns.names_for(ips, at=at)[0].to_list() == ["mid.example", "old.example", "edge.example"]
    # Within the slack a name first seen just after the asked time still counts.
    just_before = pl.Series([_utc(2024, 1, 1, 13, 59, 30)] * 5)
    assert "new.example" in pdns.names_for(ips, at=just_before)[0].to_list()
    without = pdns.names_for(ips, at=at, limit=5, include_cnames=False)
    assert without[0].to_list() == ["mid.example", "old.example"]


@pytest.mark.parametrize("name", [SODS, TSV])
def test_names_for_finds_every_answered_address(shared_data: Path, name: Path) -> None:
    df = read_all(shared_data / name)
    pdns = PassiveDns().update(df)
    answered = (
        df.explode("answers", "answer_types")
        .filter(pl.col("answer_types").is_in(["A", "AAAA"]))
        .select("answers", "query")
    )
    names = pdns.names_for(answered.get_column("answers"), limit=50)
    found = [q in ns for q, ns in zip(answered.get_column("query"), names.to_list(), strict=True)]
    assert answered.height > 0 and all(found)
