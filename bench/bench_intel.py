"""Benchmark of threat-intelligence lookups on ONE core: 10 M addresses and 10 M domain
names against 1 M loaded indicators.

Everything runs on one core: the process is pinned to one CPU, and polars, numba,
BLAS, pyarrow and DuckDB are limited to one thread (set before they are imported).

Indicators: the real feeds of ../shared/data/intel (public feeds, Tor lists, every
maltrail trail) loaded with :func:`flowhawk.intel.load_feeds` (timed), then a mix of
``--indicators`` values (default 1 M): 45 % addresses (the real ones, then real ones
perturbed in their last octet), 5 % networks (maltrail's scanner networks, then /20
to /28 blocks around real addresses) and 50 % domains (maltrail's). They are written
as three plain lists under $FLOWHAWK_BENCH_DIR (default /tmp/flowhawk-bench) and
loaded back with :func:`flowhawk.intel.load` (timed: parse, score, index), with the
categories of real feeds (c2, scanner, malware) so reputations differ.

Lookups, ``--lookups`` rows each (default 10 M), timed from a Polars string column
to the result frame (reputation, indicator):

* addresses, *repeating*: rows drawn with a heavy head from 300 k distinct addresses
  (2 % listed, 1 % inside listed networks, the rest random public addresses), as
  flow records repeat their endpoints; *distinct*: every row another address
  (random ones, 1 % listed);
* domains, *repeating*: 300 k distinct names (2 % are listed names or subdomains of
  them, the rest names under 20 k synthetic sites), drawn the same way; *distinct*:
  every row another name (1 % subdomains of listed ones).

Peers, on the same batches in the same run: Polars and DuckDB joins. For addresses
an exact-match join on the address text (no network containment: the peers do less
work); for domains one join per suffix level (the last 2, 3, 4 and 5 labels of the
name), the riskiest match kept. The ratio printed is flowhawk's speed over the
peer's.

Run:  .venv/bin/python bench/bench_intel.py            # about 80 s
      .venv/bin/python bench/bench_intel.py --quick    # 1 M lookups, under a minute
"""

from __future__ import annotations

import os

import onecore  # noqa: F401  (one thread each: before polars, numba and BLAS)

# isort: split

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.intel import FeedSettings, IntelSet, load, load_feeds

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FLOWHAWK_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH = Path(os.environ.get("FLOWHAWK_BENCH_DIR", "/tmp/flowhawk-bench"))
TARGET = 5_000_000  # lookups/s on one core


def _pin_one_core() -> str:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return f"pinned to CPU {cpus[-1]} of {len(cpus)}"


def _timed(label: str, fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"  {label}: {seconds:.2f} s")
    return out, seconds


def _v4_text(values: np.ndarray) -> pl.Series:
    """Dotted-quad text of uint32 addresses, vectorized."""
    v = values.astype(np.uint64)
    octets = [
        pl.Series(((v >> np.uint64(s)) & np.uint64(255)).astype(np.uint8)) for s in (24, 16, 8, 0)
    ]
    return (
        pl.DataFrame({f"o{i}": o for i, o in enumerate(octets)})
        .select(pl.concat_str([pl.col(f"o{i}").cast(pl.String) for i in range(4)], separator="."))
        .to_series()
    )


def _v4_int(text: pl.Series) -> np.ndarray:
    parts = text.str.split(".").list.to_struct(fields=["a", "b", "c", "d"]).struct.unnest()
    p = parts.select(pl.all().cast(pl.UInt32)).to_numpy().astype(np.uint64)
    return (
        (p[:, 0] << np.uint64(24))
        | (p[:, 1] << np.uint64(16))
        | (p[:, 2] << np.uint64(8))
        | p[:, 3]
    )


def _skewed(rng: np.random.Generator, pool: int, n: int) -> np.ndarray:
    """Row indices into a pool with a heavy head: the top 1 % of values take ~20 % of rows."""
    return (pool * rng.random(n) ** 3).astype(np.int64)


def real_values() -> tuple[pl.Series, pl.Series, pl.Series]:
    """Distinct real IPv4 addresses, networks and domains of ../shared/data/intel."""
    intel = DATA / "intel"
    feeds, _ = _timed(
        "parse every real feed (public feeds, Tor lists, 3,113 maltrail trails)",
        lambda: load_feeds(
            [intel / "public_feeds", intel / "tor", intel / "maltrail" / "trails_static"]
        ),
    )
    rows = pl.concat([f.indicators.select("type", "value") for f in feeds]).unique()  # type: ignore[union-attr]
    entries = sum(f.indicators.height for f in feeds)  # type: ignore[union-attr]
    print(f"  {len(feeds):,} feeds, {entries:,} indicators, {rows.height:,} distinct")  # type: ignore[arg-type]
    ips = rows.filter((pl.col("type") == "ip") & ~pl.col("value").str.contains(":"))["value"]
    nets = rows.filter((pl.col("type") == "cidr") & ~pl.col("value").str.contains(":"))["value"]
    names = rows.filter(pl.col("type") == "domain")["value"]
    return ips.sort(), nets.sort(), names.sort()


