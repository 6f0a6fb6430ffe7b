"""M26's shape model on data its fit never saw: held-aside lab runs, held-out inputs,
the nDPI Tor capture and two normal days.

Positives are real Tor connections of the eval/torlab.py runs that eval/train_tor.py
held aside (runs 3 and 4 by default: relays with fresh keys, other ports and addresses
of another seed), reported as a whole, from the clients only (what a site sees), for
the relays of the half training never used and the bridge (the "unlisted relay"
case), and on port 443 only. Negatives are the TCP flows of the held-out half of the
public inputs (hash split, the other half tuned the fit). Each line gives confusion
counts, precision and recall at the shipped threshold and AUC, beside the hand-set
model M26 shipped before (weights from the protocol, threshold 0.50).

Then, held out entirely: the 7 Tor connections of nDPI's ``tor.pcap`` (a real Tor
client on the internet, all on port 443) with their scores, and the shape alarms the
model would raise on the normal days (Stratosphere scenarios 008 and 010: every TCP
flow, no Tor in them).

Run:  .venv/bin/python eval/eval_tor.py [--lab /tmp/flowhawk-torlab] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import polars as pl
from train_tor import DEFAULT_LAB, TRAIN_SEEDS, auc, eligible, lab_flows, labeled

from flowhawk.detectors.tor_model import ShapeModel
from flowhawk.schema import FLOW_COLUMNS

#: The hand-set model M26 shipped before it was fitted (for comparison).
PRIOR = {"bias": -6.0, "relay": 4.0, "tls": 0.0, "other": -1.0, "cells": 1.25, "long": 1.5,
         "busy": 0.75, "two_way": 0.75, "threshold": 0.5}  # fmt: skip


def prior_score(flows: pl.DataFrame) -> np.ndarray:
    """The score of the former hand-set model (relay ports 9001/9030, SOCKS 9050/9150)."""
    p = PRIOR
    port = pl.col("dst_port")
    mean_c = pl.col("src_bytes") / pl.col("src_pkts").clip(lower_bound=1)
    mean_s = pl.col("dst_bytes") / pl.col("dst_pkts").clip(lower_bound=1)
    seconds = (pl.col("ts_end") - pl.col("ts_start")).dt.total_microseconds() / 1e6
    ratio = ((pl.col("src_bytes") + 1) / (pl.col("dst_bytes") + 1)).log().abs()
    z = (
        pl.lit(p["bias"])
        + pl.when(port.is_in([9001, 9030]))
        .then(p["relay"])
        .when(port.is_in([9050, 9150]))
        .then(3.0)
        .when(port == 443)
        .then(p["tls"])
        .otherwise(p["other"])
        + p["cells"] * (mean_c.is_between(180, 720).cast(pl.Float64) + mean_s.is_between(180, 720))
        + p["long"] * (seconds.clip(lower_bound=0).log1p() / math.log1p(600)).clip(0, 1)
        + p["busy"]
        * ((pl.col("src_pkts") + pl.col("dst_pkts")).log1p() / math.log1p(200)).clip(0, 1)
        + p["two_way"] * (1 - ratio / math.log(100)).clip(0, 1)
    )
    return flows.select(1 / (1 + (-z).exp())).to_series().to_numpy()


def report(name: str, pos: pl.DataFrame, neg: pl.DataFrame, model: ShapeModel) -> None:
    """One line each for the fitted model and the former prior on ``pos`` vs ``neg``."""
    y = np.r_[np.ones(pos.height, bool), np.zeros(neg.height, bool)]
    both = pl.concat([pos.select(FLOW_COLUMNS), neg.select(FLOW_COLUMNS)], how="vertical_relaxed")
    for label, score, level in (
        ("fitted", model.score(both).to_numpy(), model.threshold),
        ("prior ", prior_score(both), PRIOR["threshold"]),
    ):
        hit = score >= level
        tp, fp = int((hit & y).sum()), int((hit & ~y).sum())
        fn, tn = int((~hit & y).sum()), int((~hit & ~y).sum())
        precision = f"{tp / (tp + fp):.3f}" if tp + fp else "-"
        print(
            f"{name:<38} {label} {tp + fn:>5} {fp + tn:>7}  TP {tp:>4} FP {fp:>3} FN {fn:>4}  "
            f"precision {precision:>5} recall {tp / max(tp + fn, 1):.3f}  AUC {auc(score, y):.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--lab", type=Path, default=DEFAULT_LAB)
    ap.add_argument("--train-seeds", type=int, nargs="+", default=list(TRAIN_SEEDS))
    args = ap.parse_args()
    logging.getLogger("flowhawk").setLevel(logging.ERROR)
    model = ShapeModel.load()
    lab = lab_flows(args.lab, tuple(args.train_seeds))
    flows = labeled(args.data.resolve()).filter(pl.col("proto") == 6)
    held = flows.filter((pl.col("part") == "holdout") & ~pl.col("listed"))
    test = lab.filter(pl.col("part") == "test")
    runs = sorted(test.get_column("seed").unique().to_list())
    print(f"shipped model: {'trees' if model.trees else 'logistic'}, threshold {model.threshold}")
    print(
        f"held-aside lab runs {runs}: {test.height} Tor connections; held-out public "
        f"inputs: {held.get_column('input').n_unique()}, {held.height:,} TCP flows\n"
    )
    print(f"{'set':<38} model    pos     neg")
    unseen = (pl.col("relay_half") == 1) | (pl.col("role") == "bridge")
    sets = {
        "all Tor connections": test,
        "  from clients (LAN -> relay)": test.filter(pl.col("client_side")),
        "  between relays": test.filter(~pl.col("client_side")),
        "  unseen relay half + bridge": test.filter(unseen),
        "  bridge only (unlisted, high port)": test.filter(pl.col("role") == "bridge"),
        "  with >= 4 packets each way": eligible(test, 4),
    }
    for name, pos in sets.items():
        report(name, pos, held, model)
    on443 = held.filter(pl.col("dst_port") == 443)
    report("port 443 only (Tor vs HTTPS)", test.filter(pl.col("dst_port") == 443), on443, model)
    files = sorted(args.lab.glob("*/flows.parquet"))
    https = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    https = https.filter((pl.col("label") == "https") & pl.col("seed").is_in(runs))
    hit = model.score(https) >= model.threshold
    print(f"  the lab's plain HTTPS fetches (not Tor): {https.height}, flagged {hit.sum()}")
    for role in ("auth", "guard", "middle", "exit", "bridge"):
        part = test.filter(pl.col("role") == role)
        hit = model.score(part) >= model.threshold
        print(f"  to {role:<7} {part.height:>4} connections, recall {hit.mean() or 0:.3f}")

    print("\nnDPI tor.pcap (held out entirely; a Tor client on the internet, port 443):")
    tor = flows.filter(pl.col("part") == "tor")
    scored = model.features(tor).with_columns(prior=pl.Series(prior_score(tor)))
    cols = ["dst_ip", "dst_port", "src_pkts", "dst_pkts", "tor_mean_c", "tor_mean_s"]
    with pl.Config(tbl_rows=20, tbl_width_chars=140, float_precision=2):
        print(scored.filter(pl.col("tor")).select(*cols, "tor_long", "tor_shape", "prior"))
    report("tor.pcap: its Tor vs held-out", tor.filter(pl.col("tor")), held, model)
    other = scored.filter(~pl.col("tor") & (pl.col("tor_shape") >= model.threshold)).height
    print(f"tor.pcap's other TCP flows at or above the threshold: {other}")

    print("\nnormal days (every TCP flow; never used in training):")
    for day in ("008", "010"):
        d = model.features(flows.filter(pl.col("part") == day))
        fa = d.filter(pl.col("tor_shape") >= model.threshold)
        prior_fa = int((prior_score(d) >= PRIOR["threshold"]).sum())
        print(
            f"  {day}: {d.height:,} TCP flows, {fa.height} shape alarms "
            f"({fa.get_column('src_ip').n_unique()} hosts); the prior: {prior_fa}"
        )
        with pl.Config(tbl_rows=10, tbl_width_chars=140, float_precision=2):
            if fa.height:
                print(fa.select("src_ip", *cols, "tor_long", "tor_shape").head(10))

    fa = model.features(held).filter(pl.col("tor_shape") >= model.threshold)
    print(f"\nheld-out false alarms by input ({fa.height}):")
    with pl.Config(tbl_rows=20, tbl_width_chars=160, fmt_str_lengths=60):
        print(fa.group_by("input").len().sort("len", descending=True).head(15))


if __name__ == "__main__":
    main()
