"""Reading whole DNS inputs into one frame, for the tests."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import DNS_SCHEMA, read_dns


def read_all(path: Path, diag: Diagnostics | None = None, **kwargs) -> pl.DataFrame:
    """Every transaction of ``path`` in one frame (checked against DNS_SCHEMA)."""
    diag = diag if diag is not None else Diagnostics()
    tables = list(read_dns(path, diag, **kwargs))
    for table in tables:
        assert table.schema == DNS_SCHEMA
    if not tables:
        return pl.from_arrow(DNS_SCHEMA.empty_table())  # type: ignore[return-value]
    return pl.concat([pl.from_arrow(t) for t in tables])  # type: ignore[misc]
