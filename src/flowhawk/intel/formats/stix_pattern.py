"""The part of the STIX 2.1 patterning language that names network indicators.

A pattern is mapped when it is one or more observation expressions joined by
``OR``, each a set of comparisons that can be read as "this value is bad":

* ``[ipv4-addr:value = '1.2.3.4']``, ``[ipv6-addr:value = '...']`` (a value may be a
  network), ``[ipv4-addr:value ISSUBSET '10.0.0.0/8']``;
* ``[domain-name:value = 'evil.com']``, ``[url:value = 'http://...']``;
* ``[network-traffic:dst_ref.value = '1.2.3.4']`` (or ``src_ref``), alone or with
  ``AND`` on the same traffic's ports or protocols, which are dropped as ports are
  everywhere else;
* comparisons joined by ``OR`` inside one observation; those that are not of the
  kinds above (a file hash beside an address) are counted apart and the others kept.

Anything else cannot be matched against flows and is *unsupported* (counted as
ignored, not an error): ``AND`` across objects, ``FOLLOWEDBY``, qualifiers
(``WITHIN``, ``REPEATS``, ``START``/``STOP``), ``NOT``, ``LIKE``/``MATCHES``, file
hashes and other object types. A pattern that does not tokenize is *bad*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<path>[a-z0-9-]+:(?:[A-Za-z0-9_-]+|'[^']*'|\.|\[(?:\d+|\*)\])+)
  | (?P<punct>[\[\]()])
  | (?P<op>!=|<=|>=|=|<|>)
  | (?P<word>[A-Za-z0-9_:.+-]+(?:'[^']*')?)
    )""",
    re.VERBOSE,
)
#: Object paths that hold an indicator value, and the type the value must have
#: (None: read from the value, as a traffic reference may be an address or a name).
VALUE_PATHS: dict[str, str | None] = {
    "ipv4-addr:value": "cidr",
    "ipv6-addr:value": "cidr",
    "domain-name:value": "domain",
    "url:value": "url",
    "network-traffic:dst_ref.value": None,
    "network-traffic:src_ref.value": None,
}
_TRAFFIC_DETAILS = re.compile(r"^network-traffic:(dst_port|src_port|protocols\[(\d+|\*)\])$")


class PatternError(ValueError):
    """The pattern does not tokenize or its brackets do not balance."""


@dataclass
class Mapped:
    """What one pattern gives: values with the type each must have, or why none."""

    values: list[str] = field(default_factory=list)
    declared: list[str | None] = field(default_factory=list)
    unsupported: str | None = None  # why the whole pattern cannot be used
    skipped: list[str] = field(default_factory=list)  # reasons of comparisons left out


def _tokens(pattern: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = pattern.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise PatternError(f"cannot read the pattern at {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def _observations(tokens: list[tuple[str, str]]) -> tuple[list[list[tuple[str, str]]], str | None]:
    """The comparison tokens of each ``[...]``, or why the top level is unsupported."""
    groups: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] | None = None
    depth = 0
    parens = 0
    problem = None
    for kind, text in tokens:
        if current is not None:
            if kind == "punct" and text == "]" and depth == 0:
                groups.append(current)
                current = None
                continue
            if kind == "punct" and text in "([":
                depth += 1
            elif kind == "punct" and text in ")]":
                depth -= 1
            current.append((kind, text))
            continue
        if kind == "punct" and text == "[":
            current, depth = [], 0
        elif kind == "punct" and text in "()]":
            parens += {"(": 1, ")": -1, "]": -(1 << 30)}[text]
            if parens < 0:
                raise PatternError(f"unbalanced {text!r}")
        elif kind == "word" and text.upper() == "OR":
            continue
        elif problem is None:
            problem = f"patterns with {text.upper()}" if kind == "word" else "odd pattern syntax"
    if current is not None or depth != 0 or parens != 0:
        raise PatternError("unbalanced brackets")
    return groups, problem


def _comparisons(group: list[tuple[str, str]]) -> tuple[list[tuple[str, str, str]], set[str]]:
    """(path, operator, literal) triples of one observation and its joining words."""
    out: list[tuple[str, str, str]] = []
    joins: set[str] = set()
    i = 0
    while i < len(group):
        kind, text = group[i]
        if kind == "punct":
            i += 1
        elif kind == "word" and text.upper() in ("AND", "OR"):
            joins.add(text.upper())
            i += 1
        elif kind == "path":
            rest = group[i + 1 : i + 3]
            if len(rest) == 2 and rest[0][0] in ("op", "word") and rest[1][0] in ("string", "word"):
                out.append((text, rest[0][1].upper(), rest[1][1]))
                i += 3
            else:
                joins.add("?")
                i += 1
        else:
            joins.add(text.upper())
            i += 1
    return out, joins


def _reason(path: str) -> str:
    if path.startswith("file:"):
        return "file hash comparisons"
    return f"{path.split(':', 1)[0]} comparisons"


def map_pattern(pattern: str) -> Mapped:
    """The network indicators ``pattern`` names (see the module docstring)."""
    groups, problem = _observations(_tokens(pattern))
    if problem:
        return Mapped(unsupported=problem)
    result = Mapped()
    for group in groups:
        comps, joins = _comparisons(group)
        odd = joins - {"AND", "OR"}
        if odd or not comps:
            result.unsupported = (
                "comparisons with NOT" if "NOT" in odd else "comparisons of an unsupported form"
            )
            return result
        if "AND" in joins:
            address = [c for c in comps if c[0] in VALUE_PATHS]
            details = [c for c in comps if _TRAFFIC_DETAILS.match(c[0])]
            if (
                "OR" in joins
                or len(address) != 1
                or len(address) + len(details) != len(comps)
                or not address[0][0].startswith("network-traffic:")
            ):
                result.unsupported = "AND across objects or values"
                return result
            comps = address
        for path, op, literal in comps:
            usable = (
                path in VALUE_PATHS
                and literal.startswith("'")
                and (op == "=" or (op == "ISSUBSET" and path != "domain-name:value"))
            )
            if not usable:
                result.skipped.append(_reason(path) if path not in VALUE_PATHS else f"{op} tests")
                continue
            result.values.append(_unquote(literal))
            result.declared.append(VALUE_PATHS[path])
    if not result.values and result.skipped:
        result.unsupported = result.skipped[0]
        result.skipped = []
    return result
