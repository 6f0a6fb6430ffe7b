"""Benchmark of DGA scoring (flowhawk.dns.dga) on ONE core: domains per second.

The process is pinned to one CPU and polars, BLAS and pyarrow use one thread.
Names: ``--names`` (default 1 M) drawn in a fixed order from the andrewaeva lists of
../shared/data/dns/dga_andrewaeva (every family's generated names and the ordinary
OpenDNS/Alexa names; 60 % generated), each given a random ``www.`` / ``mail.``
prefix or none and made unique with a numbered subdomain where it repeats, so every
name is distinct (the slowest case: the Public Suffix List lookup runs once per
distinct name). Timed, best of ``--repeat``:

* *scoring*: registered labels (already cut) → features → scores (``score_labels``);
* *end to end*: full names → normalization and validation → registered label by the
  Public Suffix List → features → scores (``score_domains``).

Peer, in the same run on the same labels: a scikit-learn pipeline of the same kind
(character 1-3-gram ``HashingVectorizer`` with 2**18 features + ``LogisticRegression``,
fitted beforehand on 20 k labels), timed from labels to ``predict_proba``. The ratio
printed is flowhawk's speed over the peer's. Target: >= 200 k domains/s end to end.

Run:  .venv/bin/python bench/bench_dga.py [--names 1000000] [--repeat 3]
"""

from __future__ import annotations

import onecore  # noqa: F401  (one thread each: before polars and BLAS)

# isort: split

import argparse
import os
import time
from pathlib import Path

import numpy as np
import polars as pl

from flowhawk.dns.dga import score_domains, shipped_model, split_names
from flowhawk.memory import reuse_freed_memory

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dns" / "dga_andrewaeva"
TARGET = 200_000


def _names(n: int) -> tuple[pl.Series, np.ndarray]:
    """``n`` distinct names and whether each came from a DGA list."""
    frames = []
    for path in sorted((DATA / "dga_wordlists").glob("*.txt")):
        names = pl.read_csv(path, has_header=False, new_columns=["d"], quote_char=None)
        frames.append(
            names.select(
                d=pl.col("d").str.strip_chars().str.to_lowercase(),
                dga=pl.lit(not path.stem.startswith("opendns")),
            )
        )
    alexa = pl.read_csv(DATA / "1000domains/alexa_1000.txt", has_header=False, new_columns=["d"])
    frames.append(alexa.select(d=pl.col("d").str.strip_chars(), dga=pl.lit(False)))
    pool = pl.concat(frames).filter(pl.col("d") != "")
    dga, ordinary = pool.filter(pl.col("dga")), pool.filter(~pl.col("dga"))
    rng = np.random.default_rng(7)
    k = int(n * 0.6)  # 60 % generated names
    pick = pl.concat(
        [dga[rng.integers(0, dga.height, k)], ordinary[rng.integers(0, ordinary.height, n - k)]]
    )
    pick = pick[rng.permutation(n)]
    prefix = pl.Series(rng.choice(np.array(["", "www.", "mail."]), n))
    df = pick.with_columns(name=pl.concat_str([prefix, pl.col("d")])).with_row_index()
    dup = pl.col("name").is_duplicated() & (pl.col("index") != pl.col("index").first().over("name"))
    df = df.with_columns(
        name=pl.when(dup)
        .then(pl.concat_str([pl.lit("n"), pl.col("index").cast(pl.String), pl.lit("."), "d"]))
        .otherwise("name")
    )
    return df.get_column("name"), df.get_column("dga").to_numpy()


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    print(f"pinned to CPU {cpus[-1]} of {len(cpus)}")
    reuse_freed_memory()  # as the engine does: large freed blocks kept for the next batch
    names, is_dga = _names(args.names)
    n = names.len()
    print(f"{n} distinct names, {is_dga.mean():.0%} from DGA lists")
    model = shipped_model()
    parts = split_names(names)
    labels = parts.get_column("label").fill_null("").to_arrow()
    t_score = _best(lambda: model.score_labels(labels), args.repeat)
    t_e2e = _best(lambda: score_domains(names, model), args.repeat)
    scores = score_domains(names, model)
    print(f"scoring only (labels -> scores): {t_score:.2f} s, {n / t_score / 1e3:,.0f} k domains/s")
    print(
        f"end to end (names -> PSL -> features -> scores): {t_e2e:.2f} s, "
        f"{n / t_e2e / 1e3:,.0f} k domains/s (target >= {TARGET / 1e3:.0f} k/s: "
        f"{'met' if n / t_e2e >= TARGET else 'NOT met'})"
    )
    flagged = np.nan_to_num(scores) >= model.dga
    print(
        f"  flagged dga: {flagged[is_dga].mean():.1%} of DGA-list names, "
        f"{flagged[~is_dga].mean():.1%} of ordinary ones"
    )

    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = HashingVectorizer(analyzer="char", ngram_range=(1, 3), n_features=2**18)
    lab = parts.get_column("label").fill_null("")
    rng = np.random.default_rng(3)
    train = rng.choice(n, 20_000, replace=False)
    clf = LogisticRegression(max_iter=500).fit(
        vec.transform(lab.gather(train).to_list()), is_dga[train]
    )
    peer_n = min(n, 200_000)
    peer_labels = lab.head(peer_n).to_list()
    t_peer = _best(lambda: clf.predict_proba(vec.transform(peer_labels)), args.repeat)
    peer_rate = peer_n / t_peer
    print(
        f"peer (scikit-learn char 1-3-gram HashingVectorizer + LogisticRegression, "
        f"{peer_n} labels): {t_peer:.2f} s, {peer_rate / 1e3:,.0f} k domains/s"
    )
    print(
        f"ratio flowhawk/peer: scoring {n / t_score / peer_rate:.1f}x, "
        f"end to end {n / t_e2e / peer_rate:.1f}x"
    )


if __name__ == "__main__":
    main()
