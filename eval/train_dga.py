"""Train the DGA model shipped with flowhawk (src/flowhawk/dns/dga_model.npz).

The shipped model may only learn from lists the project may ship a model of, so it is
trained on MIT-licensed data (and the MPL-2.0 Public Suffix List flowhawk already ships
through ``publicsuffixlist``), never on the GPL-2.0 andrewaeva lists that
eval/eval_dga.py tests it on:

* generated names (positives): maltrail's trails (``intel/maltrail``, MIT), the
  sections of ``trails_static/malware/*.txt`` whose last ``# Reference`` line names a
  DGA source (e.g. ``data.netlab.360.com/feeds/dga/...``, DGAFeedAlerts, "dga" in a
  report's address), plus the whole files of :data:`DGA_FAMILIES`, families whose
  listed names are their DGA's output;
* ordinary names (negatives): maltrail's ``data/whitelist.txt`` (MIT), the top-sites
  list ``dns/benign_top_domains/top-sites.json`` (MIT) and the organisation labels of
  every label of the Public Suffix List's rules (``blogspot`` of ``blogspot.com``,
  ``kawasaki`` of ``kawasaki.jp``): organisations, towns and regions, IDNs left out.

Every name is reduced to its registered label (:func:`flowhawk.dns.dga.split_names`),
duplicates dropped. A fifth of the ordinary labels (by a hash of the label) is held out
to set the verdict thresholds: ``suspicious`` = the score 1 % of them reach, ``dga``
= the score 0.1 % reach. The trigram table is learned from the other ordinary labels;
their features for the regression are cross-fitted (each half scored with the table
of the other half) so the regression does not learn how well the table remembers its
own names.

Run:  .venv/bin/python eval/train_dga.py [--data ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from sklearn.linear_model import LogisticRegression

from flowhawk.dns.dga import MODEL_FILE, DgaModel, split_names
from flowhawk.dns.dga_features import FEATURES, K, features, trigram_counts, trigram_table

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MALTRAIL = "intel/maltrail"
#: maltrail families whose whole trail files are DGA output (checked by eye).
DGA_FAMILIES = ("ramdo", "fobber", "dircrypt", "bedep", "android_flubot")
_DGA_REF = re.compile(r"dga", re.IGNORECASE)
_DOMAIN = re.compile(r"^[a-z0-9_.-]+\.[a-z][a-z0-9-]+$")
_LABEL = re.compile(r"^[a-z0-9-]+$")
HOLDOUT = 5  # one in this many ordinary labels is held out for the thresholds
C = 1.0  # inverse regularization of the logistic regression


def stable_fold(values: pl.Series, folds: int, salt: str = "") -> np.ndarray:
    """A fold 0..folds-1 per value from a hash of ``salt`` and its text (the same on
    every machine; different salts give independent splits)."""
    return np.array(
        [
            int(hashlib.sha1((salt + v).encode()).hexdigest()[:8], 16) % folds
            for v in values.to_list()
        ],
        dtype=np.int64,
    )


def labels_of(names: list[str] | pl.Series) -> pl.Series:
    """Distinct registered labels of scoreable names, sorted."""
    parts = split_names(pl.Series(names, dtype=pl.String))
    return parts.filter(pl.col("status") == "ok").get_column("label").unique().sort()


def read_list(path: Path) -> list[str]:
    """Names of a one-per-line list (comments, blanks and non-domain entries dropped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip().lower().strip('"')
        if line and not line.startswith("#") and _DOMAIN.match(line):
            out.append(line)
    return out


def maltrail_dga(data: Path) -> tuple[list[str], dict[str, int]]:
    """Generated names of maltrail's trails (see the module docstring), with counts per
    family file."""
    names: list[str] = []
    per: dict[str, int] = {}
    for path in sorted((data / MALTRAIL / "trails_static" / "malware").glob("*.txt")):
        whole = path.stem in DGA_FAMILIES
        ref = ""
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip().lower()
            if not line:
                continue
            if line.startswith("#"):
                if "reference" in line:
                    ref = line
                continue
            if (whole or _DGA_REF.search(ref)) and _DOMAIN.match(line):
                names.append(line)
                per[path.stem] = per.get(path.stem, 0) + 1
    return names, per


def psl_labels() -> list[str]:
    """Every label of every Public Suffix List rule (organisation names of the private
    section, towns and regions of the ICANN section), IDN labels left out."""
    import publicsuffixlist

    text = (Path(publicsuffixlist.__file__).parent / "public_suffix_list.dat").read_text()
    out = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        for label in line.lstrip("*.!").lower().split("."):
            if label and not label.startswith("xn--") and _LABEL.match(label):
                out.add(label)
    return [f"{label}.com" for label in sorted(out)]  # as names, for split_names


def ordinary(data: Path) -> dict[str, list[str]]:
    """The ordinary-name lists of the shipped model, by source."""
    top = json.loads((data / "dns/benign_top_domains/top-sites.json").read_text())
    return {
        "maltrail whitelist (MIT)": read_list(data / MALTRAIL / "data" / "whitelist.txt"),
        "top-sites (MIT)": [str(t["rootDomain"]).lower() for t in top],
        "public suffix list labels (MPL-2.0)": psl_labels(),
    }


def _arrow(labels: pl.Series) -> pa.Array:
    arr = labels.to_arrow()
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _cross_fitted(benign: pl.Series, labels: pl.Series) -> np.ndarray:
    """Features of ``labels``, each scored with a trigram table learned from the half of
    ``benign`` in the other hash fold."""
    fold_b = stable_fold(benign, 2, "cross-fit")
    fold = stable_fold(labels, 2, "cross-fit")
    out = np.zeros((labels.len(), len(FEATURES)))
    for f in (0, 1):
        other = benign.filter(pl.Series(fold_b != f))
        tri, uni = trigram_counts(_arrow(other))
        table, unigram = trigram_table(tri, uni)
        mine = fold == f
        out[mine] = features(_arrow(labels.filter(pl.Series(mine))), table, unigram, tri > 0)
    return out


def fit(benign: pl.Series, dga: pl.Series, c: float = C) -> DgaModel:
    """A model from ordinary and generated labels (thresholds left at 0.5/0.9: set them
    with :func:`with_thresholds`)."""
    benign = benign.unique().sort()
    dga = dga.unique().sort().filter(~dga.unique().sort().is_in(benign.implode()))
    tri, uni = trigram_counts(_arrow(benign))
    table, unigram = trigram_table(tri, uni)
    seen = tri > 0
    # cross-fitted features: each half (by hash) scored with the table of the other
    # half of the ordinary labels, so no row is scored by a table that learned it
    xb, xd = _cross_fitted(benign, benign), _cross_fitted(benign, dga)
    x = np.vstack([xb, xd])
    y = np.concatenate([np.zeros(len(xb)), np.ones(len(xd))])
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    lr.fit((x - mean) / scale, y)
    return DgaModel(
        table=table,
        unigram=unigram,
        seen=seen,
        mean=mean,
        scale=scale,
        coef=lr.coef_[0].astype(np.float64),
        intercept=float(lr.intercept_[0]),
        suspicious=0.5,
        dga=0.9,
        meta={"benign_labels": benign.len(), "dga_labels": dga.len(), "C": c},
    )


def with_thresholds(model: DgaModel, heldout: pl.Series, meta: dict) -> DgaModel:
    """The model with its verdict thresholds set on held-out ordinary labels."""
    scores = model.score_labels(_arrow(heldout))
    suspicious = float(np.quantile(scores, 0.99))
    dga = max(float(np.quantile(scores, 0.999)), suspicious)
    return DgaModel(
        **{
            **model.__dict__,
            "suspicious": round(suspicious, 4),
            "dga": round(dga, 4),
            "meta": {**model.meta, **meta, "heldout_labels": heldout.len()},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=MODEL_FILE)
    args = ap.parse_args()
    lists = ordinary(args.data)
    benign = labels_of([n for v in lists.values() for n in v])
    dga_names, per_family = maltrail_dga(args.data)
    dga = labels_of(dga_names)
    hold = stable_fold(benign, HOLDOUT, "holdout") == 0
    train, heldout = benign.filter(pl.Series(~hold)), benign.filter(pl.Series(hold))
    model = fit(train, dga)
    meta = {
        "sources": {
            "generated": "maltrail trails_static/malware (github.com/stamparm/maltrail, MIT): "
            "DGA-referenced sections and whole families " + ", ".join(DGA_FAMILIES),
            "ordinary": "; ".join(f"{k}: {len(v)} names" for k, v in lists.items()),
        },
        "maltrail_families": dict(sorted(per_family.items())),
    }
    model = with_thresholds(model, heldout, meta)
    model.save(args.out)
    print(f"ordinary labels: {benign.len()} ({train.len()} train, {heldout.len()} held out)")
    for k, v in lists.items():
        print(f"  {k}: {len(v)} names")
    print(f"generated labels: {dga.len()} from {len(per_family)} maltrail families")
    print(f"  largest: {sorted(per_family.items(), key=lambda kv: -kv[1])[:8]}")
    print(f"thresholds: suspicious {model.suspicious}, dga {model.dga}")
    print("weights (standardized features):")
    for name, w in zip(FEATURES, model.coef, strict=True):
        print(f"  {name:10s} {w:+.3f}")
    print(f"  intercept  {model.intercept:+.3f}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, trigram table K={K})")


if __name__ == "__main__":
    main()
