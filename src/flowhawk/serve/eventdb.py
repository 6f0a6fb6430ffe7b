"""Reading and curating the event store for the API: filters, paging, verdicts, history.

Every query is parameterized (values are never pasted into SQL; sort columns come
from a fixed list), and every query takes the caller's site scope: ``sites=None``
means all sites, a list restricts to those sites (an empty list sees nothing). An
event of another site is reported as missing, never as forbidden, so ids guessed
from another site reveal nothing.

The analyst's workflow lives beside the detections: ``status`` (new, investigating,
closed), ``verdict`` (benign, malicious, needs_review) and ``comment`` on the event,
and every change in ``event_history`` (who, when, what). Detection rewriting a
growing event keeps them (:class:`flowhawk.sinks.store.EventStore`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl

from flowhawk.sinks.format import ISO
from flowhawk.sinks.store import connect

STATUSES = ("new", "investigating", "closed")
VERDICTS = ("benign", "malicious", "needs_review")
Status = Literal["new", "investigating", "closed"]
Verdict = Literal["benign", "malicious", "needs_review"]

HISTORY_SQL = """
CREATE TABLE IF NOT EXISTS event_history (
    event_id VARCHAR, ts TIMESTAMPTZ, user_name VARCHAR, field VARCHAR,
    old_value VARCHAR, new_value VARCHAR
);
"""

#: Columns of the event list (the detail adds alarms, context and history).
SUMMARY = [
    "id",
    "ts_start",
    "ts_end",
    "site",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "proto",
    "direction",
    "risk",
    "methods",
    "reason",
    "flows",
    "src_bytes",
    "dst_bytes",
    "service",
    "guarded",
    "src_names",
    "dst_names",
    "status",
    "verdict",
    "comment",
]
DETAIL = [*SUMMARY, "window_start", "score", "src_pkts", "dst_pkts", "src_groups", "dst_groups"]
JSON_DETAIL = ["src_geo", "dst_geo", "hops", "relays"]
SORTS = {"risk", "ts_start", "ts_end", "flows", "site", "src_ip", "dst_ip", "status"}
_ALARM_COLS = [
    "method",
    "name",
    "ts",
    "ts_end",
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


@dataclass
class EventFilter:
    """What an event query asks for; ``sites`` is already the caller's scope."""

    sites: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_risk: float | None = None
    max_risk: float | None = None
    methods: list[str] = field(default_factory=list)
    host: str | None = None
    status: list[str] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)
    direction: str | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause (``TRUE`` when open) and its parameters."""
        terms: list[str] = []
        params: list[Any] = []
        if self.sites is not None:
            terms.append("list_contains(?::VARCHAR[], site)")
            params.append(self.sites)
        if self.since is not None:
            terms.append("ts_end >= ?")
            params.append(self.since)
        if self.until is not None:
            terms.append("ts_start < ?")
            params.append(self.until)
        if self.min_risk is not None:
            terms.append("risk >= ?")
            params.append(self.min_risk)
        if self.max_risk is not None:
            terms.append("risk <= ?")
            params.append(self.max_risk)
        if self.methods:
            terms.append("len(list_intersect(methods, ?::VARCHAR[])) > 0")
            params.append(self.methods)
        if self.host:
            terms.append("(src_ip = ? OR dst_ip = ?)")
            params += [self.host, self.host]
        if self.status:
            terms.append("list_contains(?::VARCHAR[], status)")
            params.append(self.status)
        if self.verdict:
            terms.append("list_contains(?::VARCHAR[], verdict)")
            params.append(self.verdict)
        if self.direction:
            terms.append("direction = ?")
            params.append(self.direction)
        return (" AND ".join(terms) or "TRUE"), params

    def matches(self, doc: dict[str, Any]) -> bool:
        """The same test on one event document (the live stream)."""
        if self.sites is not None and doc.get("site") not in self.sites:
            return False
        risk = doc.get("risk") or 0.0
        if self.min_risk is not None and risk < self.min_risk:
            return False
        if self.max_risk is not None and risk > self.max_risk:
            return False
        if self.methods and not set(self.methods) & set(doc.get("methods") or ()):
            return False
        if self.host and self.host not in (doc.get("src_ip"), doc.get("dst_ip")):
            return False
        if self.status and doc.get("status", "new") not in self.status:
            return False
        if self.verdict and doc.get("verdict") not in self.verdict:
            return False
        return not (self.direction and doc.get("direction") != self.direction)


def frame(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> pl.DataFrame:
    """A parameterized query's result as a polars frame (through Arrow)."""
    df = pl.from_arrow(cur.sql(sql, params=params).to_arrow_table())
    assert isinstance(df, pl.DataFrame)
    return df


