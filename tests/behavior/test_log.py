"""Keeping the behavioral log: buckets closing in event time, and the log on disk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from flowhawk.behavior.aggregate import aggregate
from flowhawk.behavior.log import BucketBuffer, LogStore, ceil_time, close_to_log, floor_time
from flowhawk.behavior.views import BY_NAME, MEASURES
from tests.flowbuild import T0, at, canonical

A, X = "10.0.0.1", "203.0.113.7"


def _flows(times: list[float]) -> pl.DataFrame:
    """One flow A -> X:443 per start time (seconds after T0)."""
    return canonical([{"src_ip": A, "dst_ip": X, "dst_port": 443, "t": t} for t in times])


def _starts(df: pl.DataFrame) -> list[float]:
    return [(t - T0).total_seconds() for t in df.get_column("ts_start").to_list()]


# -- bucket boundaries of times ---------------------------------------------------------------


def test_floor_and_ceil_time():
    t = datetime(2024, 1, 1, 10, 7, 30, tzinfo=UTC)
    assert floor_time(t, 60) == datetime(2024, 1, 1, 10, 7, tzinfo=UTC)
    assert ceil_time(t, 60) == datetime(2024, 1, 1, 10, 8, tzinfo=UTC)
    assert floor_time(t, 3600) == datetime(2024, 1, 1, 10, tzinfo=UTC)
    on = datetime(2024, 1, 1, 10, 7, tzinfo=UTC)
    assert floor_time(on, 60) == ceil_time(on, 60) == on


# -- BucketBuffer ------------------------------------------------------------------------------


def test_nothing_to_close_before_any_flow():
    buf = BucketBuffer(60)
    buf.add(_flows([0]).clear())
    assert buf.close_due() is None and buf.close_all() is None
    assert buf.newest is None and buf.late == 0


def test_a_bucket_closes_once_event_time_passes_its_end():
    buf = BucketBuffer(60)
    buf.add(_flows([0, 10, 59]))
    assert buf.close_due() is None, "event time 59 s has not passed the end of bucket 0"
    buf.add(_flows([61, 90]))
    ready, start, until = buf.close_due()  # type: ignore[misc]
    assert (start, until) == (T0, at(60))
    assert _starts(ready) == [0, 10, 59]
    assert buf.closed_until == at(60)
    assert buf.close_due() is None, "bucket 1 is still open (event time 90 s)"
    ready, start, until = buf.close_all()  # type: ignore[misc]
    assert (start, until) == (at(60), at(120)) and _starts(ready) == [61, 90]


def test_lateness_keeps_buckets_open_longer():
    buf = BucketBuffer(60, lateness=30)
    buf.add(_flows([5, 70]))
    assert buf.close_due() is None, "70 s - 30 s lateness has not passed 60 s"
    buf.add(_flows([40]))  # late but within the lateness: still taken
    buf.add(_flows([89]))
    assert buf.close_due() is None
    buf.add(_flows([90]))
    ready, start, until = buf.close_due()  # type: ignore[misc]
    assert (start, until) == (T0, at(60))
    assert sorted(_starts(ready)) == [5, 40]
    assert buf.late == 0


def test_flows_for_a_closed_bucket_are_counted_late_and_left_out():
    buf = BucketBuffer(60)
    buf.add(_flows([1, 2, 65]))
    buf.close_due()
    buf.add(_flows([30, 59, 60, 70]))  # two for the closed bucket 0
    assert buf.late == 2
    ready, start, until = buf.close_all()  # type: ignore[misc]
    assert (start, until) == (at(60), at(120))
    assert sorted(_starts(ready)) == [60, 65, 70]
    buf.add(_flows([100]))
    assert buf.late == 3, "bucket 1 is closed too after close_all"


def test_closed_ranges_are_contiguous_and_cover_silent_buckets():
    buf = BucketBuffer(60)
    buf.add(_flows([10, 70]))
    _, s1, u1 = buf.close_due()  # type: ignore[misc]
    buf.add(_flows([400]))  # nothing in buckets 1..5 but the flow at 70 s
    ready, s2, u2 = buf.close_due()  # type: ignore[misc]
    assert (s1, u1, s2, u2) == (T0, at(60), at(60), at(360))
    assert _starts(ready) == [70]
    buf.add(_flows([500]))
    ready, s3, u3 = buf.close_due()  # type: ignore[misc]
    assert (s3, u3) == (at(360), at(480)) and _starts(ready) == [400]
    assert buf.close_due() is None


def test_batching_does_not_change_the_closed_rows():
    """Flows in one batch, or in batches of any size, give the same aggregated log."""
    times = [0, 3, 20, 59, 60, 61, 119, 150, 181, 240, 241, 299, 330, 400, 401, 402]
    flows = _flows(times)

    def run(batches: list[pl.DataFrame]) -> dict[str, pl.DataFrame]:
        buf, closed = BucketBuffer(60), []
        for b in batches:
            buf.add(b)
            if (c := buf.close_due()) is not None:
                closed.append(c[0])
        closed.append(buf.close_all()[0])  # type: ignore[index]
        return aggregate(pl.concat([c for c in closed if c.height]), 60)

    whole = run([flows])
    for size in (1, 3, 5):
        batches = [flows[i : i + size] for i in range(0, flows.height, size)]
        parts = run(batches)
        for view in whole:
            assert parts[view].equals(whole[view]), (size, view)


def test_state_round_trip_continues_identically():
    first = BucketBuffer(60, lateness=10)
    first.add(_flows([0, 30, 75]))
    first.close_due()
    first.add(_flows([20, 80, 95]))  # 20 s is late
    state = first.state()
    assert set(state) == {"buffer_meta", "buffer_flows"}

    second = BucketBuffer(60, lateness=10)
    second.load_state(state)
    assert second.closed_until == first.closed_until == at(60)
    assert second.newest == first.newest == at(95)
    assert second.late == first.late == 1
    for buf in (first, second):
        buf.add(_flows([130]))
    a, b = first.close_due(), second.close_due()
    assert a is not None and b is not None
    assert a[1:] == b[1:] == (at(60), at(120))
    assert a[0].equals(b[0]) and sorted(_starts(b[0])) == [75, 80, 95]
    second.add(_flows([50]))
    assert second.late == 2, "the restored clock still rejects flows of closed buckets"


def test_state_of_an_empty_buffer_has_no_flows():
    buf = BucketBuffer(60)
    state = buf.state()
    assert set(state) == {"buffer_meta"}
    fresh = BucketBuffer(60)
    fresh.load_state(state)
    assert fresh.closed_until is None and fresh.newest is None and fresh.late == 0
    fresh.load_state({})
    assert fresh.close_due() is None


def test_close_to_log_aggregates_closed_flows():
    buf = BucketBuffer(60)
    buf.add(_flows([0, 1, 61]))
    closed = buf.close_due()
    assert closed is not None
    log = close_to_log(closed, 60)
    assert log["comm"].select("pkts_out", "flows").row(0) == (6, 2)
    assert close_to_log((pl.DataFrame(), T0, at(60)), 60) == {}


# -- LogStore ----------------------------------------------------------------------------------

DAY = datetime(2024, 1, 1, tzinfo=UTC)


def _comm(buckets: list[datetime], pkts: int = 10, src: str = A) -> pl.DataFrame:
    """Log rows of the comm view, one per bucket."""
    n = len(buckets)
    return pl.DataFrame(
        {
            "bucket": buckets,
            "site": ["default"] * n,
            "src_ip": [src] * n,
            "dst_ip": [X] * n,
            "dst_port": [443] * n,
            "proto": [6] * n,
            **{m: [pkts] * n for m in MEASURES if m != "duration"},
            "duration": [1.5] * n,
        },
        schema_overrides={
            "bucket": pl.Datetime("us", "UTC"),
            "dst_port": pl.Int32,
            "proto": pl.Int16,
        },
    )


def _every(start: datetime, minutes: int, step: int = 1) -> list[datetime]:
    return [start + timedelta(minutes=m) for m in range(0, minutes, step)]


def _parquet(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def test_write_partitions_by_view_date_and_hour(tmp_path):
    store = LogStore(tmp_path, "run1")
    late_evening = DAY + timedelta(hours=23, minutes=58)
    rows = _comm(_every(late_evening, 4))  # 23:58 .. 00:01 next day
    log = {"comm": rows, "port": pl.DataFrame()}
    assert store.write(log) == 4
    assert _parquet(tmp_path) == [
        "view=comm/date=2024-01-01/hour=23/part-run1-000000.parquet",
        "view=comm/date=2024-01-02/hour=00/part-run1-000000.parquet",
    ]
    assert not (tmp_path / "view=port").exists(), "empty views write nothing"
    part = pl.read_parquet(tmp_path / "view=comm/date=2024-01-01/hour=23")
    assert part.columns == rows.columns and part.height == 2
    assert store.write({"comm": _comm([DAY])}) == 1
    assert "view=comm/date=2024-01-01/hour=00/part-run1-000001.parquet" in _parquet(tmp_path)


def test_read_returns_exactly_the_rows_in_range(tmp_path):
    store = LogStore(tmp_path, "r")
    rows = _comm(_every(DAY, 180))  # three hours, one row a minute
    store.write({"comm": rows})
    since, until = DAY + timedelta(minutes=45), DAY + timedelta(minutes=125)
    got = store.read("comm", since, until).sort("bucket")
    want = rows.filter((pl.col("bucket") >= since) & (pl.col("bucket") < until))
    assert got.height == 80
    assert got.equals(want)
    assert got.get_column("bucket").min() == since, "since is included"
    assert got.get_column("bucket").max() == until - timedelta(minutes=1), "until is not"
    everything = store.read("comm", DAY - timedelta(days=1), DAY + timedelta(days=1))
    assert everything.sort("bucket").equals(rows)
    assert store.read("comm", DAY + timedelta(hours=5), DAY + timedelta(hours=6)).height == 0


def test_read_of_a_view_never_written_is_empty_and_typed(tmp_path):
    store = LogStore(tmp_path, "r")
    for view in ("comm", "device", "port"):
        df = store.read(view, DAY, DAY + timedelta(hours=1))
        assert df.height == 0
        assert df.columns == ["bucket", *BY_NAME[view].key, *MEASURES]
    assert store.read("comm", DAY, DAY + timedelta(hours=1)).schema["dst_port"] == pl.Int32


def test_read_cache_returns_the_same_frame_until_a_write(tmp_path):
    store = LogStore(tmp_path, "r")
    store.write({"comm": _comm(_every(DAY, 60))})
    since, until = DAY, DAY + timedelta(hours=2)
    first = store.read("comm", since, until)
    assert store.read("comm", since, until) is first, "detectors sharing a view share the read"
    other = store.read("comm", since + timedelta(minutes=30), until)
    assert other is not first and other.height == 30
    assert store.read("comm", since, until) is first, "reads of the same training time coexist"

    store.write({"comm": _comm(_every(DAY + timedelta(hours=1), 10), pkts=99)})
    fresh = store.read("comm", since, until)
    assert fresh is not first, "a write clears the cache"
    assert fresh.height == 70 and first.height == 60
    assert fresh.filter(pl.col("pkts_out") == 99).height == 10


def test_read_cache_keeps_only_the_latest_training_time(tmp_path):
    store = LogStore(tmp_path, "r")
    store.write({"comm": _comm(_every(DAY, 60))})
    old = store.read("comm", DAY, DAY + timedelta(minutes=30))
    newer = store.read("comm", DAY, DAY + timedelta(minutes=40))
    assert newer.height == 40
    again = store.read("comm", DAY, DAY + timedelta(minutes=30))
    assert again is not old and again.equals(old)


def _hours_on_disk(root: Path, view: str = "comm") -> list[str]:
    return sorted(
        f"{d.parent.name}/{d.name}" for d in (root / f"view={view}").glob("date=*/hour=*")
    )


def test_retention_drops_hours_that_ended_before_the_limit(tmp_path):
    store = LogStore(tmp_path, "r")
    store.write({"comm": _comm(_every(DAY, 6 * 60, 10)), "device": pl.DataFrame()})
    assert len(_hours_on_disk(tmp_path)) == 6
    now = DAY + timedelta(hours=5, minutes=30)
    # keep 2 h: hours ending before 03:30 go (00, 01, 02); hour 03 ends at 04:00 and stays
    assert store.apply_retention(2 * 3600, now) == 3
    assert _hours_on_disk(tmp_path) == [f"date=2024-01-01/hour=0{h}" for h in (3, 4, 5)]
    kept = store.read("comm", DAY - timedelta(days=1), DAY + timedelta(days=1))
    assert kept.get_column("bucket").min() == DAY + timedelta(hours=3)
    assert store.apply_retention(2 * 3600, now) == 0
    assert store.apply_retention(0, DAY + timedelta(days=2)) == 3
    assert not list((tmp_path / "view=comm").iterdir()), "empty date folders are removed"


def test_read_after_retention_does_not_return_deleted_rows(tmp_path):
    store = LogStore(tmp_path, "r")
    store.write({"comm": _comm(_every(DAY, 3 * 60, 10))})
    since, until = DAY, DAY + timedelta(hours=3)
    assert store.read("comm", since, until).height == 18
    store.apply_retention(3600, DAY + timedelta(hours=3))  # drops hour 00 (ended before 02:00)
    assert store.read("comm", since, until).height == 12


def test_simulated_traffic_closes_to_the_same_log_however_batched(sim_flows):
    """Hour batches (a file) and small batches (live) close into identical rows."""

    def run(batches: list[pl.DataFrame]) -> dict[str, pl.DataFrame]:
        buf, closed = BucketBuffer(60), []
        for b in batches:
            buf.add(b)
            if (c := buf.close_due()) is not None:
                closed.append(c[0])
        if (c := buf.close_all()) is not None:
            closed.append(c[0])
        assert buf.late == 0
        return aggregate(pl.concat([c for c in closed if c.height]), 60)

    hours = sim_flows.with_columns(_h=pl.col("ts_start").dt.truncate("1h"))
    by_hour = hours.partition_by("_h", maintain_order=True, include_key=False)
    small = [sim_flows[i : i + 997] for i in range(0, sim_flows.height, 997)]
    whole, a, b = aggregate(sim_flows, 60), run(by_hour), run(small)
    for view in whole:
        assert a[view].equals(whole[view]), view
        assert b[view].equals(whole[view]), view
