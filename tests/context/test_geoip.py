"""GeoIP/ASN lookups on small City-, ASN- and IPinfo-like databases built per test."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from flowhawk.context.geoip import SCHEMA, GeoIP
from flowhawk.errors import InputError


def _write(
    path: Path, database_type: str, networks: dict[str, dict[str, Any]], ip_version: int = 6
) -> Path:
    writer = MMDBWriter(
        ip_version=ip_version,
        database_type=database_type,
        ipv4_compatible=ip_version == 6,
    )
    for cidr, record in networks.items():
        writer.insert_network(IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return path


def _place(iso: str, name: str) -> dict[str, Any]:
    return {"iso_code": iso, "names": {"en": name, "de": name.upper()}}


CITY = {
    "81.2.69.0/24": {
        "country": _place("GB", "United Kingdom"),
        "registered_country": _place("GB", "United Kingdom"),
        "city": {"names": {"en": "London"}},
        "location": {"latitude": 51.5142, "longitude": -0.0931},
    },
    # Anycast-like block: no `country`, only who holds it.
    "1.1.1.0/24": {"registered_country": _place("AU", "Australia")},
    "2a02:d6c0::/29": {
        "country": _place("DE", "Germany"),
        "city": {"names": {"en": "Berlin"}},
        "location": {"latitude": 52.52, "longitude": 13},  # an integer longitude
    },
}
ASN = {
    "81.2.69.0/24": {"autonomous_system_number": 20712, "autonomous_system_organization": "AS-A"},
    "1.1.1.0/24": {"autonomous_system_number": 13335, "autonomous_system_organization": "CF"},
    "8.8.8.0/24": {"autonomous_system_number": 15169, "autonomous_system_organization": "Google"},
}
IPINFO = {
    "8.8.8.0/24": {
        "country_code": "US",
        "country": "United States",
        "asn": "AS15169",
        "as_name": "Google LLC",
    },
    "81.2.69.0/24": {"country_code": "FR", "country": "France", "asn": "AS1", "as_name": "X"},
    "2001:4860::/32": {
        "country_code": "US",
        "country": "United States",
        "asn": "as15169",
        "as_name": "Google LLC",
    },
    "9.9.9.0/24": {"country_code": "CH", "asn": "not-an-asn", "as_name": ""},
}


@pytest.fixture
def dbs(tmp_path: Path) -> dict[str, Path]:
    return {
        "city": _write(tmp_path / "city.mmdb", "GeoLite2-City", CITY),
        "asn": _write(tmp_path / "asn.mmdb", "GeoLite2-ASN", ASN, ip_version=4),
        "ipinfo": _write(tmp_path / "ipinfo.mmdb", "ipinfo ipinfo_lite.mmdb", IPINFO),
    }


def _rows(geo: GeoIP, ips: list[str | None]) -> list[dict[str, Any]]:
    out = geo.lookup(pl.Series(ips, dtype=pl.String))
    assert dict(out.schema) == SCHEMA
    assert out.height == len(ips)
    return out.to_dicts()


NULLS = dict.fromkeys(SCHEMA)


def test_city_values_and_ipv4_in_ipv6_tree(dbs: dict[str, Path]) -> None:
    with GeoIP.open([dbs["city"]]) as geo:
        assert geo.databases[0].ip_version == 6
        (row,) = _rows(geo, ["81.2.69.142"])
    assert row == {
        **NULLS,
        "country": "GB",
        "country_name": "United Kingdom",
        "city": "London",
        "latitude": 51.5142,
        "longitude": -0.0931,
    }


def test_registered_country_fallback(dbs: dict[str, Path]) -> None:
    with GeoIP.open([dbs["city"]]) as geo:
        (row,) = _rows(geo, ["1.1.1.1"])
    assert row == {**NULLS, "country": "AU", "country_name": "Australia"}


def test_ipv6_lookup_and_integer_coordinate(dbs: dict[str, Path]) -> None:
    # The IPv4-only ASN file comes first: it cannot answer IPv6 and must not get in the way.
    with GeoIP.open([dbs["asn"], dbs["city"], dbs["ipinfo"]]) as geo:
        berlin, google = _rows(geo, ["2a02:d6c0:1::5", "2001:4860:4860::8888"])
    assert (berlin["country"], berlin["city"]) == ("DE", "Berlin")
    assert berlin["longitude"] == 13.0
    assert isinstance(berlin["longitude"], float)
    assert (google["country"], google["asn"], google["as_org"]) == ("US", 15169, "Google LLC")


def test_ipinfo_layout(dbs: dict[str, Path]) -> None:
    with GeoIP.open([dbs["ipinfo"]]) as geo:
        google, quad9 = _rows(geo, ["8.8.8.8", "9.9.9.9"])
    assert google == {
        **NULLS,
        "country": "US",
        "country_name": "United States",
        "asn": 15169,
        "as_org": "Google LLC",
    }
    # A malformed ASN and an empty name are unknown, not errors.
    assert quad9 == {**NULLS, "country": "CH"}


def test_unknown_private_invalid_and_null_give_nulls(dbs: dict[str, Path]) -> None:
    ips = [
        "10.0.0.1",
        "192.168.1.1",
        "203.0.113.9",
        "fe80::1",
        None,
        "not an ip",
        "",
        "81.2.69",
        "127.1",
        "300.1.1.1",
        "81.2.69.142/24",
    ]
    with GeoIP.open(list(dbs.values())) as geo:
        rows = _rows(geo, ips)
    assert rows == [NULLS] * len(ips)


def test_order_and_duplicates(dbs: dict[str, Path]) -> None:
    ips = ["8.8.8.8", None, "81.2.69.1", "8.8.8.8", "junk", "81.2.69.1", "8.8.8.8"]
    with GeoIP.open([dbs["asn"]]) as geo:
        out = geo.lookup(pl.Series(ips))
    assert out.get_column("asn").to_list() == [15169, None, 20712, 15169, None, 20712, 15169]


def test_spellings_of_one_address(dbs: dict[str, Path]) -> None:
    ips = [" 8.8.8.8 ", "::ffff:8.8.8.8", "2001:4860:0:0::1%eth0", "2001:4860::1"]
    with GeoIP.open([dbs["ipinfo"]]) as geo:
        out = geo.lookup(pl.Series(ips))
    assert out.get_column("asn").to_list() == [15169] * 4


def test_city_and_asn_fill_each_other(dbs: dict[str, Path]) -> None:
    with GeoIP.open([dbs["city"], dbs["asn"]]) as geo:
        london, cloudflare, google = _rows(geo, ["81.2.69.142", "1.1.1.1", "8.8.8.8"])
    assert (london["city"], london["asn"], london["as_org"]) == ("London", 20712, "AS-A")
    assert (cloudflare["country"], cloudflare["asn"]) == ("AU", 13335)
    assert google == {**NULLS, "asn": 15169, "as_org": "Google"}


def test_first_database_wins_on_conflicts(dbs: dict[str, Path]) -> None:
    with GeoIP.open([dbs["city"], dbs["ipinfo"]]) as geo:
        (city_first,) = _rows(geo, ["81.2.69.142"])
    with GeoIP.open([dbs["ipinfo"], dbs["city"]]) as geo:
        (ipinfo_first,) = _rows(geo, ["81.2.69.142"])
    assert (city_first["country"], city_first["asn"], city_first["as_org"]) == ("GB", 1, "X")
    assert (ipinfo_first["country"], ipinfo_first["country_name"]) == ("FR", "France")
    assert ipinfo_first["city"] == "London"  # only the City database has it


def test_empty_input_and_no_databases(dbs: dict[str, Path]) -> None:
    with GeoIP.open([dbs["city"]]) as geo:
        empty = geo.lookup(pl.Series([], dtype=pl.String))
        all_null = geo.lookup(pl.Series([None, None], dtype=pl.String))
    assert empty.height == 0 and dict(empty.schema) == SCHEMA
    assert all_null.to_dicts() == [NULLS, NULLS]
    with GeoIP.open([]) as geo:
        assert _rows(geo, ["8.8.8.8"]) == [NULLS]
        assert geo.databases == ()


def test_databases_metadata(dbs: dict[str, Path]) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    with GeoIP.open([dbs["city"], dbs["asn"]]) as geo:
        city, asn = geo.databases
    assert (city.path, city.database_type, city.ip_version) == (dbs["city"], "GeoLite2-City", 6)
    assert (asn.path, asn.database_type, asn.ip_version) == (dbs["asn"], "GeoLite2-ASN", 4)
    # The fixture wrote the files just now.
    assert abs((city.build_time - before).total_seconds()) < 60
    assert city.build_time.tzinfo is UTC
    assert city.version == f"GeoLite2-City {city.build_time:%Y-%m-%d}"


def test_close_releases_and_refuses_lookups(dbs: dict[str, Path]) -> None:
    geo = GeoIP.open([dbs["city"]])
    assert _rows(geo, ["81.2.69.1"])[0]["city"] == "London"
    geo.close()
    with pytest.raises(ValueError, match="closed"):
        geo.lookup(pl.Series(["81.2.69.1"]))


def test_missing_file(tmp_path: Path, dbs: dict[str, Path]) -> None:
    missing = tmp_path / "GeoLite2-City.mmdb"
    with pytest.raises(InputError, match="not found") as info:
        GeoIP.open([dbs["asn"], missing])
    assert info.value.input_name == str(missing)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory") as info:
        GeoIP.open([tmp_path])
    assert info.value.input_name == str(tmp_path)


@pytest.mark.parametrize("content", [b"", b"garbage, not a database" * 100])
def test_not_an_mmdb(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=r"not a MaxMind-format \.mmdb") as info:
        GeoIP.open([bad])
    assert info.value.input_name == str(bad)
    assert str(bad) in str(info.value)
