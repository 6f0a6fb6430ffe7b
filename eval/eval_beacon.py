"""Beaconing (N1): flowhawk's beacon score against a RITA-style score, and real captures.

Part 1, simulated series (seeded; nothing here was tuned on these series: the score's
constants were fixed from the reasoning in flowhawk/detectors/beacon_score.py). Beacons
with periods from 10 s to 1 h, uniform jitter of 0-50 % of the period, 0-30 % missed
beats and 0-30 % extra contacts of other traffic, against series with no period:
Poisson contacts and bursty user sessions with the same numbers of contacts. Both
scores see the same beats (at most 256, over at most a day). Printed per jitter level:
ROC AUC and TPR at 1 % FPR (the threshold is the 99th percentile of the scores of the
series with no period).

The RITA-style score follows RITA's published beacon analysis: the timestamp score is
the mean of ``1 - |Bowley skewness of the intervals|``, ``1 - MAD of the intervals /
30 s`` (clipped at 0) and a connection-count score (here the share of the series' hours
that have contacts); the data-size score the mean of ``1 - |Bowley skewness of the
sizes|``, ``1 - MAD of the sizes / 32 bytes`` and ``1 - mode of the sizes / 65535``; the
score is the mean of the two.

Part 2, real captures: Slips' test-cc captures (curl to one HTTPS server every 2 s, and
every 2-3.6 s) read through flowhawk (pcap → flows), every communication scored over
the whole capture: the rank of the beaconing pair (147.32.80.37 → the server on 443).
With the capture's own DNS, flows are also keyed by the name their client looked up
(N1's name series): the rank of the beacon among address and name series together
(the captures' DNS does not name the beacon's server, so this checks that name series
do not push it down).

Part 3, beacons to a name whose addresses rotate, through N1/N2 in the engine (seeded
flows and DNS; nothing tuned on them): a client resolves the name before each check-in
(every 60 s or 300 s ± 10 %, 5 % of beats missed) and gets one of k addresses at random,
for 8 hours after a 1-hour learning period, beside 30 clients browsing 60 named web
servers (several names share an address, as on a CDN). Printed per case: the hourly
windows in which N1 alarms on the beacon with address keys only (no DNS) and with name
series, the most N1 alarms on the beacon in one window (1: no double alarms), and N1
alarms on anything else.

Run:  .venv/bin/python eval/eval_beacon.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_labeled import auc

from flowhawk import config
from flowhawk.detectors import DETECTORS
from flowhawk.detectors.beacon_core import KEY
from flowhawk.detectors.beacon_names import ClientNames
from flowhawk.detectors.beacon_score import beat_stats, beats_of
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import read_dns
from flowhawk.dns.schema import DNS_SCHEMA
from flowhawk.engine import DetectionEngine
from flowhawk.normalize import Normalizer
from flowhawk.pipeline import run
from flowhawk.schema import RAW_FLOW_SCHEMA, conform
from flowhawk.state import StateStore

DAY = 86400.0
MAX_BEATS = 256


def _bowley(q1: pl.Expr, q2: pl.Expr, q3: pl.Expr) -> pl.Expr:
    den = q3 - q1
    ok = (den > 0) & (q2 != q1) & (q2 != q3)
    return pl.when(ok).then((q1 + q3 - 2 * q2) / den).otherwise(0.0)


def rita_style(beats: pl.DataFrame, key: list[str], min_beats: int = 10) -> pl.DataFrame:
    """The RITA-style score described above, per key (``t`` in microseconds)."""
    df = beats.sort([*key, "t"]).with_columns(
        d=(pl.col("t") - pl.col("t").shift(1).over(key)).cast(pl.Float64) / 1e6,
        hour=pl.col("t") // 3_600_000_000,
    )
    d = pl.col("d").drop_nulls()
    b = pl.col("bytes").cast(pl.Float64)
    out = df.group_by(key).agg(
        n=pl.len(),
        q1=d.quantile(0.25),
        q2=d.quantile(0.5),
        q3=d.quantile(0.75),
        madm=(d - d.median()).abs().median(),
        hours=pl.col("hour").n_unique(),
        span_h=(pl.col("hour").max() - pl.col("hour").min() + 1),
        s1=b.quantile(0.25),
        s2=b.quantile(0.5),
        s3=b.quantile(0.75),
        smad=(b - b.median()).abs().median(),
        smode=b.mode().sort().first(),
    )
    ts = (
        (1 - _bowley(pl.col("q1"), pl.col("q2"), pl.col("q3")).abs())
        + (1 - pl.col("madm") / 30.0).clip(0, 1)
        + (pl.col("hours") / pl.col("span_h")).clip(0, 1)
    ) / 3
    ds = (
        (1 - _bowley(pl.col("s1"), pl.col("s2"), pl.col("s3")).abs())
        + (1 - pl.col("smad") / 32.0).clip(0, 1)
        + (1 - pl.col("smode") / 65535.0).clip(0, 1)
    ) / 3
    return out.filter(pl.col("n") >= min_beats).select(*key, score=(ts + ds) / 2)


def _series(rng: np.random.Generator) -> tuple[list[dict], list[int]]:
    rows: list[dict] = []
    truth: list[int] = []

    def add(times: np.ndarray, sizes: np.ndarray, label: int, jitter: float) -> None:
        times = np.sort(times[(times >= 0) & (times < DAY)])[-MAX_BEATS:]
        if len(times) < 10:
            return
        k = len(truth)
        truth.append(label)
        for t, s in zip(times, sizes[: len(times)], strict=False):
            rows.append({"k": k, "t": int(t * 1e6), "bytes": int(max(s, 40)), "jit": jitter})

    for period in (10.0, 60.0, 300.0, 900.0, 3600.0):
        for jitter in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
            for missed in (0.0, 0.1, 0.3):
                for other in (0.0, 0.1, 0.3):
                    for _ in range(3):
                        n = min(int(DAY / period), MAX_BEATS)
                        start = rng.uniform(0, DAY - n * period)
                        gaps = period * (1 + rng.uniform(-jitter, jitter, n))
                        t = start + np.cumsum(gaps)
                        t = t[rng.random(n) >= missed]
                        extra = rng.uniform(t.min(), t.max(), int(other * len(t)))
                        times = np.concatenate([t, extra])
                        sizes = np.concatenate(
                            [
                                rng.normal(1200, 40, len(t)),
                                rng.lognormal(8, 1.2, len(extra)),
                            ]
                        )
                        add(times, sizes[np.argsort(times)], 1, jitter)
    for _ in range(900):  # no period: Poisson contacts and bursty sessions
        n = int(rng.integers(10, MAX_BEATS))
        span = rng.uniform(600, DAY)
        if rng.random() < 0.5:
            times = np.sort(rng.uniform(0, span, n))
        else:
            sessions = rng.uniform(0, span, max(1, n // 8))
            times = np.sort(
                np.concatenate([s + np.cumsum(rng.exponential(20, 8)) for s in sessions])
            )
        add(times, rng.lognormal(8, 1.2, len(times)), 0, -1.0)
    return rows, truth


def simulated(seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    rows, truth = _series(rng)
    beats = pl.DataFrame(rows)
    labels = pl.DataFrame({"k": np.arange(len(truth)), "label": truth})
    jit = beats.group_by("k").agg(jit=pl.col("jit").first())
    ours = beat_stats(beats, ["k"]).select("k", ours="score")
    rita = rita_style(beats, ["k"]).select("k", rita="score")
    df = labels.join(jit, on="k").join(ours, on="k", how="left").join(rita, on="k", how="left")
    df = df.fill_null(0.0)
    neg = df.filter(pl.col("label") == 0)
    print(
        f"simulated: {df.filter(pl.col('label') == 1).height} beacon series, "
        f"{neg.height} series with no period"
    )
    print(
        f"{'jitter':>8} {'n':>5} | {'AUC ours':>9} {'AUC RITA':>9} | {'TPR@1% ours':>12} "
        f"{'TPR@1% RITA':>12} | {'TPR at N1 0.6':>13}"
    )
    cut = {s: float(np.quantile(neg.get_column(s).to_numpy(), 0.99)) for s in ("ours", "rita")}
    for j in sorted(df.filter(pl.col("label") == 1).get_column("jit").unique().to_list()):
        pos = df.filter(pl.col("jit") == j)
        both = pl.concat([pos, neg])
        y = both.get_column("label").to_numpy() == 1
        a = {s: auc(both.get_column(s).to_numpy(), y) for s in ("ours", "rita")}
        tpr = {s: float((pos.get_column(s).to_numpy() > cut[s]).mean()) for s in ("ours", "rita")}
        print(
            f"{f'±{j:.0%}':>8} {pos.height:>5} | {a['ours']:>9.3f} {a['rita']:>9.3f} | "
            f"{tpr['ours']:>12.2f} {tpr['rita']:>12.2f} | "
            f"{float((pos.get_column('ours').to_numpy() >= 0.6).mean()):>13.2f}"
        )
    y = df.get_column("label").to_numpy() == 1
    print(
        f"{'all':>8} {int(y.sum()):>5} | {auc(df.get_column('ours').to_numpy(), y):>9.3f} "
        f"{auc(df.get_column('rita').to_numpy(), y):>9.3f}"
    )
    print(
        f"thresholds at 1 % FPR: ours {cut['ours']:.2f}, RITA-style {cut['rita']:.2f}; "
        f"N1's default threshold 0.60 gives FPR "
        f"{float((neg.get_column('ours').to_numpy() >= 0.6).mean()):.3%}"
    )


def _only(*methods: str) -> dict:
    return {m: {"enabled": m in methods} for m in DETECTORS.names()}


def captures(data: Path) -> None:
    cc = data / "labeled/slips_dataset/dataset_HEAD/test-cc"
    cfg = config.from_dict(
        {"network": {"internal": ["147.32.0.0/16"]}, "detectors": _only("N1", "N2")}
    )
    for name in ("test-cc-capture-1.pcap", "test-cc-capture-2.pcap"):
        with tempfile.TemporaryDirectory() as tmp:
            run([cc / name], cfg, Path(tmp), Path(tmp))
            flows = pl.read_parquet(Path(tmp) / "flows" / "**" / "*.parquet")
        contacts = flows.select(
            *KEY,
            "src_internal",
            "dst_internal",
            t=pl.col("ts_start").dt.epoch("us"),
            bytes=(pl.col("src_bytes") + pl.col("dst_bytes")).cast(pl.Int64),
        )
        truth = (pl.col("src_ip") == "147.32.80.37") & (pl.col("dst_port") == 443)
        outbound = pl.col("src_internal") & ~pl.col("dst_internal")
        for scope, rows in (("all", contacts), ("outbound (N1)", contacts.filter(outbound))):
            beats = beats_of(rows.drop("src_internal", "dst_internal"), KEY, 0.5)
            ours = beat_stats(beats, KEY).sort("score", descending=True)
            rita = rita_style(beats, KEY).sort("score", descending=True)
            top = ours.head(1).row(0, named=True)
            print(
                f"{name} [{scope}]: {flows.height} flows, {ours.height} communications with "
                f">= 10 beats; beacon pair rank: ours {_rank(ours, truth)}, RITA-style "
                f"{_rank(rita, truth)}; top: {top['src_ip']} -> {top['dst_ip']}:"
                f"{top['dst_port']} every {top['period']:.2f} s ± {top['jitter']:.0%}, "
                f"score {top['score']:.2f}"
            )
        _with_names(cc / name, contacts.filter(outbound), truth)


def _with_names(capture: Path, contacts: pl.DataFrame, truth: pl.Expr) -> None:
    """The rank of the beacon among address and name series (N1 scope) of a capture."""
    diag = Diagnostics()
    tables = [pl.from_arrow(t) for t in read_dns(capture, diag)]
    dns = pl.concat(tables).sort("ts") if tables else None  # type: ignore[arg-type]
    rows = contacts.sort("t").with_columns(
        name=ClientNames(86400.0).name(contacts.sort("t"), dns)  # type: ignore[arg-type]
    )
    series = ["site", "src_ip", "dst", "dst_port", "proto"]
    keyed = pl.concat(
        [
            rows.with_columns(dst=pl.col("dst_ip"), named=pl.lit(False)),
            rows.filter(pl.col("name").is_not_null()).with_columns(
                dst=pl.col("name"), named=pl.lit(True)
            ),
        ]
    )
    beats = beats_of(keyed.select(*series, "named", "t", "bytes"), [*series, "named"], 0.5)
    ours = beat_stats(beats, [*series, "named"]).sort("score", descending=True)
    ours = ours.with_columns(dst_ip=pl.col("dst"))
    print(
        f"{capture.name} [outbound, address + name series]: {rows.height} outbound flows, "
        f"{int(rows.get_column('name').is_not_null().sum())} named by the capture's DNS, "
        f"{ours.filter('named').height} name series with >= 10 beats; beacon pair rank: "
        f"{_rank(ours, truth & ~pl.col('named'))}"
    )


def _rank(scored: pl.DataFrame, truth: pl.Expr) -> str:
    idx = scored.with_row_index("r").filter(truth).get_column("r")
    return str(int(idx.min()) + 1) if idx.len() else "not scored"


# -- part 3: beacons to a name whose addresses rotate ----------------------------------

BOT, NAME, HOUR = "10.0.0.5", "c2.evil.example", 3600.0


def _raw_flows(src: list[str], dst: list[str], port: list[int], t: np.ndarray) -> pl.DataFrame:
    start = pl.Series(np.round(t * 1e6).astype(np.int64)).cast(pl.Datetime("us", "UTC"))
    n = len(t)
    raw = pl.DataFrame(
        {
            "ts_start": start,
            "ts_end": start + timedelta(seconds=1),
            "src_ip": src,
            "dst_ip": dst,
            "src_port": np.arange(n, dtype=np.int32) % 20000 + 40000,
            "dst_port": np.asarray(port, dtype=np.int32),
            "proto": np.full(n, 6, dtype=np.int16),
            "src_pkts": np.full(n, 5),
            "src_bytes": np.full(n, 600),
            "dst_pkts": np.full(n, 4),
            "dst_bytes": np.full(n, 900),
            "orient": "start",
            "uni": False,
            "sampling": 1,
            "input": "eval",
            "flow_id": pl.Series(np.arange(n)).cast(pl.String),
        }
    )
    return raw


def _dns_rows(client: list[str], name: list[str], addr: list[str], t: np.ndarray) -> pl.DataFrame:
    ts = pl.Series(np.round(t * 1e6).astype(np.int64)).cast(pl.Datetime("us", "UTC"))
    return pl.DataFrame(
        {
            "ts": ts,
            "src_ip": client,
            "query": name,
            "answers": [[a] for a in addr],
            "answer_types": [["A"]] * len(addr),
        }
    )


def _rotating_case(
    rng: np.random.Generator, period: float, k: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Raw flows and DNS: the rotating beacon and the browsing background."""
    addrs = [f"198.51.100.{10 + i}" for i in range(k)]
    n = int(8 * HOUR / period)
    t = HOUR + np.cumsum(period * (1 + rng.uniform(-0.1, 0.1, n)))
    t = t[rng.random(n) >= 0.05]
    pick = [addrs[i] for i in rng.integers(0, k, len(t))]
    # background: 60 names on 40 addresses, 30 clients browsing in sessions
    names = [f"www.site{i}.example" for i in range(60)]
    where = [f"203.0.113.{i % 40 + 1}" for i in range(60)]
    sessions = rng.uniform(0, 9 * HOUR, 1500)
    site = rng.integers(0, 60, len(sessions))
    client = [f"10.0.1.{20 + c}" for c in rng.integers(0, 30, len(sessions))]
    b_t = np.concatenate([s + np.cumsum(rng.exponential(20, 6)) for s in sessions])
    b_site = np.repeat(site, 6)
    b_client = list(np.repeat(client, 6))
    flows = pl.concat(
        [
            _raw_flows([BOT] * len(t), pick, [443] * len(t), t),
            _raw_flows(b_client, [where[i] for i in b_site], [443] * len(b_t), b_t),
        ]
    ).sort("ts_start")
    dns = pl.concat(
        [
            _dns_rows([BOT] * len(t), [NAME] * len(t), pick, t - 0.05),
            _dns_rows(client, [names[i] for i in site], [where[i] for i in site], sessions - 0.05),
        ]
    ).sort("ts")
    rows = dns.with_columns(input=pl.lit("eval")).to_arrow().to_pylist()
    full = pl.from_arrow(pa.Table.from_pylist(rows, schema=DNS_SCHEMA))  # others null
    assert isinstance(full, pl.DataFrame)
    return flows, full


