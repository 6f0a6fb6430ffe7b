"""Zeek intel framework files (``zeek``): what ``Intel::read_files`` loads.

A ``#fields`` line names the tab-separated columns; ``indicator`` and
``indicator_type`` are required. ``Intel::ADDR``, ``Intel::SUBNET``,
``Intel::DOMAIN`` and ``Intel::URL`` become ``ip``, ``cidr``, ``domain`` and ``url``
indicators (each value checked against its type; Zeek's URLs have no scheme);
other types (``Intel::FILE_HASH``, ``Intel::EMAIL``, ...) are counted as ignored.
The category is read from the free text of ``meta.cif_tags``, ``meta.desc`` or
``meta.source`` (the first that names one); ``meta.cif_confidence`` is the
confidence (a value up to 10 is taken on CIF's 0-10 scale). ``#separator`` and
``#unset_field`` lines are honored; ``-`` is unset by default.
"""

from __future__ import annotations

from flowhawk.errors import InputError
from flowhawk.intel.formats.base import Entries, ParseContext, decode_text, entries, no_entries
from flowhawk.intel.schema import category_from_text

TYPES = {
    "intel::addr": "ip",
    "intel::subnet": "cidr",
    "intel::domain": "domain",
    "intel::url": "url",
}
_CATEGORY_FIELDS = ("meta.cif_tags", "meta.desc", "meta.source")


def sniff(head: bytes) -> int:
    for line in decode_text(head).splitlines():
        if line.startswith("#fields"):
            names = line.split()[1:] if "\t" not in line else line.split("\t")[1:]
            return 95 if {"indicator", "indicator_type"} <= set(names) else 0
        if line.strip() and not line.startswith("#"):
            return 0
    return 0


def _unescape(text: str) -> str:
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def parse(data: bytes, ctx: ParseContext) -> Entries:
    separator, unset = "\t", "-"
    names: list[str] | None = None
    values: list[str | None] = []
    declared: list[str | None] = []
    meta: dict[str, list[object]] = {"category": [], "confidence": []}
    numbers: list[int] = []
    ignored: dict[str, int] = {}
    for number, line in enumerate(decode_text(data).splitlines(), 1):
        if line.startswith("#"):
            key, _, rest = line.partition(" " if line.startswith("#separator") else separator)
            if key == "#separator":
                separator = _unescape(rest.strip())
            elif key == "#unset_field":
                unset = rest.strip()
            elif key == "#fields":
                names = line.split(separator)[1:]
            continue
        if not line.strip():
            continue
        if names is None or "indicator" not in names or "indicator_type" not in names:
            raise InputError(ctx.input, "Zeek intel file without a '#fields' line naming "
                             "indicator and indicator_type before its data")  # fmt: skip
        fields = line.split(separator)
        if len(fields) != len(names):
            ctx.skip(f"line {number}", "wrong number of fields", f"{len(fields)} of {len(names)}")
            continue
        row = {n: (None if f == unset else f) for n, f in zip(names, fields, strict=True)}
        kind = (row["indicator_type"] or "").strip()
        if kind.lower() not in TYPES:
            ignored[kind or "untyped"] = ignored.get(kind or "untyped", 0) + 1
            continue
        values.append(row["indicator"])
        declared.append(TYPES[kind.lower()])
        numbers.append(number)
        category = next(
            (c for f in _CATEGORY_FIELDS if (c := category_from_text(row.get(f)))), None
        )
        meta["category"].append(None if category == "benign" else category)
        meta["confidence"].append(_confidence(row.get("meta.cif_confidence")))
    for kind, count in sorted(ignored.items()):
        ctx.ignore(f"{kind} indicators", count)
    if not values:
        return no_entries()
    return entries(values, numbers, meta=meta, declared=declared)


def _confidence(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    if value is None or value < 0:
        return None
    return value * 10 if value <= 10 else min(value, 100.0)
