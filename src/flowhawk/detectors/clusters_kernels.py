"""numba kernels of the clustering models (M10-M25): features, distances, scores per row.

These score every row, as training does with the history (scoring a closed range,
only the rows that can alarm, is :mod:`~flowhawk.detectors.clusters_scan`, with the
same numbers). Every kernel walks rows once and builds each row's feature vector on
the fly, so there are no (rows x clusters) temporaries:

- the *base* vector of a row is its ``log1p`` measures (8 float32, see
  :mod:`flowhawk.detectors.clusters_features`); the *rich* vector (M18/M19) adds three
  non-linear ones: the byte balance ``(out-in)/(out+in+1)``, the packet balance, and
  ``log1p`` of the mean flow duration;
- *magnitude* uses the vector itself, *velocity* its change since the key's previous
  active bucket (a row of the same batch, ``prev_b``, or the live state, ``prev_l``);
  a row with neither has no velocity and is skipped;
- the vector is scaled per feature (``(f - center) / scale``), then compared with each
  cluster: Euclidean distance to a k-means centroid, or the Mahalanobis distance to a
  Gaussian-mixture component (``prec``: the upper-triangular Cholesky factor of its
  precision, as scikit-learn stores it). A distance divided by the cluster's spread
  is the row's *ratio* to that cluster.
"""

from __future__ import annotations

import math

import numpy as np

from flowhawk.jit import numba

NBASE = 8
NRICH = 11


@numba.njit(cache=True, inline="always")
def extra(x):
    """The three non-linear features of log vector ``x``."""
    po = math.expm1(x[0])
    pi = math.expm1(x[1])
    bo = math.expm1(x[2])
    bi = math.expm1(x[3])
    fl = max(math.expm1(x[4]), 1.0)
    du = max(math.expm1(x[7]), 0.0)
    return (bo - bi) / (bo + bi + 1.0), (po - pi) / (po + pi + 1.0), math.log1p(du / fl)


@numba.njit(cache=True, inline="always")
def _transform(x, rich, out, sign):
    """Add ``sign`` times the feature vector of log vector ``x`` to ``out``."""
    for j in range(NBASE):
        out[j] += sign * x[j]
    if rich:
        byte_balance, packet_balance, log_mean_duration = extra(x)
        out[8] += sign * byte_balance
        out[9] += sign * packet_balance
        out[10] += sign * log_mean_duration


@numba.njit(cache=True, inline="always")
def _row(i, X, prev_b, prev_l, L, velocity, rich, center, scale, z):
    """Scaled feature vector of row ``i`` into ``z``; False when it has none."""
    d = z.shape[0]
    for j in range(d):
        z[j] = 0.0
    _transform(X[i], rich, z, 1.0)
    if velocity:
        if prev_b[i] >= 0:
            _transform(X[prev_b[i]], rich, z, -1.0)
        elif prev_l[i] >= 0:
            _transform(L[prev_l[i]], rich, z, -1.0)
        else:
            return False
    for j in range(d):
        z[j] = (z[j] - center[j]) / scale[j]
    return True


@numba.njit(cache=True, inline="always")
def _dist(z, k, C, P, gmm, y):
    """Distance of scaled vector ``z`` to cluster ``k``."""
    d = z.shape[0]
    acc = 0.0
    if gmm:
        for j in range(d):  # y = (z - mu) @ P, P upper triangular
            s = 0.0
            for i in range(j + 1):
                s += (z[i] - C[k, i]) * P[k, i, j]
            y[j] = s
            acc += s * s
    else:
        for j in range(d):
            t = z[j] - C[k, j]
            acc += t * t
    return math.sqrt(acc)


@numba.njit(cache=True)
def features(rows, X, prev_b, prev_l, L, velocity, rich, center, scale):
    """Scaled feature vectors of ``rows`` (n x d) and whether each has one."""
    d = center.shape[0]
    out = np.zeros((rows.shape[0], d))
    ok = np.zeros(rows.shape[0], dtype=np.bool_)
    z = np.zeros(d)
    for r in range(rows.shape[0]):
        if _row(rows[r], X, prev_b, prev_l, L, velocity, rich, center, scale, z):
            ok[r] = True
            out[r, :] = z
    return out, ok


@numba.njit(cache=True)
def nearest(X, prev_b, prev_l, L, velocity, rich, center, scale, C, P, gmm):
    """Per row: the nearest cluster by raw distance (-1: no vector) and that distance."""
    n = X.shape[0]
    d = center.shape[0]
    K = C.shape[0]
    near = np.full(n, -1, dtype=np.int32)
    dist = np.zeros(n, dtype=np.float32)
    z = np.zeros(d)
    y = np.zeros(d)
    for i in range(n):
        if not _row(i, X, prev_b, prev_l, L, velocity, rich, center, scale, z):
            continue
        best = np.inf
        for k in range(K):
            dk = _dist(z, k, C, P, gmm, y)
            if dk < best:
                best = dk
                near[i] = k
        dist[i] = best
    return near, dist


@numba.njit(cache=True)
def score(
    X, prev_b, prev_l, L, velocity, rich, center, scale, C, P, gmm, spread, masks, group, seq
):
    """Per row: the nearest cluster, the ratio to the nearest *own* cluster and which,
    and how many clusters the key had used.

    ``masks``: clusters each row's key used (bit k = cluster k). With ``seq`` (training,
    rows sorted by key then time, ``group`` = key number) the mask is instead the key's
    clusters *before* this row, built as the walk goes, so a key's first use of a
    cluster is scored as the jump it would have been; the final masks per group are
    returned. Rows without a vector get NaN and cluster -1; a row whose key used no
    cluster gets NaN as own ratio.
    """
    n = X.shape[0]
    d = center.shape[0]
    K = C.shape[0]
    cl = np.full(n, -1, dtype=np.int32)
    used = np.zeros(n, dtype=np.int32)
    own = np.full(n, np.nan, dtype=np.float32)
    own_cl = np.full(n, -1, dtype=np.int32)
    ngroups = group[n - 1] + 1 if seq and n else 0
    final = np.zeros(ngroups, dtype=np.int64)
    z = np.zeros(d)
    y = np.zeros(d)
    running = np.int64(0)
    for i in range(n):
        if seq and (i == 0 or group[i] != group[i - 1]):
            running = 0
        if not _row(i, X, prev_b, prev_l, L, velocity, rich, center, scale, z):
            continue
        mask = running if seq else masks[i]
        best = np.inf
        best_own = np.inf
        for k in range(K):
            rk = _dist(z, k, C, P, gmm, y) / spread[k]
            if rk < best:
                best = rk
                cl[i] = k
            if (mask >> k) & 1 and rk < best_own:
                best_own = rk
                own_cl[i] = k
        for k in range(K):
            used[i] += (mask >> k) & 1
        if own_cl[i] >= 0:
            own[i] = best_own
        if seq:
            running |= np.int64(1) << cl[i]
            final[group[i]] = running
    return cl, own, own_cl, used, final
