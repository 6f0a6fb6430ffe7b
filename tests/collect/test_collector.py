"""The collector end to end: exports in over UDP on 127.0.0.1, canonical flows out in the archive.

Exports come from flowhawk's own replay and from real exporters (softflowd, pmacct,
nfdump's nfreplay); where a real collector can judge, nfcapd receives the very same
datagrams and must agree with us per directional 5-tuple.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from flowhawk import config
from flowhawk.collect.collector import Collector
from flowhawk.collect.replay import ExportSettings, ExportStream, read_flows
from flowhawk.diagnostics import Diagnostics

CC1 = "labeled/slips_dataset/dataset_HEAD/test-cc/test-cc-capture-1.pcap"
DIRECTIONAL = ["src_ip", "dst_ip", "src_port", "dst_port", "proto"]


def collector_config(**collect) -> config.Config:
    settings = {
        "listen": ["127.0.0.1:0", "[::1]:0"],
        "metrics": "127.0.0.1:0",
        "rollover": 0.5,
        "checkpoint": 1,
        "batch_interval": 0.02,
        **collect,
    }
    return config.from_dict({"collect": settings})


def start(cfg: config.Config, data: Path) -> Collector:
    col = Collector(cfg, data)
    col.start()
    col.run_in_thread()
    return col


def port_of(col: Collector, family: int = socket.AF_INET) -> int:
    want = "[" if family == socket.AF_INET6 else "1"
    return next(p for a, p in col.ports() if a.startswith(want))


def send(datagrams: list[bytes], port: int, host: str = "127.0.0.1", pace: float = 0.0) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, (host, port))
            if pace:
                time.sleep(pace)


def archived(data: Path) -> pl.DataFrame:
    files = sorted((data / "flows").glob("date=*/hour=*/*.parquet"))
    assert files, "nothing archived"
    return pl.concat([pl.read_parquet(f) for f in files])


def directional(flows: pl.DataFrame) -> pl.DataFrame:
    """Biflows split into their two directions, summed per directional 5-tuple."""
    fwd = flows.select(*DIRECTIONAL, pkts="src_pkts", bytes="src_bytes")
    rev = flows.select(
        src_ip="dst_ip",
        dst_ip="src_ip",
        src_port="dst_port",
        dst_port="src_port",
        proto="proto",
        pkts="dst_pkts",
        bytes="dst_bytes",
    )
    both = pl.concat([fwd, rev]).filter(pl.col("pkts") > 0)
    return (
        both.group_by(DIRECTIONAL)
        .agg(pl.col("pkts").sum(), pl.col("bytes").sum())
        .sort(DIRECTIONAL)
    )


def canonical_flows(shared_data: Path, name: str = CC1) -> pl.DataFrame:
    table = read_flows([shared_data / name], config.load(None), Diagnostics(), None)
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


@pytest.mark.parametrize(
    "protocol,biflow", [("v5", False), ("v9", False), ("ipfix", False), ("ipfix", True)]
)
def test_replayed_export_archives_the_same_traffic(shared_data, tmp_path, protocol, biflow):
    flows = canonical_flows(shared_data)
    datagrams = (
        ExportStream(ExportSettings(protocol=protocol, biflow=biflow))
        .encode(flows.to_arrow())
        .datagrams
    )
    col = start(collector_config(), tmp_path)
    try:
        send(datagrams, port_of(col), pace=0.0002)
    finally:
        time.sleep(0.3)
        col.stop()
    got = archived(tmp_path)
    assert directional(got).equals(directional(flows.filter(pl.col("src_pkts") > 0)))
    assert col.totals.decode_errors == {}
    assert (got.get_column("exporter") == "127.0.0.1").all()


def test_ipv6_collector_socket_and_ipv6_flows(shared_data, tmp_path):
    flows = canonical_flows(shared_data, "conformance/ndpi_pcaps/pcap/http_ipv6.pcap")
    datagrams = ExportStream(ExportSettings(protocol="ipfix")).encode(flows.to_arrow()).datagrams
    col = start(collector_config(), tmp_path)
    try:
        send(datagrams, port_of(col, socket.AF_INET6), host="::1")
    finally:
        time.sleep(0.3)
        col.stop()
    got = archived(tmp_path)
    assert directional(got).equals(directional(flows))
    assert (got.get_column("exporter") == "::1").all()
    assert got.get_column("src_ip").str.contains(":").any()


def test_sflow_samples_scaled_by_rate(shared_data, tmp_path):
    flows = canonical_flows(shared_data)
    enc = ExportStream(ExportSettings(protocol="sflow", sampling=1)).encode(flows.to_arrow())
    col = start(collector_config(), tmp_path)
    try:
        send(enc.datagrams, port_of(col), pace=0.0001)
    finally:
        time.sleep(0.3)
        col.stop()
    got = directional(archived(tmp_path))
    want = directional(flows)
    # one sample per packet at 1-in-1 sampling: every packet of every direction is there
    assert got.select(*DIRECTIONAL, "pkts").equals(want.select(*DIRECTIONAL, "pkts"))


def test_templates_survive_a_restart(shared_data, tmp_path):
    flows = canonical_flows(shared_data).to_arrow()
    datagrams = (
        ExportStream(ExportSettings(protocol="v9", template_every=10_000)).encode(flows).datagrams
    )
    first, rest = datagrams[:1], datagrams[1:]
    col = start(collector_config(), tmp_path)
    send(first, port_of(col))
    time.sleep(0.3)
    col.stop()
    again = start(collector_config(), tmp_path)  # a new process would read the same file
    try:
        send(rest, port_of(again), pace=0.0002)
    finally:
        time.sleep(0.3)
        again.stop()
    assert again.totals.decode_errors == {}
    assert again.totals.flows_decoded > 0
    inventory = json.loads((tmp_path / "collector" / "exporters.json").read_text())
    assert inventory["exporters"]["127.0.0.1"]["templates"]


def test_bad_datagrams_are_counted_and_visible_in_metrics(shared_data, tmp_path):
    good = (
        ExportStream(ExportSettings(protocol="ipfix"))
        .encode(canonical_flows(shared_data).to_arrow())
        .datagrams
    )
    bad = [b"\x00\x0a\x00\x30" + os.urandom(44), b"garbage", good[1][:30], b"\x00\x05\x00\x10"]
    col = start(collector_config(), tmp_path)
    try:
        send(bad + good[:5], port_of(col))
        time.sleep(0.3)
        host, port = col.metrics_address
        text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    finally:
        col.stop()
    assert sum(col.totals.decode_errors.values()) >= 3
    assert "flowhawk_collector_decode_errors_total{reason=" in text
    assert 'flowhawk_collector_datagrams_total{protocol="ipfix"}' in text
    assert "flowhawk_collector_dropped_datagrams" in text
    assert col.totals.flows_decoded > 0


# -- real exporters ----------------------------------------------------------------------


def record_export(cmd: list[str], port: int, quiet_after: float = 2.0) -> list[bytes]:
    """Datagrams a real exporter sends to 127.0.0.1:``port`` while running ``cmd``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        s.bind(("127.0.0.1", port))
        s.settimeout(quiet_after)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        got: list[bytes] = []
        try:
            while True:
                try:
                    got.append(s.recvfrom(65535)[0])
                except TimeoutError:
                    if proc.poll() is not None:
                        break
        finally:
            proc.kill()
            proc.wait()
    return got


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nfcapd_receives(datagrams: list[bytes], tmp_path: Path) -> pl.DataFrame:
    """What nfcapd stores from ``datagrams``: one row per record (directional)."""
    out = tmp_path / "nfcapd"
    out.mkdir()
    port = free_port()
    log = open(tmp_path / "nfcapd.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["nfcapd", "-p", str(port), "-b", "127.0.0.1", "-w", str(out)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while "Startup" not in (tmp_path / "nfcapd.log").read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        send(datagrams, port, pace=0.0002)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()
    res = subprocess.run(
        ["nfdump", "-R", str(out), "-q", "-N", "-o", "fmt:%sa|%da|%sp|%dp|%pr|%pkt|%byt"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split("|") for line in res.stdout.splitlines() if line.strip()]
    df = pl.DataFrame(
        [[c.strip() for c in r] for r in rows],
        schema=["src_ip", "dst_ip", "src_port", "dst_port", "proto", "pkts", "bytes"],
        orient="row",
    )
    return df.with_columns(
        pl.col("src_port", "dst_port").cast(pl.Int32),
        pl.col("proto").cast(pl.Int16),
        pl.col("pkts", "bytes").cast(pl.Int64),
    )


def collector_receives(datagrams: list[bytes], tmp_path: Path) -> tuple[pl.DataFrame, Collector]:
    col = start(collector_config(), tmp_path / "fh")
    try:
        send(datagrams, port_of(col), pace=0.0002)
    finally:
        time.sleep(0.3)
        col.stop()
    return archived(tmp_path / "fh"), col


@pytest.mark.peer
@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_export_agrees_with_nfcapd(shared_data, tmp_path, version):
    port = free_port()
    stamp = ["-a"] if version == "5" else ["-A", "milli"]
    cmd = [
        "softflowd",
        "-c",
        "none",
        "-r",
        str(shared_data / CC1),
        "-n",
        f"127.0.0.1:{port}",
        "-v",
        version,
        *stamp,
        "-d",
        "-t",
        "maxlife=3600",
    ]
    datagrams = record_export(cmd, port)
    assert len(datagrams) > 10
    nf = nfcapd_receives(datagrams, tmp_path)
    ours, col = collector_receives(datagrams, tmp_path)
    assert col.totals.flows_decoded == nf.height  # record for record
    theirs = nf.group_by(DIRECTIONAL).agg(pl.col("pkts").sum(), pl.col("bytes").sum())
    assert directional(ours).equals(theirs.sort(DIRECTIONAL))
    assert col.totals.decode_errors == {}


@pytest.mark.peer
def test_pmacct_nfprobe_ipfix_and_sfprobe_sflow(shared_data, tmp_path):
    p_nf, p_sf = free_port(), free_port()
    conf = tmp_path / "pmacctd.conf"
    conf.write_text(
        f"daemonize: false\npcap_savefile: {shared_data / CC1}\npcap_savefile_wait: false\n"
        "plugins: nfprobe[n], sfprobe[s]\n"
        f"nfprobe_receiver[n]: 127.0.0.1:{p_nf}\nnfprobe_version[n]: 10\n"
        f"sfprobe_receiver[s]: 127.0.0.1:{p_sf}\nsfprobe_sampling_rate[s]: 1\n"
    )
    ipfix = record_export(["pmacctd", "-f", str(conf)], p_nf, quiet_after=3.0)
    assert len(ipfix) > 10
    nf = nfcapd_receives(ipfix, tmp_path)
    ours, col = collector_receives(ipfix, tmp_path)
    assert col.totals.flows_decoded == nf.height
    theirs = nf.group_by(DIRECTIONAL).agg(pl.col("pkts").sum(), pl.col("bytes").sum())
    assert directional(ours).equals(theirs.sort(DIRECTIONAL))
    sflow = record_export(["pmacctd", "-f", str(conf)], p_sf, quiet_after=3.0)
    assert sflow, "pmacct's sfprobe sent nothing"
    got, col = collector_receives(sflow, tmp_path / "sf")
    assert col.totals.decode_errors == {}
    assert got.height > 0 and (got.get_column("sampling") == 1).all()


@pytest.mark.peer
def test_nfreplay_of_an_nfcapd_file(shared_data, tmp_path):
    files = tmp_path / "nfpcapd"
    files.mkdir()
    subprocess.run(
        ["nfpcapd", "-r", str(shared_data / CC1), "-w", str(files)], capture_output=True, check=True
    )
    source = sorted(files.glob("nfcapd.*"))
    records = subprocess.run(
        ["nfdump", "-R", str(files), "-q", "-o", "fmt:%pr"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    col = start(collector_config(), tmp_path / "fh")
    try:
        for f in source:
            subprocess.run(
                [
                    "nfreplay",
                    "-r",
                    str(f),
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(port_of(col)),
                    "-v",
                    "9",
                    "-d",
                    "1000",
                ],
                capture_output=True,
                check=True,
            )
    finally:
        time.sleep(0.5)
        col.stop()
    assert col.totals.flows_decoded == len(records)
    assert col.totals.decode_errors == {}


# -- the command line ----------------------------------------------------------------------


def test_collect_command_then_exporters(shared_data, tmp_path):
    cfg = tmp_path / "c.toml"
    port = free_port()
    cfg.write_text(f'[collect]\nlisten = ["127.0.0.1:{port}"]\nmetrics = ""\nrollover = "1s"\n')
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowhawk",
            "collect",
            "-c",
            str(cfg),
            "--data",
            str(data),
            "--duration",
            "6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # startup
    rep = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowhawk",
            "replay",
            str(shared_data / CC1),
            "--to",
            f"127.0.0.1:{port}",
            "-p",
            "v9",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert rep.returncode == 0, rep.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "collecting on" in out and "archived" in out
    listing = subprocess.run(
        [sys.executable, "-m", "flowhawk", "exporters", "--data", str(data)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert listing.returncode == 0
    assert "127.0.0.1" in listing.stdout and "netflow9" in listing.stdout
    assert archived(data).height > 0


def test_kill_9_leaves_only_complete_parquet_files(shared_data, tmp_path):
    cfg = tmp_path / "c.toml"
    port = free_port()
    cfg.write_text(f'[collect]\nlisten = ["127.0.0.1:{port}"]\nmetrics = ""\nrollover = "0.2s"\n')
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowhawk", "collect", "-c", str(cfg), "--data", str(data), "-q"]
    )
    time.sleep(3)
    rep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowhawk",
            "replay",
            str(shared_data / CC1),
            "--to",
            f"127.0.0.1:{port}",
            "-p",
            "ipfix",
            "--loop",
            "--now",
            "--rate",
            "20000",
            "-q",
        ]
    )
    deadline = time.monotonic() + 30
    while len(list(data.glob("flows/date=*/hour=*/*.parquet"))) < 5:
        assert time.monotonic() < deadline, "no archive files appeared"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rep.kill()
    rep.wait()
    files = list(data.glob("flows/date=*/hour=*/*.parquet"))
    for f in files:
        assert pl.read_parquet(f).height > 0  # every visible file is complete
