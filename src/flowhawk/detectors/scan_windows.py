"""Counting a scan's distinct targets in event-time windows, exactly, across batches.

A *key* is what one scan is about: (site, source, protocol, port) for a horizontal scan,
whose *targets* are destination addresses; (site, source, destination, protocol) for a
vertical scan, whose targets are ports. Slow scans spread over hours are caught by
counting over long windows (``horizon``, one day by default) rather than per minute.

Windows are hopping: two grids of windows of ``horizon`` aligned to the epoch, the
second shifted by half a horizon, so any stretch of activity shorter than half a horizon
falls whole into some window. In each window a key has:

* ``E`` weighted targets: the sum over distinct targets of the best weight an attempt
  to it had (:mod:`scan_attempts`: 1 unanswered, 0.5 probe);
* ``N`` distinct targets and ``F`` unanswered ones (weight 1);
* ``S`` successful flows (weight 0) of the key since its first probe in the window.

All four only grow within a window, so the value at every attempt is a cumulative sum
in event time, computed per batch with window functions and continued from the state
left by earlier batches: the same flows give the same values at every flow however they
are batched. Memory holds, per open window, one row per key that has probed and one per
(key, target) probed: successes are counted, never stored, so a day of a busy network
costs rows only for its failed and payload-free attempts. A window is dropped once event
time has passed its end.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from flowhawk.detectors.base import restore_frame

_GRIDS = (0, 1)


class TargetCounter:
    """Distinct weighted targets per key and window for one kind of scan."""

    def __init__(self, keys: tuple[str, ...], target: str, horizon_us: int):
        self.keys = list(keys)
        self.target = target
        self.horizon = max(2, int(horizon_us))
        self.wkeys = [*self.keys, "g", "wid"]
        self.targets = self._empty_targets()
        self.windows = self._empty_windows()
        #: The targets as they were before the last :meth:`step` (for :meth:`seen_targets`).
        self.before = self.targets

    # -- schemas -----------------------------------------------------------------
    def _key_schema(self) -> dict[str, pl.DataType]:
        types: dict[str, pl.DataType] = {
            "site": pl.String(),
            "src_ip": pl.String(),
            "dst_ip": pl.String(),
            "dst_port": pl.Int32(),
            "proto": pl.Int16(),
        }
        return {k: types[k] for k in self.keys} | {"g": pl.Int8(), "wid": pl.Int64()}

    def _empty_targets(self) -> pl.DataFrame:
        tdtype = pl.String() if self.target == "dst_ip" else pl.Int32()
        return pl.DataFrame(
            schema=self._key_schema()
            | {
                self.target: tdtype,
                "w": pl.Float64(),
                "first": pl.Int64(),
                "flows": pl.Int64(),
                "internal": pl.Boolean(),
            }
        )

    def _empty_windows(self) -> pl.DataFrame:
        return pl.DataFrame(
            schema=self._key_schema()
            | {
                "E": pl.Float64(),
                "N": pl.Int64(),
                "F": pl.Int64(),
                "S": pl.Int64(),
                "first_ev": pl.Int64(),
            }
        )

    # -- counting ----------------------------------------------------------------
    def _gridded(self, rows: pl.DataFrame) -> pl.DataFrame:
        half = self.horizon // 2
        return pl.concat(
            [
                rows.with_columns(
                    g=pl.lit(g, pl.Int8),
                    wid=((pl.col("t") - g * half) // self.horizon).cast(pl.Int64),
                )
                for g in _GRIDS
            ]
        ).sort("_i", "g", maintain_order=True)

    def step(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Count a batch of attempt rows (:data:`scan_attempts.ATTEMPT_COLUMNS`, in event
        order) and return its probe rows (weight > 0), once per grid, with the key's
        ``E``, ``N``, ``F``, ``S`` and ``first_ev`` in that window just after the row.
        The state moves past the batch."""
        wk, x = self.wkeys, self.target
        probes = rows.filter(pl.col("w") > 0)
        if probes.height == 0:
            return self._no_probes(rows)
        ev = self._gridded(probes).join(
            self.targets.select(*wk, x, _w0="w"),
            on=[*wk, x],
            how="left",
            maintain_order="left",
        )
        per_target = [*wk, x]
        ev = ev.with_columns(pl.col("_w0").fill_null(0.0))
        ev = ev.with_columns(_best=pl.max_horizontal(pl.col("w").cum_max().over(per_target), "_w0"))
        ev = ev.with_columns(_prev=pl.col("_best").shift(1).over(per_target))
        ev = ev.with_columns(pl.col("_prev").fill_null(pl.col("_w0")))
        ev = ev.with_columns(
            _de=pl.col("_best") - pl.col("_prev"),
            _dn=((pl.col("_prev") <= 0) & (pl.col("_best") > 0)).cast(pl.Int64),
            _df=((pl.col("_prev") < 1) & (pl.col("_best") >= 1)).cast(pl.Int64),
            _ds=pl.lit(0, pl.Int64),
        )
        firsts = ev.group_by(wk, maintain_order=True).agg(
            _fi=pl.col("_i").first(), _ft=pl.col("t").first()
        )
        known = self.windows.select(*wk, "first_ev")
        succ = self._successes(rows, firsts, known)
        cols = [*wk, x, "_i", "t", "_de", "_dn", "_df", "_ds"]
        both = pl.concat([ev.select(cols), succ.select(cols)]).sort("_i", "g", maintain_order=True)
        both = both.join(
            self.windows.select(*wk, "E", "N", "F", "S"),
            on=wk,
            how="left",
            maintain_order="left",
        ).with_columns(
            E=pl.col("E").fill_null(0.0) + pl.col("_de").cum_sum().over(wk),
            N=pl.col("N").fill_null(0) + pl.col("_dn").cum_sum().over(wk),
            F=pl.col("F").fill_null(0) + pl.col("_df").cum_sum().over(wk),
            S=pl.col("S").fill_null(0) + pl.col("_ds").cum_sum().over(wk),
        )
        counts = both.filter(pl.col("_ds") == 0).select("_i", "g", "E", "N", "F", "S")
        out = ev.drop("_w0", "_prev", "_de", "_dn", "_df", "_ds").join(
            counts, on=["_i", "g"], how="left", maintain_order="left"
        )
        out = out.join(known, on=wk, how="left", maintain_order="left").join(
            firsts.select(*wk, "_ft"), on=wk, how="left", maintain_order="left"
        )
        out = out.with_columns(first_ev=pl.coalesce("first_ev", "_ft")).drop("_ft")
        self.before = self.targets
        self._remember(ev, both, firsts)
        return out

    def _no_probes(self, rows: pl.DataFrame) -> pl.DataFrame:
        """A batch without probes only adds successes to windows already probed."""
        if self.windows.height and rows.height:
            succ = self._successes(rows, None, self.windows.select(*self.wkeys, "first_ev"))
            counts = succ.group_by(self.wkeys).agg(_n=pl.len())
            self.windows = (
                self.windows.join(counts, on=self.wkeys, how="left", maintain_order="left")
                .with_columns(S=pl.col("S") + pl.col("_n").fill_null(0))
                .drop("_n")
            )
        return pl.DataFrame()

    def _successes(
        self, rows: pl.DataFrame, firsts: pl.DataFrame | None, known: pl.DataFrame
    ) -> pl.DataFrame:
        """Success rows (gridded) counted in their window: those after the key's first
        probe of the window (in an earlier batch, or earlier in this one)."""
        wk = self.wkeys
        succ = rows.filter(pl.col("w") <= 0)
        keyed = [known.select(self.keys)]
        if firsts is not None:
            keyed.append(firsts.select(self.keys))
        succ = succ.join(pl.concat(keyed).unique(), on=self.keys, how="semi", maintain_order="left")
        succ = self._gridded(succ).join(known, on=wk, how="left", maintain_order="left")
        if firsts is not None:
            succ = succ.join(firsts.select(*wk, "_fi"), on=wk, how="left", maintain_order="left")
            counted = pl.col("first_ev").is_not_null() | (pl.col("_i") > pl.col("_fi"))
        else:
            counted = pl.col("first_ev").is_not_null()
        return succ.filter(counted.fill_null(False)).with_columns(
            _de=pl.lit(0.0),
            _dn=pl.lit(0, pl.Int64),
            _df=pl.lit(0, pl.Int64),
            _ds=pl.lit(1, pl.Int64),
        )

    def _remember(self, ev: pl.DataFrame, both: pl.DataFrame, firsts: pl.DataFrame) -> None:
        wk, x = self.wkeys, self.target
        internal = "dst_internal"
        new_targets = ev.group_by([*wk, x]).agg(
            w=pl.col("_best").max(),
            first=pl.col("t").min(),
            flows=pl.len().cast(pl.Int64),
            internal=pl.col(internal).first(),
        )
        self.targets = (
            pl.concat([self.targets, new_targets], how="vertical_relaxed")
            .group_by([*wk, x])
            .agg(
                pl.col("w").max(),
                pl.col("first").min(),
                pl.col("flows").sum(),
                pl.col("internal").first(),
            )
            .cast(self._empty_targets().schema)  # type: ignore[arg-type]
        )
        last = both.group_by(wk).agg(pl.col("E", "N", "F", "S").last())
        merged = (
            self.windows.join(last, on=wk, how="full", coalesce=True, suffix="_new")
            .join(firsts.select(*wk, "_ft"), on=wk, how="left")
            .with_columns(
                E=pl.coalesce("E_new", "E"),
                N=pl.coalesce("N_new", "N"),
                F=pl.coalesce("F_new", "F"),
                S=pl.coalesce("S_new", "S"),
                first_ev=pl.coalesce("first_ev", "_ft"),
            )
        )
        self.windows = merged.select(self._empty_windows().columns).cast(
            self._empty_windows().schema  # type: ignore[arg-type]
        )

    def prune(self, now_us: int) -> None:
        """Forget windows that ended at or before ``now_us`` (no later flow can fall in)."""
        half = self.horizon // 2
        end = pl.col("g").cast(pl.Int64) * half + (pl.col("wid") + 1) * self.horizon
        self.targets = self.targets.filter(end > now_us)
        self.windows = self.windows.filter(end > now_us)

    def seen_targets(self, alarms: pl.DataFrame, probes: pl.DataFrame) -> pl.DataFrame:
        """For alarm rows (window keys and ``_i``): every target of their window up to the
        alarm's row, with first time, flows and whether it is internal; ``_a`` names the
        alarm. ``probes``: the batch's probe rows as :meth:`step` returned them."""
        wk, x = self.wkeys, self.target
        a = alarms.select(*wk, "_a", _ai="_i")
        old = self.before.select(*wk, x, "first", "flows", "internal").join(a, on=wk)
        new = (
            probes.select(*wk, x, first="t", flows=pl.lit(1, pl.Int64), internal="dst_internal")
            .with_columns(_pi=probes.get_column("_i"))
            .join(a, on=wk)
            .filter(pl.col("_pi") <= pl.col("_ai"))
            .drop("_pi")
        )
        return (
            pl.concat([old, new], how="vertical_relaxed")
            .group_by("_a", x)
            .agg(pl.col("first").min(), pl.col("flows").sum(), pl.col("internal").first())
        )

    # -- checkpoints ---------------------------------------------------------------
    def state(self, prefix: str) -> dict[str, pa.Table]:
        return {
            f"{prefix}_targets": self.targets.to_arrow(),
            f"{prefix}_windows": self.windows.to_arrow(),
        }

    def load_state(self, prefix: str, state: dict[str, pa.Table]) -> None:
        self.targets = restore_frame(state.get(f"{prefix}_targets"), self._empty_targets().schema)
        self.windows = restore_frame(state.get(f"{prefix}_windows"), self._empty_windows().schema)
