"""``flowhawk replay`` against real collectors and dissectors, run as a user runs it.

NetFlow v5, v9 and IPFIX go to nfcapd (nfdump 1.7) on the loopback; what nfcapd stored
(``nfdump -o json``) must be exactly the records the input's flows call for: per
5-tuple and direction, packets, bytes and millisecond times, and nfcapd must count no
sequence error. sFlow datagrams are recorded from a socket and dissected by tshark.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from flowhawk import config
from flowhawk.collect.encode.ipfix import encode_ipfix
from flowhawk.collect.encode.netflow5 import encode_netflow5
from flowhawk.collect.encode.sflow import encode_sflow
from flowhawk.collect.replay import (
    ExportSettings,
    ExportStream,
    ReplayError,
    TokenBucket,
    parse_target,
    read_flows,
    replay,
)
from flowhawk.diagnostics import Diagnostics
from tests.collect.test_encode import parse_v5

PCAP = "labeled/slips_dataset/dataset_HEAD/test-cc/test-cc-capture-1.pcap"  # 299 TCP flows
ZEEK = "conformance/flow_text_formats/examples/conn.tab.log"  # IPv4 + IPv6, ICMPv6, 1970 times
V6PCAP = "conformance/ndpi_pcaps/pcap/http_ipv6.pcap"  # IPv6 TCP and UDP
ICMP = "conformance/ndpi_pcaps/pcap/icmp-tunnel.pcap"  # IPv4 echo request / reply

pytestmark = pytest.mark.peer


def fh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowhawk", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def free_port(family: socket.AddressFamily = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


class Nfcapd:
    """nfcapd listening on the loopback, writing into ``directory``."""

    def __init__(self, directory: Path, v6: bool = False):
        self.dir = directory / "nfcapd"
        self.dir.mkdir()
        self.port = free_port(socket.AF_INET6 if v6 else socket.AF_INET)
        self.log_path = directory / "nfcapd.log"
        family = ["-6", "-b", "::1"] if v6 else ["-b", "127.0.0.1"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                ["nfcapd", "-p", str(self.port), *family, "-w", str(self.dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while "Startup" not in self.log():
            assert self.proc.poll() is None, f"nfcapd exited: {self.log()}"
            assert time.monotonic() < deadline, f"nfcapd did not start: {self.log()}"
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        time.sleep(0.5)  # let nfcapd drain its socket before it stops reading
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def records(self) -> list[dict]:
        res = subprocess.run(
            ["nfdump", "-R", str(self.dir), "-o", "json"],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout or "[]")


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def stored(records: list[dict]) -> Counter:
    """(src, dst, sport, dport, proto, packets, bytes, first ms, last ms) per nfdump record."""
    out: Counter = Counter()
    for r in records:
        v6 = "src6_addr" in r
        src, dst = (r["src6_addr"], r["dst6_addr"]) if v6 else (r["src4_addr"], r["dst4_addr"])
        if r["proto"] in (1, 58):
            sport, dport = 0, r["icmp_type"] * 256 + r["icmp_code"]
        else:
            sport, dport = r["src_port"], r["dst_port"]
        out[
            (
                _ip(src),
                _ip(dst),
                sport,
                dport,
                r["proto"],
                r["in_packets"],
                r["in_bytes"],
                _ms(r["first"]),
                _ms(r["last"]),
            )
        ] += 1
    return out


ECHO_REPLY = {
    (1, 8): 0,
    (1, 13): 14,
    (1, 15): 16,
    (1, 17): 18,
    (58, 128): 129,
    (58, 130): 131,
    (58, 135): 136,
}  # request type -> reply type


def canonical_flows(paths: list[Path]) -> pl.DataFrame:
    diag = Diagnostics()
    tables = list(read_flows(paths, config.load(None), diag))
    assert not [s.failed for s in diag.inputs.values() if s.failed]
    df = pl.from_arrow(pa.concat_tables(tables))
    assert isinstance(df, pl.DataFrame)
    return df


def expected(paths: list[Path], ipv4_only: bool = False) -> Counter:
    """The unidirectional records the flows call for: client->server (unless the client
    sent nothing but the server did), server->client when the server sent packets."""
    out: Counter = Counter()
    for f in canonical_flows(paths).iter_rows(named=True):
        if ipv4_only and ":" in f["src_ip"] + f["dst_ip"]:
            continue
        first = int(f["ts_start"].timestamp() * 1_000_000) // 1000
        last = int(f["ts_end"].timestamp() * 1_000_000) // 1000
        src, dst, proto = _ip(f["src_ip"]), _ip(f["dst_ip"]), f["proto"]
        sport, dport = f["src_port"], f["dst_port"]
        if f["src_pkts"] > 0 or f["dst_pkts"] == 0:
            out[(src, dst, sport, dport, proto, f["src_pkts"], f["src_bytes"], first, last)] += 1
        if f["dst_pkts"] > 0:
            if proto in (1, 58):
                reply = ECHO_REPLY.get((proto, dport >> 8), dport >> 8)
                rsport, rdport = 0, reply * 256 + (dport & 0xFF)
            else:
                rsport, rdport = dport, sport
            out[(dst, src, rsport, rdport, proto, f["dst_pkts"], f["dst_bytes"], first, last)] += 1
    return out


@pytest.mark.parametrize(
    ("protocol", "extra", "v6_collector", "ident"),
    [
        ("v5", [], False, "engine id 7"),
        ("v9", [], False, "Domain: 7"),
        ("ipfix", [], False, "Observation domain 7"),
        ("ipfix", ["--max-datagram", "512"], True, "Observation domain 7"),
    ],
    ids=["v5", "v9", "ipfix", "ipfix-small-datagrams-to-ipv6-collector"],
)
def test_nfcapd_stores_exactly_the_flows_of_real_inputs(
    shared_data, tmp_path, protocol, extra, v6_collector, ident
):
    inputs = [shared_data / p for p in (PCAP, ZEEK, V6PCAP, ICMP)]
    want = expected(inputs, ipv4_only=protocol == "v5")
    collector = Nfcapd(tmp_path, v6=v6_collector)
    host = "[::1]" if v6_collector else "127.0.0.1"
    try:
        res = fh(
            "replay",
            *map(str, inputs),
            "--to",
            f"{host}:{collector.port}",
            "--protocol",
            protocol,
            "--source-id",
            "7",
            *extra,
        )
    finally:
        collector.stop()
    assert res.returncode == 0, res.stderr
    got = stored(collector.records())
    assert sum(got.values()) == sum(want.values())
    assert got == want, (want - got, got - want)
    summary = collector.log()
    assert ident in summary
    # nfcapd logs one statistics line per file it closes: sum them all
    stats = re.findall(r"Flows: (\d+), .*Sequence Errors: (\d+), Bad Packets: (\d+)", summary)
    totals = tuple(sum(int(x[i]) for x in stats) for i in range(3))
    assert stats and totals == (sum(want.values()), 0, 0), summary
    assert f"as {sum(want.values()):,} records" in res.stdout
    if protocol == "v5":
        v6_flows = canonical_flows(inputs).filter(pl.col("src_ip").str.contains(":")).height
        assert v6_flows > 0 and f"skipped {v6_flows} IPv6 flows" in res.stdout
    # times survive to the millisecond, including the 1970 times of the Zeek sample
    assert min(k[7] for k in got) < 100_000


class Receiver:
    """A UDP socket on the loopback that keeps every datagram with its arrival time."""

    def __init__(self, family: socket.AddressFamily = socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.got.append((time.perf_counter(), data))

    def stop(self) -> list[bytes]:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return [d for _, d in self.got]

    def write_pcap(self, path: Path, port: int = 6343) -> None:
        write_pcap(path, [d for _, d in self.got], port, [t for t, _ in self.got])


def write_pcap(path: Path, datagrams: list[bytes], port: int, times: list[float] | None = None):
    """The datagrams as IPv4/UDP packets to ``port`` (raw IP link type), for tshark."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        for i, d in enumerate(datagrams):
            t = times[i] if times else 1_700_000_000 + i
            udp = struct.pack("!HHHH", 40000, port, 8 + len(d), 0) + d
            ip = (
                struct.pack(
                    "!BBHHHBBH4s4s",
                    0x45,
                    0,
                    20 + len(udp),
                    i & 0xFFFF,
                    0,
                    64,
                    17,
                    0,
                    b"\x7f\0\0\x01",
                    b"\x7f\0\0\x01",
                )
                + udp
            )
            f.write(struct.pack("<IIII", int(t), int(t % 1 * 1e6), len(ip), len(ip)) + ip)


