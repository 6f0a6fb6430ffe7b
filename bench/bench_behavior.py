"""Benchmark of the behavioral engine: aggregation and scoring speed, state size, retraining.

Everything runs on ONE core: the process is pinned to one CPU, and polars, numba,
pyarrow, BLAS and DuckDB are limited to one thread (set before they are imported).
Nothing is read from disk but what it writes (the behavioral log, checkpoints) under
$FLOWHAWK_BENCH_DIR (default /tmp/flowhawk-bench), removed at the end. Event time is
synthetic: ``--comms`` distinct communications (client, server, port, protocol: 50 k
clients, 30 % internal servers, TCP, UDP and ICMP), each flow picking one of them
uniformly, ``--per-minute`` flows per minute.

1. Aggregation + scoring. The flows go through the real :class:`DetectionEngine`, in
   batches of ``--batch`` minutes, with the behavioral log on disk (:class:`LogStore`)
   and M1 and the behavior detectors M2-M25 enabled. The first ``--learn`` minutes
   teach (the log is written, velocity detectors keep last vectors); then each
   detector trains its model from that log (timed apart) and the next ``--score``
   minutes are scored. Volume detectors (M2-M9) need ``min_history`` active buckets
   per key; it is lowered to ``--volume-min-history`` so that the keys of a short
   learning period get baselines (with the default of 30 they would have none and
   would cost nothing). Buckets close without lateness. Measured on the scoring
   minutes (the batch where learning ends, with the training, is left out): the
   time in ``aggregate`` (all views) and in the behavior detectors' scoring, which
   gives the target figure, flows/s of aggregation + scoring (target >= 300 k on one
   core with 1 M active communications); also the engine end to end (buffering,
   writing the log, M1), time per detector, and the peak resident memory.
   Peers, on the very flows ``aggregate`` received, in the same run: DuckDB and
   Polars each doing one GROUP BY of the communication view (per bucket and
   communication: packets and bytes each way, flows).
2. State size. Live state (M1's first-seen sets, the volume detectors' last active
   bucket of regular keys, the velocity detectors' last vectors) and model tables,
   measured as the Arrow size of the tables ``state()`` gives for a checkpoint (views
   of the detectors' own arrays: M1's first-seen sets are those tables, hashes and
   times) and as the Parquet files :class:`StateStore` writes, per tracked communication (target:
   live state <= 200 bytes per key). At 1 M: the engine of part 1. At ``--state-keys``
   (default 10 M): built directly by the detectors' own code (M1 learns one flow of
   each communication; the log of those flows, all views, feeds every velocity
   detector; the volume detectors' shared core, fed a baseline made to hold every key as
   regular, the worst case, keeps its live state, once for M2-M9).
3. Retraining from 30 days of behavioral log for ``--train-keys`` communications
   (``--train-rows`` log rows, written to disk by :class:`LogStore` and read back as
   detectors do): the volume baseline (M2-M9) and the clustering models of the
   communication view, k-means (M11) and Gaussian mixture (M19); with
   ``--velocity-models`` also their velocity twins (M10, M18), which take about as long.

Run:  .venv/bin/python bench/bench_behavior.py           # full run, about 13 min, 10 GB
      .venv/bin/python bench/bench_behavior.py --quick   # smoke run, under a minute
"""

from __future__ import annotations

import os

import onecore  # noqa: F401  (one thread each: before polars, numba and BLAS)

# isort: split

import argparse
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

import flowhawk.engine as engine_module
from flowhawk import config
from flowhawk.behavior import baseline as bl
from flowhawk.behavior.aggregate import aggregate
from flowhawk.behavior.log import LogStore
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.base import Batch, DetectorContext
from flowhawk.detectors.clusters import (
    CLUSTER_DETECTORS,
    ClusterSettings,
    MixtureSettings,
)
from flowhawk.detectors.clusters_features import prepared
from flowhawk.detectors.clusters_model import Spec, train
from flowhawk.detectors.newcomm import NewCommunication
from flowhawk.detectors.volume import (
    UNDERFLOW_ALL,
    VOLUME_DETECTORS,
    VolumeDetector,
)
from flowhawk.engine import DetectionEngine
from flowhawk.netaddr import NetworkSet
from flowhawk.state import StateStore

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

