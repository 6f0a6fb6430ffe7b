"""STIX 2.1 (and 2.0) JSON (``stix``): a bundle, a TAXII envelope (``objects``), a list of
objects or a single indicator.

Every ``indicator`` with a STIX pattern (``pattern_type`` "stix", or none as in STIX
2.0) gives the addresses, networks, domains and URLs its pattern names (see
:mod:`flowhawk.intel.formats.stix_pattern`); patterns it cannot map are counted as
ignored. Revoked indicators, indicators whose ``valid_until`` has passed and other
pattern languages (Snort, YARA, Sigma) are ignored too.

* times: ``valid_from`` is the first-seen time; ``modified`` (else ``created``) the
  last time the producer vouched for it;
* ``confidence`` is kept (0-100);
* category: ``indicator_types`` (2.1) or ``labels`` (2.0) read as text
  (``malicious-activity`` -> malicious, ``anomalous-activity`` -> suspicious,
  ``anonymization`` -> anonymizer, ``compromised``; ``benign`` ones are ignored); an
  ``indicates`` relationship to an ``infrastructure`` of type command-and-control or
  botnet says ``c2`` / ``botnet``, one to a ``malware`` says ``malware`` when the
  indicator's own types say no more than "malicious", and names the family; so
  may the indicator's ``name`` read as text (``Emotet C2 server``); the more severe
  of the two wins.

Locations in messages are object numbers (1-based, in file order).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from flowhawk.errors import InputError
from flowhawk.intel.formats.base import Entries, Gathered, ParseContext, decode_text
from flowhawk.intel.formats.stix_pattern import PatternError, map_pattern
from flowhawk.intel.schema import CATEGORIES, category_from_text
from flowhawk.sources.flowtext import shorten

_MARKS = re.compile(rb'"type"\s*:\s*"(bundle|indicator)"|"spec_version"|"indicator--')
_INFRA = {"command-and-control": "c2", "botnet": "botnet", "phishing": "phishing"}


def sniff(head: bytes) -> int:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return 85 if text[:1] in (b"{", b"[") and _MARKS.search(head) else 0


def load_json(data: bytes, ctx: ParseContext) -> Any:
    try:
        return json.loads(decode_text(data))
    except json.JSONDecodeError as exc:
        raise InputError(ctx.input, f"is not valid JSON ({exc})") from None


def _objects(doc: Any, ctx: ParseContext) -> list[Any]:
    if isinstance(doc, dict) and isinstance(doc.get("objects"), list):
        return doc["objects"]
    if isinstance(doc, dict) and "type" in doc:
        return [doc]
    if isinstance(doc, list):
        return doc
    raise InputError(ctx.input, "is JSON but not STIX: no bundle, objects list or STIX object")


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _related(objects: list[Any]) -> dict[str, tuple[str | None, str | None]]:
    """indicator id -> (category, family) from its ``indicates`` relationships."""
    by_id = {o.get("id"): o for o in objects if isinstance(o, dict)}
    out: dict[str, tuple[str | None, str | None]] = {}
    for rel in by_id.values():
        if rel.get("type") != "relationship" or rel.get("relationship_type") != "indicates":
            continue
        target = by_id.get(rel.get("target_ref"), {})
        category, family = out.get(rel.get("source_ref"), (None, None))
        if target.get("type") == "infrastructure":
            kinds = target.get("infrastructure_types") or []
            category = next((_INFRA[k] for k in kinds if k in _INFRA), category)
        elif target.get("type") == "malware":
            family = family or target.get("name")
            category = category or "malware"
        out[rel.get("source_ref")] = (category, family)
    return out


def _category(obj: dict[str, Any], related: tuple[str | None, str | None]) -> str | None:
    types = obj.get("indicator_types") or obj.get("labels") or []
    own = next((c for t in types if (c := category_from_text(str(t)))), None)
    if own == "benign":
        return own
    if own not in (None, "malicious", "suspicious"):
        return own
    # "malicious-activity" and "anomalous-activity" say little: a relationship or the
    # indicator's name may say more.
    named = category_from_text(obj.get("name"))
    better = [
        c for c in (related[0], named) if c not in (None, "benign", "malicious", "suspicious")
    ]
    return min(better, key=CATEGORIES.index) if better else own or named


def parse(data: bytes, ctx: ParseContext) -> Entries:
    objects = _objects(load_json(data, ctx), ctx)
    related = _related(objects)
    out = Gathered("object")
    for number, obj in enumerate(objects, 1):
        if not isinstance(obj, dict):
            ctx.skip(f"object {number}", "not a JSON object", shorten(obj))
            continue
        if obj.get("type") != "indicator":
            ctx.ignore(f"STIX {obj.get('type', 'untyped')} objects")
            continue
        pattern_type = obj.get("pattern_type", "stix")
        until = _time(obj.get("valid_until"))
        if obj.get("revoked") is True:
            ctx.ignore("revoked indicators")
            continue
        if pattern_type != "stix":
            ctx.ignore(f"{pattern_type} patterns")
            continue
        if until is not None and until.tzinfo is not None and until < ctx.now:
            ctx.ignore("expired indicators (valid_until passed)")
            continue
        pattern = obj.get("pattern")
        if not isinstance(pattern, str):
            ctx.skip(f"object {number}", "indicator without a pattern", str(obj.get("id", "")))
            continue
        try:
            mapped = map_pattern(pattern)
        except PatternError as exc:
            ctx.skip(f"object {number}", "unreadable STIX pattern", f"{exc}: {shorten(pattern)}")
            continue
        if mapped.unsupported:
            ctx.ignore(f"unsupported patterns ({mapped.unsupported})")
            continue
        for reason in mapped.skipped:
            ctx.ignore(f"pattern comparisons left out ({reason})")
        rel = related.get(obj.get("id", ""), (None, None))
        category = _category(obj, rel)
        if category == "benign":
            ctx.ignore("benign indicators", len(mapped.values))
            continue
        row = {
            "category": category,
            "family": rel[1],
            "first_seen": obj.get("valid_from"),
            "last_seen": obj.get("modified") or obj.get("created"),
            "confidence": obj.get("confidence"),
        }
        for value, kind in zip(mapped.values, mapped.declared, strict=True):
            out.add(value, kind, number, row)
    return out.entries()