def tshark_json(path: Path, decode_as: str) -> list[dict]:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-d", decode_as, "-T", "json", "--no-duplicate-keys"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _entries(tree: dict, prefix: str) -> list[dict]:
    out = []
    for key, value in tree.items():
        if key.startswith(prefix):
            out.extend(value if isinstance(value, list) else [value])
    return out


def test_sflow_datagrams_dissect_in_tshark(shared_data, tmp_path):
    inputs = [shared_data / PCAP, shared_data / V6PCAP]
    rx = Receiver()
    res = fh(
        "replay",
        *map(str, inputs),
        "--to",
        f"127.0.0.1:{rx.port}",
        "--protocol",
        "sflow",
        "--sampling",
        "10",
        "--agent",
        "192.0.2.9",
        "--source-id",
        "3",
    )
    datagrams = rx.stop()
    assert res.returncode == 0, res.stderr
    cap = tmp_path / "sflow.pcap"
    rx.write_pcap(cap)
    packets = tshark_json(cap, "udp.port==6343,sflow")
    assert len(packets) == len(datagrams) > 0
    assert f"in {len(datagrams):,} datagrams" in res.stdout

    samples, seqs = Counter(), []
    for p in packets:
        layers = p["_source"]["layers"]
        assert "_ws.malformed" not in layers["frame"]["frame.protocols"]
        sf = layers["sflow"]
        assert (sf["sflow_245.version"], sf["sflow_245.agent"]) == ("5", "192.0.2.9")
        assert sf["sflow_245.sub_agent_id"] == "3"
        seqs.append(int(sf["sflow_245.sequence_number"]))
        flow_samples = _entries(sf, "Flow sample")
        counter_samples = _entries(sf, "Counters sample")
        assert int(sf["sflow_245.numsamples"]) == len(flow_samples) + len(counter_samples)
        for s in flow_samples:
            seq = int(s["sflow.flow_sample.sequence_number"])
            assert s["sflow.flow_sample.sampling_rate"] == "10"
            assert int(s["sflow.flow_sample.sample_pool"]) == 10 * seq
            assert s["sflow.flow_sample.dropped_packets"] == "0"
            head = s["Raw packet header"]
            assert head["sflow_245.header_protocol"] == "1"
            tree = head["sflow_245.header_tree"]
            assert "eth" in tree
            ip = tree.get("ip") or tree["ipv6"]
            src = ip.get("ip.src") or ip["ipv6.src"]
            dst = ip.get("ip.dst") or ip["ipv6.dst"]
            l4 = tree.get("tcp") or tree.get("udp")
            pre = "tcp" if "tcp" in tree else "udp"
            proto = 6 if pre == "tcp" else 17
            samples[
                (_ip(src), _ip(dst), int(l4[f"{pre}.srcport"]), int(l4[f"{pre}.dstport"]), proto)
            ] += 1
    assert seqs == list(range(1, len(packets) + 1))

    want: Counter = Counter()
    for f in canonical_flows(inputs).iter_rows(named=True):
        fwd = (_ip(f["src_ip"]), _ip(f["dst_ip"]), f["src_port"], f["dst_port"], f["proto"])
        rev = (fwd[1], fwd[0], fwd[3], fwd[2], fwd[4])
        want[fwd] += math.ceil(f["src_pkts"] / 10)
        want[rev] += math.ceil(f["dst_pkts"] / 10)
    want = +want
    assert samples == want
    assert f"as {sum(want.values()):,} flow samples" in res.stdout