BENCH = Path(os.environ.get("FLOWHAWK_BENCH_DIR", "/tmp/flowhawk-bench"))
T0 = datetime(2026, 3, 2, tzinfo=UTC)
US = 1_000_000
# Services: port, protocol, share (ICMP echo request is type 8 code 0: 8 * 256).
SERVICES = [
    (443, 6, 0.44), (80, 6, 0.15), (53, 17, 0.12), (445, 6, 0.06), (22, 6, 0.04),
    (3389, 6, 0.03), (8080, 6, 0.05), (123, 17, 0.04), (25, 6, 0.03), (1883, 6, 0.02),
    (2048, 1, 0.02),
]  # fmt: skip
PORTS = np.array([s[0] for s in SERVICES], dtype=np.int32)
PROTO = np.array([s[1] for s in SERVICES], dtype=np.int16)
SHARE = np.array([s[2] for s in SERVICES]) / sum(s[2] for s in SERVICES)
TARGET_RATE = 300_000  # flows/s, aggregation + scoring, one core
TARGET_LIVE = 200  # bytes of live state per tracked communication
VOLUME = {cls.method for cls in VOLUME_DETECTORS}
CLUSTERS = {cls.method for cls in CLUSTER_DETECTORS}
NET = DetectorContext(NetworkSet(["10.0.0.0/8"]), NetworkSet([]))


# -- synthetic traffic ---------------------------------------------------------------------


