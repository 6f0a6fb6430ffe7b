"""Outputs of ``flowhawk simulate``: files flowhawk's own readers take, the CLI, the
live path through the built-in exporter."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from datetime import timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from flowhawk import config
from flowhawk.cli import app
from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.dispatch import ExportDecoder
from flowhawk.collect.replay import ExportSettings
from flowhawk.diagnostics import Diagnostics
from flowhawk.pipeline import read_inputs
from flowhawk.sim import SimSettings, Simulation, simulate
from flowhawk.sim.write import export, write_flows, write_labels
from tests.sim.conftest import TINY

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny() -> Simulation:
    return simulate(SimSettings(days=2, clean_days=1, seed=9, site=TINY, per_kind=1))


def _read(path, cfg_path=None) -> pl.DataFrame:
    cfg = config.load(cfg_path)
    tables = [t for _, batches in read_inputs([path], cfg, Diagnostics(), None) for t in batches]
    df = pl.from_arrow(pl.concat([pl.from_arrow(t) for t in tables]).to_arrow())
    assert isinstance(df, pl.DataFrame)
    return df.sort("ts_start", "src_ip", "dst_ip", "src_port")


def _same_flows(got: pl.DataFrame, sim: Simulation) -> None:
    want = pl.from_arrow(sim.raw())
    assert isinstance(want, pl.DataFrame)
    want = want.sort("ts_start", "src_ip", "dst_ip", "src_port")
    assert got.height == want.height
    for col in ("src_ip", "dst_ip", "src_port", "dst_port", "proto", "src_pkts", "dst_pkts",
                "src_bytes", "dst_bytes"):  # fmt: skip
        assert (
            got.get_column(col)
            .cast(pl.Int64 if col not in ("src_ip", "dst_ip") else pl.String)
            .equals(
                want.get_column(col).cast(
                    pl.Int64 if col not in ("src_ip", "dst_ip") else pl.String
                )
            )
        ), col
    assert (
        got.get_column("ts_start").cast(pl.Int64).equals(want.get_column("ts_start").cast(pl.Int64))
    )


@pytest.mark.parametrize("ext", [".log", ".parquet", ".csv"])
def test_flowhawk_reads_what_simulate_writes(tiny, tmp_path, ext):
    written = write_flows(tiny, tmp_path / f"site{ext}")
    assert [p.name for p in written] == [f"site{ext}", "site.toml"]
    cfg = config.load(written[1])
    assert cfg.learning.period == 86400
    got = _read(written[0], written[1])
    _same_flows(got, tiny)
    icmp = got.filter(pl.col("proto") == 1)
    assert icmp.height and (icmp.get_column("dst_port") == 2048).all()  # echo request


def test_analyze_runs_on_a_simulated_log(tiny, tmp_path):
    few = tiny.flows.filter(
        pl.col("ts_start") < tiny.flows["ts_start"].min() + timedelta(minutes=20)
    )
    part = dataclasses.replace(tiny, flows=few)
    log = write_flows(part, tmp_path / "part.log")[0]
    res = runner.invoke(app, ["analyze", str(log), "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "events.jsonl").exists()


def test_cli_writes_flows_labels_and_config(tmp_path):
    out = tmp_path / "w.log"
    args = ["simulate", "--days", "2", "--clean-days", "1", "--seed", "4", "--out", str(out),
            "--workstations", "3", "--servers", "10", "--iot", "3", "--plcs", "1", "--hmis", "0",
            "--anomalies", "silence,new_communication", "--per-kind", "1"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 anomalies" in res.output
    labels = pl.read_csv(tmp_path / "w.labels.csv")
    assert set(labels.get_column("kind")) == {"silence", "new_communication"}
    assert (tmp_path / "w.toml").exists()
    other = tmp_path / "x.csv"
    res = runner.invoke(app, [*args[:-8], "--out", str(other), "--labels", str(tmp_path / "l.csv"),
                              "--anomalies", "none", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert pl.read_csv(tmp_path / "l.csv").height == 0
    assert res.output == ""


@pytest.mark.parametrize(
    "args,complaint",
    [
        (["--anomalies", "meteor"], "unknown kinds meteor"),
        (["--days", "3", "--clean-days", "3"], "need a day after the 3 clean days"),
        (["--out", "x.txt"], ".log, .parquet or .csv"),
        (["--start", "March"], "YYYY-MM-DD"),
        (["--export", "nowhere", "--protocol", "v5"], "HOST:PORT"),
        (["--export", "127.0.0.1:9", "--protocol", "v7"], "unknown protocol"),
    ],
)
def test_cli_usage_errors(tmp_path, args, complaint):
    full = ["simulate", "--out", str(tmp_path / "a.log"), *args]
    if "--out" in args:
        full = ["simulate", *args]
    res = runner.invoke(app, full)
    assert res.exit_code == 2
    text = " ".join(res.output.lower().replace("│", " ").split())
    assert complaint.lower() in text, res.output
    res = runner.invoke(app, ["simulate", "--days", "2"])
    assert res.exit_code == 2 and "--export" in res.output


def test_export_sends_every_flow_and_now_moves_times(tiny):
    few = tiny.flows.filter(pl.col("ts_start") < tiny.flows["ts_start"].min() + timedelta(hours=1))
    part = dataclasses.replace(tiny, flows=few)
    datagrams: list[bytes] = []
    began = time.time()
    stats = export(part, "127.0.0.1:2055", ExportSettings(protocol="ipfix"), now=True,
                   sender=datagrams.append)  # fmt: skip
    assert stats.flows == few.height and stats.datagrams == len(datagrams)
    res = ExportDecoder().decode(datagrams, [0] * len(datagrams), ExporterState("127.0.0.1"))
    assert not res.errors
    got = pl.from_arrow(res.flows)
    assert isinstance(got, pl.DataFrame)
    # One record per direction that carried packets: client->server ones are the flows.
    assert got.get_column("src_pkts").sum() == few["src_pkts"].sum() + few["dst_pkts"].sum()
    first = got.get_column("ts_start").min()
    assert abs(first.timestamp() - began) < 60  # --now: the first flow starts now
    span = got["ts_start"].max() - first
    assert (
        abs(span.total_seconds() - (few["ts_start"].max() - few["ts_start"].min()).total_seconds())
        < 1
    )


def test_labels_file_round_trips(tiny, tmp_path):
    path = write_labels(tiny, tmp_path / "l.csv")
    back = pl.read_csv(path, schema_overrides={"dst_port": pl.Int32, "proto": pl.Int16})
    assert back.height == tiny.labels.height
    assert back.columns == tiny.labels.columns
    assert back.get_column("methods").fill_null("").equals(tiny.labels.get_column("methods"))


def test_cli_exports_live_to_a_udp_collector(tmp_path):
    """--export without --out: every flow reaches a real socket as NetFlow v9."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.3)
    got: list[bytes] = []
    done = threading.Event()

    def receive() -> None:
        while True:
            try:
                got.append(sock.recv(65535))
            except TimeoutError:
                if done.is_set():
                    return

    thread = threading.Thread(target=receive)
    thread.start()
    port = sock.getsockname()[1]
    args = ["simulate", "--days", "1", "--anomalies", "none", "--workstations", "2",
            "--servers", "2", "--iot", "0", "--plcs", "0", "--hmis", "0",
            "--export", f"127.0.0.1:{port}", "--protocol", "v9", "--rate", "50000",
            "--now"]  # fmt: skip
    res = runner.invoke(app, args)
    done.set()
    thread.join()
    sock.close()
    assert res.exit_code == 0, res.output
    sent = int(res.output.split("sent ")[1].split(" flows")[0].replace(",", ""))
    flows = ExportDecoder().decode(got, [0] * len(got), ExporterState("127.0.0.1")).flows
    assert sent > 1000 and len(got) > 10
    # Answered flows are two records (one per direction); all of them arrived.
    assert flows.num_rows >= sent
