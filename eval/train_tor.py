"""Fit M26's Tor shape model and write it to src/flowhawk/detectors/tor_model.json.

Positives: real Tor connections from the private Tor network of ``eval/torlab.py``
(``flows.parquet`` of each run under ``--lab``), labelled by construction: TCP flows to
a relay's or the bridge's ORPort, from the lab's clients and onion service (the site's
view: LAN host → relay) and between relays. Relay-to-relay connections opened and closed
while the network was forming (before every client had bootstrapped: a new network's
relays all meet at once) are left out; clients' own bootstrap connections are kept.

Negatives: the TCP flows of the public captures and logs in ../shared/data (read with
flowhawk's own readers, as detection reads them), HTTPS and other TLS included (the
hard negatives). Both sides keep only flows with at least ``min_packets`` packets each
way: the model scores every other flow 0. The 2024 relay lists match 4 flows of the
public data, none of them a Tor connection (a Gnutella peer whose address is a relay
today; an exit fetching a web page), so they are neither positives nor negatives: there
are no relay-list-labelled Tor flows in the data to add.

What the fit may see (the rest is for eval/eval_tor.py):

* lab runs with a seed in ``--train-seeds`` (default 1 and 2), and of those only the
  relays in the training half (``relay_half``: a hash of seed and relay name) and never
  the bridge; runs 3 and 4 (fresh relays: new keys, other ports) are held aside;
* negatives from the *tuning* half of the inputs (a hash of the path); never the nDPI
  Tor capture nor the two normal-traffic days (Stratosphere 008 and 010), which are
  only evaluated.

Two kinds of model are fitted with scikit-learn on the features of ``tor_model.py``:
a logistic regression and small gradient-boosted trees (depth 3). With ``--kind auto``
the kind is chosen on the training data alone: each is fitted on run 1 and half of
the tuning negatives and judged on run 2 and the other half (recall at a 0.2 % false
alarm rate, then AUC); the winner is refitted on all training data. Classes are
weighted to equal total weight. The alarm threshold is the lowest score that at most
:data:`FALSE_ALARM_RATE` of the training negatives reach, each scored by a model fitted
without its input (:func:`out_of_fold`), never below :data:`FLOOR`. The rate is 0.2 %:
at 0.1 % that threshold was 0.9999, which almost no Tor connection reaches.

Run:  .venv/bin/python eval/torlab.py run --seed N   # for N in 1 2 3 4 (about 6 min each)
      .venv/bin/python eval/train_tor.py [--lab /tmp/flowhawk-torlab] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from eval_labeled import auc

from flowhawk import config
from flowhawk.detectors.tor_model import FEATURES, MODEL_FILE, ShapeModel
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer
from flowhawk.pipeline import read_inputs

INPUTS = (
    "labeled",
    "conformance/ndpi_pcaps/pcap",
    "conformance/dpkt_pcaps",
    "conformance/tcpdump_sflow_dns",
)
TOR_CAPTURE = "conformance/ndpi_pcaps/pcap/tor.pcap"
TOR_RESULT = "conformance/ndpi_pcaps/result/tor.pcap.out"
NORMAL_DAYS = {
    "008": "labeled/stratosphere_scenarios/008-zeek-mixed/data/conn.log.labeled",
    "010": "labeled/stratosphere_scenarios/010-zeek-mixed/data/conn.log.labeled",
}
RELAY_LISTS = ("intel/tor/tor-nodes.lst", "intel/tor/tor-exit-nodes.lst")
DEFAULT_LAB = Path("/tmp/flowhawk-torlab")
TRAIN_SEEDS = (1, 2)
FALSE_ALARM_RATE = 0.002
FLOOR = 0.5
FOLDS = 5
#: The feature scaling the model is fitted with (not learned).
BASE = {
    "ports": {"relay": [9001, 9030], "tls": [443]},
    "cell_band": [180.0, 720.0],
    "long_seconds": 300.0,  # the lab's runs are 5 minutes: no extrapolation past that
    "busy_packets": 5000.0,
    "min_packets": 4,
}


def half(key: str) -> int:
    """0 or 1, fixed by the key's SHA-256 (the split of inputs and of relays)."""
    return hashlib.sha256(key.encode()).digest()[0] & 1


# -- negatives: the public data -------------------------------------------------------


