"""The command line, run as a user runs it: real files in, files and exit codes out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from flowhawk.detectors import DETECTORS

LABELED_008 = "labeled/stratosphere_scenarios/008-zeek-mixed/data/conn.log.labeled"
NF_TEXT = "conformance/flow_text_formats/examples/nfcapd.sample2"
ARGUS = "conformance/flow_text_formats/examples/test5.tabs.binetflow"


def fh(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowhawk", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},  # usage errors are boxed at the terminal width
    )


def _data_lines(path: Path) -> int:
    with open(path) as f:
        return sum(1 for line in f if line.strip() and not line.startswith("#"))


def test_help_everywhere():
    for args in ([], ["analyze"], ["learn"], ["sql"], ["config"], ["config", "show"], ["demo"]):
        res = fh(*args, "--help")
        assert res.returncode == 0, (args, res.stderr)
        assert "Usage" in res.stdout


def test_analyze_real_zeek_log_writes_every_output(shared_data, tmp_path):
    out = tmp_path / "out"
    src = shared_data / LABELED_008
    res = fh("analyze", str(src), "--out", str(out), "--config", str(_cfg(tmp_path)))
    assert res.returncode == 0, res.stderr
    assert "Inputs" in res.stdout and "Events:" in res.stdout and "Top hosts" in res.stdout
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events, "the CTU capture has attacks after its first 10 minutes"
    for key in (
        "id",
        "ts_start",
        "ts_end",
        "site",
        "src_ip",
        "dst_ip",
        "dst_port",
        "proto",
        "direction",
        "risk",
        "alarms",
    ):
        assert key in events[0]
    assert {a["method"] for e in events for a in e["alarms"]} <= set(DETECTORS.names())
    assert all(0 <= e["risk"] <= 100 for e in events)
    hosts = pl.read_csv(out / "hosts.csv")
    assert hosts.columns[:4] == ["ip", "risk", "events", "alarms"]
    assert hosts.get_column("risk").is_sorted(descending=True)
    sus = pl.read_csv(out / "suspicious.csv")
    assert {
        "tstart",
        "sip",
        "dip",
        "sport",
        "dport",
        "proto",
        "ipkt",
        "ibyt",
        "opkt",
        "obyt",
        "score",
        "risk",
        "reasons",
    } <= set(sus.columns)
    scores = pl.read_csv(out / "flow_scores.csv", infer_schema=False)
    assert scores.columns == ["flow_id", "input", "risk", "methods"]
    assert scores.height == _data_lines(src)
    assert scores.get_column("flow_id").str.starts_with("C").all()  # Zeek uids
    assert any((out / "flows").glob("date=*/hour=*/*.parquet"))
    assert (out / "events.duckdb").exists() and (out / "state" / "meta.json").exists()


def _cfg(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[learning]\nperiod = "10m"\n')
    return cfg


def test_second_run_continues_from_state(shared_data, tmp_path):
    src = shared_data / LABELED_008
    first = fh("analyze", str(src), "--out", str(tmp_path), "-c", str(_cfg(tmp_path)))
    assert first.returncode == 0
    again = fh("analyze", str(src), "--out", str(tmp_path), "-c", str(_cfg(tmp_path)))
    assert again.returncode == 0
    assert (tmp_path / "events.jsonl").read_text() == ""  # everything is known now
    meta = json.loads((tmp_path / "state" / "meta.json").read_text())
    assert len(meta["runs"]) == 2


def test_unidirectional_input_scores_every_record(shared_data, tmp_path):
    src = shared_data / NF_TEXT
    res = fh("analyze", str(src), "--out", str(tmp_path), "-c", str(_cfg(tmp_path)))
    assert res.returncode == 0, res.stderr
    scores = pl.read_csv(tmp_path / "flow_scores.csv", infer_schema=False)
    records = pl.read_csv(tmp_path / "flow_scores.csv", infer_schema=False).height
    flows = pl.scan_parquet(str(tmp_path / "flows" / "**" / "*.parquet")).collect().height
    assert records > flows, "request/response records were stitched into fewer biflows"
    assert scores.get_column("flow_id").n_unique() == scores.height


def test_learn_then_analyze_alarms_from_the_first_flow(shared_data, tmp_path):
    src = shared_data / ARGUS
    learn = fh("learn", str(shared_data / NF_TEXT), "--data", str(tmp_path / "d"))
    assert learn.returncode == 0, learn.stderr
    assert "Learning run" in learn.stdout
    res = fh("analyze", str(src), "--out", str(tmp_path / "o"), "--data", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "events.jsonl").read_text().strip()
    assert "learned from" in res.stdout and " 0 learned from" in res.stdout


def test_bad_and_good_inputs_together(shared_data, tmp_path):
    garbage = tmp_path / "garbage.log"
    garbage.write_bytes(b"\x00\x01\x02 this is not a flow log \xff\n" * 20)
    truncated = shared_data / "conformance/dpkt_pcaps/truncated_dns.pcap"
    good = shared_data / "conformance/flow_text_formats/examples/conn.tab.log"
    res = fh(
        "analyze",
        str(garbage),
        str(truncated),
        str(good),
        str(tmp_path / "missing.pcap"),
        "--out",
        str(tmp_path / "o"),
    )
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "garbage.log" in text and "format not recognised" in text
    assert "missing.pcap" in text and "does not exist" in text
    assert "truncated_dns.pcap" in text


def test_nothing_readable_exits_1_naming_inputs(tmp_path):
    garbage = tmp_path / "garbage.log"
    garbage.write_text("hello\n")
    res = fh("analyze", str(garbage), "--out", str(tmp_path / "o"))
    assert res.returncode == 1
    assert "no flows could be read" in res.stderr and "garbage.log" in res.stderr


def test_wrong_forced_format_is_explained(shared_data, tmp_path):
    res = fh("analyze", str(shared_data / NF_TEXT), "--format", "zeek", "--out", str(tmp_path))
    assert res.returncode == 1
    assert "nfcapd.sample2" in res.stderr
    res = fh("analyze", str(shared_data / NF_TEXT), "--format", "netflow9", "--out", str(tmp_path))
    assert res.returncode == 2 and "unknown format 'netflow9'" in res.stderr


def test_config_check_and_show(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[events]\nwindow = "1h"\nwindw = 3\n')
    res = fh("config", "check", str(bad))
    assert res.returncode == 2 and "unknown key 'events.windw'" in res.stderr
    good = tmp_path / "good.toml"
    good.write_text('[learning]\nperiod = "2h"\n')
    assert fh("config", "check", str(good)).returncode == 0
    shown = fh("config", "show", "-c", str(good))
    assert shown.returncode == 0 and 'period = "2h"' in shown.stdout
    assert "[detectors.M1]" in shown.stdout


def test_sql_over_archive_and_events(shared_data, tmp_path):
    src = shared_data / LABELED_008
    res = fh("analyze", str(src), "--out", str(tmp_path), "-c", str(_cfg(tmp_path)))
    assert res.returncode == 0
    res = fh("sql", "SELECT count(*) AS n FROM flows", "--data", str(tmp_path), "-O", "csv")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["n", str(_data_lines(src))]
    res = fh(
        "sql",
        "SELECT method, count(*) AS n FROM alarms GROUP BY ALL ORDER BY 1",
        "--data",
        str(tmp_path),
        "-O",
        "json",
    )
    assert res.returncode == 0 and '"method":"M1"' in res.stdout
    res = fh("sql", "SELECT ip FROM hosts LIMIT 1", "--data", str(tmp_path))
    assert res.returncode == 0
    bad = fh("sql", "SELEC nonsense", "--data", str(tmp_path))
    assert bad.returncode == 1 and "query failed" in bad.stderr


@pytest.mark.slow
def test_demo_main_job(tmp_path):
    res = fh("demo", "--out", str(tmp_path / "demo"))
    assert res.returncode == 0, res.stderr
    assert "What really happened" in res.stdout
    hosts = pl.read_csv(tmp_path / "demo" / "hosts.csv")
    ranked = hosts.get_column("ip").to_list()
    # Every host among the first eight took part in an incident (scenario.INCIDENTS):
    # hoarder and file server, silent PLC and its poller, the exfiltrating database,
    # the MQTT broker and its dead sensor, the rogue device, patient zero, the DNS
    # tunneller, the DNS server tunnelling over ICMP, the Tor user, the scanner, the
    # host syncing with a listed server; and the incidents' outside ends: the C2 server,
    # the Tor relay, the exfiltration's and the rogue device's destinations, the vendor,
    # the prober, the listed server, the ICMP tunnel's far end.
    incident_hosts = {"10.10.1.31", "10.10.0.20", "10.20.1.15", "10.20.0.5", "10.10.0.30",
                      "10.20.0.7", "10.20.1.53", "10.10.1.250", "10.10.1.23", "10.10.1.35",
                      "10.10.0.53", "10.10.1.17", "10.10.1.28", "10.10.1.20",
                      "203.0.113.66", "192.0.2.101", "198.51.100.200", "192.0.2.77",
                      "192.0.2.150", "198.51.100.250", "198.51.100.140", "192.0.2.99"}  # fmt: skip
    assert set(ranked[:8]) <= incident_hosts, ranked[:8]
    assert "*" not in ranked  # a view's "any host" is not a host
    # the rogue device's few flows rank it after the hosts of the other incidents, the C2
    # server and the listed file share; patient zero (C2 beacon, DGA, lateral movement) first
    assert ranked.index("10.10.1.250") < 18 and ranked.index("10.10.1.23") == 0


@pytest.mark.live
def test_analyze_live_interface(tmp_path):
    """Capture on loopback with tcpdump while a client sends UDP datagrams."""
    import socket
    import threading
    import time

    def talk() -> None:  # again and again: the capture starts once the program is up
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(14):
                time.sleep(0.4)
                for port in range(47000, 47010):
                    s.sendto(b"x" * 64, ("127.0.0.1", port))

    cfg = tmp_path / "c.toml"
    cfg.write_text('[learning]\nperiod = "1s"\n')
    threading.Thread(target=talk, daemon=True).start()
    res = fh(
        "analyze",
        "--interface",
        "lo",
        "--duration",
        "4",
        "--filter",
        "udp",
        "--out",
        str(tmp_path / "o"),
        "-c",
        str(cfg),
    )
    assert res.returncode == 0, res.stderr
    assert "live:lo" in res.stdout and "packets" in res.stdout
    ports = pl.read_parquet(tmp_path / "o" / "flows" / "**" / "*.parquet").get_column("dst_port")
    assert set(range(47000, 47010)) <= set(ports.to_list())


def test_interface_and_inputs_are_exclusive(tmp_path):
    res = fh("analyze", "x.pcap", "--interface", "lo", "--out", str(tmp_path))
    assert res.returncode == 2 and "not both" in res.stderr
    res = fh("analyze", "x.pcap", "--duration", "3", "--out", str(tmp_path))
    assert res.returncode == 2 and "go with --interface" in res.stderr


def test_zeek_log_folder_reads_conn_and_dns_and_counts_other_logs_as_ignored(shared_data, tmp_path):
    folder = shared_data / "labeled/slips_dataset/dataset_HEAD/test10-mixed-zeek-dir"
    res = fh("analyze", str(folder), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    lines = [" ".join(line.split()) for line in res.stdout.splitlines()]
    conn = next(line for line in lines if line.startswith(f"{folder}/conn.log"))
    assert "zeek" in conn and "ok" in conn
    dns = next(line for line in lines if line.startswith(f"{folder}/dns.log"))
    assert "dns │ 93 │ 0 │" in dns  # 93 transactions, no flows: passive DNS
    row = next(line for line in lines if line.startswith(f"{folder} "))
    others = sum(1 for p in folder.iterdir() if p.name not in ("conn.log", "dns.log"))
    assert f"folder │ 0 │ 0 │ 0 │ {others} │ ok" in row
    assert "unreadable" not in res.stdout
    assert (tmp_path / "pdns" / "pdns.parquet").is_file()
