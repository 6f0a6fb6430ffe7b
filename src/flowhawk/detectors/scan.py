"""N6: horizontal and vertical scans, fast or slow, and ICMP sweeps.

A *horizontal* scan is one source probing many addresses on one port (or with one ICMP
request type: a ping sweep); a *vertical* scan is one source probing many ports of one
address. Attempts are weighted by what came back (:mod:`scan_attempts`: unanswered or
rejected 1, answered without any exchange 0.5, real connections 0) and distinct targets
are counted in hopping event-time windows of ``horizon`` (a day by default), so a scan
of one address every few minutes is seen as well as a burst (:mod:`scan_windows`).

A key (scanner and port, or scanner and target) alarms when, in a window:

* its weighted targets ``E`` reach the threshold (16 by default: 16 closed or silent
  addresses, or 32 live hosts that answered a handshake and nothing more), and
* its probed targets are at least ``min_share`` (half) of probed targets plus the
  successful connections it made since its first probe in the window: a DNS resolver or
  a browser whose few failures drown in successes is not a scanner.

It alarms again only when ``E`` grows by ``growth`` (4 times) over what it alarmed at, or
after a horizon without reaching the threshold; per scanner and kind, at most
``max_alarms`` alarms within a horizon (a sweep of 100 ports over a /24 is not 354
alarms: the first keys to cross say enough). What a key reached during the learning
period is normal for it (a monitoring server's pings, a vulnerability scanner's rounds):
it alarms only above that.

Score: ``0.5 + 0.35 * min(1, log16(E / threshold)) + 0.15 * unanswered share``, times
``external_factor`` for scanners outside the internal networks (the internet's
background scanning of an exposed address matters less than a host inside scanning).
The entity is the scanner when internal, else the internal address it probed most.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk.config import Duration
from flowhawk.detectors.base import (
    Batch,
    Detector,
    DetectorContext,
    DetectorSettings,
    conform_alarms,
    empty_alarms,
    restore_frame,
)
from flowhawk.detectors.scan_attempts import ICMP_REQUESTS, attempts
from flowhawk.detectors.scan_text import describe
from flowhawk.detectors.scan_windows import TargetCounter

#: Kinds of scan: (key columns, target column).
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "horizontal": (("site", "src_ip", "proto", "dst_port"), "dst_ip"),
    "vertical": (("site", "src_ip", "dst_ip", "proto"), "dst_port"),
}
_SUPPRESSED = 1 << 20  # the level of a key kept quiet by the per-scanner budget
_MAX_LEVELS = 24


class ScanSettings(DetectorSettings):
    weight: float = Field(default=60.0, ge=0, le=100)
    horizontal_threshold: float = Field(
        default=16.0,
        gt=0,
        description=(
            "Weighted distinct addresses one source probes on one port (or ICMP type) "
            "within a window for a horizontal scan (unanswered 1, handshake only 0.5)."
        ),
    )
    vertical_threshold: float = Field(
        default=16.0,
        gt=0,
        description="Weighted distinct ports one source probes on one address for a vertical scan.",
    )
    horizon: Duration = Field(
        default=86400.0,
        description=(
            "Window over which targets are counted (hopping by half of it), so slow scans "
            "count; also how long an alarmed key stays quiet at the same level."
        ),
    )
    min_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "Least share of probed targets among probed targets plus successful connections "
            "since the first probe: busy clients with a few failures are not scanners."
        ),
    )
    growth: float = Field(
        default=4.0,
        gt=1,
        description="An alarmed key alarms again when its weighted targets grow this many times.",
    )
    max_alarms: int = Field(
        default=5,
        ge=1,
        description="Alarms of one kind (horizontal, vertical) one scanner raises per horizon.",
    )
    external_factor: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Score factor for scanners outside the internal networks.",
    )


class Scan(Detector):
    """N6: horizontal and vertical scans and ICMP sweeps."""

    method = "N6"
    title = "scan"
    Settings = ScanSettings

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        assert isinstance(settings, ScanSettings)
        self.s = settings
        self.horizon_us = max(2, int(settings.horizon * 1_000_000))
        self.counters = {
            kind: TargetCounter(keys, target, self.horizon_us)
            for kind, (keys, target) in KINDS.items()
        }
        self.memory = {kind: _empty_memory(keys) for kind, (keys, _) in KINDS.items()}
        self.budget = _empty_budget()

    def _threshold(self, kind: str) -> float:
        return self.s.horizontal_threshold if kind == "horizontal" else self.s.vertical_threshold

    def learn(self, batch: Batch) -> None:
        self._step(batch.flows, scoring=False)

    def score(self, batch: Batch) -> pl.DataFrame:
        return self._step(batch.flows, scoring=True)

    # -- one batch -------------------------------------------------------------------
    def _step(self, flows: pl.DataFrame, scoring: bool) -> pl.DataFrame:
        if flows.height == 0:
            return empty_alarms()
        att = attempts(flows, self.context.local_scope)
        newest = flows.get_column("ts_start").drop_nulls().dt.epoch("us").max()
        levels: list[pl.DataFrame] = []
        probes: dict[str, pl.DataFrame] = {}
        for kind, counter in self.counters.items():
            rows = (
                att
                if kind == "horizontal"
                else att.filter(~pl.col("proto").is_in(list(ICMP_REQUESTS)))
            )
            ev = counter.step(rows)
            if ev.height == 0:
                continue
            probes[kind] = ev
            levels.append(self._levels(kind, ev))
        alarms = empty_alarms()
        if levels:
            active = [lv.filter(pl.col("k") >= 0) for lv in levels]
            active = [a for a in active if a.height]
            levels_set: dict[tuple, int] = {}
            if active and scoring:
                alarms, levels_set = self._alarm(active, probes)
            for a in active:
                self._remember(a, scoring, levels_set)
        if isinstance(newest, int):
            for counter in self.counters.values():
                counter.prune(newest)
            self._forget(newest)
        return alarms

    def _levels(self, kind: str, ev: pl.DataFrame) -> pl.DataFrame:
        """Each probe row's level: -1 below the threshold or share, else k where
        ``E >= threshold * growth**k``."""
        t = self._threshold(kind)
        share = pl.col("N") / (pl.col("N") + pl.col("S"))
        ok = (pl.col("E") >= t) & (share >= self.s.min_share)
        steps = pl.sum_horizontal(
            [(pl.col("E") >= t * self.s.growth**j).cast(pl.Int32) for j in range(_MAX_LEVELS)]
        )
        return ev.with_columns(
            kind=pl.lit(kind),
            k=pl.when(ok).then(steps - 1).otherwise(-1).cast(pl.Int32),
        )

    def _alarm(
        self, active: list[pl.DataFrame], probes: dict[str, pl.DataFrame]
    ) -> tuple[pl.DataFrame, dict[tuple, int]]:
        """Decide which rows at a new level alarm, in event order (few rows: only keys
        above the threshold, once per window and level); also the keys' new levels."""
        decided = []
        for a in active:
            kind = a.get_column("kind")[0]
            keys = list(KINDS[kind][0])
            wk = [*keys, "g", "wid"]
            a = a.with_columns(_prev_active=pl.col("t").shift(1).over(keys))
            first = a.filter(pl.col("_i") == pl.col("_i").min().over([*wk, "k"]))
            first = first.join(self.memory[kind], on=keys, how="left", maintain_order="left")
            decided.append(first)
        cands = pl.concat(decided, how="diagonal_relaxed").sort(
            "_i", "kind", "g", maintain_order=True
        )
        budget: dict[tuple[str, str, str], list[int]] = {}
        for row in self.budget.iter_rows(named=True):
            budget.setdefault((row["kind"], row["site"], row["src_ip"]), []).append(row["t"])
        levels: dict[tuple, int] = {}
        actives: dict[tuple, int] = {}
        alarm_rows, alarm_base, new_budget = [], [], []
        for i, row in enumerate(cands.iter_rows(named=True)):
            keys = KINDS[row["kind"]][0]
            key = (row["kind"], *(row[c] for c in keys))
            t = row["t"]
            level = levels.get(key, row["level"] if row["level"] is not None else -1)
            active = max(
                (
                    v
                    for v in (actives.get(key), row["active"], row["_prev_active"])
                    if v is not None
                ),
                default=None,
            )
            valid = level if active is not None and t - active <= self.horizon_us else -1
            learned = row["learned"] if row["learned"] is not None else -1
            base = max(valid, learned)
            actives[key] = t
            if row["k"] <= base:
                continue
            scanner = (row["kind"], row["site"], row["src_ip"])
            recent = [x for x in budget.get(scanner, []) if t - x <= self.horizon_us]
            if len(recent) >= self.s.max_alarms:  # this scanner has said enough for now
                levels[key] = row["k"] if valid >= 0 else _SUPPRESSED
                continue
            budget[scanner] = [*recent, t]
            new_budget.append(
                {"kind": row["kind"], "site": row["site"], "src_ip": row["src_ip"], "t": t}
            )
            levels[key] = row["k"]
            alarm_rows.append(i)
            alarm_base.append(base)
        if new_budget:
            self.budget = pl.concat(
                [self.budget, pl.DataFrame(new_budget, schema=self.budget.schema)]
            )
        if not alarm_rows:
            return empty_alarms(), levels
        chosen = cands[alarm_rows].with_columns(
            base=pl.Series(alarm_base, dtype=pl.Int32), _a=pl.int_range(pl.len())
        )
        return self._describe(chosen, probes), levels

    def _describe(self, chosen: pl.DataFrame, probes: dict[str, pl.DataFrame]) -> pl.DataFrame:
        out = []
        for kind, (_, target) in KINDS.items():
            rows = chosen.filter(pl.col("kind") == kind)
            if rows.height == 0:
                continue
            seen = self.counters[kind].seen_targets(rows, probes[kind])
            out.append(
                describe(rows, seen, kind, target, self._threshold(kind), self.s, self.horizon_us)
            )
        alarms = pl.concat(out).sort("ts", "src_ip", "dst_ip", "dst_port", maintain_order=True)
        return conform_alarms(alarms.filter(pl.col("score") >= self.s.min_score))

    # -- memory ----------------------------------------------------------------------
    def _remember(self, active: pl.DataFrame, scoring: bool, levels: dict[tuple, int]) -> None:
        """Keys at or above the threshold: last active time, learned level (learning),
        alarmed level (scoring)."""
        kind = active.get_column("kind")[0]
        keys = list(KINDS[kind][0])
        agg = active.group_by(keys).agg(_act=pl.col("t").max(), _k=pl.col("k").max())
        mem = self.memory[kind].join(agg, on=keys, how="full", coalesce=True)
        mem = mem.with_columns(
            active=pl.max_horizontal("active", "_act"),
            learned=pl.col("learned").fill_null(-1),
            level=pl.col("level").fill_null(-1),
        )
        if not scoring:
            mem = mem.with_columns(learned=pl.max_horizontal("learned", pl.col("_k").fill_null(-1)))
        else:
            mine = [(k[1:], v) for k, v in levels.items() if k[0] == kind]
            if mine:
                lv = pl.DataFrame(
                    [dict(zip(keys, k, strict=True)) | {"_lv": v} for k, v in mine],
                    schema=_empty_memory(tuple(keys)).select(keys).schema | {"_lv": pl.Int32},
                )
                mem = mem.join(lv, on=keys, how="left").with_columns(
                    level=pl.coalesce("_lv", "level")
                )
        self.memory[kind] = mem.select(_empty_memory(tuple(keys)).columns).cast(
            _empty_memory(tuple(keys)).schema  # type: ignore[arg-type]
        )

    def _forget(self, now_us: int) -> None:
        gone = now_us - self.horizon_us
        for kind, mem in self.memory.items():
            self.memory[kind] = mem.filter(
                (pl.col("learned") >= 0) | (pl.col("active").fill_null(gone - 1) >= gone)
            )
        self.budget = self.budget.filter(pl.col("t") >= gone)

    # -- checkpoints -----------------------------------------------------------------
    def state(self) -> dict[str, pa.Table]:
        out: dict[str, pa.Table] = {"budget": self.budget.to_arrow()}
        for kind, counter in self.counters.items():
            out |= counter.state(kind)
            out[f"{kind}_memory"] = self.memory[kind].to_arrow()
        return out

    def load_state(self, state: dict[str, pa.Table]) -> None:
        for kind, counter in self.counters.items():
            counter.load_state(kind, state)
            empty = _empty_memory(KINDS[kind][0])
            self.memory[kind] = restore_frame(state.get(f"{kind}_memory"), empty.schema)
        self.budget = restore_frame(state.get("budget"), _empty_budget().schema)


def _empty_memory(keys: tuple[str, ...]) -> pl.DataFrame:
    types = {
        "site": pl.String(),
        "src_ip": pl.String(),
        "dst_ip": pl.String(),
        "dst_port": pl.Int32(),
        "proto": pl.Int16(),
    }
    return pl.DataFrame(
        schema={k: types[k] for k in keys}
        | {"learned": pl.Int32(), "level": pl.Int32(), "active": pl.Int64()}
    )


def _empty_budget() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"kind": pl.String, "site": pl.String, "src_ip": pl.String, "t": pl.Int64}
    )
