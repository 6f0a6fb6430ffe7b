"""Live detection (the collector's) gives the same alarms and events as ``analyze``.

A simulated site (two days: one to learn from, then a volume spike, a device going
silent and a new communication) is analyzed from its Parquet file, and, separately,
exported as IPFIX biflows (microsecond times) over loopback to a real collector that
detects live in rollovers of 0.3 s. Lateness covers the simulated flows' longest
duration, so no flow reaches the engine after its bucket closed.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flowhawk import config
from flowhawk.collect.collector import Collector
from flowhawk.collect.replay import ExportSettings
from flowhawk.pipeline import run
from flowhawk.sim import SimSettings, simulate
from flowhawk.sim.site import SiteSpec
from flowhawk.sim.write import config_path, export, write_flows
from flowhawk.state import StateStore

pytestmark = pytest.mark.timeout(600)

SITE = SiteSpec(workstations=4, servers=10, iot=5, plcs=1, hmis=1, web_sites=40, web_visitors=200)
KINDS = ("volume_spike", "silence", "new_communication")
ALARM_KEY = ["method", "ts", "src_ip", "dst_ip", "dst_port", "proto", "score"]


def stored(data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    con = duckdb.connect(str(data / "events.duckdb"), read_only=True)
    try:
        events = con.sql("SELECT id, ts_start, ts_end, risk, methods FROM events ORDER BY id").pl()
        alarms = con.sql(f"SELECT {', '.join(ALARM_KEY)}, event_id FROM alarms ORDER BY ALL").pl()
    finally:
        con.close()
    return events, alarms


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("live")
    sim = simulate(
        SimSettings(days=2, clean_days=1, seed=3, per_kind=1, anomalies=KINDS, site=SITE)
    )
    path = tmp / "site.parquet"
    write_flows(sim, path)
    longest = (sim.flows.get_column("ts_end") - sim.flows.get_column("ts_start")).max()
    lateness = int(longest.total_seconds()) + 120  # type: ignore[union-attr]
    base = config_path(path).read_text() + f'\n[behavior]\nlateness = "{lateness}s"\n'
    file_toml, live_toml = tmp / "file.toml", tmp / "live.toml"
    file_toml.write_text(base)
    live_toml.write_text(
        base + '[collect]\nlisten = ["127.0.0.1:0"]\nmetrics = ""\nrollover = "0.3s"\n'
    )
    result = run([path], config.load(file_toml), tmp / "file", tmp / "out")

    col = Collector(config.load(live_toml), tmp / "live")
    col.start()
    col.run_in_thread()
    try:
        port = col.ports()[0][1]
        settings = ExportSettings(protocol="ipfix", biflow=True, time_precision="us")
        export(sim, f"127.0.0.1:{port}", settings, rate=40_000)
        deadline = time.monotonic() + 120
        while col.totals.flows_decoded < sim.flows.height and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        col.stop()
    return {"sim": sim, "result": result, "collector": col, "tmp": tmp}


def test_every_flow_reaches_live_detection(both):
    col, sim = both["collector"], both["sim"]
    assert col.totals.flows_archived == sim.flows.height
    assert col.detection.totals.flows == sim.flows.height
    assert col.detection.totals.errors == 0
    assert col.detection.totals.late_flows == 0
    assert col.detection.totals.batches > 3  # really incremental


def test_live_and_file_give_the_same_alarms_and_events(both):
    tmp, result = both["tmp"], both["result"]
    file_events, file_alarms = stored(tmp / "file")
    live_events, live_alarms = stored(tmp / "live")
    assert file_alarms.height == result.alarms.height > 50
    methods = set(file_alarms.get_column("method"))
    assert {"M1", "M3"} <= methods and methods & {"M6", "M7", "M8", "M9"}
    assert methods & {f"M{i}" for i in range(10, 26)}
    assert live_alarms.equals(file_alarms)
    assert live_events.equals(file_events)


def test_live_models_are_checkpointed_like_the_file_run(both):
    tmp = both["tmp"]
    for method in ("M3", "M11", "M19"):
        file_meta = StateStore(tmp / "file").load_tables(method)["model_meta"].to_pylist()
        live_meta = StateStore(tmp / "live").load_tables(method)["model_meta"].to_pylist()
        assert live_meta == file_meta and live_meta[0]["version"] >= 1


def test_a_restart_keeps_the_alarms_of_open_windows(tmp_path):
    """An alarm joining an event window after a restart rebuilds the stored event with
    the alarms it had before the restart, not only the new ones."""
    from flowhawk.live import LiveDetection
    from tests.flowbuild import canonical

    feed = tmp_path / "feed.txt"
    feed.write_text("198.51.100.9\n")
    cfg = config.from_dict(
        {"learning": {"period": "1m"}, "intel": {"feeds": [{"source": str(feed)}]}}
    )
    data = tmp_path / "data"
    normal = [{"src_ip": "10.0.0.5", "dst_ip": "10.0.0.2", "dst_port": 53, "proto": 17, "t": t}
              for t in range(0, 120, 10)]  # fmt: skip
    bad = {"src_ip": "10.0.0.5", "dst_ip": "198.51.100.9", "dst_port": 443}
    first = LiveDetection(cfg, data, "one")
    first.process(canonical([*normal, {**bad, "t": 300}], cfg).to_arrow())
    first.stop()
    before = set(stored(data)[1].get_column("method"))
    assert {"M1", "M27"} <= before
    second = LiveDetection(cfg, data, "two")
    second.process(canonical([{**bad, "t": 1800, "src_port": 50001}], cfg).to_arrow())
    second.stop()
    events, alarms = stored(data)
    assert events.height == 1 and {"M1", "M27"} <= set(events.item(0, "methods"))
    assert alarms.filter(pl.col("method") == "M27").height == 2  # both flows' hits