def _tshark_time_us(text: str) -> int:
    """'Nov 23, 2015 08:58:43.954061031 UTC' -> epoch microseconds (truncated)."""
    stamp, frac = text.removesuffix(" UTC").split(".")
    t = datetime.strptime(stamp, "%b %d, %Y %H:%M:%S").replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000 + int(frac[:6].ljust(6, "0"))


@pytest.mark.parametrize(
    ("precision", "biflow"), [("ms", True), ("us", False), ("ns", True)], ids=str
)
def test_ipfix_dissects_in_tshark_with_reverse_elements_and_fine_times(
    shared_data, tmp_path, precision, biflow
):
    flows = pa.concat_tables(
        list(
            read_flows([shared_data / V6PCAP, shared_data / ICMP], config.load(None), Diagnostics())
        )
    )
    enc = encode_ipfix(flows, time_precision=precision, biflow=biflow, domain=5)
    cap = tmp_path / "ipfix.pcap"
    write_pcap(cap, enc.datagrams, 4739)
    got: Counter = Counter()
    for p in tshark_json(cap, "udp.port==4739,cflow"):
        cflow = p["_source"]["layers"]["cflow"]
        assert cflow["cflow.od_id"] == "5"
        for key, data_set in cflow.items():
            if not key.startswith("Set") or "Template" in key:
                continue
            for name, f in data_set.items():
                if not name.startswith("Flow"):
                    continue
                v6 = "cflow.srcaddrv6" in f
                src, dst = (
                    (f["cflow.srcaddrv6"], f["cflow.dstaddrv6"])
                    if v6
                    else (f["cflow.srcaddr"], f["cflow.dstaddr"])
                )
                pkts, octets = f["cflow.packets"], f["cflow.octets"]
                pkts = [int(x) for x in (pkts if isinstance(pkts, list) else [pkts])]
                octets = [int(x) for x in (octets if isinstance(octets, list) else [octets])]
                times = f["cflow.timedelta_tree"]
                got[
                    (
                        _ip(src),
                        _ip(dst),
                        int(f["cflow.srcport"]),
                        int(f["cflow.dstport"]),
                        int(f["cflow.protocol"]),
                        tuple(pkts),
                        tuple(octets),
                        _tshark_time_us(times["cflow.abstimestart"]),
                        _tshark_time_us(times["cflow.abstimeend"]),
                    )
                ] += 1
    want: Counter = Counter()
    for f in canonical_flows([shared_data / V6PCAP, shared_data / ICMP]).iter_rows(named=True):
        start = int(f["ts_start"].timestamp() * 1_000_000)
        end = int(f["ts_end"].timestamp() * 1_000_000)
        if precision == "ms":
            start, end = start // 1000 * 1000, end // 1000 * 1000
        key = (_ip(f["src_ip"]), _ip(f["dst_ip"]), f["src_port"], f["dst_port"], f["proto"])
        if biflow:
            want[
                (*key, (f["src_pkts"], f["dst_pkts"]), (f["src_bytes"], f["dst_bytes"]), start, end)
            ] += 1
            continue
        if f["src_pkts"] or not f["dst_pkts"]:
            want[(*key, (f["src_pkts"],), (f["src_bytes"],), start, end)] += 1
        if f["dst_pkts"]:
            sport, dport = key[2], key[3]
            if key[4] in (1, 58):
                reply = ECHO_REPLY.get((key[4], dport >> 8), dport >> 8)
                rev = (key[1], key[0], 0, reply * 256 + (dport & 0xFF), key[4])
            else:
                rev = (key[1], key[0], dport, sport, key[4])
            want[(*rev, (f["dst_pkts"],), (f["dst_bytes"],), start, end)] += 1
    assert got == want


