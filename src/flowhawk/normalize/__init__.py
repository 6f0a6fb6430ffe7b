"""Normalization: raw records from any source -> canonical, oriented, enriched flows.

Per batch: addresses are validated and spelled canonically (bad ones counted and
dropped), bidirectional records are oriented and enriched at once; unidirectional
records are held until their input ends, then stitched into biflows
(:mod:`.stitch`), oriented (:mod:`.orient`) and enriched (:mod:`.context`).

The export decoders hand over numeric columns instead of tables
(:class:`~.rawcolumns.RawColumns`: addresses as numbers, no text): those take the same
steps on numbers (:mod:`.stitchcols`, :mod:`.columnar`, compiled on first use) and
become text only in the canonical flows returned, with the same rows and values a raw
flow table of them gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk import netaddr
from flowhawk.config import Config
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize.context import NetworkContext, add_context
from flowhawk.normalize.orient import orient_by_port
from flowhawk.normalize.rawcolumns import RawColumns, flow_ids
from flowhawk.normalize.stitch import stitch
from flowhawk.schema import CANONICAL_ADDRESSES, FLOW_SCHEMA, RAW_FLOW_SCHEMA, conform

LINEAGE_SCHEMA = {"input": pl.String, "flow_id": pl.String, "biflow_id": pl.String}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Normalizer:
    """Turns raw flow tables into canonical ones, input by input."""

    def __init__(self, cfg: Config, diagnostics: Diagnostics):
        self.net = NetworkContext.from_config(cfg)
        self.stitch_gap = cfg.normalize.stitch_gap
        self.diagnostics = diagnostics
        self._held: dict[str, list[pl.DataFrame]] = {}
        self._held_cols: dict[str, list[RawColumns]] = {}  # numeric records, per input
        self._columnar = None  # the numeric path's compiled context, on first use

    def process(self, table: pa.Table | RawColumns) -> pa.Table:
        """Canonical flows for the bidirectional records of ``table``; holds the others.

        A table whose schema metadata has ``flowhawk.canonical_addresses`` (decoders
        and the pcap meter that format numeric addresses themselves) skips the
        address validation, which would only spell them again.
        """
        if isinstance(table, RawColumns):
            return self._process_columns(table)
        df = pl.from_arrow(conform(table, RAW_FLOW_SCHEMA))
        assert isinstance(df, pl.DataFrame)
        meta = table.schema.metadata or {}
        df = df if meta.get(CANONICAL_ADDRESSES) == b"1" else self._valid(df)
        df = self._clamp_end(df)
        uni = df.filter(pl.col("uni"))
        if uni.height:
            for (name,), part in uni.partition_by("input", as_dict=True).items():
                self._held.setdefault(str(name), []).append(part)
        return self._finish(df.filter(~pl.col("uni")))

    def end_input(self, input_name: str, lineage: bool = True) -> tuple[pa.Table, pl.DataFrame]:
        """Stitch what was held for ``input_name``: (canonical flows, lineage); the
        lineage is empty unless asked for."""
        if input_name in self._held_cols:
            return self._end_columns(input_name, lineage)
        parts = self._held.pop(input_name, [])
        if not parts:
            return FLOW_SCHEMA.empty_table(), pl.DataFrame(schema=LINEAGE_SCHEMA)
        return self._stitched(input_name, pl.concat(parts), lineage)

    def release(self, watermark: datetime | None = None) -> pa.Table:
        """Stitch and return held records that ended ``stitch_gap`` before the watermark.

        For live inputs that never end. The watermark is ``watermark`` or, per input,
        the end of its newest held record (each exporter's own clock). Records that
        could still meet their reverse direction stay held. A long conversation whose
        records straddle a release is archived as consecutive flows, as an active
        timeout would.
        """
        gap = timedelta(seconds=self.stitch_gap)
        out = []
        for name in list(self._held):
            held = pl.concat(self._held.pop(name))
            limit = (watermark or held.get_column("ts_end").max()) - gap
            ready = held.filter(pl.col("ts_end") < limit)
            rest = held.filter(pl.col("ts_end") >= limit)
            if rest.height:
                self._held[name] = [rest]
            if ready.height:
                out.append(self._stitched(name, ready, lineage=False)[0])
        gap_us = gap // timedelta(microseconds=1)
        mark = None
        if watermark is not None:
            aware = watermark if watermark.tzinfo else watermark.replace(tzinfo=UTC)
            mark = (aware - _EPOCH) // timedelta(microseconds=1)
        for name in list(self._held_cols):
            rc = RawColumns.concat(self._held_cols.pop(name))
            end = rc.cols["ts_end"]
            limit = (int(end.max()) if mark is None else mark) - gap_us
            ready = end < limit
            if not ready.all():
                self._held_cols[name] = [rc.take(~ready)]
            if ready.any():
                out.append(self._stitched_columns(rc.take(ready) if not ready.all() else rc)[0])
        return pa.concat_tables(out) if out else FLOW_SCHEMA.empty_table()

    def held_inputs(self) -> list[str]:
        """Inputs with unidirectional records waiting for stitching."""
        return list(self._held) + list(self._held_cols)

    def held(self) -> int:
        """Unidirectional records waiting for stitching."""
        return sum(p.height for parts in self._held.values() for p in parts) + sum(
            len(p) for parts in self._held_cols.values() for p in parts
        )

    # -- numeric columns (the export decoders') ------------------------------------------

    def _process_columns(self, rc: RawColumns) -> pa.Table:
        n = len(rc)
        if n == 0:
            return FLOW_SCHEMA.empty_table()
        start, end = rc.cols["ts_start"], rc.cols["ts_end"]
        backwards = int((end < start).sum())
        if backwards:
            self.diagnostics.ignore(rc.input, "end before start (end set to start)", backwards)
            rc = RawColumns(rc.input, rc.exporter, {**rc.cols, "ts_end": np.maximum(start, end)})
        uni = rc.cols["uni"]
        n_uni = int(uni.sum())
        if n_uni:
            self._held_cols.setdefault(rc.input, []).append(rc if n_uni == n else rc.take(uni))
        if n_uni == n:
            return FLOW_SCHEMA.empty_table()
        bi = rc if not n_uni else rc.take(~uni)
        self.diagnostics.stats(rc.input).flows += len(bi)
        return self._context().table(bi)

    def _context(self):  # type: ignore[no-untyped-def]
        if self._columnar is None:
            from flowhawk.normalize.columnar import ColumnarContext

            self._columnar = ColumnarContext(self.net)
        return self._columnar

    def _stitched_columns(self, records: RawColumns) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        from flowhawk.normalize.stitchcols import stitch_columns

        biflows, record_session, first = stitch_columns(records, self.stitch_gap)
        self.diagnostics.stats(records.input).flows += len(biflows)
        return self._context().table(biflows), record_session, first

    def _end_columns(self, input_name: str, lineage: bool) -> tuple[pa.Table, pl.DataFrame]:
        rc = RawColumns.concat(self._held_cols.pop(input_name))
        table, record_session, first = self._stitched_columns(rc)
        if not lineage:
            return table, pl.DataFrame(schema=LINEAGE_SCHEMA)
        c = rc.cols
        ids = flow_ids(c["fid_domain"], c["fid_seq"], c["fid_off"])
        rows = first[record_session]
        lin = pl.DataFrame(
            {
                "input": pl.repeat(input_name, len(rc), dtype=pl.String, eager=True),
                "flow_id": pl.from_arrow(ids),
                "biflow_id": pl.from_arrow(ids.take(pa.array(rows))),
            },
            schema=LINEAGE_SCHEMA,
        )
        return table, lin

    def _stitched(
        self, input_name: str, records: pl.DataFrame, lineage: bool = True
    ) -> tuple[pa.Table, pl.DataFrame]:
        biflows, lineage_df = stitch(records, self.stitch_gap, lineage)
        st = self.diagnostics.stats(input_name)
        st.flows += biflows.height
        return self._finish(biflows, count=False), lineage_df

    def _valid(self, df: pl.DataFrame) -> pl.DataFrame:
        df = df.with_columns(
            src_ip=netaddr.canonical(df.get_column("src_ip")),
            dst_ip=netaddr.canonical(df.get_column("dst_ip")),
        )
        bad = df.filter(pl.col("src_ip").is_null() | pl.col("dst_ip").is_null())
        if bad.height:
            for (name,), part in bad.partition_by("input", as_dict=True).items():
                self.diagnostics.skip(
                    str(name),
                    f"record {part.get_column('flow_id')[0]}",
                    "invalid address",
                    count=part.height,
                )
            df = df.filter(pl.col("src_ip").is_not_null() & pl.col("dst_ip").is_not_null())
        return df

    def _clamp_end(self, df: pl.DataFrame) -> pl.DataFrame:
        backwards = pl.col("ts_end") < pl.col("ts_start")
        n_back = df.select(backwards.sum()).item()
        if n_back:
            for (name,), part in df.filter(backwards).partition_by("input", as_dict=True).items():
                self.diagnostics.ignore(
                    str(name), "end before start (end set to start)", part.height
                )
            df = df.with_columns(ts_end=pl.max_horizontal("ts_start", "ts_end"))
        return df

    def _finish(self, df: pl.DataFrame, count: bool = True) -> pa.Table:
        if df.height == 0:
            return FLOW_SCHEMA.empty_table()
        if count:
            for name, n in df.group_by("input").len().iter_rows():
                self.diagnostics.stats(str(name)).flows += n
        df = add_context(orient_by_port(df), self.net)
        return conform(df.to_arrow(), FLOW_SCHEMA)
