"""Collector benchmark: NetFlow v5, v9 and IPFIX, flowhawk against nfcapd in one run.

For each protocol, export datagrams are built once from simulated flows (the demo's
network, scaled up) with flowhawk's encoders (nfcapd stores them record for record:
tests/collect/test_replay.py), then:

1. decode ceiling: the datagrams decoded from memory, one core, batches of 256;
2. end to end from memory: the collector's own processing with the datagrams put in
   its receive queue: decoded, normalized (stitched into biflows) and written to the
   Parquet archive by its archive thread; and the archive write alone: the flows it
   archived written again to Parquet, in records per CPU-second (the records they
   were stitched from), the part of the work nothing upstream can make cheaper;
3. sustained receive without loss over UDP on 127.0.0.1: a sender process loops the
   datagrams for 12 s at a fixed record rate (far longer than the 32 MiB socket buffer
   and the collector's queue can absorb); the highest rate at which the receiver stored
   every record sent is found by doubling then bisecting, for nfcapd (``-B 32 MiB``)
   and for flowhawk's collector (decode, normalize and archive included).

Prints records/s for each and the ratios flowhawk / nfcapd, and, for the highest
lossless run of each receiver, the CPU time it used per record (user + system, all its
threads): records per CPU-second is what one core could take if nothing else ran (the
sender shares the two cores here, and nfcapd's lossless rate is often the sender's
limit, not its own). As root it raises ``net.core.rmem_max`` to 32 MiB first (both
receivers ask for that buffer).

Run:  .venv/bin/python bench/bench_collect.py [--flows 500000] [--protocols v5,v9,ipfix]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from flowhawk import config
from flowhawk.archive import ArchiveWriter, dataset
from flowhawk.collect.collector import Collector
from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.dispatch import ExportDecoder
from flowhawk.collect.replay import ExportSettings, ExportStream
from flowhawk.demo import DEMO_DAY, DEMO_SEED
from flowhawk.demo.simulate import generate
from flowhawk.diagnostics import Diagnostics
from flowhawk.memory import reuse_freed_memory
from flowhawk.normalize import Normalizer

sys.path.insert(0, str(Path(__file__).parent))
from bench_analyze import scaled_streams

BUFFER = 32 << 20
SECONDS = 12.0  # sustained sending time: far more than socket and queue buffers can hold
SENDER = r"""
import socket, struct, sys, time
path, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
data = open(path, "rb").read()
dgrams, recs, i = [], [], 0
while i < len(data):
    n, r = struct.unpack_from("<II", data, i); i += 8
    dgrams.append(data[i:i + n]); recs.append(r); i += n
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
t0 = time.perf_counter(); sent = 0; send = s.sendto; dst = ("127.0.0.1", port)
while time.perf_counter() - t0 < seconds:
    for d, r in zip(dgrams, recs):
        send(d, dst); sent += r
        ahead = sent / rate - (time.perf_counter() - t0)
        if ahead > 0.001:
            time.sleep(ahead)
        if time.perf_counter() - t0 >= seconds:
            break
