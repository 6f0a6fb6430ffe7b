"""End-to-end benchmark: `flowhawk analyze` on 10 million flows.

Generates (once, cached under $FLOWHAWK_BENCH_DIR, default /tmp/flowhawk-bench) a Zeek
conn.log of about 10 M flows from the demo simulator scaled up to thousands of hosts,
then runs `flowhawk analyze` on it as a user would and reports wall time, flows/s,
the time of each stage (from the run's summary), and the peak resident memory.

With ``--context``, analyze runs twice more, with and without the context of events
(hops and relays of risky north-south events, read back from the archive), and the
ratio of their wall times is the context's cost.

Run:  .venv/bin/python bench/bench_analyze.py [--flows 10000000] [--keep] [--context]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from flowhawk.demo import DEMO_DAY, DEMO_SEED
from flowhawk.demo.scenario import streams
from flowhawk.demo.simulate import generate
from flowhawk.demo.zeekfmt import write_conn_log

BENCH = Path(os.environ.get("FLOWHAWK_BENCH_DIR", "/tmp/flowhawk-bench"))


def scaled_streams(factor: int) -> list:
    """The demo's streams with ``factor`` times more clients (distinct addresses)."""
    out = []
    for s in streams():
        clients = list(s.clients)
        if len(clients) > 1 or s.rate > 0:
            clients = [_shift(c, k) for k in range(factor) for c in s.clients]
        out.append(replace(s, clients=clients))
    return out


def _shift(ip: str, k: int) -> str:
    a, b, c, d = (int(x) for x in ip.split("."))
    n = ((a << 24) | (b << 16) | (c << 8) | d) + (k << 8) * (1 if a == 10 else 0)
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))


def make_input(target_flows: int) -> Path:
    path = BENCH / f"conn-{target_flows}.log"
    if path.exists():
        return path
    BENCH.mkdir(parents=True, exist_ok=True)
    rows = generate(streams(), DEMO_DAY, 48, DEMO_SEED).num_rows
    factor = 1
    while rows < target_flows:  # periodic streams do not grow with clients: iterate
        factor = int(np.ceil(factor * target_flows / rows)) + 1
        print(f"generating flows with {factor}x the demo's clients...", flush=True)
        flows = generate(scaled_streams(factor), DEMO_DAY, 48, DEMO_SEED)
        rows = flows.num_rows
    flows = flows.slice(0, target_flows)
    tmp = path.with_suffix(".tmp")
    write_conn_log(flows, tmp, seed="bench")
    tmp.rename(path)
    return path


def _count_lines(path: Path, skip_comments: bool = False) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if not (skip_comments and line.startswith(b"#")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flows", type=int, default=10_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the output directory")
    ap.add_argument("--context", action="store_true", help="measure the context's cost")
    args = ap.parse_args()
    log = make_input(args.flows)
    rows = _count_lines(log, skip_comments=True)
    out = BENCH / "out"
    print(f"input: {log} ({log.stat().st_size / 1e9:.2f} GB, {rows:,} flows)")
    proc, wall = _analyze(log, out)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    events = _count_lines(out / "events.jsonl")
    scored = _count_lines(out / "flow_scores.csv") - 1
    print(
        f"analyze end to end: {wall:.1f} s wall, {rows / wall:,.0f} flows/s, "
        f"peak RSS {peak_kb / 1024:,.0f} MiB"
    )
    print(f"events: {events:,}; flow_scores rows: {scored:,} (input rows {rows:,})")
    stages = re.search(r"Time: .*", proc.stdout)
    if stages:
        print("stages (in-process):", stages.group(0))
    if args.context:
        _context_cost(log, out)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


def _analyze(log: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    shutil.rmtree(out, ignore_errors=True)
    exe = Path(sys.executable).with_name("flowhawk")
    cmd = ["/usr/bin/time", "-v", str(exe), "analyze", str(log), "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"analyze failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc, wall


def _context_cost(log: Path, out: Path) -> None:
    """Wall time with and without hop context (the rest of the run is the same).

    The run with hops builds them for every north-south event, whatever its risk (by
    default only events of risk 50 or more get them): the worst case."""
    off = BENCH / "no-hops.toml"
    off.write_text("[context]\nhops = false\n")
    on = BENCH / "all-hops.toml"
    on.write_text("[context]\nhops_min_risk = 0\n")
    _, without = _analyze(log, out, "-c", str(off))
    proc, with_hops = _analyze(log, out, "-c", str(on))
    lines = (out / "events.jsonl").open()
    graphs = sum(1 for line in lines if '"hops":{' in line or '"relays":[{' in line)
    stage = re.search(r"events\+context ([\d.]+)s", proc.stdout)
    print(
        f"hop context: {graphs:,} events with hops or relays; analyze {without:.1f} s without, "
        f"{with_hops:.1f} s with: {100 * (with_hops / without - 1):+.1f} % "
        f"(events+context stage {stage.group(1) if stage else '?'} s)"
    )


if __name__ == "__main__":
    main()
