"""NetFlow v9 / IPFIX templates: parsing template sets, compiling, reading records.

A template is compiled once per distinct definition (cached) into a
:class:`Template` holding the fields the decoders map (see :mod:`.fields`) and a
numpy structured dtype. For a fixed-length template that dtype overlays whole
records, so every record of the template in a batch is read by one
``np.frombuffer``. A template with variable-length fields (length 65535) cannot be
overlaid: its records are walked in Python and the mapped fixed-size fields are
copied into a packed *projection*, which the template's dtype then reads the same
way. Options records (few, rich in strings) are decoded one by one into dicts.

Templates live in ``ExporterState.templates`` as JSON (:func:`to_json`), so they
survive a restart.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from flowhawk.collect.decode.fields import F64, IP4, IP6, MAC, STR, V9_SCOPE, VARLEN, U, lookup

Field = tuple[int, int, int]  # (element or v9 type, pen, length)

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_HHH = struct.Struct("!HHH")
_I = struct.Struct("!I")

BAD_TEMPLATE = "bad template"
TRUNCATED_RECORD = "truncated record"


@dataclass(frozen=True, eq=False)
class Column:
    """One mapped field: raw column ``name`` of ``kind`` read from field ``index``."""

    name: str
    kind: str
    index: int
    length: int
    offset: int  # within the dtype's item (record, or projection for varlen templates)


@dataclass(frozen=True, eq=False)
class Template:
    """A compiled template definition (shared by every template id defining it)."""

    fields: tuple[Field, ...]
    scope: int  # leading scope fields (options templates)
    options: bool
    minlen: int  # record length; for varlen templates each varlen field counts 1
    varlen: bool
    columns: tuple[Column, ...]  # mapped fields, first occurrence of each name
    numeric: tuple[Column, ...]  # the columns the dtype reads (not strings)
    dtype: np.dtype
    wanted: tuple[bool, ...]  # per field: copied into the projection (varlen only)
    flow: bool  # has an address: its records are flows (else e.g. MPLS-only or statistics)


@lru_cache(maxsize=2048)
def compile_template(fields: tuple[Field, ...], scope: int, options: bool) -> Template:
    """Compile a definition; the same definition always gives the same object."""
    varlen = any(length == VARLEN for _, _, length in fields)
    columns: list[Column] = []
    seen: set[str] = set()
    offset = 0  # offset in the record (fixed) or projection (varlen)
    wanted = []
    for i, (element, pen, length) in enumerate(fields):
        mapped = lookup(pen, element, length)
        take = False
        if mapped is not None and mapped[0] not in seen:
            name, kind = mapped
            seen.add(name)
            take = kind != STR and length != VARLEN
            if varlen:
                columns.append(Column(name, kind, i, length, offset if take else -1))
            else:
                columns.append(Column(name, kind, i, length, offset))
        wanted.append(take)
        if not varlen or take:
            offset += length
    minlen = sum(1 if length == VARLEN else length for _, _, length in fields)
    numeric = tuple(c for c in columns if c.kind != STR and c.length != VARLEN)
    itemsize = offset if varlen else minlen
    flow = not options and bool(seen & {"src4", "dst4", "src6", "dst6"})
    return Template(
        fields,
        scope,
        options,
        minlen,
        varlen,
        tuple(columns),
        numeric,
        _dtype(numeric, itemsize),
        tuple(wanted),
        flow,
    )


def _dtype(columns: tuple[Column, ...], itemsize: int) -> np.dtype:
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []

    def add(name: str, fmt: Any, off: int) -> None:
        names.append(name)
        formats.append(fmt)
        offsets.append(off)

    for c in columns:
        if c.kind == IP6:
            add(c.name + "_hi", ">u8", c.offset)
            add(c.name + "_lo", ">u8", c.offset + 8)
        elif c.kind == F64:
            add(c.name, ">f8", c.offset)
        elif c.kind == U and c.length in (1, 2, 4, 8):
            add(c.name, f">u{c.length}", c.offset)
        elif c.kind == IP4:
            add(c.name, ">u4", c.offset)
        else:  # MAC, or an unsigned integer in reduced-size encoding (3, 5, 6, 7 bytes)
            add(c.name, ("u1", (c.length,)), c.offset)
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": max(itemsize, 1)}
    )


def to_json(tpl: Template) -> dict[str, Any]:
    return {"fields": [list(f) for f in tpl.fields], "scope": tpl.scope, "options": tpl.options}


def from_json(data: Any) -> Template | None:
    """The template a JSON description stands for, or None if it is not a valid one."""
    try:
        fields = tuple((int(e), int(p), int(n)) for e, p, n in data["fields"])
        tpl = compile_template(fields, int(data.get("scope", 0)), bool(data.get("options")))
    except (KeyError, TypeError, ValueError):
        return None
    return tpl if fields and tpl.minlen > 0 else None


# -- template sets ----------------------------------------------------------------
# Each parser returns operations: ("define", id, fields, scope), ("withdraw", id) or
# ("withdraw_all", set_id), plus an error reason when part of the set was unusable.

Op = tuple[Any, ...]


def _usable(fields: tuple[Field, ...]) -> bool:
    # A template whose records have no bytes would make every data set an endless loop.
    return sum(1 if n == VARLEN else n for _, _, n in fields) > 0


def parse_v9_templates(buf: bytes, pos: int, end: int) -> tuple[list[Op], str | None]:
    """NetFlow v9 template FlowSet (id 0): template id, field count, (type, length)*."""
    ops: list[Op] = []
    while end - pos >= 4:
        tid, count = _HH.unpack_from(buf, pos)
        if tid == 0 and count == 0:  # zero padding
            break
        pos += 4
        if tid < 256 or count == 0 or pos + 4 * count > end:
            return ops, BAD_TEMPLATE
        fields = tuple((e, 0, n) for e, n in struct.iter_unpack("!HH", buf[pos : pos + 4 * count]))
        pos += 4 * count
        if not _usable(fields):
            return ops, BAD_TEMPLATE
        ops.append(("define", tid, fields, 0))
    return ops, None


def parse_v9_options(buf: bytes, pos: int, end: int) -> tuple[list[Op], str | None]:
    """NetFlow v9 options template FlowSet (id 1): scope and option lengths in bytes."""
    ops: list[Op] = []
    while end - pos >= 6:
        tid, slen, olen = _HHH.unpack_from(buf, pos)
        if tid == 0:  # zero padding
            break
        pos += 6
        if tid < 256 or slen % 4 or olen % 4 or pos + slen + olen > end or slen + olen == 0:
            return ops, BAD_TEMPLATE
        raw = list(struct.iter_unpack("!HH", buf[pos : pos + slen + olen]))
        nscope = slen // 4
        fields = tuple((e, V9_SCOPE if i < nscope else 0, n) for i, (e, n) in enumerate(raw))
        pos += slen + olen
        if not _usable(fields):
            return ops, BAD_TEMPLATE
        ops.append(("define", tid, fields, nscope))
    return ops, None


def parse_ipfix_templates(
    buf: bytes, pos: int, end: int, options: bool
) -> tuple[list[Op], str | None]:
    """IPFIX (options) template set (id 2 / 3), with withdrawals (field count 0)."""
    ops: list[Op] = []
    set_id = 3 if options else 2
    while end - pos >= 4:
        tid, count = _HH.unpack_from(buf, pos)
        if tid == 0 and count == 0:  # padding
            break
        pos += 4
        if count == 0:
            if tid == set_id:
                ops.append(("withdraw_all", set_id))
            elif tid >= 256:
                ops.append(("withdraw", tid))
            else:
                return ops, BAD_TEMPLATE
            continue
        scope = 0
        if options:
            if end - pos < 2:
                return ops, BAD_TEMPLATE
            (scope,) = _H.unpack_from(buf, pos)
            pos += 2
            if scope == 0 or scope > count:
                return ops, BAD_TEMPLATE
        if tid < 256:
            return ops, BAD_TEMPLATE
        fields = []
        for _ in range(count):
            if end - pos < 4:
                return ops, BAD_TEMPLATE
            element, length = _HH.unpack_from(buf, pos)
            pos += 4
            pen = 0
            if element & 0x8000:  # enterprise-specific: a 4-byte PEN follows
                if end - pos < 4:
                    return ops, BAD_TEMPLATE
                (pen,) = _I.unpack_from(buf, pos)
                pos += 4
                element &= 0x7FFF
            fields.append((element, pen, length))
        if not _usable(tuple(fields)):
            return ops, BAD_TEMPLATE
        ops.append(("define", tid, tuple(fields), scope))
    return ops, None


# -- records ----------------------------------------------------------------------


def fixed_count(tpl: Template, length: int) -> tuple[int, str | None]:
    """Records in a data set body of ``length`` bytes, and an error if the rest is not padding.

    RFC 3954 / 7011 padding is shorter than one record and, in practice, than 4 bytes;
    a longer tail means the set or the template is wrong.
    """
    n, rest = divmod(length, tpl.minlen)
    if rest >= 4:
        return n, TRUNCATED_RECORD if n == 0 else "trailing bytes in set"
    return n, None


def walk(
    tpl: Template, buf: bytes, pos: int, end: int
) -> tuple[list[tuple[int, list]], str | None]:
    """Every record of a set as (record offset, [(field offset, length), ...]).

    Variable-length fields carry a 1-byte length, or 255 and a 2-byte length.
    Stops at the first record that does not fit (the error names it).
    """
    records: list[tuple[int, list]] = []
    fields = tpl.fields
    while end - pos >= tpl.minlen:
        start = pos
        spans = []
        for _, _, length in fields:
            if length == VARLEN:
                if pos >= end:
                    return records, TRUNCATED_RECORD
                length = buf[pos]
                pos += 1
                if length == 255:
                    if end - pos < 2:
                        return records, TRUNCATED_RECORD
                    length = (buf[pos] << 8) | buf[pos + 1]
                    pos += 2
            if pos + length > end:
                return records, TRUNCATED_RECORD
            spans.append((pos, length))
            pos += length
        records.append((start, spans))
        if pos == start:  # cannot happen for a usable template; guards the loop
            break
    return records, None


def project(tpl: Template, buf: bytes, pos: int, end: int) -> tuple[bytes, list[int], str | None]:
    """Packed mapped fields of a varlen template's records, and the records' offsets."""
    records, error = walk(tpl, buf, pos, end)
    wanted = tpl.wanted
    parts = []
    for _, spans in records:
        for take, (off, length) in zip(wanted, spans, strict=True):
            if take:
                parts.append(buf[off : off + length])
    return b"".join(parts), [r[0] for r in records], error


def values(tpl: Template, data: bytes, n: int) -> dict[str, np.ndarray]:
    """Raw columns of ``n`` packed records (whole records, or projections if varlen)."""
    rec = np.frombuffer(data, dtype=tpl.dtype, count=n)
    out: dict[str, np.ndarray] = {}
    for c in tpl.numeric:
        if c.kind == IP6:
            out[c.name + "_hi"] = rec[c.name + "_hi"].astype(np.uint64)
            out[c.name + "_lo"] = rec[c.name + "_lo"].astype(np.uint64)
        elif c.kind == MAC:
            out[c.name] = np.ascontiguousarray(rec[c.name])
        elif c.kind == F64:
            out[c.name] = rec[c.name].astype(np.float64)
        elif c.kind == U and c.length not in (1, 2, 4, 8):
            raw = rec[c.name]
            v = np.zeros(n, dtype=np.uint64)
            for i in range(c.length):
                v = (v << np.uint64(8)) | raw[:, i].astype(np.uint64)
            out[c.name] = v
        else:
            out[c.name] = rec[c.name].astype(np.uint64)
    return out


def records_as_dicts(
    tpl: Template, buf: bytes, pos: int, end: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Options records one by one: raw column name -> int, float or str."""
    records, error = walk(tpl, buf, pos, end)
    out = []
    for _, spans in records:
        rec: dict[str, Any] = {}
        for c in tpl.columns:
            off, length = spans[c.index]
            raw = buf[off : off + length]
            if c.kind == STR:
                rec[c.name] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif c.kind == F64:
                rec[c.name] = struct.unpack("!d", raw)[0] if length == 8 else 0.0
            elif c.kind in (U, IP4) and length <= 8:
                rec[c.name] = int.from_bytes(raw, "big")
        out.append(rec)
    return out, error
