"""The outbox: a persistent queue of event documents per output, in ``DATA/outbox.sqlite``.

Events are written here before any delivery is tried, so a receiver that is down, a
slow one or a restart of the service loses nothing that was enqueued. Each output has
its own rows (``output`` column); rows are taken oldest first and deleted only when
the output confirmed the batch (:meth:`Outbox.done`), which makes delivery at least
once: a batch interrupted by a crash is sent again after the restart, and receivers
deduplicate on the event ``id``.

The backlog of an output is bounded: :meth:`Outbox.put` deletes the oldest rows beyond
``max_backlog`` in the same transaction and returns how many it deleted, so the caller
counts them as dropped. A row a delivery thread has already taken may be deleted this
way while it is in flight; it is then delivered and also counted as dropped.

One :class:`Outbox` serves every thread of the process through one SQLite connection
guarded by a lock (every operation is a short transaction; no receiver is ever waited
for while the lock is held). The database is in WAL mode with ``synchronous=FULL``:
a :meth:`put` that returned is on disk. Ids come from ``AUTOINCREMENT`` and are never
reused, so an id a thread holds never names another row later. Backlog sizes are kept
in memory (counted once per output from the file), so :meth:`backlog` is cheap enough
for metrics; only one :class:`Outbox` per file may be open at a time.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any

from flowhawk.errors import StateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_output_id ON outbox (output, id);
"""


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _dumps(doc: dict[str, Any]) -> str:
    """Compact JSON; dates as ISO 8601 and any other non-JSON value as its text."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=_json_value)


class Outbox:
    """Persistent per-output queues of JSON documents (see the module documentation)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"outbox {self.path}: cannot open it: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError(f"outbox {self.path} is closed")
        return self._db

    def _count(self, db: sqlite3.Connection, output: str) -> int:
        if output not in self._counts:
            row = db.execute("SELECT COUNT(*) FROM outbox WHERE output = ?", (output,)).fetchone()
            self._counts[output] = int(row[0])
        return self._counts[output]

    def put(self, output: str, docs: list[dict[str, Any]], max_backlog: int) -> int:
        """Append ``docs`` to the output's queue (committed on return).

        If the queue would then hold more than ``max_backlog`` documents, the oldest are
        deleted in the same transaction; returns how many were deleted (dropped)."""
        if not docs:
            return 0
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be at least 1, not {max_backlog}")
        rows = [(output, _dumps(d)) for d in docs]
        with self._lock:
            db = self._conn()
            try:
                count = self._count(db, output)
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO outbox (output, doc) VALUES (?, ?)", rows)
                count += len(rows)
                dropped = 0
                if count > max_backlog:
                    cur = db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE output = ? "
                        "ORDER BY id LIMIT ?)",
                        (output, count - max_backlog),
                    )
                    dropped = cur.rowcount
                    count -= dropped
                db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                self._counts.pop(output, None)
                if isinstance(exc, sqlite3.Error):
                    raise StateError(f"outbox {self.path}: cannot enqueue: {exc}") from exc
                raise
            self._counts[output] = count
            return dropped

    def take(self, output: str, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` of the output's oldest documents with their ids (not removed)."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT id, doc FROM outbox WHERE output = ? ORDER BY id LIMIT ?",
                    (output, limit),
                )
                .fetchall()
            )
        return [(int(i), json.loads(doc)) for i, doc in rows]

    def done(self, output: str, ids: list[int]) -> int:
        """Delete delivered documents by id; returns how many were still queued."""
        if not ids:
            return 0
        with self._lock:
            db = self._conn()
            count = self._count(db, output)
            deleted = 0
            db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), 500):
                    part = ids[start : start + 500]
                    marks = ",".join("?" * len(part))
                    cur = db.execute(
                        f"DELETE FROM outbox WHERE output = ? AND id IN ({marks})",
                        (output, *part),
                    )
                    deleted += cur.rowcount
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            self._counts[output] = count - deleted
            return deleted

    def drop(self, output: str) -> int:
        """Delete every queued document of the output; returns how many."""
        with self._lock:
            cur = self._conn().execute("DELETE FROM outbox WHERE output = ?", (output,))
            self._counts[output] = 0
            return cur.rowcount

    def backlog(self, output: str) -> int:
        """How many documents of the output wait for delivery."""
        with self._lock:
            return self._count(self._conn(), output)

    def outputs(self) -> list[str]:
        """Names of the outputs with queued documents, sorted."""
        with self._lock:
            rows = self._conn().execute("SELECT DISTINCT output FROM outbox").fetchall()
        return sorted(r[0] for r in rows)

    def close(self) -> None:
        """Close the database (idempotent); later calls raise :class:`StateError`."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
