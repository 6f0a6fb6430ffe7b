"""Line-oriented feeds: plain lists (``plain``) and maltrail trail files (``maltrail``).

A plain list holds one IP, network, domain or URL per line. Lines starting with
``#`` or ``;`` are comments, blank lines are skipped, and only the first field
counts: fields end at white space (``1.2.3.4 # scanner``, ``5.6.0.0/16 ; SBL123``)
and, except in a URL, at a comma or semicolon (``1.2.3.4,scanner,2024-03-01``), so
trailing comments and extra columns are dropped.

A maltrail trail file is a plain list whose name says what it holds (maltrail's own
convention, `trails/static/<kind>/<family>.txt`): the family is the file name stem,
and the category comes from the folder:

* ``malware/`` -> ``malware``, except families that are C2 frameworks
  (:data:`C2_FRAMEWORKS`, or a name ending in ``c2``) -> ``c2``; maltrail keeps some
  C2 frameworks under ``malicious/`` (``havoc``, ``adaptix_c2``), and the same rule
  makes those ``c2`` too;
* ``malicious/`` -> ``malicious``; ``suspicious/`` -> ``suspicious``;
* ``mass_scanner*.txt`` -> ``scanner``; anything else -> ``malicious``.

Maltrail files are recognized by the copyright header every one of them carries.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from flowhawk.intel.formats.base import (
    SNIFF_BYTES,
    Entries,
    ParseContext,
    decode_text,
    entries,
    no_entries,
)

#: Families that name command-and-control frameworks (maltrail file stems).
C2_FRAMEWORKS = frozenset(
    {
        "cobaltstrike", "cobalt", "sliver", "brc4", "bruteratel", "metasploit", "havoc",
        "covenant", "mythic", "empire", "poshc2", "merlin", "deimos", "nighthawk",
        "pupy", "pupyrat", "koadic", "silenttrinity", "villain", "supershell",
        "manjusaka", "geacon", "vshell", "caldera", "interactsh",
    }
)  # fmt: skip
_COMMENT = re.compile(r"^\s*[#;]")
_FIELD_END = re.compile(r"[,;]")
# What an entry of a list looks like, roughly (detection only; parsing decides): an
# address or network, a name, a URL, a path or a bracketed IPv6 address.
_LOOKS_LIKE = re.compile(
    r"^(\*\.)?[\w.-]+\.[\w-]+\.?(:\d+)?([/?]\S*)?$|^[0-9a-f:.]+(/\d+)?$|^\[[0-9a-f:.]+\]"
    r"|^[a-z][\w+.-]*://\S+$|^/\S*$",
    re.IGNORECASE,
)
_MALTRAIL_MARK = b"Maltrail developers"


def _lines(text: str) -> tuple[list[str], list[int]]:
    """First field of every non-blank, non-comment line, with its 1-based line number."""
    tokens: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or _COMMENT.match(line):
            continue
        first = line.split(None, 1)[0]
        tokens.append(first if "://" in first else _FIELD_END.split(first, 1)[0])
        numbers.append(number)
    return tokens, numbers


def sniff_plain(head: bytes) -> int:
    """Most non-comment lines of the head are indicators (or trails maltrail ignores)."""
    if b"\x00" in head:
        return 0
    text = decode_text(head)
    if len(head) >= SNIFF_BYTES and not text.endswith("\n"):  # the last line may be cut
        text = text[: text.rfind("\n") + 1]
    tokens, _ = _lines(text)
    if not tokens:  # only comments: a list that is empty today
        return 10 if any(_COMMENT.match(line) for line in text.splitlines()) else 0
    share = sum(bool(_LOOKS_LIKE.match(t)) for t in tokens) / len(tokens)
    return 40 if share >= 0.8 else 20 if share >= 0.5 else 0


def sniff_maltrail(head: bytes) -> int:
    return 90 if _MALTRAIL_MARK in head[:512] else 0


def parse_plain(data: bytes, ctx: ParseContext) -> Entries:
    """A plain list: indicators with no category or family of their own."""
    tokens, numbers = _lines(decode_text(data))
    return entries(tokens, numbers) if tokens else no_entries()


def maltrail_labels(path_parts: tuple[str, ...]) -> tuple[str, str]:
    """(category, family) of a trail file from its folder and name."""
    if not path_parts:
        return "malicious", ""
    family = PurePosixPath(path_parts[-1]).stem.lower()
    folder = path_parts[-2].lower() if len(path_parts) > 1 else ""
    if family.startswith("mass_scanner"):
        return "scanner", family
    if folder in ("malware", "malicious") and (
        family in C2_FRAMEWORKS or family.endswith("c2") or family.endswith("_c2")
    ):
        return "c2", family
    return {"malware": "malware", "suspicious": "suspicious"}.get(folder, "malicious"), family


def parse_maltrail(data: bytes, ctx: ParseContext) -> Entries:
    """A maltrail trail file: the family and category come from its path."""
    tokens, numbers = _lines(decode_text(data))
    if not tokens:
        return no_entries()
    category, family = maltrail_labels(ctx.path_parts)
    return entries(tokens, numbers, meta={"category": category, "family": family or None})
