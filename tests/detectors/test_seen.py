"""SeenSet: keys kept as stable hashes with their first-seen time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from flowhawk.detectors.seen import SeenSet

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SCHEMA = {"site": pl.String(), "ip": pl.String()}


def _rows(ips: list[str], minute: int = 0) -> pl.DataFrame:
    ts = [T0 + timedelta(minutes=minute, seconds=i) for i in range(len(ips))]
    return pl.DataFrame({"site": ["hq"] * len(ips), "ip": ips, "ts_start": ts})


def test_first_new_remembers_hashes_and_first_times():
    seen = SeenSet(("site", "ip"), SCHEMA)
    new = seen.first_new(_rows(["10.0.0.2", "10.0.0.1", "10.0.0.2"]), remember=True)
    assert new.get_column("ip").to_list() == ["10.0.0.2", "10.0.0.1"]
    assert seen.first_new(_rows(["10.0.0.1", "10.0.0.3"], 5)).get_column("ip").to_list() == [
        "10.0.0.3"
    ]
    table = seen.to_arrow()
    assert table.column_names == ["hash", "first_seen"] and table.num_rows == 2
    assert seen.nbytes == 32, "16 bytes a key"
    firsts = sorted(table.column("first_seen").to_pylist())
    assert firsts == [T0, T0 + timedelta(seconds=1)]


def test_state_round_trips():
    seen = SeenSet(("site", "ip"), SCHEMA)
    seen.add(_rows(["10.0.0.1", "10.0.0.9"]))
    restored = SeenSet(("site", "ip"), SCHEMA)
    restored.load(seen.to_arrow())
    assert restored.to_arrow().equals(seen.to_arrow())
    assert restored.contains(_rows(["10.0.0.9", "10.0.0.8"])).tolist() == [True, False]


def test_a_checkpoint_with_key_columns_is_read_by_hashing_them():
    """Checkpoints of earlier versions held the keys themselves."""
    old = _rows(["10.0.0.1", "10.0.0.2"]).rename({"ts_start": "first_seen"}).to_arrow()
    seen = SeenSet(("site", "ip"), SCHEMA)
    seen.load(old)
    assert len(seen) == 2
    assert seen.contains(_rows(["10.0.0.2", "10.0.0.3"])).tolist() == [True, False]
