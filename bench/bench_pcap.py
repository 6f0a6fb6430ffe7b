"""Benchmark: pcap to flows with flowhawk's meter, nfdump's nfpcapd and softflowd.

What it measures, in one run on the same capture of >= 2 M packets: wall time, best of
3, of

- flowhawk: ``read_capture`` (flowhawk.sources.pcap.source), the product path from the
  file to raw-flow Arrow tables (record scan, decode, flow meter, table building),
  in this process after a warm-up, so numba compilation is excluded; the one-off
  compile (fresh cache) and the load of cached kernels (a new process) are timed apart;
- ``nfpcapd -r FILE -w DIR -e 1800,60`` writing nfcapd files;
- ``softflowd -r FILE -n 127.0.0.1:PORT -v 9`` exporting to a UDP socket this script
  drains, with the same timeouts (its own statistics confirm every packet was read);

and prints packets/s, flows/s and the ratios flowhawk/nfpcapd and flowhawk/softflowd
(target: >= 1.0x nfpcapd). ``--profile`` adds flowhawk's time per stage.

The input is built once and cached (never committed) under $FLOWHAWK_BENCH_DIR
(default /tmp/flowhawk-bench): real Ethernet captures from ../shared/data replicated
with timestamps shifted per copy and IP addresses changed per copy (second and third
octet XOR the copy number) so copies never merge. ``--overlap N`` runs N copies at the
same time (N times more concurrent flows) instead of one after the other.

Run:  .venv/bin/python bench/bench_pcap.py [--packets 2000000] [--repeat 3] [--overlap 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Same numba cache as flowhawk's kernel modules use; must be set before numba loads.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "flowhawk" / "numba"))

import numba
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = Path(os.environ.get("FLOWHAWK_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH = Path(os.environ.get("FLOWHAWK_BENCH_DIR", "/tmp/flowhawk-bench"))
SOURCES = ["labeled/slips_dataset/dataset_HEAD/test-cc/test-cc-capture-1.pcap"]
MIXED = [  # more protocols and addresses, all Ethernet classic pcaps
    *SOURCES,
    "labeled/slips_dataset/dataset_HEAD/test7-malicious.pcap",
    "conformance/ndpi_pcaps/pcap/1kxun.pcap",
    "conformance/ndpi_pcaps/pcap/reddit.pcap",
    "conformance/ndpi_pcaps/pcap/wechat.pcap",
    "conformance/ndpi_pcaps/pcap/telegram.pcap",
    "conformance/ndpi_pcaps/pcap/ultrasurf.pcap",
]
TIMEOUTS = {"active_timeout": 1800, "idle_timeout": 60, "tcp_idle_timeout": 300}


# ---------------------------------------------------------------- building the input


def _records(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from flowhawk.sources.pcap.capfile import RecordScanner

    data = np.fromfile(path, dtype=np.uint8)
    sc = RecordScanner(bytes(data[:64]))
    assert sc.kind == "pcap" and sc.linktype == 1, f"{path}: need Ethernet classic pcap"
    recs, _, _ = sc.scan(data, sc.start, len(data), 1 << 24)
    return data, recs.offset, recs.caplen.astype(np.int64), recs.ts_us


@numba.njit(cache=True)
def _write(src, off, length, ts, mask, out):  # pragma: no cover - a build tool
    """pcap records for (offset, length, timestamp, address mask) rows into ``out``."""
    p = 0
    for i in range(off.shape[0]):
        sec, usec = ts[i] // 1_000_000, ts[i] % 1_000_000
        n = length[i]
        for k in range(4):
            out[p + k] = (sec >> (8 * k)) & 0xFF
            out[p + 4 + k] = (usec >> (8 * k)) & 0xFF
            out[p + 8 + k] = (n >> (8 * k)) & 0xFF
            out[p + 12 + k] = (n >> (8 * k)) & 0xFF
        p += 16
        out[p : p + n] = src[off[i] : off[i] + n]
        # Change the addresses: IPv4 bytes 1-2, IPv6 bytes 2-3 of source and destination.
        q = p + 12
        et = (np.int64(out[q]) << 8) | out[q + 1]
        if et == 0x8100 and n >= 18:
            q += 4
            et = (np.int64(out[q]) << 8) | out[q + 1]
        q += 2
        hi, lo = (mask[i] >> 8) & 0xFF, mask[i] & 0xFF
        if et == 0x0800 and q + 20 <= p + n:
            for a in (q + 12, q + 16):
                out[a + 1] ^= hi
                out[a + 2] ^= lo
        elif et == 0x86DD and q + 40 <= p + n:
            for a in (q + 8, q + 24):
                out[a + 2] ^= hi
                out[a + 3] ^= lo
        p += n
    return p


def build_capture(sources: list[str], packets: int, overlap: int) -> Path:
    name = f"replay-{packets}-{overlap}-{len(sources)}.pcap"
    path = BENCH / name
    if path.exists():
        return path
    BENCH.mkdir(parents=True, exist_ok=True)
    parts = [_records(DATA / s) for s in sources]
    # One template: the sources one after the other, each starting 1 s after the last.
    bufs, offs, lens, tss, base, t0 = [], [], [], [], 0, 0
    for data, off, length, ts in parts:
        bufs.append(data)
        offs.append(off + base)
        lens.append(length)
        tss.append(ts - ts.min() + t0)
        base += len(data)
        t0 = int(tss[-1].max()) + 1_000_000
    src = np.concatenate(bufs)
    off, length, ts = np.concatenate(offs), np.concatenate(lens), np.concatenate(tss)
    span = int(ts.max()) + 1_000_000
    copies = -(-packets // len(off))
    step = span // overlap
    start = 1_700_000_000_000_000
    copy = np.repeat(np.arange(copies, dtype=np.int64), len(off))
    rec = np.tile(np.arange(len(off), dtype=np.int64), copies)
    out_ts = start + copy * step + ts[rec]
    order = np.argsort(out_ts, kind="stable")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(
            np.array([0xA1B2C3D4], "<u4").tobytes()
            + np.array([2, 4], "<u2").tobytes()
            + np.array([0, 0, 262144, 1], "<u4").tobytes()
        )
        for i in range(0, len(order), 200_000):
            sel = order[i : i + 200_000]
            r = rec[sel]
            out = np.empty(int((length[r] + 16).sum()), dtype=np.uint8)
            n = _write(src, off[r], length[r], out_ts[sel], copy[sel], out)
            fh.write(out[:n].tobytes())
    tmp.rename(path)
    return path


# ---------------------------------------------------------------- the three meters


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def run_flowhawk(path: Path) -> tuple[int, int]:
    from flowhawk.diagnostics import Diagnostics
    from flowhawk.sources.base import ReadContext
    from flowhawk.sources.pcap.source import read_capture

    ctx = ReadContext(Diagnostics(), options=dict(TIMEOUTS))
    flows = sum(t.num_rows for t in read_capture(path, ctx, "pcap"))
    st = ctx.diagnostics.inputs[str(path)]
    return st.packets + st.skipped_total + sum(st.ignored.values()), flows


def jit_times() -> tuple[float, float]:
    """Seconds for a first read in a new process: with an empty numba cache, and cached."""
    small = DATA / SOURCES[0]
    code = (
        f"import sys, time; t = time.perf_counter(); sys.path.insert(0, {str(HERE)!r}); "
        f"import bench_pcap as b; b.run_flowhawk(__import__('pathlib').Path({str(small)!r}));"
        " print(time.perf_counter() - t)"
    )
    out = []
    with tempfile.TemporaryDirectory() as cache:
        for env in ({"NUMBA_CACHE_DIR": cache}, {"NUMBA_CACHE_DIR": cache}):
            r = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            )
            out.append(float(r.stdout.split()[-1]))
    return out[0], out[1]


def run_nfpcapd(path: Path) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(
            ["nfpcapd", "-r", str(path), "-w", d, "-e", "1800,60"],
            capture_output=True,
            text=True,
            check=True,
        )
        processed = int(re.search(r"Total: Processed: (\d+)", r.stdout + r.stderr).group(1))
        stat = subprocess.run(["nfdump", "-R", d, "-I"], capture_output=True, text=True).stdout
        flows = int(re.search(r"^Flows: (\d+)", stat, re.M).group(1))
    return processed, flows


def run_softflowd(path: Path) -> tuple[int, int]:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(0.2)
    port = sink.getsockname()[1]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                sink.recv(65536)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        with tempfile.TemporaryDirectory() as d:
            cmd = [
                "softflowd",
                "-r",
                str(path),
                "-n",
                f"127.0.0.1:{port}",
                "-v",
                "9",
                "-d",
                "-m",
                "2000000",
                "-c",
                "none",
                "-p",
                f"{d}/pid",
                "-t",
                "maxlife=1800",
                "-t",
                "tcp=300",
                "-t",
                "udp=60",
                "-t",
                "icmp=60",
                "-t",
                "general=60",
                "-t",
                "tcp.rst=10",
                "-t",
                "tcp.fin=10",
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=d)
    finally:
        stop.set()
        thread.join()
        sink.close()
    text = r.stdout + r.stderr
    packets = sum(int(m) for m in re.findall(r"\(\d+\):\s+\d+\s+(\d+)", text))
    flows = int(re.search(r"flushed =\s+(\d+)", text).group(1))
    expired = re.search(r"expired =\s+(\d+)", text)
    return packets, flows + (int(expired.group(1)) if expired else 0)


def profile(path: Path) -> None:
    """flowhawk's time per stage, on the same windows and batches as read_capture."""
    from flowhawk.diagnostics import Diagnostics
    from flowhawk.sources.base import ReadContext
    from flowhawk.sources.pcap import source
    from flowhawk.sources.pcap.capfile import RecordScanner
    from flowhawk.sources.pcap.decode import decode
    from flowhawk.sources.pcap.meter import FlowMeter

    spent = dict.fromkeys(["read file", "scan records", "decode", "meter", "arrow table"], 0.0)

    def timed(stage, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        spent[stage] += time.perf_counter() - t
        return result

    scan, add, flush, table = (
        RecordScanner.scan,
        FlowMeter.add,
        FlowMeter.flush,
        source.flows_table,
    )
    RecordScanner.scan = lambda self, *a: timed("scan records", scan, self, *a)
    FlowMeter.add = lambda self, p: timed("meter", add, self, p)
    FlowMeter.flush = lambda self: timed("meter", flush, self)
    source.flows_table = lambda *a: timed("arrow table", table, *a)
    import flowhawk.sources.pcap.decode as dec

    dec.decode = lambda *a: timed("decode", decode, *a)
    try:
        ctx = ReadContext(Diagnostics(), options=dict(TIMEOUTS))
        t = time.perf_counter()
        for _ in source.read_capture(path, ctx, "pcap"):
            pass
        total = time.perf_counter() - t
    finally:
        RecordScanner.scan, FlowMeter.add, FlowMeter.flush = scan, add, flush
        source.flows_table, dec.decode = table, decode
    with open(path, "rb") as fh:  # the file read alone, as read_capture does it
        buf = bytearray(source.DEFAULT_WINDOW)
        t = time.perf_counter()
        while fh.readinto(buf):
            pass
        spent["read file"] = time.perf_counter() - t
    for stage, s in spent.items():
        print(f"  {stage:<14} {s:7.3f} s")
    print(f"  {'total':<14} {total:7.3f} s (the rest: Python glue and diagnostics)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--overlap", type=int, default=1)
    ap.add_argument("--mixed", action="store_true", help="replicate several captures")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    path = build_capture(MIXED if args.mixed else SOURCES, args.packets, args.overlap)
    print(f"input: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    cold, cached = jit_times()
    print(
        f"flowhawk first read in a new process: {cold:.2f} s with an empty numba cache "
        f"(compilation), {cached:.2f} s with the cache"
    )
    run_flowhawk(DATA / SOURCES[0])  # warm-up: kernels loaded
    results = {}
    for name, fn in [
        ("flowhawk", run_flowhawk),
        ("nfpcapd", run_nfpcapd),
        ("softflowd", run_softflowd),
    ]:
        wall, (pkts, flows) = _best(lambda fn=fn: fn(path), args.repeat)
        results[name] = (wall, pkts, flows)
    n = results["flowhawk"][1]
    print(
        f"\n{'meter':<10} {'wall s':>8} {'packets':>10} {'Mpkt/s':>8} {'flows':>9} {'kflows/s':>9}"
    )
    for name, (wall, pkts, flows) in results.items():
        print(
            f"{name:<10} {wall:8.3f} {pkts:10d} {pkts / wall / 1e6:8.2f} {flows:9d} "
            f"{flows / wall / 1e3:9.1f}"
        )
        if pkts != n:
            print(f"  warning: {name} read {pkts} packets, flowhawk {n}")
    fh = results["flowhawk"][0]
    for peer in ("nfpcapd", "softflowd"):
        print(f"flowhawk / {peer}: {results[peer][0] / fh:.2f}x (packets/s ratio)")
    if args.profile:
        print("\nflowhawk stages (one more run, timed per stage):")
        profile(path)


if __name__ == "__main__":
    main()
