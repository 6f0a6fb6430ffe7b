"""The contract every detector follows, and the alarm table they return.

A detector observes canonical flows in event-time order and returns *scored rows*
(alarms), nothing else: it sends nothing, opens nothing, and keeps its learned
state in plain tables so it can be checkpointed and restored. Scores are in
[0, 1], higher is more anomalous; turning scores into events and risk is done
downstream (:mod:`flowhawk.events`).

``learn(flows)`` updates state without alarming (learning period); ``score(flows)``
alarms on the batch *and* learns from it, because behavior is learned online.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from flowhawk.netaddr import NetworkSet

if TYPE_CHECKING:
    from flowhawk.dns.passive import PassiveDns
    from flowhawk.intel import IntelSet
    from flowhawk.normalize.context import NetworkContext

UTC_US = pl.Datetime("us", "UTC")

#: Columns of the alarm table every detector returns.
ALARM_SCHEMA: dict[str, pl.DataType] = {
    "method": pl.String(),
    "name": pl.String(),
    "ts": UTC_US,  # start of the flow that triggered the alarm
    "ts_end": UTC_US,
    "site": pl.String(),
    "src_ip": pl.String(),
    "dst_ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
    "direction": pl.String(),
    "score": pl.Float64(),  # 0..1, higher = more anomalous
    "entity": pl.String(),  # the host the alarm is about, when it is about one host
    "observed": pl.String(),  # what was seen, readable
    "expected": pl.String(),  # the baseline or model it was compared with, readable
    "observed_value": pl.Float64(),  # the same as numbers, when they are numbers
    "expected_value": pl.Float64(),
    "threshold": pl.Float64(),
    "reason": pl.String(),  # one line a person can read
}

#: Flow columns that identify the communication an alarm belongs to.
COMM_KEY = ("site", "src_ip", "dst_ip", "dst_port", "proto")


def comm_columns(method: str, title: str) -> dict[str, pl.Expr]:
    """The alarm columns that name the detector and the flow's communication.

    For ``select`` on canonical flows: ``flows.select(**comm_columns(...), score=...)``.
    """
    return {
        "method": pl.lit(method),
        "name": pl.lit(title),
        "ts": pl.col("ts_start"),
        "ts_end": pl.col("ts_end"),
        **{c: pl.col(c) for c in ("site", "src_ip", "dst_ip", "dst_port", "proto", "direction")},
    }


def restore_frame(
    table: pa.Table | None, schema: Mapping[str, pl.DataType], missing_as_null: bool = False
) -> pl.DataFrame:
    """A checkpointed table as a frame of ``schema`` (those columns, cast); an empty frame
    when the checkpoint has none (nothing learned yet, or a detector new to it).
    ``missing_as_null``: columns of ``schema`` the table lacks (a checkpoint written before
    they existed) come back as nulls instead of failing."""
    if table is None or table.num_rows == 0:
        return pl.DataFrame(schema=dict(schema))
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    absent = {c for c in schema if c not in df.columns} if missing_as_null else set()
    return df.select(
        [pl.lit(None, t).alias(c) if c in absent else pl.col(c).cast(t) for c, t in schema.items()]
    )


def regrown_score(before: str, now: str) -> pl.Expr:
    """The score of a window alarmed again because its evidence grew from column
    ``before`` (what its last alarm reported) to ``now``: the reported score
    (``rep_score``) raised halfway towards 1 by the share of evidence that came after it,
    so a window that keeps growing nears 1 without jumping there."""
    rep = pl.col("rep_score")
    return rep + (1.0 - rep) * 0.5 * (1.0 - pl.col(before) / pl.col(now))


def note_reported(
    state: pl.DataFrame, rows: pl.DataFrame, key: Sequence[str], columns: Mapping[str, str]
) -> pl.DataFrame:
    """``state`` with ``columns`` (state column -> column of ``rows``) taken from the rows
    just reported, matched on ``key``; rows not reported keep theirs."""
    tmp = {c: f"_rep_{c}" for c in columns}
    done = rows.select(*key, **{tmp[c]: pl.col(v) for c, v in columns.items()})
    return (
        state.join(done, on=list(key), how="left", maintain_order="left")
        .with_columns(**{c: pl.coalesce(tmp[c], c) for c in columns})
        .drop(list(tmp.values()))
    )


def empty_alarms() -> pl.DataFrame:
    return pl.DataFrame(schema=ALARM_SCHEMA)


def conform_alarms(df: pl.DataFrame) -> pl.DataFrame:
    """Add missing alarm columns as nulls, cast and order them."""
    missing = [
        pl.lit(None, dtype=t).alias(n) for n, t in ALARM_SCHEMA.items() if n not in df.columns
    ]
    if missing:  # with_columns keeps the frame's height (select of literals alone would not)
        df = df.with_columns(missing)
    return df.select([pl.col(n).cast(t) for n, t in ALARM_SCHEMA.items()])


class DetectorSettings(BaseModel):
    """Settings every detector has; detectors extend this with their own."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Run this detector.")
    weight: float = Field(
        default=50.0, ge=0, le=100, description="Risk (0-100) an alarm with score 1 contributes."
    )
    min_score: float = Field(
        default=0.0, ge=0, le=1, description="Alarms scoring below this are not raised."
    )


