"""Detection quality on labeled public captures: flow risk against per-flow labels.

For each labeled Zeek conn.log in ../shared/data (Stratosphere CTU captures, labels from
their netflowlabeler rules), runs the analyze pipeline twice: with the default
configuration (learning period: the first hour of each capture) and with a 10-minute
learning period (two of the captures are shorter than an hour). Both settings were
fixed before looking at these labels; nothing here is tuned on them. Joins
flow_scores.csv back to the records by Zeek uid and prints, with "Malicious" as the
positive class:

- AUC of the flow risk (ties broken by rank averaging);
- precision and recall of "risk > 0" (the flow belongs to an event);
- the same restricted to flows after the learning period, which is all a detector can
  see by design;
- the rank of the first truly malicious host in hosts.csv.

Run:  .venv/bin/python eval/eval_labeled.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from flowhawk import config
from flowhawk.pipeline import run

CAPTURES = [
    "labeled/stratosphere_scenarios/001-zeek-scenario-malicious/labeled-conn.log",
    "labeled/stratosphere_scenarios/008-zeek-mixed/data/conn.log.labeled",
    "labeled/stratosphere_scenarios/010-zeek-mixed/data/conn.log.labeled",
    "labeled/slips_dataset/dataset_HEAD/test18-malicious-ctu-sme-11-win/zeek-labeled/conn.log.labeled",
]


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pl.Series(scores).rank("average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def labels_of(path: Path) -> pl.DataFrame:
    """uid, ts and label columns of a labeled conn.log."""
    fields: list[str] = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("#fields"):
                fields = line.rstrip("\n").split("\t")[1:]
                break
    df = pl.read_csv(
        path,
        separator="\t",
        comment_prefix="#",
        has_header=False,
        new_columns=fields,
        infer_schema=False,
        quote_char=None,
    )
    return df.select(
        "uid", pl.col("ts").cast(pl.Float64), "label", pl.col("id.orig_h").alias("src")
    )


def evaluate(path: Path, learning: str) -> dict[str, object]:
    cfg = config.from_dict({"learning": {"period": learning}})
    with tempfile.TemporaryDirectory() as tmp:
        result = run([path], cfg, Path(tmp), Path(tmp), fmt="zeek")
        scores = pl.read_csv(Path(tmp) / "flow_scores.csv", schema_overrides={"flow_id": pl.String})
        hosts = pl.read_csv(Path(tmp) / "hosts.csv")
    lab = labels_of(path)
    df = lab.join(scores, left_on="uid", right_on="flow_id", how="inner")
    pos = (df.get_column("label") == "Malicious").to_numpy()
    risk = df.get_column("risk").to_numpy()
    until = result.learning_until.timestamp() if result.learning_until else -np.inf
    after = df.get_column("ts").to_numpy() >= until
    alarm = risk > 0

    def pr(mask: np.ndarray) -> tuple[float, float]:
        tp = int((alarm & pos & mask).sum())
        return (tp / max(int((alarm & mask).sum()), 1), tp / max(int((pos & mask).sum()), 1))

    p_all, r_all = pr(np.ones_like(pos))
    p_after, r_after = pr(after)
    bad_hosts = set(df.filter(pl.col("label") == "Malicious").get_column("src"))
    ranks = [i + 1 for i, ip in enumerate(hosts.get_column("ip")) if ip in bad_hosts]
    return {
        "capture": path.parent.name if path.parent.name != "data" else path.parent.parent.name,
        "learning": learning,
        "flows": df.height,
        "malicious": int(pos.sum()),
        "auc": auc(risk, pos),
        "auc_after_learning": auc(risk[after], pos[after]),
        "precision": p_all,
        "recall": r_all,
        "precision_after": p_after,
        "recall_after": r_after,
        "events": result.events.height,
        "first_bad_host_rank": ranks[0] if ranks else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    ap.add_argument("--data", type=Path, default=default)
    args = ap.parse_args()
    rows = [evaluate(args.data / c, learning) for learning in ("1h", "10m") for c in CAPTURES]
    table = pl.DataFrame(rows)
    with pl.Config(tbl_cols=-1, tbl_width_chars=220, float_precision=3):
        print(table)


if __name__ == "__main__":
    main()
