"""MISP JSON events (``misp``): ``{"Event": {...}}``, a list of those, or an API
``{"response": [...]}``.

Attributes of the event and of its objects become indicators by type: ``ip-dst``,
``ip-src`` (an address or network), ``ip-dst|port``, ``ip-src|port`` (the port
dropped), ``domain``, ``hostname``, ``hostname|port``, ``domain|ip`` (both halves)
and ``url``. Other types (hashes, file names, ``uri`` paths, e-mail) are counted as
ignored by type, as are deleted attributes and those marked ``to_ids: false``
(context MISP itself does not use for detection).

* category: the first attribute tag, then event tag, then attribute comment, then
  event ``info`` that names one (``kill-chain:Command and Control``,
  ``ecsirt:malicious-code="c2-server"``, ``misp-galaxy:botnet=...``); else the MISP
  category ``Payload delivery`` says ``malware``;
* family: the value of the first galaxy tag of a malware kind
  (``misp-galaxy:malpedia="Emotet"``), attribute tags before event tags;
* confidence: a ``misp:confidence-level`` tag, else the event's ``threat_level_id``
  (1 high: 90, 2 medium: 70, 3 low: 50, 4 undefined: none);
* times: the attribute's ``first_seen`` (else the event ``date``) and ``last_seen``
  (else the attribute's ``timestamp``, its last change, else the event's).

Locations in messages are attribute numbers (1-based, counted over the file).
"""

from __future__ import annotations

import re
from typing import Any

from flowhawk.errors import InputError
from flowhawk.intel.formats.base import Entries, Gathered, ParseContext
from flowhawk.intel.formats.stix import load_json
from flowhawk.intel.schema import category_from_text

#: MISP attribute type -> (type each part must have, ...) for ``a|b`` types.
TYPES: dict[str, tuple[str | None, ...]] = {
    "ip-dst": ("cidr",),
    "ip-src": ("cidr",),
    "ip-dst|port": ("cidr", None),
    "ip-src|port": ("cidr", None),
    "domain": ("domain",),
    "hostname": ("domain",),
    "hostname|port": ("domain", None),
    "domain|ip": ("domain", "cidr"),
    "url": ("url",),
}
_THREAT_LEVEL = {"1": 90, "2": 70, "3": 50}
_CONFIDENCE_TAGS = {
    "completely-confident": 100, "usually-confident": 75, "fairly-confident": 50,
    "rarely-confident": 25, "unconfident": 0,
}  # fmt: skip
_FAMILY_GALAXIES = re.compile(
    r"^misp-galaxy:(malpedia|botnet|tool|ransomware|rat|backdoor|stealer|banker|"
    r'exploit-kit|mitre-malware|mitre-tool|android|threat-actor)="(.+)"$'
)
_MARKS = re.compile(rb'"(Event|response|Attribute)"\s*:')


def sniff(head: bytes) -> int:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return 85 if text[:1] in (b"{", b"[") and _MARKS.search(head) else 0


def _events(doc: Any, ctx: ParseContext) -> list[dict[str, Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("response"), list):
        doc = doc["response"]
    items = doc if isinstance(doc, list) else [doc]
    events = [i["Event"] if isinstance(i, dict) and "Event" in i else i for i in items]
    if not events or not all(isinstance(e, dict) and ("Attribute" in e or "Object" in e or
                                                      "info" in e) for e in events):  # fmt: skip
        raise InputError(ctx.input, "is JSON but not MISP: no Event with attributes")
    return events


def _tags(holder: dict[str, Any]) -> list[str]:
    return [str(t.get("name", "")) for t in holder.get("Tag") or [] if isinstance(t, dict)]


def _family(tags: list[str]) -> str | None:
    for tag in tags:
        if m := _FAMILY_GALAXIES.match(tag):
            return m.group(2)
    return None


def _confidence(tags: list[str], event: dict[str, Any]) -> int | None:
    for tag in tags:
        if tag.startswith("misp:confidence-level="):
            level = tag.split("=", 1)[1].strip('"')
            if level in _CONFIDENCE_TAGS:
                return _CONFIDENCE_TAGS[level]
    return _THREAT_LEVEL.get(str(event.get("threat_level_id", "")))


def _category(texts: list[str | None], misp_category: Any) -> str | None:
    for text in texts:
        if text and not text.startswith("tlp:") and (found := category_from_text(text)):
            return found
    return "malware" if misp_category == "Payload delivery" else None


def _attributes(event: dict[str, Any]) -> list[Any]:
    found = list(event.get("Attribute") or [])
    for obj in event.get("Object") or []:
        if isinstance(obj, dict):
            found.extend(obj.get("Attribute") or [])
    return found


def parse(data: bytes, ctx: ParseContext) -> Entries:
    out = Gathered("attribute")
    number = 0
    for event in _events(load_json(data, ctx), ctx):
        event_tags = _tags(event)
        for attr in _attributes(event):
            number += 1
            if not isinstance(attr, dict) or not isinstance(attr.get("value"), str):
                ctx.skip(f"attribute {number}", "attribute without a value")
                continue
            kind = str(attr.get("type", ""))
            if kind not in TYPES:
                ctx.ignore(f"MISP {kind or 'untyped'} attributes")
                continue
            if attr.get("deleted") in (True, "1", 1):
                ctx.ignore("deleted attributes")
                continue
            if attr.get("to_ids") in (False, "0", 0):
                ctx.ignore("attributes not for detection (to_ids false)")
                continue
            tags = _tags(attr) + event_tags
            category = _category(
                [*_tags(attr), *event_tags, attr.get("comment"), event.get("info")],
                attr.get("category"),
            )
            if category == "benign":
                ctx.ignore("benign attributes")
                continue
            row = {
                "category": category,
                "family": _family(tags),
                "first_seen": attr.get("first_seen") or event.get("date"),
                "last_seen": attr.get("last_seen")
                or attr.get("timestamp")
                or event.get("timestamp"),
                "confidence": _confidence(tags, event),
            }
            parts = attr["value"].split("|") if "|" in kind else [attr["value"]]
            for part, must in zip(parts, TYPES[kind], strict=False):
                if must is None and "|port" in kind:
                    continue
                out.add(part, must, number, row)
    return out.entries()