print(sent, time.perf_counter() - t0)
"""


def build(protocol: str, flows: pa.Table) -> tuple[list[bytes], int]:
    enc = ExportStream(ExportSettings(protocol=protocol)).encode(flows)
    return enc.datagrams, enc.records


def decode_ceiling(datagrams: list[bytes]) -> tuple[float, list]:
    dec = ExportDecoder()
    dec.decode(datagrams[:256], [0] * min(256, len(datagrams)), ExporterState("w"))  # warm up
    state, tables, n = ExporterState("192.0.2.1"), [], 0
    t = time.perf_counter()
    for i in range(0, len(datagrams), 256):
        part = datagrams[i : i + 256]
        res = dec.decode(part, [0] * len(part), state)
        tables.append(res.records)
        n += res.num_flows
    return n / (time.perf_counter() - t), tables


def end_to_end(datagrams: list[bytes]) -> tuple[float, float]:
    """The collector's own processing without sockets: the datagrams are put in its
    receive queue and it decodes, normalizes (stitching biflows) and archives them (its
    archive thread included), as it does from the network; (records/s, records per
    CPU-second of writing its archive again). A first run on a few datagrams warms up."""
    _collector_pass(datagrams[:2000])
    return _collector_pass(datagrams)


def _collector_pass(datagrams: list[bytes]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        collect = {"listen": ["127.0.0.1:0"], "metrics": "", "detect": False, "rollover": 0.5}
        col = Collector(config.from_dict({"collect": collect}), Path(d))
        now = time.time_ns() // 1000
        queue = col.receiver.queue
        t = time.perf_counter()
        for i in range(0, len(datagrams), 1000):  # as they would arrive, rolling over every 0.5 s
            queue.extend((dg, "192.0.2.1", now) for dg in datagrams[i : i + 1000])
            col.step()
        col.stop()  # decodes what is still queued, archives everything
        rate = col.totals.flows_decoded / (time.perf_counter() - t)
        archived = dataset(Path(d) / "flows").to_table()
        writer = ArchiveWriter(Path(d) / "again", "bench")
        cpu = time.process_time()
        writer.write(archived)
        return rate, col.totals.flows_decoded / (time.process_time() - cpu)


def write_feed(datagrams: list[bytes], records_of: list[int], path: Path) -> None:
    import struct

    with open(path, "wb") as fh:
        for d, r in zip(datagrams, records_of, strict=True):
            fh.write(struct.pack("<II", len(d), r))
            fh.write(d)


def send(feed: Path, port: int, rate: float) -> tuple[int, float]:
    """Records sent (the feed looped for SECONDS at ``rate``) and the achieved rate."""
    out = subprocess.run(
        [sys.executable, "-c", SENDER, str(feed), str(port), str(rate), str(SECONDS)],
        capture_output=True,
        text=True,
        check=True,
    )
    sent, elapsed = out.stdout.split()
    return int(sent), int(sent) / float(elapsed)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Run = tuple[bool, float, float]  # every record stored, achieved rate, CPU s per record


def nfcapd_lossless(feed: Path, rate: float) -> Run:
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        log = Path(d) / "log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                ["nfcapd", "-p", str(port), "-b", "127.0.0.1", "-B", str(BUFFER), "-w", d],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        while "Startup" not in log.read_text():
            time.sleep(0.05)
        cpu0 = cpu_seconds(proc.pid)
        sent, achieved = send(feed, port, rate)
        time.sleep(1.0)
        cpu = cpu_seconds(proc.pid) - cpu0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        got = sum(int(x) for x in re.findall(r"Flows: (\d+)", log.read_text()))
    return got == sent, achieved, cpu / max(sent, 1)


def flowhawk_lossless(feed: Path, rate: float) -> Run:
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        cfg = config.from_dict(
            {
                "collect": {
                    "listen": [f"127.0.0.1:{port}"],
                    "metrics": "",
                    "socket_buffer": BUFFER,
                    "rollover": 2.0,
                    "detect": False,  # receive, decode, normalize, archive: what nfcapd does
                }
            }
        )
        col = Collector(cfg, Path(d))
        col.start()
        col.run_in_thread()
        cpu0 = cpu_seconds(os.getpid())
        sent, achieved = send(feed, port, rate)
        deadline = time.monotonic() + 120
        while col.receiver.queue and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        col.stop()
        cpu = cpu_seconds(os.getpid()) - cpu0
    ok = col.totals.flows_decoded == sent and col.totals.kernel_drops == 0
    return ok, achieved, cpu / max(sent, 1)


def highest_lossless(check, feed: Path, start: float) -> tuple[float, float, bool]:  # type: ignore[no-untyped-def]
    """Double the target rate until records are lost (or the sender cannot go faster),
    then bisect 3 steps below the first loss. Returns the highest achieved lossless
    rate, the CPU seconds per record of that run, and whether the sender was the limit."""
    good, cpu, bad, rate = 0.0, float("nan"), None, start
    while bad is None:
        ok, achieved, per = check(feed, rate)
        if not ok:
            bad = rate
        elif achieved < 0.9 * rate:  # the sender's limit, not the receiver's
            return (achieved, per, True) if achieved > good else (good, cpu, True)
        else:
            good, cpu, rate = achieved, per, rate * 2
    for _ in range(3):
        mid = (good + bad) / 2
        ok, achieved, per = check(feed, mid)
        if ok and achieved > good:
            good, cpu = achieved, per
        elif not ok:
            bad = mid
    return good, cpu, False


def raise_rmem() -> str:
    try:
        with open("/proc/sys/net/core/rmem_max") as fh:
            current = int(fh.read())
        if current < BUFFER and os.geteuid() == 0:
            with open("/proc/sys/net/core/rmem_max", "w") as fh:
                fh.write(str(BUFFER))
            return f"net.core.rmem_max raised from {current} to {BUFFER}"
        return f"net.core.rmem_max = {current}"
    except OSError as exc:
        return f"net.core.rmem_max unchanged ({exc})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flows", type=int, default=500_000, help="biflows to export (approx.)")
    ap.add_argument("--protocols", default="v5,v9,ipfix")
    args = ap.parse_args()
    print(raise_rmem())
    reuse_freed_memory()  # as the collector does
    raw = generate(scaled_streams(max(1, args.flows // 110_000)), DEMO_DAY, 48, DEMO_SEED)
    flows = Normalizer(config.load(None), Diagnostics()).process(raw).slice(0, args.flows)
    print(f"{flows.num_rows:,} biflows from the scaled demo network")
    rows, cpu_rows = [], []
    for protocol in args.protocols.split(","):
        datagrams, records = build(protocol, flows)
        ceiling, _ = decode_ceiling(datagrams)
        e2e, write_ceiling = end_to_end(datagrams)
        per = records / len(datagrams)
        with tempfile.TemporaryDirectory() as d:
            feed = Path(d) / "feed"
            dec, state, counts = ExportDecoder(), ExporterState("x"), []
            for dg in datagrams:  # records per datagram, for the sender's pacing
                counts.append(dec.decode([dg], [0], state).num_flows)
            write_feed(datagrams, counts, feed)
            nf, nf_cpu, nf_sender = highest_lossless(nfcapd_lossless, feed, 100_000)
            fh, fh_cpu, _ = highest_lossless(flowhawk_lossless, feed, 50_000)
        rows.append((protocol, len(datagrams), records, per, ceiling, e2e, nf, fh))
        cpu_rows.append((protocol, nf_cpu, nf_sender, fh_cpu, write_ceiling))
        print(f"{protocol}: done", flush=True)
    print()
    print(
        f"{'protocol':<8} {'datagrams':>9} {'records':>9} {'rec/dg':>6} "
        f"{'decode ceiling':>15} {'e2e memory':>11} {'nfcapd lossless':>16} "
        f"{'flowhawk lossless':>18} {'ratio':>6}"
    )
    for p, n_dg, n_rec, per, ceil, e2e, nf, fh in rows:
        print(
            f"{p:<8} {n_dg:>9,} {n_rec:>9,} {per:>6.1f} {ceil / 1e6:>12.2f} M/s "
            f"{e2e / 1e6:>8.2f} M/s {nf / 1e6:>13.2f} M/s {fh / 1e6:>15.2f} M/s "
            f"{fh / nf if nf else float('nan'):>6.2f}"
        )
    print(
        "\nrecords/s; 'lossless' = every record sent at that rate was stored (flowhawk: "
        "decoded, normalized and archived); ratio = flowhawk / nfcapd lossless rate."
    )
    print(
        f"\n{'protocol':<8} {'nfcapd CPU/rec':>15} {'rec per CPU-s':>14} "
        f"{'flowhawk CPU/rec':>17} {'rec per CPU-s':>14} {'ratio':>6} "
        f"{'archive write alone':>20}"
    )
    for p, nf_cpu, nf_sender, fh_cpu, ceiling in cpu_rows:
        note = "  (nfcapd's lossless rate was the sender's limit)" if nf_sender else ""
        print(
            f"{p:<8} {nf_cpu * 1e6:>12.3f} us {1 / nf_cpu / 1e6:>11.2f} M "
            f"{fh_cpu * 1e6:>14.3f} us {1 / fh_cpu / 1e6:>11.2f} M {nf_cpu / fh_cpu:>6.2f} "
            f"{ceiling / 1e6:>13.2f} M rec/CPU-s{note}"
        )
    print(
        "CPU time per record at each receiver's highest lossless rate (all its threads); "
        "ratio = flowhawk's records per CPU-second / nfcapd's; archive write alone = "
        "records per CPU-second of writing the Parquet archive, nothing else."
    )
    print(
        "also: end to end from memory / nfcapd lossless = "
        + ", ".join(f"{p} {e2e / nf:.2f}" for p, _, _, _, _, e2e, nf, _ in rows if nf)
    )


if __name__ == "__main__":
    main()
