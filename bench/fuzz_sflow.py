"""Fuzz and speed run of the sFlow v5 decoder (flowhawk.collect.decode.sflow).

1. Speed: clean datagrams decoded from memory in batches, after a warm-up (numba
   compilation excluded): realistic flow datagrams (7 flow samples of 128-byte raw
   Ethernet headers, TCP/UDP over IPv4 and IPv6, with extended switch records) and the
   real counter datagrams of ../shared/data; prints samples/s and datagrams/s.
2. Fuzz: >= 1,000,000 datagrams mutated from real and hand-built seeds (bytes, 32-bit
   fields set to boundary values, cuts, dropped and repeated spans), decoded in
   batches with a fresh exporter state each; any exception is a failure (the batch is
   saved to /tmp/flowhawk-sflow-fuzz-failure.bin). Every ``--check-every`` batch is
   also decoded one datagram at a time and must give the same rows (a read past a
   datagram's end would see its neighbour). Prints counts by reason and datagrams/s.

``--boundscheck`` compiles the kernels with numba's bounds checking (in a separate
cache), so a read outside the batch buffer raises instead of reading stray memory.

Run:  .venv/bin/python bench/fuzz_sflow.py [--datagrams 1000000] [--boundscheck]
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datagrams", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check-every", type=int, default=20)
    ap.add_argument("--boundscheck", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if args.boundscheck:
        os.environ["NUMBA_BOUNDSCHECK"] = "1"
        os.environ["NUMBA_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / "flowhawk-numba-bc")
    sys.path.insert(0, str(REPO))

    from tests.collect.test_sflow_fuzz import INTERESTING, SEEDS

    if not args.skip_speed:
        speed()
    return fuzz(SEEDS, INTERESTING, args)


def flow_datagrams(n: int) -> list[bytes]:
    """``n`` datagrams of 7 flow samples each, 128-byte headers, addresses varying."""
    from tests.collect.test_sflow import datagram, ext_switch, flow_sample, raw_header
    from tests.sources.pcap import ACK, ETH_IP6, eth, ip4, ip6, tcp, udp

    rng = random.Random(7)
    out = []
    for i in range(n):
        samples = []
        for k in range(7):
            a, b = rng.randrange(1, 250), rng.randrange(1, 250)
            if k % 3 == 2:
                pkt = eth(
                    ip6(
                        f"2001:db8::{a}",
                        f"2001:db8:1::{b}",
                        6,
                        tcp(443, 50000 + k, ACK, bytes(1400)),
                    ),
                    ETH_IP6,
                )
            elif k % 3 == 1:
                pkt = eth(
                    ip4(f"10.1.0.{a}", f"10.2.0.{b}", 17, udp(53, 40000 + a, bytes(400))),
                    vlans=[(0x8100, 10)],
                )
            else:
                pkt = eth(
                    ip4(f"10.1.0.{a}", f"192.0.2.{b}", 6, tcp(40000 + b, 443, ACK, bytes(1400)))
                )
            hdr = raw_header(pkt[:128], frame=len(pkt) + 4)
            samples.append(
                flow_sample([ext_switch(10, 10), hdr], seq=i * 7 + k, source=(0, k), rate=1024)
            )
        out.append(datagram(samples, seq=i))
    return out


def speed() -> None:
    from tests.collect.test_sflow import TCPDUMP, udp_payloads
    from tests.conftest import SHARED_DATA

    from flowhawk.collect.decode.base import ExporterState
    from flowhawk.collect.decode.sflow import SFlowDecoder

    dec = SFlowDecoder()
    flows = flow_datagrams(2000)
    counters = [
        p for _, _, p in udp_payloads(SHARED_DATA / TCPDUMP / "sflow_multiple_counter_30_pdus.pcap")
    ]
    counters = [c for c in counters if c[:4] == b"\x00\x00\x00\x05"] * 80
    for name, data, batch in (("flow samples", flows, 1000), ("counter samples", counters, 1000)):
        batches = [data[i : i + batch] for i in range(0, len(data), batch)]
        dec.decode(batches[0], list(range(len(batches[0]))), ExporterState("192.0.2.1"))  # warm-up
        best = float("inf")
        for _ in range(5):
            state = ExporterState("192.0.2.1")
            t = time.perf_counter()
            rows = 0
            for b in batches:
                res = dec.decode(b, list(range(len(b))), state)
                rows += res.flows.num_rows + (
                    res.counters.num_rows if res.counters is not None else 0
                )
            best = min(best, time.perf_counter() - t)
        print(
            f"speed, {name}: {len(data):,} datagrams in batches of {batch}, {rows:,} rows: "
            f"{rows / best:,.0f} samples/s, {len(data) / best:,.0f} datagrams/s "
            f"({sum(map(len, data)) / best / 1e6:,.0f} MB/s)"
        )


def mutate(rng: random.Random, seed: bytes, interesting: list[int]) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 5)):
        if not data:
            break
        pos = rng.randrange(len(data))
        kind = rng.random()
        if kind < 0.25:
            data[pos] = rng.randrange(256)
        elif kind < 0.7:
            pos &= ~3
            value = rng.choice(interesting) if rng.random() < 0.7 else rng.getrandbits(32)
            data[pos : pos + 4] = struct.pack("!I", value)
        elif kind < 0.8:
            del data[pos:]
        elif kind < 0.9:
            del data[pos : pos + rng.randint(1, 40)]
        else:
            data[pos:pos] = data[pos : pos + rng.randint(1, 200)]
    return bytes(data)


def fuzz(seeds: list[bytes], interesting: list[int], args: argparse.Namespace) -> int:
    import pyarrow as pa

    from flowhawk.collect.decode.base import ExporterState
    from flowhawk.collect.decode.sflow import SFlowDecoder

    dec = SFlowDecoder()
    rng = random.Random(args.seed)
    errors, ignored = Counter(), Counter()
    done = flows = counters = checked = failures = 0
    t0 = time.perf_counter()
    decode_time = 0.0
    while done < args.datagrams:
        batch = [mutate(rng, rng.choice(seeds), interesting) for _ in range(args.batch)]
        times = list(range(len(batch)))
        try:
            t = time.perf_counter()
            res = dec.decode(batch, times, ExporterState("192.0.2.1"))
            decode_time += time.perf_counter() - t
            if (done // args.batch) % args.check_every == 0:
                checked += len(batch)
                singles = [dec.decode([d], [0], ExporterState("192.0.2.1")) for d in batch]
                whole = res.flows.drop_columns(["ts_start", "ts_end"])
                parts = pa.concat_tables(s.flows for s in singles).drop_columns(
                    ["ts_start", "ts_end"]
                )
                assert whole == parts, "batch and one-by-one decodes differ"
        except Exception as exc:  # the run's purpose: report anything that escapes
            failures += 1
            Path("/tmp/flowhawk-sflow-fuzz-failure.bin").write_bytes(
                b"".join(struct.pack("!I", len(d)) + d for d in batch)
            )
            print(f"FAILURE after {done:,} datagrams: {type(exc).__name__}: {exc}")
            if failures >= 3:
                break
        else:
            errors.update(res.errors)
            ignored.update(res.ignored)
            flows += res.flows.num_rows
            counters += 0 if res.counters is None else res.counters.num_rows
        done += len(batch)
    wall = time.perf_counter() - t0
    print(
        f"fuzz: {done:,} mutated datagrams from {len(seeds)} seeds, {failures} escaped, "
        f"{checked:,} re-decoded one by one; {flows:,} flow rows, {counters:,} counter rows"
    )
    print(f"fuzz: decode {done / decode_time:,.0f} datagrams/s ({wall:.1f} s wall with mutation)")
    print("errors by reason:")
    for reason, n in errors.most_common():
        print(f"  {n:>10,}  {reason}")
    print("ignored by reason:")
    for reason, n in ignored.most_common():
        print(f"  {n:>10,}  {reason}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
