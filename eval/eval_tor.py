"""M26's shape model on data it was not tuned on: held-out inputs and the nDPI Tor capture.

Reads the same inputs as eval/train_tor.py (which tuned only the threshold, on the
other half of the inputs, and never saw the Tor capture's labels), scores every TCP
flow with the shipped parameters and prints, with the Tor connections of
``tor.pcap`` as positives and the held-out inputs' flows as negatives: confusion
counts and precision/recall at the shipped threshold, AUC, the scores of the Tor
connections, and where the held-out false alarms are. Flows to or from addresses on
the 2024 relay lists are left out of the negatives and listed separately.

Run:  .venv/bin/python eval/eval_tor.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import polars as pl
from eval_labeled import auc
from train_tor import labeled

from flowhawk.detectors.tor_model import ShapeModel


def report(name: str, df: pl.DataFrame, level: float) -> None:
    pos = df.get_column("tor").to_numpy()
    score = df.get_column("tor_shape").to_numpy()
    hit = score >= level
    tp, fp = int((hit & pos).sum()), int((hit & ~pos).sum())
    fn, tn = int((~hit & pos).sum()), int((~hit & ~pos).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    print(
        f"{name}: positives {tp + fn}, negatives {fp + tn}; at threshold {level:.2f}: "
        f"TP {tp} FP {fp} FN {fn} TN {tn}; precision {precision:.2f} recall {recall:.2f}; "
        f"false-alarm rate {fp / max(fp + tn, 1):.5f}; AUC {auc(score, pos):.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    logging.getLogger("flowhawk").setLevel(logging.ERROR)
    model = ShapeModel.load()
    flows = model.features(labeled(args.data.resolve()).filter(pl.col("proto") == 6))
    held = flows.filter((pl.col("part") == "holdout") & ~pl.col("listed"))
    tor = flows.filter(pl.col("part") == "tor")
    print(f"held-out inputs: {held.get_column('input').n_unique()}, TCP flows {held.height:,}")
    both = pl.concat([held, tor])
    report("held-out negatives + tor.pcap (all its TCP flows)", both, model.threshold)
    for level in (0.3, 0.2):
        report(f"  the same at a lower threshold {level:.2f}", both, level)
    tls = pl.concat([held, tor]).filter(pl.col("dst_port") == 443)
    report("port 443 only (Tor on 443 against HTTPS)", tls, model.threshold)
    cols = ["dst_ip", "dst_port", "src_pkts", "dst_pkts", "tor_mean_c", "tor_mean_s"]
    with pl.Config(tbl_rows=20, tbl_width_chars=140, float_precision=2):
        print("tor.pcap Tor connections:")
        print(tor.filter(pl.col("tor")).select(*cols, "tor_long", "tor_shape"))
        print("held-out flows at or above the threshold:")
        fa = held.filter(pl.col("tor_shape") >= model.threshold)
        print(fa.select("input", "src_ip", *cols, "tor_long", "tor_shape"))
        print("flows with a listed relay on either side (all inputs):")
        print(flows.filter(pl.col("listed")).select("input", "src_ip", *cols, "tor_shape"))


if __name__ == "__main__":
    main()
