"""Training the clustering models (M10-M25) from the behavioral log, and using them.

One model per detector (one view, magnitude or velocity, k-means or Gaussian mixture):

1. features of every history row (:mod:`~flowhawk.detectors.clusters_kernels`); a
   seeded sample of at most ``sample_rows`` rows learns the robust scaling (median,
   IQR / 1.349, at least :data:`MIN_SCALE` log units) and the clusters;
2. the number of clusters is chosen on a smaller sample (``select_rows``): k-means
   (``MiniBatchKMeans``) by the best silhouette for k in 2..``max_clusters``, the
   Gaussian mixture (full covariance) by the lowest BIC for k in 1..``max_clusters``;
3. each cluster's *spread* is the 99th percentile distance of the history rows nearest
   to it (at least :data:`MIN_SPREAD`); a row's *ratio* to a cluster is its distance
   divided by that spread;
4. every history row is scored as it would have been live: against the clusters its
   key had used *before* it (so a first use of a cluster counts as a jump), eligible
   once the key had ``min_history`` earlier active buckets. The view's threshold is the
   ``1 - false_alarm_budget`` quantile of those scores (at least ``min_threshold``).
   A key with at least ``own_rows`` eligible rows gets its own threshold from its own
   scores, higher or lower than the view's (at least ``own_min_threshold``, 0.75: a
   steady key's change can stay inside the spread of the clusters it uses, which the
   view's busier keys set, and still be far outside its own history): their budget
   quantile, or where they are too few to hold it, an exponential tail extrapolated
   from the largest of them, as the volume baselines do
   (:func:`~flowhawk.behavior.baseline.tail_threshold`). The view's threshold is set by
   every key's scores, so the noisiest keys decide it: a steady key's change stayed
   under it however far from its own normal it went. A key with fewer rows gets the
   same from all its scored rows (its first ``min_history`` too, less those that were
   its first use of a cluster), once it has ``erratic_rows`` of them, only where it is
   above the view's: too short a history to trust for a lower threshold, long enough
   to show that the clusters, fitted to the view's many busy keys, do not describe
   this key. A key active a few minutes a night (a backup: gigabytes in one flow) is
   far from every cluster every night; under the view's threshold each of its nights
   alarmed, and with one active bucket a day its eligible rows came too slowly to
   count. The alarm rate this gives on the history is measured and kept
   (``alarm_rate``).

The model is plain tables (``info``, ``scaling``, ``clusters``, ``precision`` for the
mixture, ``keys``); per key it keeps 20 bytes: the key hash, active buckets, the
clusters used (a bitmask) and its own threshold (0: the view's).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from flowhawk.behavior.baseline import tail_threshold
from flowhawk.behavior.views import MEASURES
from flowhawk.detectors import clusters_kernels as kern
from flowhawk.detectors.clusters_features import Prepared, hash_probe, lookup, prepared, readonly

MIN_SCALE = 0.25  # log units: smaller differences are not behavior changes
MIN_SPREAD = {False: 0.5, True: 1.0}  # k-means (scaled units) / mixture (Mahalanobis)
MIN_ROWS = 20  # fewer history rows: no model
SILHOUETTE_ROWS = 1000
RICH = ("byte_balance", "packet_balance", "log_mean_duration")
_NO_LIVE = np.zeros((1, kern.NBASE), dtype=np.float32)


@dataclass(frozen=True)
class Spec:
    """What a detector models."""

    view: str
    velocity: bool
    mixture: bool  # Gaussian mixture on the rich features (M18/M19), else k-means

    @property
    def features(self) -> tuple[str, ...]:
        return (*MEASURES, *RICH) if self.mixture else MEASURES


@dataclass(frozen=True)
class Params:
    """Training hyperparameters (from the detector's settings)."""

    min_history: int = 5
    budget: float = 0.001
    min_threshold: float = 1.0
    own_min_threshold: float = 0.75
    min_clusters: int = 6
    max_clusters: int = 12
    sample_rows: int = 200_000
    select_rows: int = 2000
    seed: int = 0
    jumps: bool = True
    own_rows: int = 2400
    erratic_rows: int = 3


def train(history: pl.DataFrame, spec: Spec, p: Params, until: datetime) -> dict[str, pl.DataFrame]:
    """Model tables learned from ``history`` (log rows of ``spec.view``); {} if too little."""
    if history.height < MIN_ROWS:
        return {}
    prep = prepared(history, spec.view)  # shared by the detectors of the view
    no_l = np.full(prep.n, -1, dtype=np.int64)
    valid = np.flatnonzero(prep.prev >= 0) if spec.velocity else np.arange(prep.n)
    if len(valid) < MIN_ROWS:
        return {}
    rng = np.random.default_rng(p.seed)
    sample = np.sort(rng.choice(valid, size=min(len(valid), p.sample_rows), replace=False))
    d = len(spec.features)
    raw, _ = kern.features(
        sample, prep.X, prep.prev, no_l, _NO_LIVE, spec.velocity, spec.mixture,
        np.zeros(d), np.ones(d),
    )  # fmt: skip
    center = np.median(raw, axis=0)
    q75, q25 = np.percentile(raw, [75, 25], axis=0)
    scale = np.maximum((q75 - q25) / 1.349, MIN_SCALE)
    Z = (raw - center) / scale
    with threadpool_limits(1):  # one core, and sums in a fixed order: deterministic
        C, P, weights, quality = (_mixture if spec.mixture else _kmeans)(Z, p)
    args = (prep.X, prep.prev, no_l, _NO_LIVE, spec.velocity, spec.mixture, center, scale, C, P)
    near, dist = kern.nearest(*args, spec.mixture)
    spread, size = _spreads(near, dist, len(C), MIN_SPREAD[spec.mixture])
    cl, own, own_cl, used, masks = kern.score(
        *args, spec.mixture, spread, np.zeros(prep.n, np.int64), prep.group, True
    )
    tables = _tune(prep, own, cl != own_cl, used, masks, p)
    info = tables.pop("info")
    span = (prep.buckets.max() - prep.buckets.min()) / 86400.0
    tables["info"] = pl.DataFrame(
        {
            "view": spec.view,
            "kind": "velocity" if spec.velocity else "magnitude",
            "model": "gaussian-mixture" if spec.mixture else "k-means",
            "clusters": len(C),
            "quality": quality,  # silhouette (k-means) or BIC (mixture) of the choice
            "rows": prep.n,
            "sample_rows": len(sample),
            "keys": len(masks),
            "span_days": span,
            "trained_until": until,
            "hash_probe": pl.Series([hash_probe(spec.view)], dtype=pl.UInt64),
            **info,
        }
    )
    tables["scaling"] = pl.DataFrame(
        {"feature": list(spec.features), "center": center, "scale": scale}
    )
    tables["clusters"] = pl.DataFrame(
        {
            "cluster": np.arange(len(C), dtype=np.int32),
            "size": size,
            "weight": weights,
            "spread": spread,
            **{f"c{j}": C[:, j] for j in range(d)},
        }
    )
    if spec.mixture:
        k, i, j = np.nonzero(np.triu(np.ones((d, d)))[None] * np.ones((len(C), 1, 1)))
        tables["precision"] = pl.DataFrame(
            {"cluster": k.astype(np.int32), "i": i.astype(np.int32), "j": j.astype(np.int32),
             "value": P[k, i, j]}
        )  # fmt: skip
    return tables


def _kmeans(Z: np.ndarray, p: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import pairwise_distances, silhouette_score

    sub = _subsample(Z, p)
    judge = sub[:SILHOUETTE_ROWS]
    dists = pairwise_distances(judge)
    distinct = len(np.unique(sub.round(6), axis=0))
    best_k, best = min(p.min_clusters, max(distinct, 1)), -math.inf
    for k in range(max(p.min_clusters, 2), min(p.max_clusters, distinct - 1) + 1):
        km = KMeans(n_clusters=k, random_state=p.seed, n_init=2, max_iter=100).fit(sub)
        labels = km.labels_[:SILHOUETTE_ROWS]
        if len(np.unique(labels)) < 2:
            continue
        s = silhouette_score(dists, labels, metric="precomputed")
        if s > best + 1e-9:
            best_k, best = k, float(s)
    km = MiniBatchKMeans(
        n_clusters=best_k, random_state=p.seed, n_init=3, batch_size=4096, max_iter=100,
        compute_labels=False,
    ).fit(Z)  # fmt: skip
    C = km.cluster_centers_.astype(np.float64)
    return C, np.zeros((len(C), 1, 1)), np.full(len(C), 1.0 / len(C)), best


def _mixture(Z: np.ndarray, p: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    def fit(data: np.ndarray, k: int) -> GaussianMixture:
        gm = GaussianMixture(
            n_components=k, covariance_type="full", reg_covar=1e-2, max_iter=100,
            random_state=p.seed,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return gm.fit(data)

    sub = _subsample(Z, p)
    best_k, best = 1, math.inf
    for k in range(p.min_clusters, max(min(p.max_clusters, len(sub) // 20), p.min_clusters) + 1):
        bic = fit(sub, k).bic(sub)
        if bic < best - 1e-9:
            best_k, best = k, float(bic)
    gm = fit(Z, best_k)
    return gm.means_, gm.precisions_cholesky_, gm.weights_, best


def _subsample(Z: np.ndarray, p: Params) -> np.ndarray:
    if len(Z) <= p.select_rows:
        return Z
    rng = np.random.default_rng(p.seed + 1)
    return Z[np.sort(rng.choice(len(Z), size=p.select_rows, replace=False))]


def _spreads(
    near: np.ndarray, dist: np.ndarray, k: int, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """99th percentile distance of each cluster's members (at least ``floor``), sizes."""
    df = pl.DataFrame({"c": near, "d": dist}).filter(pl.col("c") >= 0)
    q = df.group_by("c").agg(pl.col("d").quantile(0.99, "higher"), pl.len())
    spread = np.full(k, floor)
    size = np.zeros(k, dtype=np.int64)
    c = q.get_column("c").to_numpy()
    spread[c] = np.maximum(q.get_column("d").to_numpy(), floor)
    size[c] = q.get_column("len").to_numpy()
    return spread, size


def jumps(
    jumped: np.ndarray, used: np.ndarray, before: np.ndarray, value: np.ndarray, p: Params
) -> np.ndarray:
    """The jump rule: a key that had used ``used`` clusters in ``before`` active buckets
    shows a new one with probability about ``used / (before + 1)`` (Good-Turing); a jump
    alarms when that is within the false-alarm budget and the row left its own clusters
    (ratio above ``min_threshold``). A key can raise at most ``budget`` x its buckets."""
    with np.errstate(invalid="ignore"):
        return jumped & (used <= p.budget * (before + 1)) & (value > p.min_threshold)


def _tune(
    prep: Prepared, own: np.ndarray, jumped: np.ndarray, used: np.ndarray, masks: np.ndarray,
    p: Params,
) -> dict:  # fmt: skip
    """Per-key table and the view threshold, from the history scored as it happened.

    Rows count once their key had ``min_history`` earlier buckets (eligible rows). Jump
    alarms take their share of the budget first; the ratio threshold lets the rest of it
    alarm. A key's own threshold comes from its eligible rows once it has ``own_rows``
    of them; a key with fewer can only have the view's raised, from all its scored rows
    (its first ``min_history`` too, but not those among them that were its first use
    of a cluster: measured to the few clusters it had used, they are far by
    construction) once it has ``erratic_rows`` of them.
    """
    starts = np.flatnonzero(prep.prev < 0)
    counts = np.diff(np.append(starts, prep.n))
    group = prep.group
    rank = np.arange(prep.n) - starts[group]
    scored = ~np.isnan(own)
    jump_all = jumps(jumped, used, rank, own, p) if p.jumps else np.zeros(prep.n, bool)
    elig = (rank >= p.min_history) & scored
    jump = jump_all[elig]
    v, g = own[elig].astype(np.float64), group[elig]
    rest = np.sort(v[~jump])[::-1]
    allowed = max(math.floor(p.budget * len(v)) - int(jump.sum()), 0)
    view_thr = (
        math.inf if len(rest) == 0 else max(p.min_threshold, rest[min(allowed, len(rest) - 1)])
    )
    key_thr = np.zeros(len(starts), dtype=np.float32)
    # a key's own scores: its eligible rows once it has own_rows of them (a threshold of
    # its own, higher or lower than the view's); else every scored row, which can only
    # raise the view's: too few to trust for a lower threshold, but enough to show that
    # the clusters do not describe the key (a nightly backup far from every cluster)
    early = rank < p.min_history  # before min_history, a first use of a cluster is no evidence
    mine = scored & ~jump_all & ~(early & jumped)
    own_key = np.bincount(g[~jump], minlength=len(starts)) >= p.own_rows
    erratic = ~own_key & (np.bincount(group[mine], minlength=len(starts)) >= p.erratic_rows)
    take = mine & ((own_key[group] & (rank >= p.min_history)) | erratic[group])
    if take.any():
        qs = (
            pl.DataFrame({"g": group[take], "v": own[take].astype(np.float64)})
            .group_by("g")
            .agg(tail_threshold(pl.col("v"), p.budget))
        )
        gi = qs.get_column("g").to_numpy()
        floor = np.where(own_key[gi], p.own_min_threshold, view_thr)
        key_thr[gi] = _up32(np.maximum(qs.get_column("v").to_numpy(), floor))
    row_thr = np.where(key_thr[g] > 0, key_thr[g], view_thr)
    alarms = int(jump.sum()) + int((v[~jump] > row_thr[~jump]).sum())
    keys = pl.DataFrame(
        {
            "_key": prep.keys[starts],
            "n": counts.astype(np.int32),
            "mask": masks.astype(np.int32),
            "thr": key_thr,
        }
    )
    info = {
        "threshold": view_thr,
        "eligible_rows": len(v),
        "jump_alarms": int(jump.sum()),
        "alarm_rate": alarms / len(v) if len(v) else 0.0,
    }
    return {"info": info, "keys": keys}


def _up32(x: np.ndarray) -> np.ndarray:
    """float32 not below ``x`` (a rounded-down threshold would let more alarm)."""
    y = x.astype(np.float32)
    low = y.astype(np.float64) < x
    y[low] = np.nextafter(y[low], np.float32(np.inf))
    return y


@dataclass
class Model:
    """A trained model as arrays, ready to score prepared rows."""

    spec: Spec
    center: np.ndarray
    scale: np.ndarray
    C: np.ndarray
    P: np.ndarray
    spread: np.ndarray
    keys: np.ndarray  # uint64 sorted
    n: np.ndarray
    mask: np.ndarray  # int64
    thr: np.ndarray  # float64, 0 = the view's
    threshold: float
    span_days: float

    @classmethod
    def from_tables(cls, spec: Spec, t: dict[str, pl.DataFrame]) -> Model | None:
        if "info" not in t or "clusters" not in t:
            return None
        info = t["info"].row(0, named=True)
        cl = t["clusters"].sort("cluster")
        d = len(spec.features)
        C = cl.select([f"c{j}" for j in range(d)]).to_numpy().astype(np.float64)
        P = np.zeros((1, 1, 1))
        if spec.mixture:
            P = np.zeros((len(C), d, d))
            pr = t["precision"]
            P[pr["cluster"].to_numpy(), pr["i"].to_numpy(), pr["j"].to_numpy()] = pr[
                "value"
            ].to_numpy()
        keys = t["keys"].sort("_key")
        if info["hash_probe"] != hash_probe(spec.view):  # keys hash differently now
            keys = keys.clear()
        return cls(
            spec=spec,
            center=t["scaling"]["center"].to_numpy().astype(np.float64),
            scale=t["scaling"]["scale"].to_numpy().astype(np.float64),
            C=np.ascontiguousarray(C),
            P=P,
            spread=cl["spread"].to_numpy().astype(np.float64),
            keys=readonly(keys["_key"].to_numpy()),
            n=readonly(keys["n"].to_numpy()),
            mask=keys["mask"].to_numpy().astype(np.int64),
            thr=keys["thr"].to_numpy().astype(np.float64),
            threshold=float(info["threshold"]),
            span_days=float(info["span_days"]),
        )

    def centre(self, k: np.ndarray) -> np.ndarray:
        """Cluster centres in feature units (log1p measures or their changes first)."""
        return self.C[k] * self.scale + self.center

    def score(self, prep: Prepared, prev_l: np.ndarray, live: np.ndarray) -> Scores:
        """Every row of ``prep`` scored (``prev_l``, ``live``: stored last vectors for
        velocity); detection scores only the rows that can alarm
        (:func:`~flowhawk.detectors.clusters_scan.scan`), with the same numbers."""
        idx = lookup(self.keys, prep.keys)
        found = idx >= 0
        masks = np.where(found, self.mask[idx], 0)
        s = self.spec
        cl, own, own_cl, used, _ = kern.score(
            prep.X, prep.prev, prev_l, live, s.velocity, s.mixture, self.center, self.scale,
            self.C, self.P, s.mixture, self.spread, masks, prep.group, False,
        )  # fmt: skip
        n = np.where(found, self.n[idx], 0)
        thr = np.where(found & (self.thr[idx] > 0), self.thr[idx], self.threshold)
        return Scores(own, own_cl, cl, used, found, n, thr)


@dataclass
class Scores:
    """Per sorted row: ratio to the key's own clusters, which, the nearest cluster overall."""

    value: np.ndarray  # float32, NaN: no vector or key without clusters
    own: np.ndarray  # int32 cluster the value is measured to
    nearest: np.ndarray  # int32 nearest cluster of all (jump: not among the key's)
    used: np.ndarray  # int32 clusters the key used in the history
    known: np.ndarray  # bool: key in the model
    history: np.ndarray  # active buckets of the key in the training history
    threshold: np.ndarray  # float64 tuned threshold per row