def _rows(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """The result as JSON-ready dicts (through Arrow; times as ISO 8601 UTC text)."""
    df = frame(cur, sql, params)
    return df.with_columns(
        pl.col(c).dt.convert_time_zone("UTC").dt.strftime(ISO)
        for c, t in df.schema.items()
        if isinstance(t, pl.Datetime)
    ).to_dicts()


class EventDB:
    """The event store as the service reads and curates it (thread-safe: a cursor a call)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._con = connect(data_dir)
        self._con.execute(HISTORY_SQL)
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._con.cursor()

    def close(self) -> None:
        self._con.close()

    # -- reading -----------------------------------------------------------------------

    def list(
        self, flt: EventFilter, sort: str = "-risk", limit: int = 50, offset: int = 0
    ) -> tuple[int, list[dict[str, Any]]]:
        """(matching events, one page of them) sorted by ``sort`` (``-`` for descending)."""
        desc = sort.startswith("-")
        col = sort.lstrip("-+")
        if col not in SORTS:
            raise ValueError(f"cannot sort by {col!r}; sortable: {', '.join(sorted(SORTS))}")
        where, params = flt.sql()
        cur = self.cursor()
        total = cur.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchall()[0]
        order = f"{col} {'DESC' if desc else 'ASC'} NULLS LAST, id"
        return int(total[0]) if total else 0, _rows(
            cur,
            f"SELECT {', '.join(SUMMARY)} FROM events WHERE {where} ORDER BY {order} "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )

    def get(self, event_id: str, sites: list[str] | None) -> dict[str, Any] | None:
        """One event with its alarms, context and history; None if missing or out of scope."""
        flt = EventFilter(sites=sites)
        where, params = flt.sql()
        cur = self.cursor()
        cols = ", ".join([*DETAIL, *JSON_DETAIL])
        rows = _rows(
            cur, f"SELECT {cols} FROM events WHERE id = ? AND {where}", [event_id, *params]
        )
        if not rows:
            return None
        event = rows[0]
        for col in JSON_DETAIL:
            if isinstance(event.get(col), str):
                event[col] = json.loads(event[col])
        event["alarms"] = _rows(
            cur,
            f"SELECT {', '.join(_ALARM_COLS)} FROM alarms WHERE event_id = ? "
            "ORDER BY contribution DESC, ts",
            [event_id],
        )
        event["history"] = self.history(event_id)
        return event

    def history(self, event_id: str) -> list[dict[str, Any]]:
        cur = self.cursor()
        return _rows(
            cur,
            "SELECT ts, user_name AS user, field, old_value, new_value FROM event_history "
            "WHERE event_id = ? ORDER BY ts",
            [event_id],
        )

    def workflow(self, ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """(status, verdict) of stored events by id."""
        if not ids:
            return {}
        cur = self.cursor()
        cur.execute(
            "SELECT id, status, verdict FROM events WHERE list_contains(?::VARCHAR[], id)", [ids]
        )
        return {r[0]: (r[1], r[2]) for r in cur.fetchall()}

    def stats(self, flt: EventFilter, bucket_seconds: int) -> dict[str, Any]:
        """Events over time by method and risk band (``series``: an event counts once per
        method), by risk band alone (``bands``: once per event), by direction; totals."""
        where, params = flt.sql()
        cur = self.cursor()
        series = _rows(
            cur,
            "SELECT time_bucket(to_seconds(?::BIGINT), ts_start) AS t, m AS method, "
            "CASE WHEN risk >= 80 THEN 'high' WHEN risk >= 50 THEN 'medium' ELSE 'low' END "
            "AS band, count(*) AS events FROM (SELECT *, unnest(methods) AS m FROM events "
            f"WHERE {where}) GROUP BY ALL ORDER BY t, method, band",
            [bucket_seconds, *params],
        )
        bands = _rows(
            cur,
            "SELECT time_bucket(to_seconds(?::BIGINT), ts_start) AS t, "
            "CASE WHEN risk >= 80 THEN 'high' WHEN risk >= 50 THEN 'medium' ELSE 'low' END "
            f"AS band, count(*) AS events FROM events WHERE {where} GROUP BY ALL "
            "ORDER BY t, band",
            [bucket_seconds, *params],
        )
        directions = _rows(
            cur,
            f"SELECT direction, count(*) AS events, max(risk) AS max_risk FROM events "
            f"WHERE {where} GROUP BY direction ORDER BY events DESC",
            params,
        )
        totals = _rows(
            cur,
            f"SELECT count(*) AS events, count(*) FILTER (WHERE risk >= 80) AS high, "
            f"count(*) FILTER (WHERE status = 'new') AS new FROM events WHERE {where}",
            params,
        )[0]
        return {"series": series, "bands": bands, "directions": directions, "totals": totals}

    # -- curating ----------------------------------------------------------------------

    def update(
        self,
        event_id: str,
        sites: list[str] | None,
        user: str,
        changes: dict[str, str | None],
    ) -> dict[str, Any] | None:
        """Set status/verdict/comment of one event in scope; records history."""
        done = self.update_many([event_id], sites, user, changes)
        return self.get(event_id, sites) if done else None

    def update_many(
        self, ids: list[str], sites: list[str] | None, user: str, changes: dict[str, str | None]
    ) -> int:
        """The same change on many events (those out of scope or missing are skipped)."""
        allowed = {"status", "verdict", "comment"}
        if not set(changes) <= allowed:
            raise ValueError(f"only {', '.join(sorted(allowed))} can change")
        if not changes:  # nothing to change: how many of them are in scope
            where, params = EventFilter(sites=sites).sql()
            sql = f"SELECT count(*) FROM events WHERE list_contains(?::VARCHAR[], id) AND {where}"
            return int(self.cursor().execute(sql, [ids, *params]).fetchall()[0][0])
        flt = EventFilter(sites=sites)
        where, params = flt.sql()
        cur = self.cursor()
        cur.execute("BEGIN")
        try:
            cur.execute(
                f"SELECT id, status, verdict, comment FROM events WHERE "
                f"list_contains(?::VARCHAR[], id) AND {where}",
                [ids, *params],
            )
            found = cur.fetchall()
            now = datetime.now(UTC)
            for eid, *old in found:
                before = dict(zip(("status", "verdict", "comment"), old, strict=True))
                for name, value in changes.items():
                    if before[name] != value:
                        cur.execute(
                            "INSERT INTO event_history VALUES (?, ?, ?, ?, ?, ?)",
                            [eid, now, user, name, before[name], value],
                        )
            if found:
                sets = ", ".join(f"{name} = ?" for name in changes)  # names from `allowed`
                cur.execute(
                    f"UPDATE events SET {sets} WHERE list_contains(?::VARCHAR[], id)",
                    [*changes.values(), [r[0] for r in found]],
                )
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        return len(found)

    def delete_older(self, cutoff: datetime) -> int:
        """Retention: drop events (alarms, history) whose window ended before ``cutoff``."""
        cur = self.cursor()
        cur.execute("BEGIN")
        ids = [
            r[0] for r in cur.execute("SELECT id FROM events WHERE ts_end < ?", [cutoff]).fetchall()
        ]
        if ids:
            for table, col in (
                ("alarms", "event_id"),
                ("event_history", "event_id"),
                ("events", "id"),
            ):
                cur.execute(f"DELETE FROM {table} WHERE list_contains(?::VARCHAR[], {col})", [ids])
        cur.execute("COMMIT")
        return len(ids)