def test_sflow_round_trip_through_the_sflow_decoder(shared_data):
    from flowhawk.collect.decode.base import ExporterState
    from flowhawk.collect.decode.sflow import SFlowDecoder

    flows = pa.concat_tables(
        list(
            read_flows([shared_data / PCAP, shared_data / V6PCAP], config.load(None), Diagnostics())
        )
    )
    enc = encode_sflow(flows, rate=10, counter_every=5)
    res = SFlowDecoder().decode(enc.datagrams, [0] * len(enc.datagrams), ExporterState("::1"))
    assert not res.errors
    rows = pl.from_arrow(res.flows)
    assert isinstance(rows, pl.DataFrame)
    assert rows.height == enc.records
    assert set(rows.get_column("sampling").to_list()) == {10}
    assert (rows.get_column("src_pkts") == 10).all()
    got = Counter(rows.select("src_ip", "dst_ip", "src_port", "dst_port", "proto").iter_rows())
    df = pl.from_arrow(flows)
    want: Counter = Counter()
    for f in df.iter_rows(named=True):
        want[(f["src_ip"], f["dst_ip"], f["src_port"], f["dst_port"], f["proto"])] += math.ceil(
            f["src_pkts"] / 10
        )
        want[(f["dst_ip"], f["src_ip"], f["dst_port"], f["src_port"], f["proto"])] += math.ceil(
            f["dst_pkts"] / 10
        )
    assert got == +want
    assert res.counters is not None and res.counters.num_rows > 0


