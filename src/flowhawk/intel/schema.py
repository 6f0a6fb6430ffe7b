"""The indicator table every feed parser produces, and the threat categories.

One row per indicator found in a feed:

``type``
    ``"ip"``, ``"cidr"``, ``"domain"`` or ``"url"``.
``value``
    normalized: IPs in canonical text (IPv4 dotted, IPv6 compressed), networks as
    ``address/length`` with host bits cleared (a host-length network is an ``ip``),
    domains lowercased without a trailing dot (``www.`` is kept: it is a name of its
    own), URLs as ``scheme://host[:port]/path?query`` with scheme and host lowercased,
    the default port and the fragment dropped and the path kept as written.
``category``
    one of :data:`CATEGORIES`, or null when the feed does not say (the loader then
    fills in the feed's category).
``family``
    the malware family, tool or list the indicator belongs to, when known.
``first_seen`` / ``last_seen``
    UTC times when the format gives them.
``confidence``
    0-100 when the format gives one.
``source_line``
    the line (text formats) or item number (JSON formats) it came from.
"""

from __future__ import annotations

import re

import polars as pl

INDICATOR_TYPES = ("ip", "cidr", "domain", "url")

#: Threat categories, most severe first (severities live in :mod:`flowhawk.intel.reputation`).
CATEGORIES = (
    "c2",
    "botnet",
    "malware",
    "compromised",
    "phishing",
    "malicious",
    "spam",
    "scanner",
    "anonymizer",
    "tor",
    "suspicious",
)

INDICATOR_SCHEMA: dict[str, pl.DataType] = {
    "type": pl.String(),
    "value": pl.String(),
    "category": pl.String(),
    "family": pl.String(),
    "first_seen": pl.Datetime("us", "UTC"),
    "last_seen": pl.Datetime("us", "UTC"),
    "confidence": pl.UInt8(),
    "source_line": pl.Int64(),
}


def empty_indicators() -> pl.DataFrame:
    """An indicator table without rows."""
    return pl.DataFrame(schema=INDICATOR_SCHEMA)


# Free text (a CSV threat_type, STIX indicator_types, MISP tags, a feed's name) to a
# category. Checked in order: "botnet_cc" is C2 before it is botnet. Separators are
# anything but a letter or digit, so "adaptix_c2" and "c2-server" both say C2.
_SEP = r"(?:^|[^a-z0-9])"
_END = r"(?:[^a-z0-9]|$)"
_CATEGORY_WORDS: list[tuple[str, re.Pattern[str]]] = [
    (
        "benign",
        re.compile(rf"{_SEP}(benign|whitelist|allowlist|false[ _-]?positive){_END}"),
    ),
    (
        "c2",
        re.compile(
            rf"{_SEP}(c2|cnc|c&c|cc|botnet[ _-]?cc|c2[ _-]?server|c2server|"
            rf"command[ _-]?(and|&)[ _-]?control){_END}"
        ),
    ),
    ("botnet", re.compile(rf"{_SEP}(botnet|bot[ _-]?drone|bots?){_END}")),
    ("phishing", re.compile(r"phish")),
    ("compromised", re.compile(r"compromised")),
    ("tor", re.compile(rf"{_SEP}tor([ _-]?(exit|node|relay)s?)?{_END}")),
    ("scanner", re.compile(r"scan")),
    ("anonymizer", re.compile(r"anonym|proxy|vpn")),
    (
        "malware",
        re.compile(
            r"malware|malspam|payload|ransom|trojan|stealer|loader|dropper|backdoor|exploit|"
            rf"virus|worm|{_SEP}rat{_END}"
        ),
    ),
    ("spam", re.compile(r"spam")),
    ("suspicious", re.compile(r"suspicious|anomalous|suspect")),
    ("malicious", re.compile(r"malicious|attack|abuse|blocklist|blacklist")),
]


def category_from_text(text: str | None) -> str | None:
    """The category a piece of free text names, ``"benign"`` for allow-list words, or None.

    >>> category_from_text("botnet_cc"), category_from_text("Payload delivery")
    ('c2', 'malware')
    """
    if not text:
        return None
    low = text.lower()
    for category, pattern in _CATEGORY_WORDS:
        if pattern.search(low):
            return category
    return None
