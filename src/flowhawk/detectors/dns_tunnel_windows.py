"""Event-time windows of DNS tunneling (N5): running counts per (client, registered
domain, window), carried across batches, and the query at which a window first meets
the alarm rule.

A window is a fixed span of event time aligned to the epoch (``floor(ts / length)``).
Its counts grow query by query; the alarm is raised at the first query after which
the window meets the rule, with the counts as they stand then, and once per window.
Because the counts at a query depend only on the queries before it in event time,
the same queries give the same alarms however they were cut into batches. A window
is dropped once event time (the newest query seen) has passed its end; a query older
than the windows already dropped is ignored (inputs come sorted by time).

A window that alarmed remembers what its alarm reported (queries, score, the client's
resolver, port and protocol, when and at how many encoded names it crossed): when it
closes (:meth:`Windows.closing`, just before it is dropped, or at the end of the input)
and has more queries than it reported, it is reported again, whole.

Distinct names are remembered as stable 64-bit hashes of (client, domain, window,
subdomain) (:mod:`flowhawk.keyhash`), 8 bytes a name; a window that only needs the
distinct *encoded* names (the long window) remembers only those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.detectors.base import UTC_US, note_reported, regrown_score, restore_frame
from flowhawk.keyhash import stable_hash

KEY = ["client", "domain", "win"]

#: Running counts of a window and their types (``win``: window start, epoch µs).
COUNTS: dict[str, pl.DataType] = {
    "n": pl.Int64(),  # queries
    "enc_q": pl.Int64(),  # queries for encoded names
    "data_q": pl.Int64(),  # queries of record types that carry data back
    "len_sum": pl.Int64(),  # characters of the queries' subdomains
    "bytes": pl.Int64(),  # DNS message bytes both ways, where known
    "u": pl.Int64(),  # distinct subdomains remembered
    "e": pl.Int64(),  # distinct encoded subdomains
}
GROUP_SCHEMA: dict[str, pl.DataType] = {
    "client": pl.String(),
    "domain": pl.String(),
    "win": pl.Int64(),
    **COUNTS,
    "first_ts": UTC_US,
    "last_ts": UTC_US,  # the window's newest query
    "alarmed": pl.Boolean(),
    "examples": pl.List(pl.String()),
    # what the window's own last alarm reported (null: it never alarmed by itself)
    "rep_n": pl.Int64(),
    "rep_score": pl.Float64(),
    # the crossing alarm's communication, time and encoded names
    "server": pl.String(),
    "port": pl.Int32(),
    "proto": pl.Int16(),
    "cross_ts": UTC_US,
    "cross_e": pl.Int64(),
}
#: What a window's crossing alarm leaves in its group (from the crossing row).
_REPORT = {
    "rep_n": "n",
    "rep_score": "score",
    "server": "server",
    "port": "port",
    "proto": "proto",
    "cross_ts": "ts",
    "cross_e": "e",
}
_KEY_TYPES: dict[str, pl.DataType] = {
    "client": pl.String(),
    "domain": pl.String(),
    "win": pl.Int64(),
}
_HASH_TYPES: dict[str, pl.DataType] = {**_KEY_TYPES, "sub": pl.String()}


@dataclass
class Level:
    """One window length and the distinct names it remembers."""

    name: str
    seconds: float
    #: Remember every distinct subdomain (else only the encoded ones).
    all_names: bool


class Windows:
    """The open windows of one :class:`Level`: counts, distinct names, alarmed flags."""

    def __init__(self, level: Level, examples: int = 3):
        self.level = level
        self.examples = examples
        self.groups = pl.DataFrame(schema=GROUP_SCHEMA)
        self.hashes = np.zeros(0, dtype=np.uint64)  # sorted
        self.hash_win = np.zeros(0, dtype=np.int64)  # window of each hash

    @property
    def length_us(self) -> int:
        return max(round(self.level.seconds * 1e6), 1)

    def window_of(self, ts: pl.Expr) -> pl.Expr:
        w = self.length_us
        return (ts.dt.epoch("us") // w) * w

    def step(
        self,
        rows: pl.DataFrame,
        score: pl.Expr,
        gate: pl.Expr,
        min_encoded: int,
        blocked: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """Count ``rows`` (sorted, ``_r`` their order) into the windows and return the
        first row of each window that meets ``gate`` and had not alarmed.

        ``rows``: ``ts, client, domain, sub, encoded, data, sub_len, bytes, _r`` (+ any
        columns kept for the alarm). ``score`` and ``gate`` (the alarm rule) are
        expressions on the running counts (``COUNTS`` columns) at each row; ``gate``
        implies at least ``min_encoded`` distinct encoded names, so only the windows
        that reach that many are followed query by query (the rest are summed).
        ``blocked``: ``client, domain, win, _from`` windows that count as alarmed from
        row ``_from`` on (another level alarmed). The returned rows carry the running
        counts, ``first_ts``, ``examples`` and ``score``.
        """
        rows = rows.with_columns(win=self.window_of(pl.col("ts")))
        if rows.height == 0:
            return rows.clear()
        hashes = stable_hash(rows, [*KEY, "sub"], _HASH_TYPES)
        known = _member(self.hashes, hashes)
        rows = rows.with_columns(
            _new=pl.Series(~known & _first_of(hashes)), _h=pl.Series(hashes, dtype=pl.UInt64)
        )
        if not self.level.all_names:  # only the encoded names are remembered
            rows = rows.with_columns(_new=pl.col("_new") & pl.col("encoded"))
        inc = {
            "n": pl.lit(1, pl.Int64),
            "enc_q": pl.col("encoded").cast(pl.Int64),
            "data_q": pl.col("data").cast(pl.Int64),
            "len_sum": pl.col("sub_len").cast(pl.Int64),
            "bytes": pl.col("bytes").fill_null(0).cast(pl.Int64),
            "u": pl.col("_new").cast(pl.Int64),
            "e": (pl.col("_new") & pl.col("encoded")).cast(pl.Int64),
        }
        rows = rows.with_columns(**{f"_i_{c}": e for c, e in inc.items()})
        prior = self.groups.drop("examples").rename(
            {c: f"_p_{c}" for c in GROUP_SCHEMA if c not in (*KEY, "examples")}
        )
        if blocked is None or blocked.height == 0:
            blocked = pl.DataFrame(schema={**_KEY_TYPES, "_from": pl.Int64()})
        totals = (
            rows.group_by(KEY, maintain_order=True)
            .agg(
                *[pl.col(f"_i_{c}").sum().alias(c) for c in inc],
                _first=pl.col("ts").min(),
                _last=pl.col("ts").max(),
            )
            .join(prior, on=KEY, how="left")
            .join(blocked, on=KEY, how="left")
            .with_columns(
                *[(pl.col(c) + pl.col(f"_p_{c}").fill_null(0)).alias(c) for c in inc],
                first_ts=pl.coalesce("_p_first_ts", "_first"),
                last_ts=pl.max_horizontal("_p_last_ts", "_last"),
                _was=pl.col("_p_alarmed").fill_null(False),
            )
        )
        followed = totals.filter((pl.col("e") >= min_encoded) & ~pl.col("_was"))
        hits = self._crossings(
            rows.join(followed.select(KEY), on=KEY, how="semi", maintain_order="left"),
            prior,
            blocked,
            score,
            gate,
        )
        examples = self._examples(rows, hits)
        crossed = hits.select(
            *KEY, _c=pl.lit(True), **{f"_h_{c}": pl.col(h) for c, h in _REPORT.items()}
        )
        updated = (
            totals.join(crossed, on=KEY, how="left")
            .join(examples.select(*KEY, examples="_keep"), on=KEY, how="left")
            .with_columns(
                alarmed=pl.col("_was") | pl.col("_from").is_not_null() | pl.col("_c").is_not_null(),
                **{c: pl.coalesce(f"_h_{c}", f"_p_{c}") for c in _REPORT},
            )
        )
        untouched = self.groups.join(updated.select(KEY), on=KEY, how="anti")
        self.groups = pl.concat(
            [untouched, updated.select(list(GROUP_SCHEMA)).cast(GROUP_SCHEMA)],  # type: ignore[arg-type]
            how="vertical",
        )
        new = rows.filter(pl.col("_new"))
        if new.height:
            self._insert(new.get_column("_h").to_numpy(), new.get_column("win").to_numpy())
        return hits.join(examples.drop("_keep"), on=KEY, how="left")

    @staticmethod
    def _crossings(
        rows: pl.DataFrame,
        prior: pl.DataFrame,
        blocked: pl.DataFrame,
        score: pl.Expr,
        gate: pl.Expr,
    ) -> pl.DataFrame:
        """The running counts at each of ``rows`` and the first row of each window
        where ``gate`` holds and it had not alarmed before."""
        if rows.height == 0:
            return rows.with_columns(
                **{c: pl.lit(0, pl.Int64) for c in COUNTS},
                first_ts=pl.col("ts"),
                score=pl.lit(0.0),
            ).clear()
        rows = rows.join(prior, on=KEY, how="left", maintain_order="left").join(
            blocked, on=KEY, how="left", maintain_order="left"
        )
        rows = rows.with_columns(
            **{
                c: pl.col(f"_p_{c}").fill_null(0) + pl.col(f"_i_{c}").cum_sum().over(KEY)
                for c in COUNTS
            },
            first_ts=pl.coalesce(pl.col("_p_first_ts"), pl.col("ts").min().over(KEY)),
            _alarmed=pl.col("_p_alarmed").fill_null(False)
            | (pl.col("_from").is_not_null() & (pl.col("_r") >= pl.col("_from"))),
        )
        hits = rows.filter(gate & ~pl.col("_alarmed")).unique(
            KEY, keep="first", maintain_order=True
        )
        return hits.with_columns(score=score).drop("_new", "_h", "_from", "_alarmed", "^_[pi]_.*$")

    def _examples(self, rows: pl.DataFrame, hits: pl.DataFrame) -> pl.DataFrame:
        """Per window, the first distinct encoded names: those remembered, then the new
        ones up to the alarm's row (``examples``), or the batch's (``_keep``, kept)."""
        cut = hits.select(*KEY, _cut=pl.col("_r"))
        new = (
            rows.filter(pl.col("_new") & pl.col("encoded"))
            .join(cut, on=KEY, how="left")
            .with_columns(_in=pl.col("_cut").is_null() | (pl.col("_r") <= pl.col("_cut")))
        )
        agg = new.group_by(KEY, maintain_order=True).agg(
            _upto=pl.col("sub").filter(pl.col("_in")).head(self.examples),
            _all=pl.col("sub").head(self.examples),
        )
        prev = self.groups.select(*KEY, _prev=pl.col("examples"))
        keys = rows.select(KEY).unique(maintain_order=True)
        out = keys.join(prev, on=KEY, how="left").join(agg, on=KEY, how="left")
        empty = pl.lit([], pl.List(pl.String))
        k = self.examples
        return out.select(
            *KEY,
            examples=pl.concat_list(
                pl.col("_prev").fill_null(empty), pl.col("_upto").fill_null(empty)
            ).list.head(k),
            _keep=pl.concat_list(
                pl.col("_prev").fill_null(empty), pl.col("_all").fill_null(empty)
            ).list.head(k),
        )

    def closing(self, score: pl.Expr, until_us: int | None) -> pl.DataFrame:
        """The windows that alarmed by themselves, end at or before ``until_us`` (None:
        every open one, at the end of the input) and have more queries than their last
        alarm reported, with their final counts and ``score``: the window's own
        (``score`` on its counts), at least the reported one raised towards 1 by the share
        of queries that came after it (so it leads the event). They count as reported."""
        due = self.groups.filter(pl.col("rep_n").is_not_null() & (pl.col("n") > pl.col("rep_n")))
        if until_us is not None:
            due = due.filter(pl.col("win") + self.length_us <= until_us)
        if due.height == 0:
            return due.with_columns(score=pl.lit(0.0))
        due = due.with_columns(score=pl.max_horizontal(score, regrown_score("rep_n", "n")))
        self.groups = note_reported(self.groups, due, KEY, {"rep_n": "n", "rep_score": "score"})
        return due

    def _insert(self, hashes: np.ndarray, wins: np.ndarray) -> None:
        h = np.concatenate([self.hashes, hashes.astype(np.uint64)])
        w = np.concatenate([self.hash_win, wins.astype(np.int64)])
        order = np.argsort(h, kind="stable")
        self.hashes, self.hash_win = h[order], w[order]

    def expire(self, newest_us: int) -> None:
        """Drop the windows event time has passed (their end is at or before ``newest_us``)."""
        w = self.length_us
        self.groups = self.groups.filter(pl.col("win") + w > newest_us)
        keep = self.hash_win + w > newest_us
        self.hashes, self.hash_win = self.hashes[keep], self.hash_win[keep]

    def state(self) -> dict[str, pa.Table]:
        return {
            f"{self.level.name}_groups": self.groups.to_arrow(),
            f"{self.level.name}_names": pa.table(
                {
                    "hash": pa.array(self.hashes, pa.uint64()),
                    "win": pa.array(self.hash_win, pa.int64()),
                }
            ),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        groups = state.get(f"{self.level.name}_groups")
        names = state.get(f"{self.level.name}_names")
        # a checkpoint from before closing alarms: its windows report none
        self.groups = restore_frame(groups, GROUP_SCHEMA, missing_as_null=True)
        self.hashes = np.zeros(0, dtype=np.uint64)
        self.hash_win = np.zeros(0, dtype=np.int64)
        if names is not None and names.num_rows:
            self._insert(
                np.asarray(names.column("hash").to_numpy(), dtype=np.uint64),
                np.asarray(names.column("win").to_numpy(), dtype=np.int64),
            )


def _member(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """True where a hash is in the sorted array."""
    if len(sorted_hashes) == 0 or len(hashes) == 0:
        return np.zeros(len(hashes), dtype=bool)
    idx = np.searchsorted(sorted_hashes, hashes)
    idx[idx == len(sorted_hashes)] = 0
    return sorted_hashes[idx] == hashes


def _first_of(hashes: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each value (in array order)."""
    out = np.zeros(len(hashes), dtype=bool)
    if len(hashes):
        _, first = np.unique(hashes, return_index=True)
        out[first] = True
    return out
