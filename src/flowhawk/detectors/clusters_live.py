"""The last behavior vector of each key of a view: the live state of velocity methods.

Velocity is the change of a key's vector since its previous active bucket; when that
bucket closed in an earlier range, its vector comes from here. The velocity detectors
of one view (the communication has two, M10 and M18) share one :class:`LastVectors`
in ``context.shared``: for each closed range, once, it looks up the previous vectors
of the keys the range holds and then advances with the range's last vector per key
(:class:`~flowhawk.detectors.shared.RangeSteps`), both by merging the range's sorted
keys with its own (:mod:`~flowhawk.detectors.clusters_rows`). A key is 48 bytes
(hash, bucket, eight float32 measures). Vectors older than the model horizon are
forgotten when a new model is trained (so the same flows forget the same keys however
they were cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from flowhawk.behavior.views import MEASURES
from flowhawk.detectors.base import Batch, DetectorContext
from flowhawk.detectors.clusters_features import Prepared, hash_probe, prepared
from flowhawk.detectors.shared import RangeSteps


@dataclass
class Previous:
    """For the sorted rows of a range: where each key's previous vector is, if stored."""

    prev: np.ndarray  # int64 per sorted row: index into vectors/times, or -1
    vectors: np.ndarray  # float32 (m, 8): the stored last vectors found
    times: np.ndarray  # int64 (m,): their buckets, epoch seconds


NO_VECTORS = np.zeros((0, len(MEASURES)), np.float32)
_NONE = Previous(np.zeros(0, np.int64), NO_VECTORS, np.zeros(0, np.int64))


class LastVectors:
    """The last log1p vector and bucket of each key of a view, sorted by key hash."""

    def __init__(self, view: str, horizon: float):
        self.view = view
        self.horizon = horizon
        self.keys = np.zeros(0, dtype=np.uint64)
        self.vectors = np.zeros((0, len(MEASURES)), dtype=np.float32)
        self.times = np.zeros(0, dtype=np.int64)
        self.through: datetime | None = None  # end of the last range included
        self._evicted: datetime | None = None  # training time of the last eviction
        self._steps: RangeSteps[Previous] = RangeSteps(_NONE)
        self._tables: dict[str, pa.Table] | None = None

    @classmethod
    def join(
        cls, context: DetectorContext, view: str, horizon: float, every: float, member: object
    ) -> LastVectors:
        slot = ("last-vectors", view, horizon, every)
        found = context.shared.get(slot)
        if found is None:
            found = context.shared[slot] = cls(view, horizon)
        found._steps.join(member)
        return found

    def step(self, member: object, batch: Batch, trained_until: datetime | None) -> Previous:
        """The previous vectors of ``batch``'s keys, before it (the state then advances)."""
        return self._steps.once(member, batch, lambda: self._advance(batch, trained_until))

    def _advance(self, batch: Batch, trained_until: datetime | None) -> Previous:
        from flowhawk.detectors import clusters_rows as kern

        rows = batch.log.get(self.view)
        prep = prepared(rows, self.view) if rows is not None and rows.height else None
        found = _NONE
        if prep is not None:
            prev, at = kern.find_last(prep.keys, prep.prev, self.keys)
            found = Previous(prev, self.vectors[at], self.times[at])
        self._evict(trained_until)
        if prep is not None:
            self._remember(prep)
        self.through = batch.closed_until
        self._tables = None
        return found

    def _remember(self, prep: Prepared) -> None:
        from flowhawk.detectors import clusters_rows as kern

        keys, vectors, times = self.keys, self.vectors, self.times
        new = kern.count_new(prep.keys, keys)
        if new:
            m = len(keys) + new
            keys = np.empty(m, dtype=np.uint64)
            vectors = np.empty((m, len(MEASURES)), dtype=np.float32)
            times = np.empty(m, dtype=np.int64)
        args = (self.keys, self.vectors, self.times, keys, vectors, times)
        kern.remember(prep.keys, prep.X, prep.buckets, *args)
        self.keys, self.vectors, self.times = keys, vectors, times

    def _evict(self, trained_until: datetime | None) -> None:
        """Forget vectors older than the horizon, once per training."""
        if trained_until is None or self._evicted == trained_until:
            return
        keep = self.times >= (trained_until - timedelta(seconds=self.horizon)).timestamp()
        if not keep.all():
            self.keys, self.vectors, self.times = (
                self.keys[keep],
                self.vectors[keep],
                self.times[keep],
            )
        self._evicted = trained_until

    # -- checkpoint ----------------------------------------------------------------------

    def tables(self) -> dict[str, pa.Table]:
        """The state as tables (the same objects for every member until it changes)."""
        if self._tables is None:
            cols = {f"v{j}": pa.array(self.vectors[:, j]) for j in range(len(MEASURES))}
            last = pa.table({"_key": pa.array(self.keys), "bucket": pa.array(self.times), **cols})
            probe = pa.table(
                {
                    "hash_probe": pa.array([hash_probe(self.view)], pa.uint64()),
                    "through": pa.array([self.through], pa.timestamp("us", "UTC")),
                    "evicted": pa.array([self._evicted], pa.timestamp("us", "UTC")),
                }
            )
            self._tables = {"live_last": last, "live_probe": probe}
        return self._tables

    def load(self, state: dict[str, pa.Table]) -> None:
        """Restore a member's copy if it is the latest seen (and keys hash as then)."""
        last, probe = state.get("live_last"), state.get("live_probe")
        if last is None or probe is None:
            return
        if probe.column("hash_probe")[0].as_py() != hash_probe(self.view):
            return  # keys hash differently under this polars: start over
        names = probe.column_names
        through = probe.column("through")[0].as_py() if "through" in names else None
        if self.through is not None and (through is None or through <= self.through):
            return
        self.keys = last.column("_key").to_numpy().copy()
        self.times = last.column("bucket").to_numpy().copy()
        cols = [last.column(f"v{j}").to_numpy() for j in range(len(MEASURES))]
        vectors = np.stack(cols, axis=1) if len(self.keys) else _NONE.vectors
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.through = through
        self._evicted = probe.column("evicted")[0].as_py() if "evicted" in names else None
        self._tables = None
