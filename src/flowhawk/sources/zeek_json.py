"""Zeek conn.log as JSON lines (``zeek-json``): one JSON object per line.

Accepts Zeek's flat keys (``"id.orig_h"``) and the nested form some shippers write
(``"id": {"orig_h": ...}``), timestamps as epoch seconds or ISO 8601 text
(``JSON::TS_ISO8601``). Keys Zeek leaves out because they are unset (``duration``,
``service``...) are missing values. Lines that are not JSON are reported with their
line number and the rest of the file is read; lines whose ``_path`` is not ``conn``
(several logs streamed into one file) are counted as ignored. The conversion to
flows is shared with the TSV reader (:mod:`flowhawk.sources.zeek_conn`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from flowhawk import schema as schema_mod
from flowhawk.errors import InputError
from flowhawk.sources import flowtext, jsonlines, rawflows, zeek_conn
from flowhawk.sources.base import ReadContext, read_head

_ID_FIELDS = ("orig_h", "orig_p", "resp_h", "resp_p")


def _is_conn_object(obj: dict) -> bool:
    ids = obj.get("id")
    has_ids = "id.orig_h" in obj or (isinstance(ids, dict) and "orig_h" in ids)
    return has_ids and "ts" in obj and any(k in obj for k in zeek_conn.CONN_ONLY_FIELDS)


def _schema(first: dict) -> pa.Schema:
    """The explicit parse schema, following the layout of the file's first record."""
    types = {k: (pa.string() if k == "proto" else t) for k, t in zeek_conn.FIELD_TYPES.items()}
    if isinstance(first.get("ts"), str):
        types["ts"] = pa.string()
    fields = [pa.field(k, t) for k, t in types.items()]
    if isinstance(first.get("id"), dict):
        fields = [f for f in fields if not f.name.startswith("id.")]
        fields.append(pa.field("id", pa.struct([(k, types[f"id.{k}"]) for k in _ID_FIELDS])))
    fields.append(pa.field("_path", pa.string()))
    return pa.schema(fields)


def _not_conn(obj: object) -> str | None:
    if isinstance(obj, dict) and obj.get("_path") not in (None, "conn"):
        return f"Zeek {obj.get('_path')} records"
    return None


class ZeekJsonSource:
    """Zeek conn.log written as JSON lines."""

    name: ClassVar[str] = "zeek-json"
    description: ClassVar[str] = "Zeek conn.log as JSON lines"

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        obj = jsonlines.first_object(head)
        if obj is None or obj.get("_path") not in (None, "conn"):
            return 0
        return 90 if _is_conn_object(obj) else 0

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        input_name = str(path)
        diag = ctx.diagnostics
        head = read_head(path)
        if not head.strip():
            raise InputError(input_name, "is empty: no Zeek JSON records")
        first = jsonlines.first_object(head)
        if first is None or not _is_conn_object(first):
            raise InputError(
                input_name,
                "is not a Zeek conn log in JSON: its first line is not a JSON object with"
                " ts, id.orig_h and conn fields",
            )
        schema = _schema(first)
        records = 0

        def tables() -> Iterator[pa.Table]:
            nonlocal records
            with flowtext.open_input(path, input_name) as fh:
                for chunk in flowtext.iter_chunks(fh, input_name, diag):
                    block = jsonlines.read_json_block(
                        chunk.data, chunk.first_line, records, schema, input_name, diag, _not_conn
                    )
                    records += block.n_records
                    yield self._convert(block, input_name, ctx)

        yield from rawflows.rebatch(tables(), ctx.batch_rows)

    @staticmethod
    def _convert(block: jsonlines.JsonBlock, input_name: str, ctx: ReadContext) -> pa.Table:
        table, lines, records = block.table, block.lines, block.records
        if table.num_rows == 0:
            return schema_mod.empty_raw()
        other = pc.fill_null(pc.not_equal(table["_path"], "conn"), False)
        if pc.any(other).as_py():
            for item in pc.value_counts(table["_path"].filter(other)).to_pylist():
                ctx.diagnostics.ignore(input_name, f"Zeek {item['values']} records", item["counts"])
            keep = pc.invert(other)
            mask = keep.to_numpy(zero_copy_only=False)
            table, lines, records = table.filter(keep), lines[mask], records[mask]
        if "id" in table.column_names:
            ids = table["id"]
            for key in _ID_FIELDS:
                table = table.append_column(f"id.{key}", pc.struct_field(ids, key))
        return zeek_conn.to_raw(table, lines, records, input_name, ctx.diagnostics)