class History(Protocol):
    """Read access to the behavioral log already written (for training models)."""

    def read(
        self,
        view: str,
        since: datetime,
        until: datetime,
        share: bool = True,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Log rows of ``view`` with ``since <= bucket < until`` (empty frame if none);
        ``share``: the frame may be kept for other readers of the same range;
        ``columns``: only those columns."""
        ...


@dataclass
class DetectorContext:
    """What detectors may know about the network besides the flows themselves."""

    internal: NetworkSet
    local_scope: NetworkSet
    history: History | None = None  # the behavioral log on disk, when there is one
    intel: IntelSet | None = None  # threat intelligence loaded for the run, when there is some
    #: Names DNS answered with each address (the data directory's passive DNS), if any.
    passive_dns: PassiveDns | None = None
    #: Work and state detectors of one engine share (e.g. M2-M9's volume core), by key.
    shared: dict[object, Any] = field(default_factory=dict)
    #: The configured sites (flows carry theirs; DNS transactions do not).
    network: NetworkContext | None = None

    def site_of(self, ips: pl.Series) -> pl.Series:
        """The configured site of each address (the default site when none contains it)."""
        if self.network is None:
            return pl.Series(ips.name, ["default"] * ips.len(), dtype=pl.String)
        return self.network.sites_of(ips)


@dataclass
class Batch:
    """What a detector sees at one step of event time.

    ``flows``: canonical flows of the step, sorted by ``ts_start`` (flow detectors).
    ``dns``: DNS transactions of the step (:data:`flowhawk.dns.schema.DNS_SCHEMA`
    columns), sorted by ``ts``; empty unless the run has DNS (detectors reading DNS).
    ``log``: behavioral-log rows per view for the buckets that *closed* at this step,
    i.e. every bucket starting in ``[closed_from, closed_until)``; a bucket is closed
    once event time has passed it, so its rows are complete (behavior detectors).
    A bucket in that range with no row for a key means the key was silent.
    """

    flows: pl.DataFrame
    log: dict[str, pl.DataFrame] = field(default_factory=dict)
    closed_from: datetime | None = None
    closed_until: datetime | None = None
    bucket_seconds: int = 60
    dns: pl.DataFrame = field(default_factory=lambda: empty_dns())
    #: Event time from which the engine scores (None: it only learns). Detectors that
    #: hold windows back decide by it whether a window they close is learned or scored.
    scoring_from: datetime | None = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))

    @classmethod
    def of_flows(cls, flows: pl.DataFrame, bucket_seconds: int = 60) -> Batch:
        """A step holding ``flows`` whose buckets are all complete (tests, whole files)."""
        from flowhawk.behavior.aggregate import aggregate

        if flows.height == 0:
            return cls(flows, {}, None, None, bucket_seconds)
        start = flows.get_column("ts_start").min()
        end = flows.get_column("ts_start").max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        first = _floor(start, bucket_seconds)
        until = _floor(end, bucket_seconds) + timedelta(seconds=bucket_seconds)
        return cls(flows, aggregate(flows, bucket_seconds), first, until, bucket_seconds)

    def closed_part(self, lo: datetime, hi: datetime, flows: pl.DataFrame | None = None) -> Batch:
        """The step restricted to the buckets starting in ``[lo, hi)``."""
        log = {
            v: df.filter(pl.col("bucket").is_between(lo, hi, closed="left"))
            for v, df in self.log.items()
        }
        return Batch(self.flows if flows is None else flows, log, lo, hi, self.bucket_seconds)


def empty_dns() -> pl.DataFrame:
    """A DNS transaction frame with no rows."""
    from flowhawk.dns.schema import empty

    frame = pl.from_arrow(empty())
    assert isinstance(frame, pl.DataFrame)
    return frame


def _floor(t: datetime, seconds: int) -> datetime:
    epoch = int(t.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(epoch, tz=UTC)


class Detector(ABC):
    """Base class of all detectors."""

    #: PRODUCT.md method id, e.g. "M1".
    method: ClassVar[str]
    #: Short name shown with alarms, e.g. "new communication".
    title: ClassVar[str]
    #: Settings model (hyperparameters as given).
    Settings: ClassVar[type[DetectorSettings]] = DetectorSettings
    #: Views of the behavioral log it reads (empty: it reads flows).
    views: ClassVar[tuple[str, ...]] = ()
    #: False for detectors with nothing to learn: they score from the first flow,
    #: during the learning period too (never in a learn-only run).
    learns: ClassVar[bool] = True
    #: What it reads of a step: ``"flows"`` and/or ``"dns"`` (:attr:`Batch.dns`); a
    #: detector is only called for steps that have some of what it reads.
    inputs: ClassVar[tuple[str, ...]] = ("flows",)
    #: True for methods derived from other methods' alarms when events are built
    #: (:meth:`correlate`), not from flows: their ``score`` returns nothing.
    derived: ClassVar[bool] = False
    #: Methods that judge the same evidence share a family (e.g. the sixteen
    #: clustering models M10-M25 of one traffic's behavior); in event and host risk
    #: a family's alarms have diminishing returns together, so one anomaly seen by
    #: several related models does not count as several independent findings.
    #: None: the method is a family of its own.
    family: ClassVar[str | None] = None

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        self.settings = settings
        self.context = context

    @abstractmethod
    def learn(self, batch: Batch) -> None:
        """Update learned state from a step of event time without alarming."""

    @abstractmethod
    def score(self, batch: Batch) -> pl.DataFrame:
        """Alarms (:data:`ALARM_SCHEMA`) for a step of event time; also learns."""

    def finish(self, score_from: datetime | None) -> pl.DataFrame:
        """The input ended (end of a file run): alarms for what the detector held back,
        e.g. a window of event time still open. ``score_from``: event time from which
        the engine scores (None: it only learns, so learn from it without alarming)."""
        return empty_alarms()

    @staticmethod
    def correlate(alarms: pl.DataFrame, key: list[str], behavioral: list[str]) -> pl.DataFrame:
        """(Derived methods) the run's alarms, with the event ``key`` columns, after this
        method derived its alarms from them; ``behavioral``: methods that learn."""
        return alarms

    @abstractmethod
    def state(self) -> dict[str, pa.Table]:
        """Learned state as named Arrow tables."""

    @abstractmethod
    def load_state(self, state: dict[str, pa.Table]) -> None:
        """Restore state saved by :meth:`state` (missing tables mean nothing learned)."""


class StatelessDetector(Detector):
    """A detector with nothing to learn and no state: it scores every flow from the first
    (``learns = False``), during the learning period too."""

    learns = False

    def learn(self, batch: Batch) -> None:
        return None

    def state(self) -> dict[str, pa.Table]:
        return {}

    def load_state(self, state: dict[str, pa.Table]) -> None:
        return None