def test_rate_limit_holds_within_ten_percent(shared_data):
    rx = Receiver()
    rate = 150.0  # 299 flows: about 2 s
    res = fh(
        "replay",
        str(shared_data / PCAP),
        "--to",
        f"127.0.0.1:{rx.port}",
        "--protocol",
        "ipfix",
        "--biflow",
        "--rate",
        f"{rate:g}",
    )
    rx.stop()
    assert res.returncode == 0, res.stderr
    total = int(re.search(r"sent ([\d,]+) flows", res.stdout)[1].replace(",", ""))
    # IPFIX biflow: one record per flow and the sequence number counts records before
    seqs = [struct.unpack("!I", d[8:12])[0] for _, d in rx.got]
    times = [t for t, _ in rx.got]
    assert len(seqs) > 10 and seqs == sorted(seqs)
    done = [*seqs[1:], total]  # flows sent once each datagram is out
    measured = (done[-1] - done[0]) / (times[-1] - times[0])
    assert abs(measured - rate) / rate < 0.10, measured
    assert total / rate * 0.9 < times[-1] - times[0] + (done[0] / rate) < total / rate * 1.1


def test_ipv6_target_and_hostname(shared_data):
    rx = Receiver(socket.AF_INET6)
    res = fh("replay", str(shared_data / ZEEK), "--to", f"[::1]:{rx.port}", "-p", "v9")
    datagrams = rx.stop()
    assert res.returncode == 0, res.stderr
    assert datagrams and all(d[:2] == b"\x00\x09" for d in datagrams)
    assert f"in {len(datagrams):,} datagrams" in res.stdout
    rx = Receiver()
    res = fh("replay", str(shared_data / ZEEK), "--to", f"localhost:{rx.port}", "-p", "v5")
    assert res.returncode == 0 and rx.stop()