def load_flows(data: Path) -> pl.DataFrame:
    """Canonical flows of every readable flow input, ``input`` relative to ``data``."""
    cfg = config.load(None)
    diag = Diagnostics()
    norm = Normalizer(cfg, diag)
    frames = []
    for name, tables in read_inputs([data / p for p in INPUTS], cfg, diag):
        try:
            frames += [pl.from_arrow(norm.process(t)) for t in tables]
        except Exception:  # a file that looks like a flow log but is not one
            continue
        frames.append(pl.from_arrow(norm.end_input(name)[0]))
    flows = pl.concat([f for f in frames if f.height], how="vertical_relaxed")  # type: ignore[misc]
    prefix = str(data) + "/"
    return flows.with_columns(pl.col("input").str.strip_prefix(prefix))


def tor_endpoints(data: Path) -> set[tuple[str, int, str, int]]:
    """(client, port, server, port) of the Tor connections in the nDPI capture: nDPI's
    Tor label, or the TLS client fingerprint of those flows with a random www name."""
    rows = []
    line_re = re.compile(r"TCP (\S+):(\d+) <-> (\S+):(\d+) \[proto: [\d.]+/([\w.]+)\]")
    for line in (data / TOR_RESULT).read_text().splitlines():
        m = line_re.search(line)
        if m:
            ja3 = re.search(r"JA3C: (\w+)", line)
            sni = re.search(r"Hostname/SNI: ([^\]]+)", line)
            rows.append((m.groups(), ja3.group(1) if ja3 else "", sni.group(1) if sni else ""))
    tor_ja3 = {j for (*_, proto), j, _ in rows if "Tor" in proto}
    random_name = re.compile(r"^www\.[a-z2-7]{5,}\.(com|net)$")
    return {
        (c, int(cp), s, int(sp))
        for (c, cp, s, sp, proto), j, n in rows
        if "Tor" in proto or (j in tor_ja3 and random_name.match(n))
    }


def relays(data: Path) -> set[str]:
    return {a for f in RELAY_LISTS for a in (data / f).read_text().split() if a[0].isalnum()}


def labeled(data: Path) -> pl.DataFrame:
    """Every flow of the public data with ``tor`` (the nDPI capture's Tor connections),
    ``listed`` (a side is a listed relay, its address in ``relay``) and ``part``: tune
    or holdout (by a hash of the input), tor (the nDPI capture), or 008/010."""
    flows = load_flows(data)
    tor = pl.DataFrame(
        list(tor_endpoints(data)),
        schema={
            "src_ip": pl.String,
            "src_port": pl.Int32,
            "dst_ip": pl.String,
            "dst_port": pl.Int32,
        },
        orient="row",
    ).with_columns(tor=pl.lit(True), input=pl.lit(TOR_CAPTURE))
    flows = flows.join(tor, on=["input", "src_ip", "src_port", "dst_ip", "dst_port"], how="left")
    listed = list(relays(data))
    relay = (
        pl.when(pl.col("dst_ip").is_in(listed))
        .then(pl.col("dst_ip"))
        .when(pl.col("src_ip").is_in(listed))
        .then(pl.col("src_ip"))
    )
    days = {path: day for day, path in NORMAL_DAYS.items()}
    parts = {
        i: "tor" if i == TOR_CAPTURE else days.get(i) or ("tune", "holdout")[half(i)]
        for i in flows.get_column("input").unique().to_list()
    }
    return flows.with_columns(
        tor=pl.col("tor").fill_null(False),
        relay=relay,
        part=pl.col("input").replace_strict(parts, return_dtype=pl.String),
    ).with_columns(listed=pl.col("relay").is_not_null())


# -- positives: the Tor lab -----------------------------------------------------------


def lab_flows(lab: Path, train_seeds: tuple[int, ...] = TRAIN_SEEDS) -> pl.DataFrame:
    """The lab's Tor connections (see the module docstring) with ``part``: train
    (training runs, training half of the relays), test (the other runs), or unused."""
    files = sorted(lab.glob("*/flows.parquet"))
    if not files:
        sys.exit(
            f"no Tor lab runs under {lab}: run `.venv/bin/python eval/torlab.py run --seed N` "
            "for N in 1 2 3 4 first (needs root and `apt-get install tor`)"
        )
    flows = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    tor = flows.filter(
        (pl.col("label") == "tor") & (pl.col("client_side") | ~pl.col("formation"))
    ).with_columns(
        relay_half=pl.concat_str([pl.col("seed").cast(pl.String), pl.lit(":"), pl.col("relay")])
        .map_elements(half, return_dtype=pl.Int64)
    )  # fmt: skip
    training = pl.col("seed").is_in(list(train_seeds))
    return tor.with_columns(
        part=pl.when(~training)
        .then(pl.lit("test"))
        .when((pl.col("relay_half") == 0) & (pl.col("role") != "bridge"))
        .then(pl.lit("train"))
        .otherwise(pl.lit("unused"))
    )


