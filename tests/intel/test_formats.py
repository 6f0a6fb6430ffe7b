"""Each feed format on its fixture: what becomes an indicator, what is reported, detection."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.intel import formats
from flowhawk.intel.formats.base import ParseContext
from flowhawk.intel.schema import INDICATOR_SCHEMA
from flowhawk.intel.settings import CsvMapping

from .conftest import FIXTURES, parse_file, values


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("plain_mixed.txt", "plain"),
        ("threatfox.csv", "csv"),
        ("feodo.csv", "csv"),
        ("custom_feed.tsv", "csv"),
        ("zeek.intel", "zeek"),
        ("stix_bundle.json", "stix"),
        ("misp_event.json", "misp"),
        ("misp_response.json", "misp"),
    ],
)
def test_detection_and_schema(name: str, fmt: str) -> None:
    data = (FIXTURES / name).read_bytes()
    assert formats.detect(data, name) == fmt
    frame, _, _ = parse_file(FIXTURES / name)
    assert dict(frame.schema) == INDICATOR_SCHEMA
    assert frame.height > 0
    assert frame.get_column("type").is_in(["ip", "cidr", "domain", "url"]).all()


def test_unknown_format_and_empty_input_raise_naming_the_file() -> None:
    with pytest.raises(InputError, match=r"odd.bin.*format not recognised"):
        formats.detect(b"\x00\x01\x02binary\x00" * 40, "odd.bin")
    with pytest.raises(InputError, match=r"empty.txt.*empty"):
        formats.detect(b"  \n\n", "empty.txt")
    with pytest.raises(InputError, match=r"prose.txt.*format not recognised"):
        formats.detect(b"Dear reader,\nthis is a letter and not a list.\n", "prose.txt")


def test_explicit_format_overrides_detection() -> None:
    """A CSV read as a plain list: the whole header row is one bad value."""
    frame, stats, _ = parse_file(FIXTURES / "feodo.csv", fmt="plain")
    assert frame.height == 0
    assert stats.skipped_total == 6


def test_plain_list() -> None:
    frame, stats, diag = parse_file(FIXTURES / "plain_mixed.txt")
    assert values(frame) == [
        "198.51.100.23", "198.51.100.24", "203.0.113.0/24", "203.0.113.77", "2001:db8::1",
        "2001:db8::2", "evil-domain.example.com", "wildcard.example-bad.net",
        "http://download.example-bad.org/payload.bin", "198.51.100.23",
    ]  # fmt: skip
    assert frame.get_column("source_line").to_list() == [4, 5, 6, 7, 8, 9, 10, 11, 12, 19]
    assert stats.skipped == {
        "invalid IP address or network": 2,
        "not an IP address, network, domain or URL": 2,
    }
    assert stats.ignored == {"URL path without a host": 1, "regular expression trail": 1}
    located = {(i.location, i.reason) for i in diag.issues}
    assert ("line 13", "invalid IP address or network") in located
    assert ("line 17", "not an IP address, network, domain or URL") in located
    assert all(i.input.endswith("plain_mixed.txt") for i in diag.issues)


def test_threatfox_csv_with_commented_header() -> None:
    frame, stats, _ = parse_file(FIXTURES / "threatfox.csv")
    rows = frame.select("type", "value", "category", "family", "confidence").rows()
    assert rows[:4] == [
        ("ip", "91.92.245.19", "c2", "AsyncRAT", 100),
        ("ip", "5.42.65.67", "c2", "DCRat", 75),
        ("domain", "hxxp-free.example-bad.ru", "c2", "Lumma Stealer", 100),
        ("url", "https://steamcommunity-gift.example-phish.com/gate.php", "malware",
         "Lumma Stealer", 50),
    ]  # fmt: skip
    first = frame.row(0, named=True)
    assert first["first_seen"] == datetime(2024, 3, 6, 6, 30, 12, tzinfo=UTC)
    assert frame.row(1, named=True)["last_seen"] == datetime(2024, 3, 6, 6, 31, tzinfo=UTC)
    assert stats.skipped == {
        "too few fields": 1,
        "invalid IP address or network": 1,
        "not an IP address, network, domain or URL": 1,
    }
    assert stats.ignored["md5_hash indicators"] == 1
    assert stats.ignored["sha256_hash indicators"] == 1
    assert stats.ignored["unreadable first_seen (indicator kept undated)"] == 1
    assert (
        frame.filter(pl.col("value") == "193.233.132.51").get_column("first_seen").is_null().all()
    )


def test_feodo_csv_family_and_dates() -> None:
    frame, stats, _ = parse_file(FIXTURES / "feodo.csv")
    assert values(frame) == [
        "51.75.36.200", "103.109.247.10", "162.243.103.246", "2607:f8b0:4004:c06::64",
        "45.61.139.49",
    ]  # fmt: skip
    assert frame.get_column("family").to_list() == ["Emotet", "QakBot", "Pikabot", "IcedID", None]
    assert frame.get_column("category").is_null().all(), "the feed's category fills it later"
    assert frame.row(0, named=True)["last_seen"] == datetime(2024, 3, 6, tzinfo=UTC)
    assert stats.skipped == {"invalid IP address or network": 1}


def test_csv_column_mapping() -> None:
    mapping = CsvMapping(type="Kind", category="Verdict", last_seen="Seen", confidence="Score")
    frame, stats, _ = parse_file(FIXTURES / "custom_feed.tsv", options={"csv": mapping})
    assert frame.select("type", "value", "category", "confidence").rows() == [
        ("ip", "185.100.87.202", "scanner", 40),
        ("cidr", "10.20.0.0/16", "compromised", 90),
        ("domain", "beacon.example-bad.com", "c2", 100),
        ("url", "http://beacon.example-bad.com/jquery-3.3.1.min.js", "c2", 100),
    ]
    assert frame.get_column("last_seen").to_list() == [datetime(2024, 3, 6, 4, 40, tzinfo=UTC)] * 4
    assert stats.ignored == {"rows of a benign threat type": 1}
    with pytest.raises(InputError, match=r"custom_feed.tsv.*not in the header"):
        parse_file(FIXTURES / "custom_feed.tsv", options={"csv": CsvMapping(type="Nope")})
    with pytest.raises(InputError, match=r"custom_feed.tsv.*no CSV header"):
        parse_file(FIXTURES / "custom_feed.tsv", options={"csv": CsvMapping(value="Missing")})


def test_zeek_intel() -> None:
    frame, stats, diag = parse_file(FIXTURES / "zeek.intel")
    assert frame.select("type", "value").rows() == [
        ("ip", "45.142.212.61"), ("ip", "194.165.16.78"), ("ip", "2a0b:4140:4c3f::2"),
        ("cidr", "193.32.162.0/24"), ("domain", "update.example-bad.net"),
        ("domain", "login.example-phish.com"),
        ("url", "http://files.example-bad.org/payload/invoice.exe"),
        ("domain", "scan-01.example-scanner.net"), ("ip", "185.220.101.1"),
        ("ip", "159.203.181.95"), ("domain", "mirror.example-bad.ru"),
        ("url", "http://203.0.113.5:8080/bins/mips"),
    ]  # fmt: skip
    cats = dict(frame.select("value", "category").rows())
    assert cats["45.142.212.61"] == "c2"
    assert cats["185.220.101.1"] == "tor"
    assert cats["login.example-phish.com"] == "phishing"
    conf = dict(frame.select("value", "confidence").rows())
    assert conf["45.142.212.61"] == 85 and conf["update.example-bad.net"] == 90  # CIF 0-10
    assert stats.skipped == {
        "wrong number of fields": 1,
        "invalid IP address or network": 1,
        "value does not match its declared type": 1,
    }
    assert stats.ignored == {"Intel::FILE_HASH indicators": 2, "Intel::EMAIL indicators": 1}
    assert ("line 16", "wrong number of fields") in {(i.location, i.reason) for i in diag.issues}


def test_zeek_intel_without_fields_header_raises() -> None:
    ctx = ParseContext("no-header.intel", Diagnostics())
    with pytest.raises(InputError, match=r"no-header.intel.*#fields"):
        formats.parse(b"1.2.3.4\tIntel::ADDR\tsrc\n", "zeek", ctx)


def test_stix_bundle() -> None:
    frame, stats, diag = parse_file(FIXTURES / "stix_bundle.json")
    rows = {r[1]: r for r in frame.select("type", "value", "category", "family").rows()}
    assert set(rows) == {
        "45.76.176.10", "103.75.201.2", "103.75.201.4", "update-check.example-bad.net",
        "https://login-microsoftonline.example-phish.com/common/oauth2/authorize?client_id=1",
        "185.220.101.47", "2a03:b0c0:3:d0::1b04:e001", "198.51.100.0/24",
        "qbot-cdn.example-bad.org",
    }  # fmt: skip
    assert rows["45.76.176.10"][2:] == ("c2", "Emotet"), "name says C2, relationship the family"
    assert rows["qbot-cdn.example-bad.org"][2] == "c2", "indicates a C2 infrastructure"
    assert rows["198.51.100.0/24"][:3] == ("cidr", "198.51.100.0/24", "anonymizer")
    assert rows["2a03:b0c0:3:d0::1b04:e001"][2] == "suspicious"
    first = frame.filter(pl.col("value") == "45.76.176.10").row(0, named=True)
    assert first["first_seen"] == datetime(2024, 3, 2, 10, tzinfo=UTC)
    assert first["last_seen"] == datetime(2024, 3, 5, 8, 30, tzinfo=UTC)
    assert first["confidence"] == 85 and first["source_line"] == 4
    assert stats.skipped == {
        "unreadable STIX pattern": 1,
        "indicator without a pattern": 1,
        "invalid IP address or network": 1,
    }
    for reason in (
        "unsupported patterns (file hash comparisons)",
        "unsupported patterns (AND across objects or values)",
        "unsupported patterns (patterns with REPEATS)",
        "revoked indicators",
        "expired indicators (valid_until passed)",
        "snort patterns",
        "benign indicators",
    ):
        assert stats.ignored[reason] == 1, reason
    assert stats.ignored["STIX relationship objects"] == 2
    assert ("object 19", "invalid IP address or network") in {
        (i.location, i.reason) for i in diag.issues
    }


def test_misp_event() -> None:
    frame, stats, diag = parse_file(FIXTURES / "misp_event.json")
    assert frame.select("type", "value").rows() == [
        ("ip", "51.75.33.127"), ("ip", "91.207.28.33"), ("domain", "chunkydrop.example-bad.com"),
        ("domain", "panel.chunkydrop.example-bad.com"), ("domain", "mail-relay.example-bad.net"),
        ("ip", "185.244.25.10"), ("url", "http://files.example-bad.org/invoice_0304.doc"),
        ("cidr", "45.9.148.0/24"), ("ip", "2a01:4f8:c17:2e3f::1"),
        ("domain", "cdn-update.example-bad.net"), ("ip", "185.244.25.10"),
    ]  # fmt: skip
    by_value = {r["value"]: r for r in frame.iter_rows(named=True)}
    assert by_value["51.75.33.127"]["category"] == "c2", "from the event info"
    assert by_value["51.75.33.127"]["family"] == "Emotet", "from the galaxy tag"
    assert by_value["51.75.33.127"]["confidence"] == 90, "threat level 1"
    url = by_value["http://files.example-bad.org/invoice_0304.doc"]
    assert (url["category"], url["confidence"]) == ("malware", 75)
    assert by_value["45.9.148.0/24"]["category"] == "scanner", "attribute tag first"
    panel = by_value["panel.chunkydrop.example-bad.com"]
    assert panel["last_seen"] == datetime(2024, 3, 5, 18, 30, tzinfo=UTC)
    assert by_value["91.207.28.33"]["last_seen"] == datetime.fromtimestamp(1709546400, UTC)
    assert stats.skipped == {
        "attribute without a value": 1,
        "invalid IP address or network": 1,
        "not an IP address, network, domain or URL": 1,
    }
    assert stats.ignored == {
        "MISP md5 attributes": 1,
        "attributes not for detection (to_ids false)": 1,
        "deleted attributes": 1,
        "MISP port attributes": 1,
    }
    assert ("attribute 10", "invalid IP address or network") in {
        (i.location, i.reason) for i in diag.issues
    }


def test_misp_response_list() -> None:
    frame, _, _ = parse_file(FIXTURES / "misp_response.json")
    assert frame.select("value", "category", "family", "confidence").rows() == [
        ("https://payroll-portal.example-phish.com/login.php", "phishing", None, 50),
        ("payroll-portal.example-phish.com", "phishing", None, 50),
        ("141.98.10.60", "botnet", "Mirai", None),
        ("141.98.10.61", "botnet", "Mirai", None),
    ]


@pytest.mark.parametrize(
    ("fmt", "data", "message"),
    [
        ("stix", b'{"type": "bundle", "objects": [', "not valid JSON"),
        ("stix", b'{"hello": "world"}', "not STIX"),
        ("misp", b'{"hello": "world"}', "not MISP"),
        ("csv", b"a,b,c\n1,2,3\n", "no CSV header"),
    ],
)
def test_unusable_documents_raise(fmt: str, data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=f"doc.{fmt}: .*{message}"):
        formats.parse(data, fmt, ParseContext(f"doc.{fmt}", Diagnostics()))


def test_bad_bytes_are_bad_values_not_a_crash() -> None:
    diag = Diagnostics()
    data = b"198.51.100.1\n\xff\xfe\xfa.example.com\n198.51.100.2\n"
    frame = formats.read(data, "plain", ParseContext("bytes.txt", diag))
    assert values(frame) == ["198.51.100.1", "198.51.100.2"]
    assert diag.stats("bytes.txt").skipped_total == 1


def test_plain_list_extra_columns_are_dropped() -> None:
    data = (
        b"198.51.100.1,scanner,2024-03-01\nevil.example.com;seen twice\nhttp://a.example/x?a=1,2\n"
    )
    frame = formats.read(data, "plain", ParseContext("cols.txt", Diagnostics()))
    assert values(frame) == ["198.51.100.1", "evil.example.com", "http://a.example/x?a=1,2"]
    assert formats.detect(data, "cols.txt") == "plain"
