"""Real feeds from ../shared/data/intel: counts agree with what a grep of the files finds."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import polars as pl
import pytest

from flowhawk.intel.formats.lines import maltrail_labels

from .conftest import parse_file, values

PUBLIC_FEEDS = (
    "abuse-ch-ipblocklist.txt", "alienvault.txt", "binarydefense.txt", "cobaltstrike_ips.txt",
    "compromised-ips.txt", "cps_cobaltstrike_domain.txt", "cps_cobaltstrike_ip.txt", "sans.txt",
    "threatfox.txt", "tor-exit.txt",
)  # fmt: skip
TRAILS = (
    "malware/emotet.txt", "malware/conficker.txt", "malware/cobaltstrike.txt",
    "malware/trickbot.txt", "malicious/havoc.txt", "suspicious/onion.txt",
    "suspicious/dynamic_domain.txt", "mass_scanner.txt", "mass_scanner_cidr.txt",
)  # fmt: skip
_DATA_LINE = re.compile(r"^\s*[^\s#;]")
_V4_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3})(?::\d+)?$")
_NAME = re.compile(r"^(?:[a-z0-9_-]+\.)+[a-z][a-z0-9-]*$")


def grep_tokens(path: Path) -> list[str]:
    """First field of each line that is neither blank nor a comment (grep -v '^#')."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [line.split()[0] for line in text.splitlines() if _DATA_LINE.match(line)]


def test_every_public_feed_file_is_read_whole(intel_data: Path) -> None:
    folder = intel_data / "public_feeds"
    assert sorted(p.name for p in folder.glob("*.txt") if p.name != "SOURCE.txt") == sorted(
        PUBLIC_FEEDS
    ), "a feed file was added or removed: list it here"
    for name in PUBLIC_FEEDS:
        path = folder / name
        frame, stats, _ = parse_file(path)
        tokens = grep_tokens(path)
        assert stats.skipped_total == 0 and not stats.ignored, name
        assert frame.height == len(tokens), name
        want = [str(ipaddress.ip_address(t)) if _V4_PORT.match(t) else t.lower() for t in tokens]
        assert values(frame) == want, name
        kinds = set(frame.get_column("type"))
        assert kinds == ({"domain"} if "domain" in name else {"ip"}), name


@pytest.mark.parametrize("name", ["tor-exit-nodes.lst", "tor-nodes.lst"])
def test_tor_lists(intel_data: Path, name: str) -> None:
    path = intel_data / "tor" / name
    frame, stats, _ = parse_file(path)
    tokens = grep_tokens(path)
    assert stats.skipped_total == 0
    assert frame.height == len(tokens)
    assert values(frame) == [str(ipaddress.ip_address(t)) for t in tokens]
    v6 = frame.filter(pl.col("value").str.contains(":"))
    if name == "tor-nodes.lst":
        assert v6.height > 0, "the relay list carries IPv6 addresses, written in full"


@pytest.mark.parametrize("trail", TRAILS)
def test_maltrail_trails(intel_data: Path, trail: str) -> None:
    path = intel_data / "maltrail" / "trails_static" / trail
    frame, stats, _ = parse_file(path)
    tokens = grep_tokens(path)
    assert parse_file(path)[0].height == frame.height  # deterministic
    # Every data line is an indicator, ignored (a path, a regular expression) or reported.
    total = frame.height + stats.skipped_total + sum(stats.ignored.values())
    assert total == len(tokens)
    paths = sum(t.startswith("/") for t in tokens)
    assert stats.ignored.get("URL path without a host", 0) == paths
    assert stats.skipped_total <= max(3, len(tokens) // 1000), dict(stats.skipped)
    ips = {str(ipaddress.ip_address(m.group(1))) for t in tokens if (m := _V4_PORT.match(t))}
    assert ips <= set(values(frame, "ip"))
    names = {t.lower().rstrip(".") for t in tokens if _NAME.match(t.lower().rstrip("."))}
    assert names <= set(values(frame, "domain"))
    category, family = maltrail_labels(path.parts)
    assert frame.get_column("category").unique().to_list() == [category]
    assert frame.get_column("family").unique().to_list() == [family]


def test_maltrail_categories_from_folders(intel_data: Path) -> None:
    root = intel_data / "maltrail" / "trails_static"
    assert maltrail_labels((root / "malware" / "emotet.txt").parts) == ("malware", "emotet")
    assert maltrail_labels((root / "malware" / "cobaltstrike.txt").parts) == ("c2", "cobaltstrike")
    assert maltrail_labels((root / "malware" / "aurac2.txt").parts) == ("c2", "aurac2")
    assert maltrail_labels((root / "malicious" / "havoc.txt").parts) == ("c2", "havoc")
    assert maltrail_labels((root / "malicious" / "gophish.txt").parts) == ("malicious", "gophish")
    assert maltrail_labels((root / "suspicious" / "onion.txt").parts) == ("suspicious", "onion")
    assert maltrail_labels((root / "mass_scanner_cidr.txt").parts)[0] == "scanner"


def test_scanner_networks(intel_data: Path) -> None:
    path = intel_data / "maltrail" / "trails_static" / "mass_scanner_cidr.txt"
    frame, _, _ = parse_file(path)
    tokens = grep_tokens(path)  # networks, and a few single addresses
    want = {str(ipaddress.ip_network(t, strict=False)) for t in tokens}
    got = set(values(frame, "cidr")) | {v + "/32" for v in values(frame, "ip")}
    assert want == got