# -- fitting --------------------------------------------------------------------------


def matrix(model: ShapeModel, flows: pl.DataFrame) -> np.ndarray:
    exprs = model.feature_exprs()
    return flows.select(exprs[f].alias(f) for f in FEATURES).to_numpy().astype(np.float64)


def eligible(flows: pl.DataFrame, min_packets: int) -> pl.DataFrame:
    return flows.filter(
        (pl.col("proto") == 6)
        & (pl.col("src_pkts") >= min_packets)
        & (pl.col("dst_pkts") >= min_packets)
    )


def fit(kind: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Fitted parameters (the ``bias``/``weights`` or ``trees`` of the model file)."""
    weight = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum()) * len(y)
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1.0, max_iter=2000)
        lr.fit(x, y, sample_weight=weight)
        weights = {f: round(float(w), 4) for f, w in zip(FEATURES, lr.coef_[0], strict=True)}
        return {"bias": round(float(lr.intercept_[0]), 4), "weights": weights}
    from sklearn.ensemble import GradientBoostingClassifier

    gb = GradientBoostingClassifier(
        n_estimators=40, max_depth=3, learning_rate=0.2, subsample=0.8, init="zero",
        random_state=0,
    )  # fmt: skip
    gb.fit(x, y, sample_weight=weight)
    nodes: dict[str, list[Any]] = {k: [] for k in ("roots", "feature", "cut", "left", "right",
                                                    "value")}  # fmt: skip
    for (est,) in gb.estimators_:
        t, base = est.tree_, len(nodes["feature"])
        nodes["roots"].append(base)
        for i in range(t.node_count):
            leaf = t.children_left[i] < 0
            nodes["feature"].append(-1 if leaf else int(t.feature[i]))
            nodes["cut"].append(0.0 if leaf else float(t.threshold[i]))
            nodes["left"].append(-1 if leaf else base + int(t.children_left[i]))
            nodes["right"].append(-1 if leaf else base + int(t.children_right[i]))
            value = float(t.value[i].ravel()[0]) * gb.learning_rate if leaf else 0.0
            nodes["value"].append(round(value, 6))
    params = {"bias": 0.0, "trees": {"depth": 3, **nodes}}
    exported = ShapeModel.from_dict({**BASE, "threshold": 1.0, **params}).trees
    assert exported is not None
    if not np.allclose(exported.margin(x[:2000]), gb.decision_function(x[:2000]), atol=1e-4):
        raise AssertionError("exported trees disagree with scikit-learn")
    return params


def model_of(params: dict[str, Any], threshold: float = 1.0) -> ShapeModel:
    return ShapeModel.from_dict({**BASE, "threshold": threshold, **params})


def threshold(scores: np.ndarray) -> float:
    """The lowest score (4 decimals) reached by at most FALSE_ALARM_RATE of ``scores``."""
    allowed = math.floor(FALSE_ALARM_RATE * len(scores))
    ranked = np.sort(scores)[::-1]
    level = float(ranked[allowed]) if allowed < len(ranked) else 0.0
    return max(FLOOR, math.floor(level * 10_000 + 1) / 10_000)


def recall_at(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    return float((scores_pos >= threshold(scores_neg)).mean())


def choose_kind(pos: pl.DataFrame, neg: pl.DataFrame) -> str:
    """logistic or trees: fitted on the first training run and half the negatives,
    judged on the next run and the other half (training data only)."""
    seeds = sorted(pos.get_column("seed").unique().to_list())
    if len(seeds) < 2:
        return "logistic"
    neg_half = neg.get_column("input").map_elements(lambda i: half("fold:" + i), pl.Int64)
    base = model_of({})
    fold = {
        "fit": (pos.filter(pl.col("seed") == seeds[0]), neg.filter(neg_half == 0)),
        "judge": (pos.filter(pl.col("seed") != seeds[0]), neg.filter(neg_half == 1)),
    }
    xs = {k: (matrix(base, p), matrix(base, n)) for k, (p, n) in fold.items()}
    best: tuple[float, float, str] | None = None
    for kind in ("logistic", "trees"):
        (xp, xn), (jp, jn) = xs["fit"], xs["judge"]
        y = np.r_[np.ones(len(xp), bool), np.zeros(len(xn), bool)]
        m = model_of(fit(kind, np.vstack([xp, xn]), y))
        sp, sn = margin_scores(m, jp), margin_scores(m, jn)
        rec = recall_at(sp, sn)
        a = auc(np.r_[sp, sn], np.r_[np.ones(len(sp), bool), np.zeros(len(sn), bool)])
        rate = f"{FALSE_ALARM_RATE:.1%}"
        print(f"  {kind}: validation recall at {rate} false alarms {rec:.3f}, AUC {a:.4f}")
        if best is None or (rec, a) > best[:2]:
            best = (rec, a, kind)
    assert best is not None
    return best[2]


def out_of_fold(kind: str, xp: np.ndarray, xn: np.ndarray, inputs: pl.Series) -> np.ndarray:
    """Every negative's score from a model fitted without its input (FOLDS folds of the
    inputs by hash, all positives in each fit): what the threshold is set on, since a
    model scores the negatives it was fitted on lower than new ones."""
    fold = inputs.map_elements(
        lambda i: hashlib.sha256(f"oof:{i}".encode()).digest()[0] % FOLDS, pl.Int64
    ).to_numpy()
    scores = np.zeros(len(xn))
    for k in range(FOLDS):
        train = fold != k
        y = np.r_[np.ones(len(xp), bool), np.zeros(int(train.sum()), bool)]
        params = fit(kind, np.vstack([xp, xn[train]]), y)
        scores[~train] = margin_scores(model_of(params), xn[~train])
    return scores


def margin_scores(model: ShapeModel, x: np.ndarray) -> np.ndarray:
    if model.trees is not None:
        z = model.bias + model.trees.margin(x)
    else:
        z = model.bias + x @ np.array([model.weights.get(f, 0.0) for f in FEATURES])
    return 1.0 / (1.0 + np.exp(-z))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--lab", type=Path, default=DEFAULT_LAB)
    ap.add_argument("--train-seeds", type=int, nargs="+", default=list(TRAIN_SEEDS))
    ap.add_argument("--kind", choices=("auto", "logistic", "trees"), default="auto")
    ap.add_argument("--out", type=Path, default=MODEL_FILE)
    args = ap.parse_args()
    logging.getLogger("flowhawk").setLevel(logging.ERROR)
    lab = lab_flows(args.lab, tuple(args.train_seeds))
    flows = labeled(args.data.resolve())
    min_packets = int(BASE["min_packets"])  # type: ignore[call-overload]
    pos = eligible(lab.filter(pl.col("part") == "train"), min_packets)
    neg = eligible(
        flows.filter((pl.col("part") == "tune") & ~pl.col("listed") & ~pl.col("tor")),
        min_packets,
    )
    runs = sorted(pos.get_column("seed").unique().to_list())
    print(
        f"positives: {pos.height} Tor connections of lab runs {runs} (training relays; "
        f"{pos.filter(pl.col('client_side')).height} from clients), "
        f"negatives: {neg.height:,} TCP flows of {neg.get_column('input').n_unique()} inputs"
    )
    kind = args.kind if args.kind != "auto" else choose_kind(pos, neg)
    base = model_of({})
    xp, xn = matrix(base, pos), matrix(base, neg)
    y = np.r_[np.ones(len(xp), bool), np.zeros(len(xn), bool)]
    params = fit(kind, np.vstack([xp, xn]), y)
    level = threshold(out_of_fold(kind, xp, xn, neg.get_column("input")))
    model = model_of(params, level)
    doc = {
        "about": "M26 Tor flow-shape model; written by eval/train_tor.py, read by tor_model.py",
        "model": model.to_dict(),
        "provenance": {
            "kind": kind,
            "positives": f"{pos.height} Tor connections from eval/torlab.py runs {runs}",
            "negatives": f"{neg.height} TCP flows of {neg.get_column('input').n_unique()} "
            "public inputs (tuning half)",
            "threshold": f"lowest score at most {FALSE_ALARM_RATE} of the training negatives "
            "reach, scored out of fold",
        },
    }
    text = json.dumps(doc, indent=1)  # number lists on one line each:
    text = re.sub(r"\[\s+([-\d.e,\s]*?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)
    args.out.write_text(text + "\n")
    print(f"kind {kind}; threshold {level:.2f}; wrote {args.out}")
    if kind == "logistic":
        print("weights: " + ", ".join(f"{k} {v:+.2f}" for k, v in model.weights.items()))


if __name__ == "__main__":
    main()
