"""Beacon and DNS analysis over a day of 10 k hosts (simulated): flows/s and memory.

A day of outbound flows from ``--hosts`` internal hosts to a Zipf-popular set of
external servers (browsing: random sessions) plus one host in a hundred beaconing to
its own server every 1-10 minutes with jitter, and a day of DNS lookups by the same
hosts. N1 and N2 (beaconing, C2 candidates) run over the flows hour by hour as the
engine feeds them, N5 (DNS tunneling) over the DNS, as detectors alone (no other
method). Printed: rows/s, the detector state at the end of the day, the process's peak
resident memory, and, as the peer measured in the same run, one polars sort + group-by
of the whole day by communication (the least any per-communication timing analysis
does), with the ratio.

Run:  .venv/bin/python bench/bench_beacon_dns.py [--hosts 10000] [--flows-per-host 400]
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import UTC, datetime

import numpy as np
import polars as pl

from flowhawk.detectors import DETECTORS
from flowhawk.detectors.base import Batch, DetectorContext
from flowhawk.netaddr import NetworkSet

DAY_US = 86_400_000_000
T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1_000_000)


def _ips(prefix: str, idx: np.ndarray) -> pl.Series:
    a, b = idx // 256, idx % 256
    return pl.Series([f"{prefix}.{x}.{y}" for x, y in zip(a.tolist(), b.tolist(), strict=True)])


def day_of_flows(hosts: int, per_host: int, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = hosts * per_host
    src = rng.integers(0, hosts, n)
    servers = 20_000
    ranks = 1.0 / np.arange(1, servers + 1) ** 1.1
    dst = rng.choice(servers, n, p=ranks / ranks.sum())
    t = np.sort(rng.integers(0, DAY_US, n))
    beaconers = np.arange(0, hosts, 100)
    bt, bs, bd = [], [], []
    for i, h in enumerate(beaconers):
        period = rng.uniform(60, 600) * 1e6
        times = np.cumsum(period * (1 + rng.uniform(-0.2, 0.2, int(DAY_US / period))))
        bt.append(times[times < DAY_US].astype(np.int64))
        bs.append(np.full(len(bt[-1]), h))
        bd.append(np.full(len(bt[-1]), servers + i))
    t = np.concatenate([t, *bt])
    src = np.concatenate([src, *bs])
    dst = np.concatenate([dst, *bd])
    order = np.argsort(t, kind="stable")
    t, src, dst = t[order], src[order], dst[order]
    srcs = _ips("10.1", np.arange(hosts))
    dsts = _ips("100.64", np.arange(servers + len(beaconers)))
    m = len(t)
    return pl.DataFrame(
        {
            "ts_start": pl.Series(T0 + t).cast(pl.Datetime("us", "UTC")),
            "ts_end": pl.Series(T0 + t + 2_000_000).cast(pl.Datetime("us", "UTC")),
            "site": pl.Series(["default"] * m, dtype=pl.Categorical).cast(pl.String),
            "src_ip": srcs.gather(src),
            "dst_ip": dsts.gather(dst),
            "dst_port": pl.Series(np.where(dst >= servers, 8443, 443), dtype=pl.Int32),
            "proto": pl.Series(np.full(m, 6), dtype=pl.Int16),
            "direction": "north-south",
            "src_internal": True,
            "dst_internal": False,
            "src_bytes": pl.Series(rng.integers(300, 3000, m)),
            "dst_bytes": pl.Series(rng.integers(300, 30000, m)),
        }
    )


def day_of_dns(hosts: int, per_host: int, seed: int = 2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = hosts * per_host
    names = [f"www.site{i}.com" for i in range(5000)]
    ranks = 1.0 / np.arange(1, len(names) + 1)
    pick = rng.choice(len(names), n, p=ranks / ranks.sum())
    t = np.sort(rng.integers(0, DAY_US, n))
    return pl.DataFrame(
        {
            "ts": pl.Series(T0 + t).cast(pl.Datetime("us", "UTC")),
            "src_ip": _ips("10.1", np.arange(hosts)).gather(rng.integers(0, hosts, n)),
            "src_port": pl.Series(rng.integers(1024, 65535, n), dtype=pl.Int32),
            "dst_ip": "10.0.0.53",
            "dst_port": pl.Series(np.full(n, 53), dtype=pl.Int32),
            "proto": pl.Series(np.full(n, 17), dtype=pl.Int16),
            "query": pl.Series(names).gather(pick),
            "qtype": pl.Series(np.full(n, 1), dtype=pl.Int32),
            "qtype_name": "A",
            "rcode": pl.Series(np.zeros(n), dtype=pl.Int16),
            "rcode_name": "NOERROR",
            "answers": pl.Series([["100.64.0.1"]] * n),
            "query_bytes": pl.Series(np.full(n, 40), dtype=pl.Int32),
            "response_bytes": pl.Series(np.full(n, 56), dtype=pl.Int32),
        }
    )


def _hours(df: pl.DataFrame, col: str) -> list[pl.DataFrame]:
    h = df.with_columns(_h=pl.col(col).dt.truncate("1h"))
    return [p.drop("_h") for p in h.partition_by("_h", maintain_order=True)]


def _detectors(methods: tuple[str, ...]) -> list:
    ctx = DetectorContext(NetworkSet(["10.0.0.0/8"]), NetworkSet([]))
    out = []
    for m in methods:
        cls = DETECTORS.get(m)
        out.append(cls(cls.Settings(), ctx))
    return out


def _state_bytes(dets: list) -> int:
    return sum(t.nbytes for d in dets for t in d.state().values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--flows-per-host", type=int, default=400)
    ap.add_argument("--dns-per-host", type=int, default=200)
    args = ap.parse_args()
    flows = day_of_flows(args.hosts, args.flows_per_host)
    dns = day_of_dns(args.hosts, args.dns_per_host)
    print(f"{args.hosts} hosts: {flows.height:,} outbound flows, {dns.height:,} DNS lookups a day")

    start = time.perf_counter()
    peer = (
        flows.sort("src_ip", "dst_ip", "dst_port", "ts_start")
        .group_by("src_ip", "dst_ip", "dst_port")
        .agg(n=pl.len(), first=pl.col("ts_start").min())
    )
    peer_s = time.perf_counter() - start
    print(
        f"peer: one sort + group-by by communication: {peer_s:.2f} s "
        f"({flows.height / peer_s:,.0f} flows/s, {peer.height:,} communications)"
    )

    dets = _detectors(("N1", "N2"))
    found = 0
    start = time.perf_counter()
    for part in _hours(flows, "ts_start"):
        batch = Batch(part)
        found += sum(d.score(batch).height for d in dets)
    found += sum(d.finish(datetime.min.replace(tzinfo=UTC)).height for d in dets)
    beacon_s = time.perf_counter() - start
    print(
        f"N1+N2: {beacon_s:.2f} s, {flows.height / beacon_s:,.0f} flows/s "
        f"({beacon_s / peer_s:.1f}x the peer); {found} alarms "
        f"({args.hosts // 100} beaconing hosts planted); state "
        f"{_state_bytes(dets) / 1e6:.0f} MB"
    )

    dns_methods = tuple(m for m in ("N4", "N5") if m in DETECTORS)
    dets = _detectors(dns_methods)
    found = 0
    empty = flows.clear()
    start = time.perf_counter()
    for part in _hours(dns, "ts"):
        batch = Batch(empty, dns=part)
        found += sum(d.score(batch).height for d in dets)
    dns_s = time.perf_counter() - start
    print(
        f"{'+'.join(dns_methods)}: {dns_s:.2f} s, {dns.height / dns_s:,.0f} lookups/s; "
        f"{found} alarms (no tunnel or DGA planted)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of the process: {peak:,.0f} MB")


if __name__ == "__main__":
    main()