def build_indicators(n: int, rng: np.random.Generator) -> tuple[IntelSet, dict[str, pl.Series]]:
    ips, nets, names = real_values()
    n_ip, n_net = int(n * 0.45), int(n * 0.05)
    n_name = n - n_ip - n_net
    base = _v4_int(ips)
    extra = base[rng.integers(0, len(base), 3 * n_ip)] ^ rng.integers(1, 256, 3 * n_ip).astype(
        np.uint64
    )
    addresses = np.unique(np.concatenate([base, extra]))
    addresses = rng.permutation(addresses)[:n_ip]
    plens = rng.integers(20, 29, 3 * n_net)
    around = base[rng.integers(0, len(base), 3 * n_net)]
    masks = (np.uint64(0xFFFFFFFF) << (32 - plens).astype(np.uint64)) & np.uint64(0xFFFFFFFF)
    synthetic = _v4_text(around & masks) + "/" + pl.Series(plens).cast(pl.String)
    networks = pl.concat([nets, synthetic]).unique(maintain_order=True).head(n_net)
    domains = names.sample(min(n_name, len(names)), seed=1)
    lists = {
        "c2-addresses": _v4_text(addresses),
        "scanner-networks": networks,
        "malware-domains": domains,
    }
    BENCH.mkdir(parents=True, exist_ok=True)
    folder = BENCH / "intel"
    folder.mkdir(exist_ok=True)
    feeds = []
    for (name, values), category in zip(lists.items(), ("c2", "scanner", "malware"), strict=True):
        path = folder / f"{name}.txt"
        path.write_text("\n".join(values.to_list()) + "\n")
        feeds.append(FeedSettings(source=str(path), category=category))
    total = sum(len(v) for v in lists.values())
    intel, seconds = _timed(f"load {total:,} indicators (parse, score, index)", lambda: load(feeds))
    assert isinstance(intel, IntelSet)
    shape = f"{intel._ips.intervals:,} address intervals, {len(intel._domains):,} domains"
    print(f"  {len(intel):,} indicators, {shape}; {total / seconds / 1e3:,.0f} k indicators/s")
    return intel, lists