def rotating(seed: int = 11) -> None:
    print(
        f"rotating addresses: beacon {BOT} -> {NAME}, 8 h after 1 h of learning "
        "(windows alarmed of 8-9)"
    )
    print(
        f"{'period':>7} {'k':>3} | {'addresses only':>14} {'with names':>10} | "
        f"{'most a window':>13} {'other N1':>8}"
    )
    cfg = config.from_dict({"learning": {"period": "1h"}, "detectors": _only("N1", "N2")})
    for period in (60.0, 300.0):
        for k in (1, 2, 5, 10):
            rng = np.random.default_rng(seed + k + int(period))
            raw, dns = _rotating_case(rng, period, k)
            table = conform(raw.to_arrow(), RAW_FLOW_SCHEMA)
            flows = pl.from_arrow(Normalizer(cfg, Diagnostics()).process(table))
            assert isinstance(flows, pl.DataFrame)
            flows = flows.sort("ts_start", maintain_order=True)
            got = {}
            for label, use_dns in (("blind", False), ("names", True)):
                with tempfile.TemporaryDirectory() as tmp:
                    eng = DetectionEngine(cfg, StateStore(Path(tmp)))
                    hours = flows.with_columns(_h=pl.col("ts_start").dt.truncate("1h"))
                    out = []
                    for part in hours.partition_by("_h", maintain_order=True):
                        lo = part.get_column("_h")[0]
                        near = dns.filter(pl.col("ts").dt.truncate("1h") == lo)
                        out.append(eng.process(part.drop("_h"), near if use_dns else None))
                    out.append(eng.finish())
                got[label] = pl.concat(out).filter(pl.col("method") == "N1")
            beacon = {lab: a.filter(pl.col("src_ip") == BOT) for lab, a in got.items()}
            windows = {
                lab: b.get_column("ts").dt.truncate("1h").n_unique() for lab, b in beacon.items()
            }
            most = beacon["names"].group_by(pl.col("ts").dt.truncate("1h")).len()
            other = sum(a.filter(pl.col("src_ip") != BOT).height for a in got.values())
            print(
                f"{period:>6.0f}s {k:>3} | {windows['blind']:>14} {windows['names']:>10} | "
                f"{int(most.get_column('len').max() or 0):>13} {other:>8}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared" / "data")
    args = ap.parse_args()
    simulated()
    captures(args.data)
    rotating()


if __name__ == "__main__":
    main()
