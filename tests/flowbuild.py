"""Building small flow tables by hand for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa

from flowhawk import config
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer
from flowhawk.schema import RAW_FLOW_SCHEMA, conform

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def raw(rows: list[dict[str, Any]]) -> pa.Table:
    """Raw flow table; each row needs at least src_ip, dst_ip, dst_port and t (seconds)."""
    full = []
    for i, r in enumerate(rows):
        r = dict(r)
        t = r.pop("t", 0.0)
        dur = r.pop("dur", 1.0)
        full.append(
            {
                "ts_start": at(t),
                "ts_end": at(t + dur),
                "src_port": 40000 + i,
                "proto": 6,
                "src_pkts": 3,
                "src_bytes": 300,
                "dst_pkts": 2,
                "dst_bytes": 200,
                "orient": "start",
                "uni": False,
                "sampling": 1,
                "input": "test",
                "flow_id": str(i),
                **r,
            }
        )
    return conform(pa.Table.from_pylist(full), RAW_FLOW_SCHEMA)


def canonical(rows: list[dict[str, Any]], cfg: config.Config | None = None) -> pl.DataFrame:
    """Canonical flows (normalized) from raw rows, sorted by ts_start."""
    norm = Normalizer(cfg or config.load(None), Diagnostics())
    df = pl.from_arrow(norm.process(raw(rows)))
    assert isinstance(df, pl.DataFrame)
    return df.sort("ts_start", maintain_order=True)
