"""SQL access to a data directory: one DuckDB connection with views over everything.

Views: ``flows`` (the Parquet archive, with its ``date``/``hour`` partition columns),
``events`` and ``alarms`` (the event store, read-only), and ``hosts`` and
``flow_scores`` (the reports of the latest run, when they are in the directory).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from flowhawk.errors import FlowhawkError
from flowhawk.sinks.store import store_path


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def open_views(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the views of ``data_dir`` defined."""
    if not data_dir.is_dir():
        raise FlowhawkError(f"data directory {data_dir} does not exist")
    con = duckdb.connect()
    flows = data_dir / "flows"
    if any(flows.glob("date=*/hour=*/*.parquet")):
        con.execute(
            "CREATE VIEW flows AS SELECT * FROM read_parquet("
            f"{_quote(flows / '**' / '*.parquet')}, hive_partitioning = true)"
        )
    store = store_path(data_dir)
    if store.exists():
        con.execute(f"ATTACH {_quote(store)} AS store (READ_ONLY)")
        con.execute("CREATE VIEW events AS SELECT * FROM store.events")
        con.execute("CREATE VIEW alarms AS SELECT * FROM store.alarms")
    for name in ("hosts", "flow_scores"):
        path = data_dir / f"{name}.csv"
        if path.exists():
            con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM read_csv({_quote(path)}, header = true)"
            )
    return con
