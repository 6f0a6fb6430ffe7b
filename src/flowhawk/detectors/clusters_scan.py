"""Scoring a closed range against a clustering model (M10-M25): the rows that alarm.

One numba pass walks the range's rows in key order (a
:class:`~flowhawk.detectors.clusters_features.Prepared`) beside the model's keys (a
merge, no search per row) and keeps only the rows that can alarm: their key is in
the model with ``min_history`` active buckets and they have a vector (velocity: a
previous one). Those are scored in blocks of :data:`BLOCK` rows, feature by feature
and cluster by cluster, so that the arithmetic runs over contiguous slots; each row's
numbers are those of scoring it alone
(:func:`~flowhawk.detectors.clusters_kernels.score`). The alarm rule (:class:`Rule`)
is applied in the same pass, so only alarming rows leave it (:class:`Hits`). The rich
vector's three non-linear features of a frame's rows are computed once per frame
(:func:`extras`), for the view's two Gaussian mixtures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flowhawk.detectors.clusters_kernels import NBASE, NRICH, extra
from flowhawk.jit import numba

if TYPE_CHECKING:
    from flowhawk.detectors.clusters_features import Prepared
    from flowhawk.detectors.clusters_live import Previous
    from flowhawk.detectors.clusters_model import Model, Params

BLOCK = 256  # rows scored together: their features and distances stay in the L1 cache
NEXTRA = NRICH - NBASE
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_EXTRAS = np.zeros((0, NEXTRA))
_NO_THRESHOLDS = np.zeros(0)


@dataclass(frozen=True)
class Rule:
    """When a scored row alarms (the detector's settings)."""

    p: Params
    fixed: float | None  # a fixed threshold instead of the tuned ones
    per_row: np.ndarray | None  # float64 threshold per sorted row, NaN: none (sites)
    min_score: float

    def args(self, tuned: float) -> tuple:
        """The rule as the kernel reads it, with the view's tuned threshold; float32
        where a float32 ratio is compared with a setting."""
        p = self.p
        return (
            float(tuned),
            math.nan if self.fixed is None else float(self.fixed),
            _NO_THRESHOLDS if self.per_row is None else self.per_row,
            int(p.min_history),
            float(p.budget),
            np.float32(p.min_threshold),
            np.float32(self.min_score),
            bool(p.jumps),
        )


@dataclass
class Hits:
    """The alarming rows of a range, in sorted order."""

    idx: np.ndarray  # int64 sorted positions
    value: np.ndarray  # float32 ratio to the key's own clusters
    threshold: np.ndarray  # float64 threshold the ratio exceeded (or a jump)
    nearest: np.ndarray  # int32 nearest cluster of all (jump: not among the key's)
    own: np.ndarray  # int32 cluster the value is measured to
    history: np.ndarray  # int32 active buckets of the key in the training history
    used: np.ndarray  # int32 clusters the key used in the history


def scan(model: Model, prep: Prepared, before: Previous, rule: Rule) -> Hits:
    """The rows of ``prep`` that alarm under ``model`` and ``rule`` (``before``: the
    stored last vectors of its keys, for velocity)."""
    s = model.spec
    tables = (
        model.center, model.scale, model.C, model.P, s.mixture, model.spread,
        model.keys, model.n, model.mask, model.thr,
    )  # fmt: skip
    idx, value, thr, cl = _scan(
        prep.X, prep.extras if s.mixture else _NO_EXTRAS, prep.prev,
        before.prev if s.velocity else _NO_ROWS, before.vectors, s.velocity, prep.keys,
        tables, rule.args(model.threshold),
    )  # fmt: skip
    return Hits(idx, value, thr, cl[0], cl[1], cl[2], cl[3])


# -- kernels ---------------------------------------------------------------------------


@numba.njit(cache=True)
def extras(X):
    """The non-linear features of the rich vector of each log vector (n x 3)."""
    out = np.empty((X.shape[0], NEXTRA))
    for i in range(X.shape[0]):
        out[i, 0], out[i, 1], out[i, 2] = extra(X[i])
    return out


@numba.njit(cache=True, inline="always")
def _put(x, i, e, ie, F, b, sign):
    """Add ``sign`` times the feature vector of log vector ``x[i]`` (extras ``e[ie]``) to
    slot b of the block."""
    for j in range(NBASE):
        F[j, b] += sign * x[i, j]
    for j in range(F.shape[0] - NBASE):
        F[NBASE + j, b] += sign * e[ie, j]


@numba.njit(cache=True)
def _block(F, m, center, scale, C, P, gmm, spread, masks, work, best, near, bown, own):
    """Scale the ``m`` feature vectors of a block (columns of ``F``), then find each one's
    nearest cluster (``near``, ratio ``best``) and nearest of its mask (``own``, ``bown``)."""
    d = F.shape[0]
    for j in range(d):
        c, s = center[j], scale[j]
        for b in range(m):
            F[j, b] = (F[j, b] - c) / s
    best[:m] = np.inf
    bown[:m] = np.inf
    near[:m] = -1
    own[:m] = -1
    acc, y, t = work[0], work[1], work[2:]
    for k in range(C.shape[0]):
        acc[:m] = 0.0
        if gmm:  # y = (z - mu) @ P, P upper triangular
            for i in range(d):
                c = C[k, i]
                for b in range(m):
                    t[i, b] = F[i, b] - c
            for j in range(d):
                y[:m] = 0.0
                for i in range(j + 1):
                    p = P[k, i, j]
                    for b in range(m):
                        y[b] += t[i, b] * p
                for b in range(m):
                    acc[b] += y[b] * y[b]
        else:
            for j in range(d):
                c = C[k, j]
                for b in range(m):
                    u = F[j, b] - c
                    acc[b] += u * u
        sp = spread[k]
        for b in range(m):
            r = math.sqrt(acc[b]) / sp
            if r < best[b]:
                best[b] = r
                near[b] = k
            if (masks[b] >> k) & 1 and r < bown[b]:
                bown[b] = r
                own[b] = k


@numba.njit(cache=True)
def _scan(X, E, prev_b, prev_l, L, velocity, keys, model, rule):
    """The rows of a range that alarm, scored against ``model`` under ``rule``.

    ``keys``: each row's key hash (ascending: rows sorted by key); ``E``: the extras of
    ``X`` for rich vectors (else empty). ``model``: (center, scale, C, P, gmm, spread,
    its keys ascending, their active buckets, clusters used and own thresholds (0: the
    view's)). ``rule``: (the view's tuned threshold, a fixed threshold or NaN, thresholds
    per row (NaN: none) or empty, min_history, budget, min_threshold (float32),
    min_score (float32), jumps). Only rows whose key the model knows with
    ``min_history`` active buckets, and that have a vector, are scored. A row alarms
    when its ratio to its key's own clusters exceeds its threshold or it jumped to a
    cluster its key never used (:func:`~flowhawk.detectors.clusters_model.jumps`), and
    its score reaches ``min_score``. Per alarming row: position, ratio (float32),
    threshold, nearest cluster, own cluster, the key's active buckets, clusters used.
    """
    center, scale, C, P, gmm, spread, mkeys, mn, mmask, mthr = model
    tuned, fixed, per_row, min_history, budget, min_thr, min_score, use_jumps = rule
    n, d, K, M = X.shape[0], center.shape[0], C.shape[0], mkeys.shape[0]
    hits = np.empty(n, dtype=np.int64)  # memory pages are touched only by alarming rows
    h_val = np.empty(n, dtype=np.float32)
    h_thr = np.empty(n)
    h_cl = np.empty((4, n), dtype=np.int32)  # nearest, own, active buckets, used
    nh = 0
    F = np.zeros((d, BLOCK))
    work = np.empty((d + 2, BLOCK))
    rows = np.empty(BLOCK, dtype=np.int64)
    at = np.empty(BLOCK, dtype=np.int64)  # the row's key in the model
    masks = np.empty(BLOCK, dtype=np.int64)
    best, bown = np.empty(BLOCK), np.empty(BLOCK)
    near, own = np.empty(BLOCK, dtype=np.int32), np.empty(BLOCK, dtype=np.int32)
    live = np.zeros((1, NEXTRA))  # extras of a stored last vector
    mp, cur, m = 0, -1, 0
    for i in range(n + 1):
        if i < n:
            if i == 0 or keys[i] != keys[i - 1]:
                while mp < M and mkeys[mp] < keys[i]:
                    mp += 1
                cur = mp if mp < M and mkeys[mp] == keys[i] else -1
            if cur < 0 or mn[cur] < min_history:
                continue
            if velocity and prev_b[i] < 0 and prev_l[i] < 0:
                continue
            for j in range(d):
                F[j, m] = 0.0
            _put(X, i, E, i, F, m, 1.0)
            if velocity and prev_b[i] >= 0:
                _put(X, prev_b[i], E, prev_b[i], F, m, -1.0)
            elif velocity:
                if d > NBASE:
                    live[0, 0], live[0, 1], live[0, 2] = extra(L[prev_l[i]])
                _put(L, prev_l[i], live, 0, F, m, -1.0)
            rows[m], at[m], masks[m] = i, cur, mmask[cur]
            m += 1
            if m < BLOCK:
                continue
        if m == 0:
            continue
        _block(F, m, center, scale, C, P, gmm, spread, masks, work, best, near, bown, own)
        for b in range(m):
            if own[b] < 0:
                continue  # its key used none of the clusters: no ratio
            v = np.float32(bown[b])
            k, r = at[b], rows[b]
            thr = fixed
            if math.isnan(fixed):
                thr = mthr[k] if mthr[k] > 0 else tuned
            if per_row.shape[0] and not math.isnan(per_row[r]):
                thr = per_row[r]
            used = 0
            for c in range(K):
                used += (masks[b] >> c) & 1
            jump = use_jumps and near[b] != own[b] and used <= budget * (mn[k] + 1)
            if not (v > thr or (jump and v > min_thr)):
                continue
            if not v / (np.float32(1.0) + v) >= min_score:
                continue
            hits[nh], h_val[nh], h_thr[nh] = r, v, thr
            h_cl[0, nh], h_cl[1, nh], h_cl[2, nh], h_cl[3, nh] = near[b], own[b], mn[k], used
            nh += 1
        m = 0
    return hits[:nh].copy(), h_val[:nh].copy(), h_thr[:nh].copy(), h_cl[:, :nh].copy()
