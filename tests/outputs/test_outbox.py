"""The persistent outbox: order, acknowledgement, bounded backlog, durability, threads."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime

import pytest

from flowhawk.errors import StateError
from flowhawk.outputs.outbox import Outbox
from tests.outputs.receivers import docs, ids_of


def test_put_take_done_in_order(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite")
    assert box.put("a", docs(5), max_backlog=100) == 0
    assert box.put("b", docs(2, start=100), max_backlog=100) == 0
    assert box.backlog("a") == 5 and box.backlog("b") == 2
    assert box.outputs() == ["a", "b"]

    first = box.take("a", 3)
    assert [d["id"] for _, d in first] == ["ev0000", "ev0001", "ev0002"]
    assert first[0][1] == docs(1)[0]  # the whole document comes back
    assert box.take("a", 3) == first  # taking does not remove
    assert box.done("a", [i for i, _ in first]) == 3
    assert [d["id"] for _, d in box.take("a", 10)] == ["ev0003", "ev0004"]
    assert box.backlog("a") == 2
    assert box.done("a", [i for i, _ in first]) == 0  # already gone
    # ids of one output never delete another's rows
    assert box.done("b", [i for i, _ in box.take("a", 10)]) == 0
    assert box.backlog("b") == 2
    assert box.put("a", [], max_backlog=1) == 0
    box.close()


def test_backlog_bound_drops_oldest(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    assert box.put("a", docs(3), max_backlog=5) == 0
    assert box.put("a", docs(4, start=3), max_backlog=5) == 2
    assert [d["id"] for _, d in box.take("a", 10)] == ids_of(docs(5, start=2))
    # one put larger than the bound keeps its newest documents
    assert box.put("a", docs(12, start=10), max_backlog=5) == 12
    assert [d["id"] for _, d in box.take("a", 10)] == ids_of(docs(5, start=17))
    assert box.backlog("a") == 5
    with pytest.raises(ValueError, match="max_backlog"):
        box.put("a", docs(1), max_backlog=0)


def test_survives_reopen_and_ids_are_never_reused(tmp_path):
    path = tmp_path / "data" / "outbox.sqlite"
    box = Outbox(path)
    box.put("a", docs(4), max_backlog=10)
    taken = box.take("a", 4)
    box.done("a", [taken[-1][0]])
    box.close()
    with pytest.raises(StateError, match="closed"):
        box.take("a", 1)
    box.close()  # idempotent

    again = Outbox(path)
    assert again.backlog("a") == 3
    assert [d["id"] for _, d in again.take("a", 10)] == ["ev0000", "ev0001", "ev0002"]
    again.put("a", docs(1, start=9), max_backlog=10)
    newest = again.take("a", 10)[-1][0]
    assert newest > taken[-1][0]
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again.close()


def test_values_that_are_not_json(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    when = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    box.put("a", [{"id": "x", "ts": when, "n": 1.5}], max_backlog=10)
    assert box.take("a", 1)[0][1] == {"id": "x", "ts": "2024-05-01T10:00:00+00:00", "n": 1.5}


def test_unusable_file_is_a_state_error(tmp_path):
    bad = tmp_path / "outbox.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="outbox"):
        Outbox(bad)


def test_concurrent_writer_and_readers(tmp_path):
    """One thread enqueues for two outputs while a thread per output drains it."""
    box = Outbox(tmp_path / "o.sqlite")
    total = 400
    seen: dict[str, list[str]] = {"a": [], "b": []}
    finished = threading.Event()

    def writer() -> None:
        for k in range(0, total, 10):
            batch = docs(10, start=k)
            box.put("a", batch, max_backlog=10_000)
            box.put("b", batch, max_backlog=10_000)
        finished.set()

    def reader(name: str) -> None:
        while True:
            rows = box.take(name, 7)
            if not rows:
                if finished.is_set() and box.backlog(name) == 0:
                    return
                continue
            seen[name].extend(d["id"] for _, d in rows)
            box.done(name, [i for i, _ in rows])

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(n,)) for n in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    expected = ids_of(docs(total))
    assert seen["a"] == expected and seen["b"] == expected
    assert box.backlog("a") == box.backlog("b") == 0
    box.close()
