"""The Parquet archive layout and the checkpointed state."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pytest

from flowhawk.archive import ArchiveWriter, apply_retention
from flowhawk.errors import StateError
from flowhawk.state import Meta, StateStore
from tests.flowbuild import canonical


def test_hive_partitions_by_date_and_hour_and_partition_reads(tmp_path):
    flows = canonical(
        [
            {"t": 0, "src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
            {"t": 3600 * 25 + 5, "src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
            {"t": 30, "src_ip": "10.0.0.6", "dst_ip": "8.8.8.8", "dst_port": 53},
        ]
    )
    w = ArchiveWriter(tmp_path / "flows", "run1")
    w.write(flows.to_arrow())
    assert w.partitions() == [("2024-01-01", "00"), ("2024-01-02", "01")]
    assert (tmp_path / "flows" / "date=2024-01-02" / "hour=01").is_dir()
    first = w.read_partition(("2024-01-01", "00"))
    assert first.height == 2 and first.get_column("ts_start").is_sorted()
    n = duckdb.sql(
        f"SELECT count(*), min(hour) FROM read_parquet('{tmp_path}/flows/**/*.parquet', "
        "hive_partitioning=true)"
    ).fetchall()[0]
    assert n == (3, "00") or n == (3, 0)


def test_second_writer_appends_not_overwrites(tmp_path):
    flows = canonical([{"t": 0, "src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53}])
    for run in ("a", "b"):
        ArchiveWriter(tmp_path / "flows", run).write(flows.to_arrow())
    assert len(list((tmp_path / "flows").rglob("*.parquet"))) == 2


def test_retention_removes_old_hours(tmp_path):
    flows = canonical(
        [
            {"t": 0, "src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
            {"t": 86400 * 3, "src_ip": "10.0.0.5", "dst_ip": "8.8.8.8", "dst_port": 53},
        ]
    )
    ArchiveWriter(tmp_path / "flows", "r").write(flows.to_arrow())
    removed = apply_retention(tmp_path / "flows", 86400, datetime(2024, 1, 4, 1, tzinfo=UTC))
    assert removed == 1
    assert [p.name for p in (tmp_path / "flows").iterdir()] == ["date=2024-01-04"]


def test_state_roundtrip_and_atomic_replace(tmp_path):
    store = StateStore(tmp_path)
    assert store.load_meta() == Meta()
    meta = Meta(learning_until="2024-01-01T01:00:00+00:00", first_event="x")
    store.save(meta, {"M1": {"comms": pa.table({"a": [1, 2]})}})
    store.save(meta, {"M1": {"comms": pa.table({"a": [1, 2, 3]})}})
    assert store.load_meta().learning_until == meta.learning_until
    assert store.load_tables("M1")["comms"].num_rows == 3
    assert store.load_tables("M30") == {}
    assert not (tmp_path / "state.new").exists() and not (tmp_path / "state.old").exists()


def test_unreadable_or_foreign_state_is_a_clear_error(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "meta.json").write_text("{broken")
    with pytest.raises(StateError, match=r"meta\.json is unreadable"):
        StateStore(tmp_path).load_meta()
    (tmp_path / "state" / "meta.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(StateError, match="state version 99"):
        StateStore(tmp_path).load_meta()


def test_a_save_cut_between_its_renames_is_recovered(tmp_path):
    """A crash after `state` became `state.old` and before `state.new` became `state`
    leaves no `state`: the next store puts the complete checkpoint back."""
    from flowhawk.state import Meta, StateStore

    store = StateStore(tmp_path)
    store.save(Meta(learning_until="2024-01-01T00:00:00+00:00"), {})
    (tmp_path / "state").rename(tmp_path / "state.old")  # the first rename happened
    assert StateStore(tmp_path).load_meta().learning_until == "2024-01-01T00:00:00+00:00"
    store = StateStore(tmp_path)
    store.save(Meta(learning_until="2024-02-01T00:00:00+00:00"), {})
    (tmp_path / "state").rename(tmp_path / "state.new")  # the new one was complete
    assert StateStore(tmp_path).load_meta().learning_until == "2024-02-01T00:00:00+00:00"
