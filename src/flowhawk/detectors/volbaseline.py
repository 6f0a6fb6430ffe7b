"""A per-host baseline of what a host does in one window: a decaying log histogram.

Each host keeps a histogram of the values it showed in its past windows (bytes sent,
bytes received, distinct peers), in half-octave bins: bin ``b`` holds values in
``[2**(b/2), 2**((b+1)/2))``, 96 bins reach 2**48 (256 TiB), value 0 goes to bin 0.
The baseline is a high quantile of that histogram (the top edge of the bin holding
it, so it never understates), robust to the host's few odd windows yet close to the
most it usually does. Old windows fade with a half-life counted in windows: weights
are decayed lazily, when a host next adds a window, since a quantile does not change
when all weights are scaled alike. A host with less than ``min_history`` (decayed)
windows has no baseline yet (0). Keys are stable 64-bit hashes of the host key
(:mod:`flowhawk.keyhash`), kept sorted: 8 + 8 + 96 * 4 bytes a host.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.keyhash import stable_hash

BINS = 96
_KEY_TYPES: dict[str, pl.DataType] = {"site": pl.String(), "host": pl.String()}


def host_hash(df: pl.DataFrame, site: str = "site", host: str = "host") -> np.ndarray:
    """Stable hash of each row's (site, host)."""
    keys = df.select(pl.col(site).alias("site"), pl.col(host).alias("host"))
    return stable_hash(keys, ["site", "host"], _KEY_TYPES)


def value_bin(values: np.ndarray) -> np.ndarray:
    """Half-octave bin of each value (0 for values below 2)."""
    v = np.maximum(np.asarray(values, dtype=np.float64), 1.0)
    return np.clip(np.floor(2.0 * np.log2(v)), 0, BINS - 1).astype(np.int64)


def bin_top(bins: np.ndarray) -> np.ndarray:
    """The top edge of each bin, the value a quantile falling in it is reported as."""
    return np.power(2.0, (np.asarray(bins, dtype=np.float64) + 1.0) / 2.0)


class WindowBaseline:
    """Decaying histograms of one per-window value, per host."""

    def __init__(self, quantile: float, half_life: float, min_history: float):
        self.quantile = quantile
        self.half_life = max(half_life, 1e-9)  # in windows
        self.min_history = min_history
        self._keys = np.zeros(0, dtype=np.uint64)  # sorted
        self._last = np.zeros(0, dtype=np.int64)  # window of the last update
        self._hist = np.zeros((0, BINS), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._keys)

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index, found) of each key."""
        if len(self._keys) == 0:
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        idx = np.searchsorted(self._keys, keys)
        idx[idx == len(self._keys)] = 0
        return idx, self._keys[idx] == keys

    def baseline(self, keys: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
        """(baseline value, decayed windows of history) of each host as of ``window``;
        the baseline is 0 where history is shorter than ``min_history``."""
        keys = np.asarray(keys, dtype=np.uint64)
        out = np.zeros(len(keys), dtype=np.float64)
        weight = np.zeros(len(keys), dtype=np.float64)
        idx, found = self._find(keys)
        if not found.any():
            return out, weight
        hist = self._hist[idx[found]].astype(np.float64)
        total = hist.sum(axis=1)
        age = np.maximum(window - self._last[idx[found]], 0)
        weight[found] = total * np.power(0.5, age / self.half_life)
        cum = np.cumsum(hist, axis=1)
        q_bin = np.argmax(cum >= (self.quantile * total)[:, None] - 1e-9, axis=1)
        value = np.where(total > 0, bin_top(q_bin), 0.0)
        out[found] = value
        out[weight < self.min_history] = 0.0
        return out, weight

    def update(self, keys: np.ndarray, values: np.ndarray, window: int) -> None:
        """Add one window's value for each host (keys distinct)."""
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) == 0:
            return
        bins = value_bin(values)
        idx, found = self._find(keys)
        if found.any():
            rows = idx[found]
            age = np.maximum(window - self._last[rows], 0)
            decay = np.power(0.5, age / self.half_life).astype(np.float32)
            self._hist[rows] *= decay[:, None]
            self._hist[rows, bins[found]] += 1.0
            self._last[rows] = window
        fresh = ~found
        if fresh.any():
            new_keys = keys[fresh]
            order = np.argsort(new_keys, kind="stable")
            new_keys = new_keys[order]
            hist = np.zeros((len(new_keys), BINS), dtype=np.float32)
            hist[np.arange(len(new_keys)), bins[fresh][order]] = 1.0
            at = np.searchsorted(self._keys, new_keys)
            self._keys = np.insert(self._keys, at, new_keys)
            self._last = np.insert(self._last, at, np.full(len(new_keys), window, np.int64))
            self._hist = np.insert(self._hist, at, hist, axis=0)

    def to_arrow(self) -> pa.Table:
        flat = pa.array(self._hist.ravel(), pa.float32())
        return pa.table(
            {
                "key": pa.array(self._keys, pa.uint64()),
                "last": pa.array(self._last, pa.int64()),
                "hist": pa.FixedSizeListArray.from_arrays(flat, BINS),
            }
        )

    def load(self, table: pa.Table | None) -> None:
        self._keys = np.zeros(0, dtype=np.uint64)
        self._last = np.zeros(0, dtype=np.int64)
        self._hist = np.zeros((0, BINS), dtype=np.float32)
        if table is None or table.num_rows == 0:
            return
        keys = table.column("key").to_numpy().astype(np.uint64)
        last = table.column("last").to_numpy().astype(np.int64)
        hist_col = table.column("hist").combine_chunks()
        hist = hist_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        order = np.argsort(keys, kind="stable")
        self._keys = np.ascontiguousarray(keys[order])
        self._last = np.ascontiguousarray(last[order])
        self._hist = np.ascontiguousarray(hist.reshape(-1, BINS)[order])
