"""The event store: an embedded DuckDB file (``<data>/events.duckdb``) that lasts across runs.

Tables ``events`` (one row per event, alarms as JSON, workflow status and verdict)
and ``alarms`` (one row per alarm, for mining). Writing an event again (same id:
same communication and window) replaces its content but keeps the analyst's
status, verdict and comment.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from flowhawk.sinks.base import Sink

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS events (
    id VARCHAR PRIMARY KEY,
    ts_start TIMESTAMPTZ, ts_end TIMESTAMPTZ, window_start TIMESTAMPTZ,
    site VARCHAR, src_ip VARCHAR, dst_ip VARCHAR, src_port INTEGER, dst_port INTEGER,
    proto SMALLINT, direction VARCHAR, risk DOUBLE, score DOUBLE, methods VARCHAR[],
    reason VARCHAR, alarms JSON, flows BIGINT, src_pkts BIGINT, src_bytes BIGINT,
    dst_pkts BIGINT, dst_bytes BIGINT, service VARCHAR, src_groups VARCHAR[],
    dst_groups VARCHAR[], guarded BOOLEAN,
    status VARCHAR DEFAULT 'new', verdict VARCHAR, comment VARCHAR
);
ALTER TABLE events ADD COLUMN IF NOT EXISTS src_names VARCHAR[];
ALTER TABLE events ADD COLUMN IF NOT EXISTS dst_names VARCHAR[];
ALTER TABLE events ADD COLUMN IF NOT EXISTS src_geo JSON;
ALTER TABLE events ADD COLUMN IF NOT EXISTS dst_geo JSON;
ALTER TABLE events ADD COLUMN IF NOT EXISTS hops JSON;
ALTER TABLE events ADD COLUMN IF NOT EXISTS relays JSON;
CREATE TABLE IF NOT EXISTS alarms (
    event_id VARCHAR, method VARCHAR, name VARCHAR, ts TIMESTAMPTZ, ts_end TIMESTAMPTZ,
    site VARCHAR, src_ip VARCHAR, dst_ip VARCHAR, dst_port INTEGER, proto SMALLINT,
    direction VARCHAR, score DOUBLE, contribution DOUBLE, entity VARCHAR,
    observed VARCHAR, expected VARCHAR, observed_value DOUBLE, expected_value DOUBLE,
    threshold DOUBLE, reason VARCHAR
);
"""

_EVENT_COLS = [
    "id",
    "ts_start",
    "ts_end",
    "window_start",
    "site",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "proto",
    "direction",
    "risk",
    "score",
    "methods",
    "reason",
    "alarms",
    "flows",
    "src_pkts",
    "src_bytes",
    "dst_pkts",
    "dst_bytes",
    "service",
    "src_groups",
    "dst_groups",
    "guarded",
    "src_names",
    "dst_names",
    "src_geo",
    "dst_geo",
    "hops",
    "relays",
]
#: Event columns stored as JSON documents.
_JSON_COLS = {"alarms", "src_geo", "dst_geo", "hops", "relays"}
_ALARM_COLS = [
    "event_id",
    "method",
    "name",
    "ts",
    "ts_end",
    "site",
    "src_ip",
    "dst_ip",
    "dst_port",
    "proto",
    "direction",
    "score",
    "contribution",
    "entity",
    "observed",
    "expected",
    "observed_value",
    "expected_value",
    "threshold",
    "reason",
]


def store_path(data_dir: Path) -> Path:
    return data_dir / "events.duckdb"


def connect(data_dir: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the store, created with its tables if new."""
    path = store_path(data_dir)
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(SCHEMA_SQL)
    return con


class EventStore(Sink):
    name = "duckdb"
    description = "the lasting event store (DuckDB) in the data directory"

    def start(self) -> None:
        self.con = connect(self.paths.data)

    def write(self, events: pl.DataFrame, alarms: pl.DataFrame) -> None:
        if events.height == 0:
            return
        self.con.register("ev", events.select([c for c in _EVENT_COLS if c in events.columns]))
        self.con.register("al", alarms.select(_ALARM_COLS))
        cols = ", ".join(c for c in _EVENT_COLS if c in events.columns)
        select = ", ".join(
            f"to_json({c})" if c in _JSON_COLS else c for c in _EVENT_COLS if c in events.columns
        )
        self.con.execute("BEGIN")
        self.con.execute(
            "CREATE TEMP TABLE keep AS SELECT id, status, verdict, comment FROM events "
            "WHERE id IN (SELECT id FROM ev)"
        )
        self.con.execute("DELETE FROM events WHERE id IN (SELECT id FROM ev)")
        self.con.execute("DELETE FROM alarms WHERE event_id IN (SELECT id FROM ev)")
        self.con.execute(f"INSERT INTO events ({cols}) SELECT {select} FROM ev")
        self.con.execute(
            "UPDATE events SET status = keep.status, verdict = keep.verdict, "
            "comment = keep.comment FROM keep WHERE events.id = keep.id"
        )
        self.con.execute("DROP TABLE keep")
        self.con.execute(f"INSERT INTO alarms ({', '.join(_ALARM_COLS)}) SELECT * FROM al")
        self.con.execute("COMMIT")
        self.con.unregister("ev")
        self.con.unregister("al")

    def stop(self) -> None:
        self.con.close()


def load_alarms_and_events(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All stored alarms and events (the columns host ranking needs)."""
    if not store_path(data_dir).exists():
        return pl.DataFrame(), pl.DataFrame()
    con = connect(data_dir, read_only=True)
    try:
        alarms = con.sql(
            "SELECT event_id, ts, method, entity, src_ip, dst_ip, contribution FROM alarms"
        ).pl()
        events = con.sql("SELECT id, risk, site FROM events").pl()
    finally:
        con.close()
    return alarms, events
