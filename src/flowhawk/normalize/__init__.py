"""Normalization: raw records from any source -> canonical, oriented, enriched flows.

Per batch: addresses are validated and spelled canonically (bad ones counted and
dropped), bidirectional records are oriented and enriched at once; unidirectional
records are held until their input ends, then stitched into biflows
(:mod:`.stitch`), oriented (:mod:`.orient`) and enriched (:mod:`.context`).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from flowhawk import netaddr
from flowhawk.config import Config
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize.context import NetworkContext, add_context
from flowhawk.normalize.orient import orient_by_port
from flowhawk.normalize.stitch import stitch
from flowhawk.schema import FLOW_SCHEMA, RAW_FLOW_SCHEMA, conform

LINEAGE_SCHEMA = {"input": pl.String, "flow_id": pl.String, "biflow_id": pl.String}


class Normalizer:
    """Turns raw flow tables into canonical ones, input by input."""

    def __init__(self, cfg: Config, diagnostics: Diagnostics):
        self.net = NetworkContext.from_config(cfg)
        self.stitch_gap = cfg.normalize.stitch_gap
        self.diagnostics = diagnostics
        self._held: dict[str, list[pl.DataFrame]] = {}

    def process(self, table: pa.Table) -> pa.Table:
        """Canonical flows for the bidirectional records of ``table``; holds the others."""
        df = pl.from_arrow(conform(table, RAW_FLOW_SCHEMA))
        assert isinstance(df, pl.DataFrame)
        df = self._valid(df)
        uni = df.filter(pl.col("uni"))
        if uni.height:
            for (name,), part in uni.partition_by("input", as_dict=True).items():
                self._held.setdefault(str(name), []).append(part)
        return self._finish(df.filter(~pl.col("uni")))

    def end_input(self, input_name: str) -> tuple[pa.Table, pl.DataFrame]:
        """Stitch what was held for ``input_name``: (canonical flows, lineage)."""
        parts = self._held.pop(input_name, [])
        if not parts:
            return FLOW_SCHEMA.empty_table(), pl.DataFrame(schema=LINEAGE_SCHEMA)
        biflows, lineage = stitch(pl.concat(parts), self.stitch_gap)
        st = self.diagnostics.stats(input_name)
        st.flows += biflows.height
        return self._finish(biflows, count=False), lineage

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