def _ip(prefix: str, n: np.ndarray) -> pl.Expr:
    s = pl.Series(n)
    return pl.concat_str(
        [pl.lit(prefix), (s // 65536 % 256).cast(pl.String), pl.lit("."),
         (s // 256 % 256).cast(pl.String), pl.lit("."), (s % 256).cast(pl.String)]
    )  # fmt: skip


def communications(n: int, seed: int = 1) -> pl.DataFrame:
    """``n`` distinct (client, server, port, proto): 50 k clients, 30 % internal servers."""
    rng = np.random.default_rng(seed)
    m = int(n * 1.2) + 100
    client = rng.integers(0, 50_000, m)
    internal = rng.random(m) < 0.3
    server = np.where(internal, rng.integers(0, 2_000, m), rng.integers(0, 2_000_000, m))
    svc = rng.choice(len(PORTS), m, p=SHARE)
    df = pl.DataFrame({"c": client, "s": server, "i": internal, "svc": svc}).unique(
        maintain_order=True
    )
    df = df.head(n)
    return df.select(
        src_ip=_ip("10.", df["c"].to_numpy()),
        dst_ip=pl.when(pl.Series(df["i"]))
        .then(_ip("10.200.", df["s"].to_numpy() % 65536))
        .otherwise(_ip("100.", df["s"].to_numpy())),
        dst_port=pl.Series(PORTS[df["svc"].to_numpy()]),
        proto=pl.Series(PROTO[df["svc"].to_numpy()]),
        dst_internal=pl.Series(df["i"]),
    )


def flows_of(
    comms: pl.DataFrame,
    minute: int,
    count: int,
    rng: np.random.Generator,
    pick: np.ndarray | None = None,
) -> pl.DataFrame:
    """``count`` canonical flows (every column of the flow schema) starting in ``minute``."""
    if pick is None:
        pick = rng.integers(0, comms.height, count)
    start = int((T0 + timedelta(minutes=minute)).timestamp() * US)
    ts = np.sort(rng.integers(0, 60 * US, count)) + start
    dur = (rng.lognormal(0.0, 1.5, count) * US).astype(np.int64)
    pkts = rng.geometric(0.2, (2, count)).astype(np.int64)
    size = rng.lognormal(6.0, 1.0, (2, count)).astype(np.int64) + 40
    icmp = comms.get_column("proto").to_numpy()[pick] == 1
    f = comms[pick].with_columns(
        ts_start=pl.Series(ts).cast(pl.Datetime("us", "UTC")),
        ts_end=pl.Series(ts + dur).cast(pl.Datetime("us", "UTC")),
        src_port=pl.Series(np.where(icmp, 0, rng.integers(1024, 65535, count)).astype(np.int32)),
        src_pkts=pkts[0],
        src_bytes=pkts[0] * size[0],
        dst_pkts=pkts[1],
        dst_bytes=pkts[1] * size[1],
        src_tcp_flags=pl.lit(None, pl.Int16),
        dst_tcp_flags=pl.lit(None, pl.Int16),
        vlan=pl.lit(None, pl.Int32),
        src_mac=pl.lit(None, pl.String),
        dst_mac=pl.lit(None, pl.String),
        service=pl.lit(None, pl.String),
        state=pl.lit(None, pl.String),
        orient=pl.lit("start"),
        sampling=pl.lit(1, pl.Int32),
        exporter=pl.lit(None, pl.String),
        input=pl.lit("bench"),
        flow_id=pl.Series(np.arange(count) + minute * 10_000_000).cast(pl.String),
        site=pl.lit("default"),
        src_internal=pl.lit(True),
    )
    return f.with_columns(
        direction=pl.when(pl.col("dst_internal"))
        .then(pl.lit("east-west"))
        .otherwise(pl.lit("north-south"))
    )


def _scratch(prefix: str) -> str:
    """A new directory under $FLOWHAWK_BENCH_DIR (default /tmp/flowhawk-bench)."""
    BENCH.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"behavior-{prefix}", dir=BENCH)


# -- measuring -----------------------------------------------------------------------------


def rss_mib() -> tuple[float, float]:
    """(resident now, peak resident since the last :func:`reset_peak`) of this process, MiB."""
    status = Path("/proc/self/status").read_text().split("\n")
    kib = {line.split(":")[0]: line.split()[1] for line in status if line.startswith("Vm")}
    if "VmHWM" in kib:
        return int(kib["VmRSS"]) / 1024, int(kib["VmHWM"]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak, peak


def reset_peak() -> bool:
    """Start measuring the peak resident memory anew (Linux); False if it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Clock:
    """Seconds and counts per (phase, what)."""

    def __init__(self) -> None:
        self.phase = "learn"
        self.s: dict[tuple[str, str], float] = defaultdict(float)
        self.n: dict[tuple[str, str], int] = defaultdict(int)

    def wrap(self, what: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s[(self.phase, what)] += time.perf_counter() - t

        return timed

    def get(self, what: str, phase: str = "score") -> float:
        return self.s.get((phase, what), 0.0)


class Peers:
    """The same GROUP BY of the comm view by DuckDB and by Polars, on given flows."""

    SQL = (
        "SELECT time_bucket(INTERVAL '{b} seconds', ts_start) AS bucket, site, src_ip, dst_ip,"
        " dst_port, proto, sum(src_pkts) AS pkts_out, sum(dst_pkts) AS pkts_in,"
        " sum(src_bytes) AS bytes_out, sum(dst_bytes) AS bytes_in, count(*) AS flows"
        " FROM flows GROUP BY ALL"
    )

    def __init__(self) -> None:
        self.con = duckdb.connect()
        self.con.execute("SET threads = 1")
        self.con.execute("SET TimeZone = 'UTC'")
        self.s: dict[str, float] = defaultdict(float)
        self.rows: dict[str, int] = defaultdict(int)

    def run(self, flows: pl.DataFrame, bucket: int) -> None:
        cols = ["ts_start", "site", "src_ip", "dst_ip", "dst_port", "proto"]
        cols += ["src_pkts", "dst_pkts", "src_bytes", "dst_bytes"]
        table = flows.select(cols).to_arrow()  # conversion left out of the timing
        self.con.register("flows", table)
        t = time.perf_counter()
        got = self.con.sql(self.SQL.format(b=bucket)).to_arrow_table()
        self.s["duckdb"] += time.perf_counter() - t
        self.rows["duckdb"] += got.num_rows
        self.con.unregister("flows")
        del got, table
        t = time.perf_counter()
        got2 = (
            flows.lazy()
            .group_by(
                pl.col("ts_start").dt.truncate(f"{bucket}s").alias("bucket"),
                "site", "src_ip", "dst_ip", "dst_port", "proto",
            )
            .agg(pl.col("src_pkts", "dst_pkts", "src_bytes", "dst_bytes").sum(), pl.len())
            .collect()
        )  # fmt: skip
        self.s["polars"] += time.perf_counter() - t
        self.rows["polars"] += got2.height


def family(method: str) -> str:
    return "volume" if method in VOLUME else "clusters" if method in CLUSTERS else "flow"


# -- 1. aggregation + scoring ---------------------------------------------------------------


def run_engine(
    comms: pl.DataFrame, args: argparse.Namespace, peers: Peers | None, quiet: bool = False
) -> dict[str, Any]:
    """Learn then score synthetic flows in the engine; timings, and the engine itself."""
    data = Path(_scratch("engine-"))
    enabled = {"M1"} | VOLUME | CLUSTERS
    detectors: dict[str, dict[str, Any]] = {m: {"enabled": m in enabled} for m in DETECTORS.names()}
    for m in VOLUME:
        detectors[m]["min_history"] = args.volume_min_history
    cfg = config.from_dict(
        {
            "learning": {"period": f"{args.learn}m"},
            "behavior": {"lateness": 0},
            "network": {"internal": ["10.0.0.0/8"]},
            "detectors": detectors,
        }
    )
    store = LogStore(data / "behavior", "bench")
    eng = DetectionEngine(cfg, StateStore(data), log_store=store)
    clock = Clock()
    flows_in: dict[str, int] = defaultdict(int)
    orig_aggregate = engine_module.aggregate

    def timed_aggregate(flows: pl.DataFrame, bucket: int) -> dict[str, pl.DataFrame]:
        t = time.perf_counter()
        out = orig_aggregate(flows, bucket)
        clock.s[(clock.phase, "aggregate")] += time.perf_counter() - t
        flows_in[clock.phase] += flows.height
        if peers is not None and clock.phase == "score":
            t = time.perf_counter()
            peers.run(flows, bucket)
            clock.s[(clock.phase, "peers")] += time.perf_counter() - t
        return out

    engine_module.aggregate = timed_aggregate  # type: ignore[assignment]
    store.write = clock.wrap("log write", store.write)  # type: ignore[method-assign]
    eng.buffer.add = clock.wrap("buffer", eng.buffer.add)  # type: ignore[method-assign]
    eng.buffer.close_due = clock.wrap("buffer", eng.buffer.close_due)  # type: ignore[method-assign]
    eng.buffer.close_all = clock.wrap("buffer", eng.buffer.close_all)  # type: ignore[method-assign]
    for det in eng.detectors:
        m = det.method
        det.learn = clock.wrap(m, det.learn)  # type: ignore[method-assign]
        det.score = clock.wrap(m, det.score)  # type: ignore[method-assign]
        if det.views:
            det.train = clock.wrap(f"train {m}", det.train)  # type: ignore[method-assign]
    rng = np.random.default_rng(7)
    step = args.batch
    alarms = 0
    peak: dict[str, Any] = {}
    try:
        for minute in range(0, args.learn + args.score, step):
            batch = pl.concat(
                [flows_of(comms, m, args.per_minute, rng) for m in range(minute, minute + step)]
            )
            # the batch where learning ends closes learning buckets and trains: apart
            ends = minute < args.learn < minute + step or minute == args.learn
            clock.phase = "learn" if minute + step <= args.learn and not ends else "score"
            if ends:
                clock.phase = "train"
            elif clock.phase == "score" and "peak_learn" not in peak:
                peak["peak_learn"] = rss_mib()[1]  # learning and training
                peak["reset"] = reset_peak()
            t = time.perf_counter()
            got = eng.process(batch)
            clock.s[(clock.phase, "engine")] += time.perf_counter() - t
            if clock.phase == "score":
                alarms += got.height
        clock.phase = "score"
        t = time.perf_counter()
        alarms += eng.finish().height
        clock.s[("score", "engine")] += time.perf_counter() - t
    finally:
        engine_module.aggregate = orig_aggregate  # type: ignore[assignment]
    peak["peak_score"] = rss_mib()[1]
    return {
        "engine": eng,
        "clock": clock,
        "flows": flows_in,
        "alarms": alarms,
        "data": data,
        **peak,
    }


def report_engine(r: dict[str, Any], peers: Peers | None, args: argparse.Namespace) -> float:
    """Print the figures of :func:`run_engine`; returns the aggregation + scoring rate."""
    clock: Clock = r["clock"]
    eng: DetectionEngine = r["engine"]
    n = r["flows"]["score"]
    methods = [d.method for d in eng.detectors]
    train_s = sum(v for (p, k), v in clock.s.items() if k.startswith("train "))
    per = {m: clock.get(m) - clock.get(f"train {m}") for m in methods}
    vol = sum(v for m, v in per.items() if family(m) == "volume")
    clu = sum(v for m, v in per.items() if family(m) == "clusters")
    agg = clock.get("aggregate")
    target = agg + vol + clu
    end = clock.get("engine") - clock.get("peers") - clock.get("train", "score")
    rows = eng.log_rows / max(sum(r["flows"].values()), 1)
    print(f"\nscoring minutes: {n:,} flows in closed buckets ({rows:.2f} log rows per flow)")
    print(f"  {'stage':<34}{'seconds':>9}{'ns/flow':>9}{'flows/s':>12}")

    def line(name: str, s: float) -> None:
        print(f"  {name:<34}{s:9.2f}{s / n * 1e9:9,.0f}{n / s if s else 0:12,.0f}")

    line("aggregate (all 11 views)", agg)
    line("volume scoring M2-M9", vol)
    line("clustering scoring M10-M25", clu)
    line("= aggregation + scoring", target)
    line("buffering (open buckets)", clock.get("buffer"))
    line("writing the log (Parquet)", clock.get("log write"))
    line("M1 new communication", per.get("M1", 0.0))
    line("engine end to end", end)
    rate = n / target
    verdict = "met" if rate >= TARGET_RATE else "NOT met"
    print(
        f"  aggregation + scoring: {rate:,.0f} flows/s on one core "
        f"(target {TARGET_RATE:,}: {verdict}); engine end to end {n / end:,.0f} flows/s"
    )
    slow = sorted(((v, m) for m, v in per.items() if family(m) != "flow"), reverse=True)
    print(
        "  slowest detectors (ns/flow): "
        + ", ".join(f"{m} {v / n * 1e9:,.0f}" for v, m in slow[:6])
    )
    lf = r["flows"]["learn"]
    if lf:
        la = clock.get("aggregate", "learn")
        lo = sum(clock.get(m, "learn") for m in methods if family(m) != "flow")
        print(
            f"  learning minutes: {lf:,} flows, aggregate {lf / la:,.0f} flows/s, "
            f"aggregate + observe {lf / (la + lo):,.0f} flows/s"
        )
    if train_s:
        tv = sum(v for (p, k), v in clock.s.items() if k.startswith("train ") and k[6:] in VOLUME)
        print(
            f"  training when scoring starts (left out above): {train_s:.1f} s "
            f"(volume baseline {tv:.1f} s, clustering {train_s - tv:.1f} s, "
            f"from {args.learn} minutes of log)"
        )
    print(f"  alarms raised while scoring: {r['alarms']:,}")
    if peers is not None and peers.s:
        ours = n / agg
        print("  peers, the comm view alone (one GROUP BY, sums and count) on the same flows:")
        for name in ("duckdb", "polars"):
            theirs = n / peers.s[name]
            print(
                f"    {name:<8}{theirs:>12,.0f} flows/s ({peers.rows[name]:,} rows); flowhawk "
                f"aggregate, all 11 views: {ours:,.0f} flows/s = {ours / theirs:.2f}x {name}"
            )
    if r.get("reset"):
        print(
            f"  resident memory: peak {r['peak_score']:,.0f} MiB while scoring, "
            f"{r['peak_learn']:,.0f} MiB while learning and training (whole process: with the "
            f"batch of flows being made and the peers' copy of it)"
        )
    else:
        print(f"  resident memory: peak {r['peak_score']:,.0f} MiB (whole process so far)")
    return rate


# -- 2. state size ---------------------------------------------------------------------------


def _disk(folder: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_size for p in folder.glob("*.parquet")} if folder.is_dir() else {}


Row = tuple[str, str, str, int, int, int]  # component, table, kind, rows, bytes, disk bytes


def _kind(name: str) -> str:
    return "meta" if name == "model_meta" else "model" if name.startswith("model_") else "live"


def state_tables(eng: DetectionEngine, data: Path) -> list[Row]:
    """(component, table, kind, rows, Arrow bytes, Parquet bytes) of a checkpoint; a
    frame or table shared by several detectors (the volume baseline and live state of
    M2-M9) counts its memory once."""
    eng.checkpoint()
    out = []
    held: list[object] = []  # keeps what was counted alive, so that ids stay unique
    shared: set[int] = set()
    for det in eng.detectors:
        disk = _disk(data / "state" / det.method)
        frames = {f"model_{k}": v for k, v in getattr(det, "model", {}).items()}
        for name, table in det.state().items():
            thing = frames.get(name, table)
            nbytes = 0 if id(thing) in shared else table.nbytes
            shared.add(id(thing))
            held.append(thing)
            out.append((det.method, name, _kind(name), table.num_rows, nbytes, disk.get(name, 0)))
    disk = _disk(data / "state" / "engine")
    for name, table in eng.buffer.state().items():
        out.append(("engine", name, "buffer", table.num_rows, table.nbytes, disk.get(name, 0)))
    return out


def report_state(title: str, tables: list[Row], keys: int) -> float:
    """Print state tables grouped by detector family; returns live bytes per communication."""
    groups: dict[tuple[str, str], list[int]] = {}
    for comp, name, kind, rows, nbytes, disk in tables:
        g = "M1" if comp == "M1" else family(comp) if comp != "engine" else "engine"
        slot = groups.setdefault((f"{g}:{name}", kind), [0, 0, 0, 0])
        slot[0] += 1
        slot[1] += rows if nbytes else 0  # rows held in memory (shared frames once)
        slot[2] += nbytes
        slot[3] += disk
    print(f"\n{title}: {keys:,} tracked communications")
    print(f"  {'table (tables)':<34}{'kind':<7}{'rows':>12}{'MiB':>9}{'B/row':>7}"
          f"{'disk MiB':>10}{'B/comm':>8}")  # fmt: skip
    for (name, kind), (k, rows, nbytes, disk) in sorted(groups.items(), key=lambda x: x[0][1]):
        if kind == "meta":
            continue
        label = f"{name} (x{k})" if k > 1 else name
        print(
            f"  {label:<34}{kind:<7}{rows:>12,}{nbytes / 2**20:9.1f}"
            f"{nbytes / max(rows, 1):7.0f}{disk / 2**20:10.1f}{nbytes / keys:8.1f}"
        )
    live = sum(t[4] for t in tables if t[2] == "live")
    live_disk = sum(t[5] for t in tables if t[2] == "live")
    per = live / keys
    verdict = "met" if per <= TARGET_LIVE else "NOT met"
    print(
        f"  (rows and MiB: in memory, a table shared by detectors once; disk: every file)\n"
        f"  live state: {live / 2**20:,.0f} MiB = {per:,.0f} B per communication in memory "
        f"(target <= {TARGET_LIVE}: {verdict}); "
        + (f"{live_disk / keys:,.0f} B per communication on disk" if live_disk else "not written")
    )
    return per


def model_per_key(tables: list[Row]) -> float:
    """Print model bytes per key (volume baseline: keys with enough history; clustering
    per-key tables of the comm view); returns the baseline's bytes per key."""
    base = [t for t in tables if t[1] == "model_baseline"]
    per = 0.0
    if base and base[0][3]:
        rows, nbytes, disk = base[0][3], base[0][4], sum(t[5] for t in base)
        per = nbytes / rows
        where = f", on disk {disk / rows:.0f} B per key ({len(base)} copies)" if disk else ""
        print(
            f"  model: volume baseline of {rows:,} keys with enough history, {per:.0f} B per key "
            f"in memory (one table shared by M2-M9){where}"
        )
    keys = [t for t in tables if t[1] == "model_keys" and t[0] in ("M10", "M11", "M18", "M19")]
    if keys and keys[0][3]:
        each = keys[0][4] / keys[0][3]
        print(
            f"  model: clustering, {len(keys) * each:.0f} B per communication key "
            f"({len(keys)} comm-view models x {each:.0f} B)"
        )
    return per


def synthetic_state(n: int) -> tuple[float, float]:
    """Live and model state for ``n`` communications, built by the detectors' own code;
    returns (live bytes, baseline bytes) per communication."""
    print(f"\nstate at {n:,} communications (built directly, not through the engine):")
    t = time.perf_counter()
    comms = communications(n, seed=11)
    flows = flows_of(comms, 0, comms.height, np.random.default_rng(5), np.arange(comms.height))
    del comms
    print(
        f"  {flows.height:,} flows, one per communication, made in {time.perf_counter() - t:.0f} s"
    )
    tables: list[Row] = []
    t = time.perf_counter()
    m1 = NewCommunication(NewCommunication.Settings(), NET)
    m1.learn(Batch(flows))
    for name, table in m1.state().items():
        tables.append(("M1", name, "live", table.num_rows, table.nbytes, 0))
    print(f"  M1 learned them in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    log = aggregate(flows, 60)
    took = time.perf_counter() - t
    print(
        f"  aggregate (all views) of the {flows.height:,} flows: {took:.1f} s, "
        f"{flows.height / took:,.0f} flows/s; comm rows {log['comm'].height:,}"
    )
    batch = Batch(flows.clear(), log, T0, T0 + timedelta(minutes=1), 60)
    del flows
    t = time.perf_counter()
    velocity = [cls(cls.Settings(), NET) for cls in CLUSTER_DETECTORS if cls.velocity]
    held: dict[int, pa.Table] = {}  # M10 and M18 share the comm view's table: count it once
    for det in velocity:
        det.observe(batch)
    for det in velocity:
        for name, table in det.live_state().items():
            nbytes = 0 if id(table) in held else table.nbytes
            held[id(table)] = table
            tables.append((det.method, name, "live", table.num_rows, nbytes, 0))
    print(f"  velocity detectors kept their last vectors in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    comm = log["comm"]
    model = _baseline_like(comm)
    vol = UNDERFLOW_ALL(UNDERFLOW_ALL.Settings(), NET)
    vol.model = {"baseline": model}
    vol.observe(batch)
    for name, table in vol.state().items():  # M2-M9 share one baseline and one live state
        tables.append((vol.method, name, _kind(name), table.num_rows, table.nbytes, 0))
    print(
        f"  the volume core kept the last active bucket of {vol.core.live.height:,} regular "
        f"keys in {time.perf_counter() - t:.1f} s (one live state for M2-M9)"
    )
    keys = pl.DataFrame(
        {
            "_key": model.get_column("_key"),
            "n": pl.Series(np.full(model.height, 40, np.int32)),
            "mask": pl.Series(np.full(model.height, 3, np.int32)),
            "thr": pl.Series(np.zeros(model.height, np.float32)),
        }
    )  # the schema of a clustering model's per-key table
    for m in ("M10", "M11", "M18", "M19"):
        tables.append((m, "model_keys", "model", keys.height, keys.to_arrow().nbytes, 0))
    live = report_state(f"state at {n:,}", tables, len(m1.comms))
    return live, model_per_key(tables)


def _baseline_like(comm: pl.DataFrame) -> pl.DataFrame:
    """A volume baseline with the real schema (trained on a small history) holding every
    key of ``comm`` as a regular key: the largest live state the volume detectors keep."""
    rng = np.random.default_rng(3)
    hist = comm.head(2000).select("site", "src_ip", "dst_ip", "dst_port", "proto")
    hist = hist[np.repeat(np.arange(hist.height), 40)].with_columns(
        bucket=pl.Series((np.tile(np.arange(40), 2000) * 600 + T0.timestamp()) * US).cast(
            pl.Datetime("us", "UTC")
        ),
        pkts_out=pl.Series(rng.geometric(0.1, 80_000)),
        pkts_in=pl.Series(rng.geometric(0.1, 80_000)),
    )
    small = bl.train(hist, T0 + timedelta(days=1), 60, bl.BaselineParams())
    rows = small[rng.integers(0, small.height, comm.height)]
    return rows.with_columns(
        comm.select(bl.key_hash(comm)).get_column("_key"), regular=pl.lit(True)
    )


# -- 3. retraining from 30 days of log -----------------------------------------------------


def history_log(keys: int, rows: int, days: int = 30) -> pl.DataFrame:
    """About ``rows`` comm-view log rows of ``keys`` communications over ``days``, one row
    per key and active bucket (duplicate draws dropped), sorted by bucket. Keys are
    unequally active (log-normal rates): many sparse, some busy."""
    rng = np.random.default_rng(3)
    comms = communications(keys, seed=5)
    minutes = days * 1440
    rate = rng.lognormal(0.0, 1.0, keys)
    key = np.searchsorted(np.cumsum(rate / rate.sum()), rng.random(rows)).clip(0, keys - 1)
    drawn = key * minutes + rng.integers(0, minutes, rows)
    drawn.sort()
    drawn = drawn[np.r_[True, drawn[1:] != drawn[:-1]]]  # (np.unique is slower here)
    drawn = drawn[np.argsort(drawn % minutes, kind="stable")]
    pick, minute = drawn // minutes, drawn % minutes
    n = len(drawn)
    pkts = rng.geometric(0.1, (2, n)).astype(np.int64)
    cols = ["bucket", "site", "src_ip", "dst_ip", "dst_port", "proto"]
    return (
        comms[pick]
        .with_columns(
            bucket=pl.Series(minute * 60 * US + int(T0.timestamp() * US)).cast(
                pl.Datetime("us", "UTC")
            ),
            site=pl.lit("default"),
        )
        .select(
            *cols,
            pkts_out=pkts[0],
            pkts_in=pkts[1],
            bytes_out=pkts[0] * rng.lognormal(6.0, 1.0, n).astype(np.int64),
            bytes_in=pkts[1] * rng.lognormal(6.0, 1.0, n).astype(np.int64),
            flows=rng.geometric(0.5, n).astype(np.int64),
            peers=pl.lit(1, pl.Int64),
            ports=rng.geometric(0.5, n).astype(np.int64),
            duration=rng.lognormal(0.0, 1.5, n),
        )
    )


def bench_training(keys: int, rows: int, velocity_models: bool, days: int = 30) -> dict[str, float]:
    """Time the volume baseline and the comm view's clustering models (k-means and Gaussian
    mixture, of magnitude; with ``velocity_models`` of velocity too) on a 30-day log."""
    took: dict[str, float] = {}
    t = time.perf_counter()
    log = history_log(keys, rows, days)
    print(
        f"\nretraining from {days} days of comm log: {log.height:,} rows of {keys:,} "
        f"communications (made in {time.perf_counter() - t:.0f} s)"
    )
    data = Path(_scratch("train-"))
    try:
        store = LogStore(data, "bench")
        t = time.perf_counter()
        store.write({"comm": log})
        written = time.perf_counter() - t
        size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
        del log
        until = T0 + timedelta(days=days)
        t = time.perf_counter()
        hist = store.read("comm", until - timedelta(days=30), until)
        took["read"] = time.perf_counter() - t
        print(
            f"  log on disk: {size / 2**20:,.0f} MiB (written in {written:.1f} s); "
            f"read back {took['read']:.1f} s"
        )
        t = time.perf_counter()
        base = bl.train(hist, until, 60, bl.BaselineParams())
        took["baseline"] = time.perf_counter() - t
        nb = base.to_arrow().nbytes / max(base.height, 1)
        print(
            f"  volume baseline (M2-M9)        {took['baseline']:6.1f} s  keys with >= 30 "
            f"buckets: {base.height:,} ({nb:.0f} B/key), regular {base['regular'].sum():,}"
        )
        del base
        t = time.perf_counter()
        prepared(hist, "comm")
        took["features"] = time.perf_counter() - t
        print(f"  clustering features (shared)   {took['features']:6.1f} s")
        for velocity in (False, True) if velocity_models else (False,):
            for mixture in (False, True):
                s = MixtureSettings() if mixture else ClusterSettings()
                t = time.perf_counter()
                model = train(hist, Spec("comm", velocity, mixture), s.params(), until)
                info = model["info"].row(0, named=True)
                kind = "velocity " if velocity else "magnitude"
                took[f"{kind.strip()} {info['model']}"] = spent = time.perf_counter() - t
                size = model["keys"].to_arrow().nbytes / max(model["keys"].height, 1)
                print(
                    f"  {kind} {info['model']:<20} {spent:6.1f} s  k={info['clusters']:<2} "
                    f"keys={info['keys']:,} ({size:.0f} B/key), history alarm rate "
                    f"{info['alarm_rate']:.5f}"
                )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return took


# -- main -----------------------------------------------------------------------------------


def _pin_one_core() -> str:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return f"pinned to CPU {cpus[-1]} of {len(cpus)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    ap.add_argument("--comms", type=int, default=1_000_000, help="active communications")
    ap.add_argument("--per-minute", type=int, default=1_000_000, help="flows per minute")
    ap.add_argument("--learn", type=int, default=10, help="learning minutes")
    ap.add_argument("--score", type=int, default=10, help="scoring minutes")
    ap.add_argument("--batch", type=int, default=5, help="minutes of flows per engine batch")
    ap.add_argument("--volume-min-history", type=int, default=5)
    ap.add_argument("--state-keys", type=int, default=10_000_000)
    ap.add_argument("--train-keys", type=int, default=1_000_000)
    ap.add_argument("--train-rows", type=int, default=20_000_000)
    ap.add_argument(
        "--velocity-models",
        action="store_true",
        help="also time the velocity models in retraining (about as long as magnitude)",
    )
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of: engine, state, training")
    args = ap.parse_args()
    if args.quick:
        args.comms, args.per_minute, args.learn, args.score = 10_000, 10_000, 10, 10
        args.state_keys, args.train_keys, args.train_rows = 50_000, 5_000, 150_000
    skip = set(filter(None, args.skip.split(",")))
    summary: list[str] = []
    where = _pin_one_core()
    load = os.getloadavg()
    print(
        f"bench_behavior: one core ({where}), polars {pl.__version__}, duckdb "
        f"{duckdb.__version__}; load average {load[0]:.1f} at start"
    )
    t = time.perf_counter()
    warm = argparse.Namespace(**{**vars(args), "learn": 10, "score": 5, "per_minute": 2000})
    shutil.rmtree(run_engine(communications(2000), warm, None, quiet=True)["data"])
    print(f"warm-up (numba kernels compiled or loaded): {time.perf_counter() - t:.1f} s")
    if "engine" not in skip:
        comms = communications(args.comms)
        print(
            f"\naggregation + scoring: {comms.height:,} communications, {args.per_minute:,} "
            f"flows per minute, {args.learn} min learning then {args.score} min scoring, "
            f"batches of {args.batch} min; M1, M2-M25 enabled (volume min_history "
            f"{args.volume_min_history})"
        )
        peers = None if args.no_peers else Peers()
        r = run_engine(comms, args, peers)
        rate = report_engine(r, peers, args)
        summary.append(
            f"aggregation + scoring, {args.comms:,} active communications: {rate:,.0f} flows/s "
            f"(target >= {TARGET_RATE:,}: {'met' if rate >= TARGET_RATE else 'NOT met'}); "
            f"peak RSS {r['peak_score']:,.0f} MiB"
        )
        eng: DetectionEngine = r["engine"]
        m1 = next(d for d in eng.detectors if isinstance(d, NewCommunication))
        tables = state_tables(eng, r["data"])
        regular = next(
            (d.model["baseline"] for d in eng.detectors if isinstance(d, VolumeDetector)), None
        )
        live = report_state("state after the engine run", tables, len(m1.comms))
        base = model_per_key(tables)
        summary.append(_state_line(len(m1.comms), live, base, "engine run"))
        if regular is not None and regular.height:
            print(
                f"  regular keys (volume live state): {regular.get_column('regular').sum():,} "
                f"of {regular.height:,} modeled"
            )
        shutil.rmtree(r["data"], ignore_errors=True)
        del eng, m1, r, tables, regular, comms
    if "state" not in skip:
        live, base = synthetic_state(args.state_keys)
        summary.append(_state_line(args.state_keys, live, base, "built directly"))
    if "training" not in skip:
        took = bench_training(args.train_keys, args.train_rows, args.velocity_models)
        models = ", ".join(f"{k} {v:.0f} s" for k, v in took.items() if " " in k)
        summary.append(
            f"retraining, {args.train_keys:,} keys, 30 days: read {took['read']:.0f} s, "
            f"volume baseline {took['baseline']:.0f} s, clustering features "
            f"{took['features']:.0f} s, {models}"
        )
    print(f"\nsummary (one core, load average {os.getloadavg()[0]:.1f} at the end):")
    for line in summary:
        print(f"  {line}")
    print(f"total {time.perf_counter() - t:.0f} s")


def _state_line(keys: int, live: float, base: float, how: str) -> str:
    verdict = "met" if live <= TARGET_LIVE else "NOT met"
    return (
        f"state at {keys:,} communications ({how}): live {live:,.0f} B per key "
        f"(target <= {TARGET_LIVE}: {verdict}), volume baseline {base:.0f} B per modeled key"
    )


if __name__ == "__main__":
    main()
