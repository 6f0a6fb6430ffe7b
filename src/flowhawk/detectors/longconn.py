"""N7: long connections, also when an exporter reported them as several records.

A connection open for hours is worth a look (a remote-access session, a tunnel, a
persistent command channel), whatever it carries: like RITA, N7 reports duration
itself. Flow exporters cut long connections into records at their active timeout (30
minutes for Cisco and for flowhawk's own meter), so records of the same 5-tuple (site,
client, client port, server, server port, protocol) are joined into one connection when
the next starts within ``join_gap`` of the end of the ones before; that gap stays under
the usual idle timeouts (15-60 s), so separate periodic sessions are not joined. The
open chains are carried from batch to batch in the state and dropped once event time has
passed their end by more than the gap (flows arrive in start order, so nothing can
extend them any more).

A connection alarms when it reaches ``min_duration`` (one hour), and again each time it
grows ``growth`` times longer (4 h, 16 h, ...), on the record that crossed; parallel or
reopened connections of a communication that alarmed within ``repeat_after`` (a day)
alarm only if they reach a higher level. Score:
``0.4 + 0.6 * min(1, log24(duration / min_duration))`` (one hour 0.4, a day 1.0), times
``east_west_factor`` inside the network (database pools and file sessions are long by
nature; connections leaving or entering it matter more). Communications that had long
connections during the learning period are normal for the network and do not alarm;
``ignore_ports`` lists server ports never to report. Destinations in the local scope
(multicast, broadcast) are left out. The entity is the internal side (the client if
both are).
"""

from __future__ import annotations

import math

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk import netaddr
from flowhawk.config import Duration
from flowhawk.detectors.base import (
    UTC_US,
    Batch,
    Detector,
    DetectorContext,
    DetectorSettings,
    conform_alarms,
    empty_alarms,
    restore_frame,
)
from flowhawk.detectors.seen import SeenSet
from flowhawk.detectors.text import endpoint
from flowhawk.schema import EAST_WEST

TUPLE = ("site", "src_ip", "src_port", "dst_ip", "dst_port", "proto")
COMM = ("site", "src_ip", "dst_ip", "dst_port", "proto")
_TYPES: dict[str, pl.DataType] = {
    "site": pl.String(),
    "src_ip": pl.String(),
    "src_port": pl.Int32(),
    "dst_ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
}
_CHAIN: dict[str, pl.DataType] = _TYPES | {
    "start": pl.Int64(),
    "end": pl.Int64(),
    "records": pl.Int64(),
    "src_bytes": pl.Int64(),
    "dst_bytes": pl.Int64(),
    "packets": pl.Int64(),
    "level": pl.Int32(),
}
_ALARMED: dict[str, pl.DataType] = {c: _TYPES[c] for c in COMM} | {
    "level": pl.Int32(),
    "t": pl.Int64(),
}
_MAX_LEVELS = 16


class LongConnSettings(DetectorSettings):
    weight: float = Field(default=30.0, ge=0, le=100)
    min_duration: Duration = Field(
        default=3600.0, description="Connections open at least this long alarm."
    )
    join_gap: Duration = Field(
        default=30.0,
        description=(
            "Records of one 5-tuple are one connection when the next starts within this of "
            "the previous end (exporters' active timeouts); keep it under the idle timeout."
        ),
    )
    growth: float = Field(
        default=4.0, gt=1, description="An alarmed connection alarms again this many times longer."
    )
    repeat_after: Duration = Field(
        default=86400.0,
        description=(
            "A communication that alarmed stays quiet this long for connections that are "
            "not longer (parallel or reopened sessions)."
        ),
    )
    east_west_factor: float = Field(
        default=0.6, ge=0, le=1, description="Score factor for connections inside the network."
    )
    ignore_ports: list[int] = Field(
        default_factory=list, description="Server ports whose long connections are not reported."
    )
    learn_normal: bool = Field(
        default=True,
        description=(
            "Communications with long connections during the learning period do not alarm."
        ),
    )


