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

Run:  .venv/bin/python eval/eval_beacon.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_labeled import auc

from flowhawk import config
from flowhawk.detectors.beacon_core import KEY
from flowhawk.detectors.beacon_score import beat_stats, beats_of
from flowhawk.pipeline import run

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


def captures(data: Path) -> None:
    cc = data / "labeled/slips_dataset/dataset_HEAD/test-cc"
    cfg = config.from_dict({"network": {"internal": ["147.32.0.0/16"]}})
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


def _rank(scored: pl.DataFrame, truth: pl.Expr) -> str:
    idx = scored.with_row_index("r").filter(truth).get_column("r")
    return str(int(idx.min()) + 1) if idx.len() else "not scored"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared" / "data")
    args = ap.parse_args()
    simulated()
    captures(args.data)


if __name__ == "__main__":
    main()