def test_cli_errors_are_clear(shared_data, tmp_path):
    zeek = str(shared_data / ZEEK)
    for target in ("127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "::1:2055", ":2055", "h:p"):
        res = fh("replay", zeek, "--to", target, "-p", "v9")
        assert res.returncode == 2, target
        assert "HOST:PORT" in res.stderr or "brackets" in res.stderr, res.stderr
    res = fh("replay", zeek, "--to", "127.0.0.1:2055", "-p", "v7")
    assert res.returncode == 2 and "unknown protocol 'v7'" in res.stderr
    res = fh("replay", zeek, "--to", "127.0.0.1:2055", "-p", "v9", "--sampling", "10")
    assert res.returncode == 2 and "sFlow only" in res.stderr
    res = fh("replay", zeek, "--to", "127.0.0.1:2055", "-p", "v5", "--source-id", "300")
    assert res.returncode == 2 and "source id" in res.stderr
    res = fh("replay", zeek, "--to", "no-such-host.invalid:2055", "-p", "v9")
    assert res.returncode == 2 and "cannot resolve" in res.stderr
    missing = tmp_path / "missing.pcap"
    res = fh("replay", str(missing), "--to", "127.0.0.1:2055", "-p", "ipfix")
    assert res.returncode == 1
    assert "no flows could be read" in res.stderr and "does not exist" in res.stderr
    res = fh("replay", "--help")
    assert res.returncode == 0 and "--protocol" in res.stdout and "statistical" in res.stdout


# -- the component, in-process -----------------------------------------------------------


def test_parse_target():
    assert parse_target("127.0.0.1:2055") == ("127.0.0.1", 2055)
    assert parse_target("[2001:db8::1]:4739") == ("2001:db8::1", 4739)
    assert parse_target("collector.example:6343") == ("collector.example", 6343)
    for bad in ("2001:db8::1:4739", "host", "host:", "host:65536"):
        with pytest.raises(ReplayError):
            parse_target(bad)


def test_token_bucket_paces_to_the_rate_with_a_fake_clock():
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(100.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(50):
        bucket.take(10)  # 500 flows at 100/s
    assert now[0] == pytest.approx(5.0)
    now[0] += 60  # idle: credit is capped at the burst
    start = now[0]
    for _ in range(50):
        bucket.take(10)
    assert now[0] - start == pytest.approx(5.0 - bucket.burst / 100, abs=0.01)


def test_export_stream_continues_sequences_and_reboots_when_time_jumps(shared_data):
    flows = next(read_flows([shared_data / PCAP], config.load(None), Diagnostics()))
    stream = ExportStream(ExportSettings(protocol="v5"))
    a, b = stream.encode(flows), stream.encode(flows)
    heads = [parse_v5(d)[0] for d in a.datagrams + b.datagrams]
    assert heads[len(a.datagrams)]["sequence"] == a.records
    boot = stream.boot_us
    later = flows.set_column(
        0,
        "ts_start",
        pa.compute.add(flows["ts_start"], pa.scalar(60 * 86400 * 10**6, pa.duration("us"))),
    )
    later = later.set_column(
        1,
        "ts_end",
        pa.compute.add(later["ts_end"], pa.scalar(60 * 86400 * 10**6, pa.duration("us"))),
    )
    c = stream.encode(later)
    assert stream.reboots == 1 and stream.boot_us > boot
    _, recs = parse_v5(c.datagrams[0])
    assert recs[0]["first_ms"] == (flows["ts_start"][0].value // 1000) + 60 * 86400 * 1000


def test_loop_moves_each_round_later_and_now_moves_to_the_present(shared_data):
    sent: list[bytes] = []

    def sender(d: bytes) -> None:
        sent.append(d)
        if len(sent) > 50:
            raise KeyboardInterrupt

    settings = ExportSettings(protocol="v5")
    result = replay(
        [shared_data / ZEEK], "ignored:1", settings, config.load(None), loop=True, sender=sender
    )
    assert result.interrupted and result.stats.rounds >= 2
    period = result.shifts[1] - result.shifts[0]
    assert period > 0 and period % 1_000_000 == 0
    per_round = len(
        encode_netflow5(
            pa.concat_tables(
                list(read_flows([shared_data / ZEEK], config.load(None), Diagnostics()))
            )
        ).datagrams
    )
    first = [r["first_ms"] for d in sent[:per_round] for r in parse_v5(d)[1]]
    again = [r["first_ms"] for d in sent[per_round : 2 * per_round] for r in parse_v5(d)[1]]
    assert [x + period // 1000 for x in first] == again

    sent.clear()
    before = time.time()
    replay([shared_data / ZEEK], "ignored:1", settings, config.load(None), now=True, sender=sender)
    starts = [r["first_ms"] for d in sent for r in parse_v5(d)[1]]
    assert abs(min(starts) / 1000 - before) < 5