class LongConnection(Detector):
    """N7: connections open longer than ``min_duration``."""

    method = "N7"
    title = "long connection"
    Settings = LongConnSettings

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        assert isinstance(settings, LongConnSettings)
        self.s = settings
        self.chains = pl.DataFrame(schema=_CHAIN)
        self.normal = SeenSet(COMM, _TYPES)
        self.alarmed = pl.DataFrame(schema=_ALARMED)

    def learn(self, batch: Batch) -> None:
        self._step(batch.flows, scoring=False)

    def score(self, batch: Batch) -> pl.DataFrame:
        return self._step(batch.flows, scoring=True)

    def _records(self, flows: pl.DataFrame) -> pl.DataFrame:
        df = flows.with_row_index("_i").with_columns(
            pl.col("_i").cast(pl.Int64),
            pl.col("site").fill_null(""),
            pl.col("src_port").fill_null(0).cast(pl.Int32),
            pl.col("dst_port").fill_null(0).cast(pl.Int32),
            pl.col("proto").cast(pl.Int16),
            t=pl.col("ts_start").dt.epoch("us"),
        )
        df = df.filter(
            pl.col("src_ip").is_not_null()
            & pl.col("dst_ip").is_not_null()
            & pl.col("proto").is_not_null()
            & pl.col("t").is_not_null()
        )
        if self.s.ignore_ports:
            df = df.filter(~pl.col("dst_port").is_in(self.s.ignore_ports))
        scope = self.context.local_scope
        if df.height and len(scope):
            dsts = df.get_column("dst_ip").unique()
            hi, lo, ok = netaddr.parse(dsts)
            scoped = dsts.filter(pl.Series(ok & scope.contains(hi, lo)))
            df = df.filter(~pl.col("dst_ip").is_in(scoped.implode()))
        end = pl.coalesce(pl.col("ts_end").dt.epoch("us"), pl.col("t"))
        return df.select(
            *TUPLE,
            "_i",
            "t",
            pl.max_horizontal(end, pl.col("t")).alias("end"),
            pl.col("src_bytes").fill_null(0).alias("src_bytes"),
            pl.col("dst_bytes").fill_null(0).alias("dst_bytes"),
            (pl.col("src_pkts").fill_null(0) + pl.col("dst_pkts").fill_null(0)).alias("packets"),
            pl.col("direction").fill_null(""),
            pl.col("src_internal").fill_null(False),
            pl.col("dst_internal").fill_null(False),
        )

    def _step(self, flows: pl.DataFrame, scoring: bool) -> pl.DataFrame:
        if flows.height == 0:
            return empty_alarms()
        newest = flows.get_column("ts_start").drop_nulls().dt.epoch("us").max()
        rec = self._records(flows)
        if rec.height == 0:
            self._prune(newest)
            return empty_alarms()
        gap = int(self.s.join_gap * 1_000_000)
        carried = self.chains.select(
            *TUPLE,
            _i=pl.lit(-1, pl.Int64),
            t="start",
            end="end",
            src_bytes="src_bytes",
            dst_bytes="dst_bytes",
            packets="packets",
            records="records",
            level="level",
        )
        rows = pl.concat(
            [
                carried,
                rec.select(
                    *carried.columns[:-2], records=pl.lit(1, pl.Int64), level=pl.lit(-1, pl.Int32)
                ),
            ],
            how="vertical_relaxed",
        )
        tup = list(TUPLE)
        prev_end = pl.col("end").cum_max().shift(1).over(tup)
        rows = rows.with_columns(
            _break=(prev_end.is_null() | ((pl.col("t") - prev_end) > gap)).cast(pl.Int32)
        ).with_columns(_chain=pl.col("_break").cum_sum().over(tup))
        chain = [*tup, "_chain"]
        rows = rows.with_columns(
            _start=pl.col("t").first().over(chain),
            _end=pl.col("end").cum_max().over(chain),
            _records=pl.col("records").cum_sum().over(chain),
            _sb=pl.col("src_bytes").cum_sum().over(chain),
            _db=pl.col("dst_bytes").cum_sum().over(chain),
            _pk=pl.col("packets").cum_sum().over(chain),
            _level0=pl.col("level").first().over(chain),
        )
        dur = pl.col("_end") - pl.col("_start")
        t_us = self.s.min_duration * 1_000_000
        steps = pl.sum_horizontal(
            [(dur >= t_us * self.s.growth**j).cast(pl.Int32) for j in range(_MAX_LEVELS)]
        )
        rows = rows.with_columns(k=(steps - 1).cast(pl.Int32))
        alarms = empty_alarms()
        crossing = rows.filter(
            (pl.col("_i") >= 0)
            & (pl.col("k") > pl.col("_level0"))
            & (pl.col("_i") == pl.col("_i").min().over([*chain, "k"]))
        )
        if not scoring:
            if self.s.learn_normal:
                self.normal.add(crossing.with_columns(ts_start=pl.col("t")))
        elif crossing.height:
            if self.s.learn_normal and len(self.normal):
                crossing = crossing.filter(~pl.Series(self.normal.contains(crossing)))
            crossing = self._once_per_communication(crossing)
            if crossing.height:
                alarms = self._describe(
                    crossing.join(
                        rec.select("_i", "direction", "src_internal", "dst_internal"), on="_i"
                    )
                )
        last = rows.group_by(chain).agg(
            start=pl.col("_start").last(),
            end=pl.col("_end").last(),
            records=pl.col("_records").last(),
            src_bytes=pl.col("_sb").last(),
            dst_bytes=pl.col("_db").last(),
            packets=pl.col("_pk").last(),
            level=pl.max_horizontal(pl.col("_level0").first(), pl.col("k").max()),
        )
        self.chains = (
            last.select(list(_CHAIN)).cast(_CHAIN).sort([*TUPLE, "start"])  # type: ignore[arg-type]
        )
        self._prune(newest)
        return alarms

    def _once_per_communication(self, crossing: pl.DataFrame) -> pl.DataFrame:
        """Crossings that alarm: a communication that alarmed at a level within
        ``repeat_after`` stays quiet at that level (parallel or reopened connections);
        few rows, in event order."""
        repeat = int(self.s.repeat_after * 1_000_000)
        crossing = crossing.sort("_i", maintain_order=True)
        memory = {
            tuple(r[:5]): (r[5], r[6]) for r in self.alarmed.iter_rows()
        }  # comm -> (level, t)
        keep, new = [], []
        for i, row in enumerate(crossing.select(*COMM, "k", "t").iter_rows()):
            comm, k, t = tuple(row[:5]), row[5], row[6]
            level, when = memory.get(comm, (-1, None))
            if when is not None and t - when <= repeat and k <= level:
                continue
            memory[comm] = (k, t)
            keep.append(i)
            new.append(comm)
        if new:
            rows = [
                dict(zip(COMM, c, strict=True)) | {"level": memory[c][0], "t": memory[c][1]}
                for c in dict.fromkeys(new)
            ]
            fresh = pl.DataFrame(rows, schema=self.alarmed.schema)
            self.alarmed = pl.concat([self.alarmed.join(fresh, on=list(COMM), how="anti"), fresh])
            self.alarmed = self.alarmed.sort(list(COMM))
        return crossing[keep]

    def _prune(self, newest: object) -> None:
        if isinstance(newest, int):
            gap = int(self.s.join_gap * 1_000_000)
            self.chains = self.chains.filter(pl.col("end") + gap >= newest)
            repeat = int(self.s.repeat_after * 1_000_000)
            self.alarmed = self.alarmed.filter(pl.col("t") >= newest - repeat)

    def _describe(self, rows: pl.DataFrame) -> pl.DataFrame:
        t_min = self.s.min_duration
        secs = (pl.col("_end") - pl.col("_start")).cast(pl.Float64) / 1e6
        bar = pl.lit(t_min) * pl.lit(self.s.growth).pow(pl.col("k").cast(pl.Float64))
        magnitude = ((secs / t_min).log() / math.log(24.0)).clip(0.0, 1.0)
        factor = (
            pl.when(pl.col("direction") == EAST_WEST).then(self.s.east_west_factor).otherwise(1.0)
        )
        entity = (
            pl.when(pl.col("src_internal"))
            .then("src_ip")
            .when(pl.col("dst_internal"))
            .then("dst_ip")
            .otherwise("src_ip")
        )
        start = pl.col("_start").cast(pl.Datetime("us", "UTC"))
        records = (
            pl.when(pl.col("_records") > 1)
            .then(
                pl.concat_str(
                    [pl.lit(", "), pl.col("_records").cast(pl.String), pl.lit(" records joined")]
                )
            )
            .otherwise(pl.lit(""))
        )
        alarms = rows.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=pl.col("t").cast(UTC_US),
            ts_end=pl.col("_end").cast(UTC_US),
            site="site",
            src_ip="src_ip",
            dst_ip="dst_ip",
            dst_port="dst_port",
            proto="proto",
            direction="direction",
            score=((0.4 + 0.6 * magnitude) * factor).clip(0.0, 1.0),
            entity=entity,
            observed=pl.concat_str([pl.lit("open "), _hours(secs), records]),
            expected=pl.concat_str([pl.lit("connections shorter than "), _hours(bar)]),
            observed_value=secs,
            expected_value=bar,
            threshold=bar,
            reason=pl.concat_str(
                [
                    pl.lit("long connection "),
                    pl.col("src_ip"),
                    pl.lit(":"),
                    pl.col("src_port").cast(pl.String),
                    pl.lit(" -> "),
                    endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto")),
                    pl.lit(" open "),
                    _hours(secs),
                    pl.lit(" since "),
                    start.dt.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    records,
                    pl.lit("; "),
                    _bytes(pl.col("_sb")),
                    pl.lit(" sent, "),
                    _bytes(pl.col("_db")),
                    pl.lit(" received, "),
                    pl.col("_pk").cast(pl.String),
                    pl.lit(" packets"),
                ]
            ),
        )
        alarms = alarms.sort("ts", "src_ip", "dst_ip", "dst_port", maintain_order=True)
        return conform_alarms(alarms.filter(pl.col("score") >= self.s.min_score))

    def state(self) -> dict[str, pa.Table]:
        return {
            "chains": self.chains.to_arrow(),
            "normal": self.normal.to_arrow(),
            "alarmed": self.alarmed.to_arrow(),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.chains = restore_frame(state.get("chains"), _CHAIN)
        self.normal.load(state.get("normal"))
        self.alarmed = restore_frame(state.get("alarmed"), _ALARMED)


def _hours(seconds: pl.Expr) -> pl.Expr:
    """``45 min``, ``3.5 h`` or ``2.1 d``."""
    return (
        pl.when(seconds < 5400)
        .then(
            pl.concat_str([(seconds / 60).round(0).cast(pl.Int64).cast(pl.String), pl.lit(" min")])
        )
        .when(seconds < 172800)
        .then(pl.concat_str([(seconds / 3600).round(1).cast(pl.String), pl.lit(" h")]))
        .otherwise(pl.concat_str([(seconds / 86400).round(1).cast(pl.String), pl.lit(" d")]))
    )


def _bytes(n: pl.Expr) -> pl.Expr:
    """``512 B``, ``12.3 kB``, ``4.5 MB``, ``1.2 GB``."""
    x = n.cast(pl.Float64)
    return (
        pl.when(x < 1e3)
        .then(pl.concat_str([n.cast(pl.String), pl.lit(" B")]))
        .when(x < 1e6)
        .then(pl.concat_str([(x / 1e3).round(1).cast(pl.String), pl.lit(" kB")]))
        .when(x < 1e9)
        .then(pl.concat_str([(x / 1e6).round(1).cast(pl.String), pl.lit(" MB")]))
        .otherwise(pl.concat_str([(x / 1e9).round(1).cast(pl.String), pl.lit(" GB")]))
    )