def ip_batches(
    lists: dict[str, pl.Series], n: int, rng: np.random.Generator
) -> dict[str, pl.Series]:
    listed = lists["c2-addresses"]
    nets = lists["scanner-networks"]
    pool_size = 300_000
    hits = listed.sample(pool_size // 50, seed=2)
    starts = _v4_int(nets.str.split("/").list.first())
    sizes = 2 ** (32 - nets.str.split("/").list.last().cast(pl.Int64).to_numpy())
    pick = rng.integers(0, len(nets), pool_size // 100)
    inside = _v4_text(starts[pick] + (rng.random(len(pick)) * sizes[pick]).astype(np.uint64))
    public = _v4_text(rng.integers(0x0B000000, 0xDF000000, pool_size, dtype=np.uint64))
    pool = (
        pl.concat([hits, inside, public])
        .unique()
        .head(pool_size)
        .sample(fraction=1, shuffle=True, seed=3)
    )
    repeating = pool.gather(_skewed(rng, len(pool), n))
    stride = np.uint64(2654435761)  # odd: i * stride mod 2^32 never repeats for i < 2^32
    distinct = _v4_text(
        (np.arange(n, dtype=np.uint64) * stride + np.uint64(12345)) & np.uint64(0xFFFFFFFF)
    )
    planted = rng.choice(n, n // 100, replace=False)
    distinct = distinct.scatter(planted, listed.sample(len(planted), with_replacement=True, seed=4))
    return {"repeating": repeating, "distinct": distinct}


def domain_batches(
    lists: dict[str, pl.Series], n: int, rng: np.random.Generator
) -> dict[str, pl.Series]:
    listed = lists["malware-domains"]
    pool_size = 300_000
    prefixes = pl.Series(rng.choice(["", "www.", "cdn.", "api.", "mail.", "a.b."], pool_size // 50))
    hits = prefixes + listed.sample(pool_size // 50, with_replacement=True, seed=5)
    sites = pl.Series(
        [
            f"site{i}.{t}"
            for i, t in enumerate(rng.choice(["com", "net", "org", "io", "de"], 20_000))
        ]
    )
    hosts = pl.Series(
        rng.choice(["www", "mail", "cdn", "api", "static", "img", "login"], pool_size)
    )
    rest = (
        hosts
        + pl.Series(rng.integers(0, 50, pool_size)).cast(pl.String)
        + "."
        + sites.gather(rng.integers(0, len(sites), pool_size))
    )
    pool = pl.concat([hits, rest]).unique().head(pool_size).sample(fraction=1, shuffle=True, seed=6)
    repeating = pool.gather(_skewed(rng, len(pool), n))
    index = pl.Series(np.arange(n))
    distinct = "n" + index.cast(pl.String) + "." + sites.gather(rng.integers(0, len(sites), n))
    planted = rng.choice(n, n // 100, replace=False)
    marked = (
        "x"
        + pl.Series(planted).cast(pl.String)
        + "."
        + listed.sample(len(planted), with_replacement=True, seed=7)
    )
    distinct = distinct.scatter(planted, marked)
    return {"repeating": repeating, "distinct": distinct}


def polars_ip_peer(batch: pl.Series, table: pl.DataFrame) -> int:
    got = pl.DataFrame({"ip": batch}).join(table, on="ip", how="left", maintain_order="left")
    return int(got.get_column("reputation").is_not_null().sum())


def duckdb_ip_peer(con: duckdb.DuckDBPyConnection, batch: pl.Series, table: pl.DataFrame) -> int:
    con.register("q", pa.table({"ip": batch.to_arrow()}))
    con.register("t", table.to_arrow())
    sql = "SELECT count(t.reputation) FROM q LEFT JOIN t USING (ip)"
    return int(con.execute(sql).fetchall()[0][0])


def _suffix(level: int) -> pl.Expr:
    labels = pl.col("name").str.to_lowercase().str.strip_chars_end(".").str.split(".")
    return labels.list.slice(-level, level).list.join(".").alias(f"s{level}")


def polars_domain_peer(batch: pl.Series, table: pl.DataFrame) -> int:
    frame = pl.DataFrame({"name": batch}).with_columns(_suffix(k) for k in range(2, 6))
    best = pl.lit(None, pl.UInt8)
    for k in range(2, 6):
        frame = frame.join(
            table.rename({"domain": f"s{k}", "reputation": f"r{k}"}),
            on=f"s{k}",
            how="left",
            maintain_order="left",
        )
        best = pl.min_horizontal(best, pl.col(f"r{k}"))
    return int(frame.select(best.is_not_null().sum()).item())


def duckdb_domain_peer(
    con: duckdb.DuckDBPyConnection, batch: pl.Series, table: pl.DataFrame
) -> int:
    con.register("q", pa.table({"name": batch.to_arrow()}))
    con.register("t", table.to_arrow())
    labels = "string_split(rtrim(lower(name), '.'), '.')"
    levels = ", ".join(
        f"array_to_string(list_slice({labels}, -{k}, -1), '.') AS s{k}" for k in range(2, 6)
    )
    joins = " ".join(f"LEFT JOIN t AS t{k} ON t{k}.domain = s.s{k}" for k in range(2, 6))
    best = "least(" + ", ".join(f"t{k}.reputation" for k in range(2, 6)) + ")"
    sql = f"SELECT count({best}) FROM (SELECT {levels} FROM q) AS s {joins}"
    return int(con.execute(sql).fetchall()[0][0])


def measure(kind: str, intel: IntelSet, batches: dict[str, pl.Series], table: pl.DataFrame) -> None:
    con = duckdb.connect()
    con.execute("SET threads = 1")
    lookup = intel.lookup_ips if kind == "addresses" else intel.lookup_domains
    peers = {
        "Polars join": (polars_ip_peer if kind == "addresses" else polars_domain_peer),
        "DuckDB join": (
            lambda b, t: (duckdb_ip_peer if kind == "addresses" else duckdb_domain_peer)(con, b, t)
        ),
    }
    for variant, batch in batches.items():
        n = len(batch)
        lookup(batch.head(1000))  # compiled kernels loaded before timing
        start = time.perf_counter()
        result = lookup(batch)
        seconds = time.perf_counter() - start
        hits = result.get_column("indicator").is_not_null().sum()
        rate = n / seconds
        flag = "met" if rate >= TARGET else "NOT met"
        what = f"{n:,} lookups ({batch.n_unique():,} distinct, {hits / n:.1%} hit)"
        speed = f"{rate / 1e6:.2f} M/s ({flag}: target {TARGET / 1e6:.0f} M/s)"
        print(f"  {kind}, {variant}: {what} in {seconds:.2f} s = {speed}")
        for peer, fn in peers.items():
            start = time.perf_counter()
            peer_hits = fn(batch, table)
            peer_seconds = time.perf_counter() - start
            print(f"    {peer}: {peer_seconds:.2f} s = {n / peer_seconds / 1e6:.2f} M/s "
                  f"({peer_hits / n:.1%} hit); flowhawk {peer_seconds / seconds:.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--indicators", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1 M lookups")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    lookups = 1_000_000 if args.quick else args.lookups
    print(_pin_one_core())
    rng = np.random.default_rng(20260823)
    print("indicators")
    intel, lists = build_indicators(args.indicators, rng)
    ind = intel.indicators
    ip_table = ind.filter(pl.col("type") == "ip").select(ip="value", reputation="reputation")
    domain_table = ind.filter(pl.col("type") == "domain").select(
        domain="value", reputation="reputation"
    )
    print("addresses")
    measure("addresses", intel, ip_batches(lists, lookups, rng), ip_table)
    print("domains")
    measure("domains", intel, domain_batches(lists, lookups, rng), domain_table)


if __name__ == "__main__":
    main()
