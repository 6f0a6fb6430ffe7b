"""One numba pass over a closed range's communications for the volume detectors.

The exact tests of :mod:`~flowhawk.detectors.volume_core` (z-scores against the
baseline, silences of regular keys) are polars expressions over joins; run on every
row of a range they cost more than everything else the volume detectors do. This
pass finds, per row, the key's baseline row through a hash index built once per
baseline, and marks

- the rows that may pass an overflow or underflow test (each test with a margin far
  wider than float rounding), and
- the regular keys that may have a silence in the range (every quiet stretch checked
  with a margin of two buckets),

so that the exact tests run only on those rows and keys: the alarms are those of the
exact tests on every row. The live state's activity (the last active bucket of each
regular key) is computed here too; it is integer arithmetic and exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from flowhawk.behavior import baseline as bl
from flowhawk.behavior.grouping import capacity
from flowhawk.jit import numba
from flowhawk.keyhash import fmix

_NONE = np.iinfo(np.int64).min
_MARGIN = 1e-7  # of the z-score tests: rounding differs by about 1e-15


@numba.njit(cache=True, nogil=True)
def _index(keys):  # type: ignore[no-untyped-def]
    table = np.zeros((capacity(2 * len(keys)), 2), np.uint64)  # key, row + 1
    mask = np.uint64(len(table) - 1)
    for i in range(len(keys)):
        s = fmix(keys[i]) & mask
        while table[s, 1] != 0 and table[s, 0] != keys[i]:
            s = (s + np.uint64(1)) & mask
        table[s, 0] = keys[i]
        table[s, 1] = i + 1
    return table


@numba.njit(cache=True, nogil=True)
def _find(table, queries):  # type: ignore[no-untyped-def]
    mask = np.uint64(len(table) - 1)
    out = np.full(len(queries), -1, np.int64)
    for i in range(len(queries)):
        s = fmix(queries[i]) & mask
        while table[s, 1] != 0:
            if table[s, 0] == queries[i]:
                out[i] = np.int64(table[s, 1]) - 1
                break
            s = (s + np.uint64(1)) & mask
    return out


@numba.njit(cache=True, nogil=True)
def _candidates(idx, part, sent, recv, base, regular, fixed, limits):  # type: ignore[no-untyped-def]
    """Rows that may pass some test. ``base``: per key, the medians (0-2) and spreads
    (3-5) of the metrics, the day parts' offsets (6-11), the thresholds (12, 13);
    ``limits``: min spread hi, lo, min packets."""
    n = len(idx)
    out = np.zeros(n, np.bool_)
    for r in range(n):
        i = idx[r]
        if i < 0:
            continue
        season = base[i, 6 + part[r]]
        hi = fixed if fixed == fixed else base[i, 12]  # NaN: the self-tuned one
        lo = fixed if fixed == fixed else base[i, 13]
        raw = (sent[r], recv[r], sent[r] + recv[r])
        for m in range(3):
            dev = np.log1p(np.float64(raw[m])) - base[i, m] - season
            z = dev / max(base[i, 3 + m], limits[0])
            if z > hi - _MARGIN * (1.0 + abs(hi)) and raw[m] >= limits[2]:
                out[r] = True
            if regular[i]:
                z = dev / max(base[i, 3 + m], limits[1])
                if z < -lo + _MARGIN * (1.0 + abs(lo)):
                    out[r] = True
    return out


@numba.njit(cache=True, nogil=True)
def _quiet(idx, bucket, order, live_idx, live_last, live_alarmed, regular, allowed, b, until):  # type: ignore[no-untyped-def]
    """Keys that may have a silence noticed by ``until`` (µs), and each key's last
    active bucket in the range (``_NONE`` if none); rows visited in bucket order."""
    n_keys = len(regular)
    cur = np.full(n_keys, _NONE, np.int64)
    settled = np.zeros(n_keys, np.bool_)  # a silence from the state already alarmed
    for j in range(len(live_idx)):
        i = live_idx[j]
        if i >= 0 and regular[i]:
            cur[i] = live_last[j]
            settled[i] = live_alarmed[j]
    maybe = np.zeros(n_keys, np.bool_)
    active = np.full(n_keys, _NONE, np.int64)
    step = b * 1_000_000
    for k in range(len(order)):
        r = order[k]
        i = idx[r]
        if i < 0 or not regular[i]:
            continue
        t = bucket[r]
        if cur[i] != _NONE and not settled[i] and _noticed(cur[i], allowed[i], b) - 2 * step <= t:
            maybe[i] = True
        cur[i] = t
        settled[i] = False
        active[i] = max(active[i], t)
    for i in range(n_keys):
        if (
            cur[i] != _NONE
            and not settled[i]
            and _noticed(cur[i], allowed[i], b) - 2 * step <= until
        ):
            maybe[i] = True
    return maybe, active


@numba.njit(cache=True, nogil=True, inline="always")
def _noticed(last_us, allowed, b):  # type: ignore[no-untyped-def]
    """When a silence after the bucket ``last_us`` is noticed (µs, about)."""
    s = np.float64(last_us // 1_000_000)
    return np.int64((np.floor((s + b + allowed) / b) + 1.0) * b) * 1_000_000


@numba.njit(cache=True, nogil=True)
def _kept(live_idx, live_last, active):  # type: ignore[no-untyped-def]
    """Live rows not replaced by a later (or equal) activity in the range."""
    keep = np.ones(len(live_idx), np.bool_)
    for j in range(len(live_idx)):
        i = live_idx[j]
        if i >= 0 and active[i] != _NONE and active[i] >= live_last[j]:
            keep[j] = False
    return keep


@dataclass
class Scan:
    """A baseline's arrays and key index, built once per baseline."""

    keys: np.ndarray
    table: np.ndarray
    base: np.ndarray  # per key: medians, spreads, day-part offsets, thresholds
    regular: np.ndarray
    allowed: np.ndarray  # seconds a regular key may be quiet

    @classmethod
    def of(cls, model: pl.DataFrame, allowed: pl.Expr) -> Scan:
        def f64(*cols: str) -> np.ndarray:
            return np.ascontiguousarray(
                model.select(pl.col(c).cast(pl.Float64) for c in cols).to_numpy()
            )

        keys = model.get_column("_key").to_numpy()
        base = np.hstack(
            [
                f64(*(f"{m}_med" for m in bl.METRICS)),
                f64(*(f"{m}_mad" for m in bl.METRICS)),
                np.nan_to_num(f64(*(f"off{i}" for i in range(bl.PARTS)))),
                f64("thr_hi", "thr_lo"),
            ]
        )
        return cls(
            keys=keys,
            table=_index(keys),
            base=np.ascontiguousarray(base),
            regular=model.get_column("regular").fill_null(False).to_numpy().copy(),
            allowed=model.select(allowed.cast(pl.Float64)).to_series().to_numpy().copy(),
        )

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Baseline row of each key, or -1."""
        return _find(self.table, np.ascontiguousarray(keys, dtype=np.uint64))

    def candidates(
        self, idx: np.ndarray, keyed: pl.DataFrame, fixed: float | None, min_packets: int
    ) -> np.ndarray:
        """Rows of ``keyed`` that may pass an overflow or underflow test."""
        part = keyed.get_column("_part").cast(pl.Int64).to_numpy()
        sent = keyed.get_column("pkts_out").to_numpy()
        recv = keyed.get_column("pkts_in").to_numpy()
        limits = np.array([bl.MIN_SPREAD_HI, bl.MIN_SPREAD_LO, min_packets], np.float64)
        fixed_z = np.nan if fixed is None else float(fixed)
        return _candidates(idx, part, sent, recv, self.base, self.regular, fixed_z, limits)

    def quiet(
        self, idx: np.ndarray, keyed: pl.DataFrame, live: pl.DataFrame, b: int, until_us: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys (baseline rows) that may have a silence in the range; each key's last
        active bucket in it (µs, or the minimum int64); live rows it does not replace."""
        bucket = keyed.get_column("bucket").dt.epoch("us").to_numpy()
        order = (
            np.arange(len(bucket))
            if keyed.get_column("bucket").is_sorted()
            else np.argsort(bucket, kind="stable")
        )
        live_idx = self.find(live.get_column("_key").to_numpy())
        live_last = live.get_column("last").dt.epoch("us").to_numpy()
        live_alarmed = live.get_column("alarmed").to_numpy()
        maybe, active = _quiet(
            idx, bucket, order, live_idx, live_last, live_alarmed, self.regular,
            self.allowed, b, until_us,
        )  # fmt: skip
        return maybe, active, _kept(live_idx, live_last, active)
