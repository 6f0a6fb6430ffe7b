"""Shared reader helpers: time parsing in every ISO 8601 spelling."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from flowhawk.sources.rawflows import parse_times


def test_iso_8601_spellings_with_and_without_offsets():
    values = pa.array(
        [
            "2024-01-01T00:00:00Z",
            "2021-06-06T15:59:46.457984+0200",
            "2021-06-06T15:59:46+02:00",
            "2024-01-01 00:00:01",
            "2024-01-01T00:00:01.5",
            "2024-01-01",
            "not a time",
            None,
        ]
    )
    micros, bad = parse_times(values, [None], "UTC")
    got = [None if v is None else datetime.fromtimestamp(v / 1e6, UTC) for v in micros.to_pylist()]
    assert got[:6] == [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2021, 6, 6, 13, 59, 46, 457984, tzinfo=UTC),
        datetime(2021, 6, 6, 13, 59, 46, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, 1, 500000, tzinfo=UTC),
        datetime(2024, 1, 1, tzinfo=UTC),
    ]
    assert bad.tolist() == [False] * 6 + [True, False]


def test_local_time_zone_applies_only_without_offset():
    micros, _ = parse_times(
        pa.array(["2024-07-01 12:00:00", "2024-07-01T12:00:00Z"]), [None], "Europe/Prague"
    )
    a, b = micros.to_pylist()
    assert b - a == 2 * 3600 * 1_000_000
