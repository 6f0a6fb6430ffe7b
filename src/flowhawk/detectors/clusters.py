"""M10-M25: clustering models of each view's behavior vector, its magnitude and velocity.

FlowScape's machine-learning methods. For every closed bucket and key of a view, the
*behavior vector* is the ``log1p`` of the log's measures (packets and bytes each way,
flows, peers, ports, flow time); *magnitude* is that vector, *velocity* its change
since the key's previous active bucket (a key seen for the first time has none).
Per view, the normal vectors are clustered (:mod:`~flowhawk.detectors.clusters_model`):

- M10-M17, M20-M25: k-means (``MiniBatchKMeans``) on the 8 scaled measures, clusters
  chosen by silhouette, Euclidean distance;
- M18/M19 (the communication's second model): a Gaussian mixture with full covariance,
  chosen by BIC, on a richer vector (the 8 measures plus byte balance, packet balance
  and mean flow duration), Mahalanobis distance: it knows how measures move together
  (bytes with packets), so a vector whose measures are each usual but whose mix is not
  stands out, which spherical k-means clusters cannot see.

The score of a row is its distance to the nearest cluster *its key used* in the
training history, relative to that cluster's spread (its 99th percentile member
distance): far from every normal cluster, or a jump to a cluster this key never used,
both raise it. Keys with fewer than ``min_history`` active buckets never alarm. A row
alarms when the ratio exceeds the threshold self-tuned to ``false_alarm_budget`` on
the history (the key's own when it has ``own_threshold_rows`` active buckets, 2400
for k-means and 1000 for the mixtures, whose full covariance sees a key's change of
mix that is usual elsewhere in the view, so a key's own tail counts sooner; a key's
own threshold can be as low as ``own_min_threshold``, inside a cluster's spread; else
the view's, raised to the key's own where ``erratic_rows`` scored buckets, its first
few included, show it higher: a key active a few minutes a night, far from every
cluster, does not alarm on its usual night), or the one set in ``threshold`` /
``site_thresholds``; ``score`` is ``ratio / (1 + ratio)``. Models retrain every
``retrain_every`` of event time, at the same times however the buckets were batched,
and are checkpointed with their version; the velocity methods of a view share the
last vector of each key (48 bytes per key, :mod:`~flowhawk.detectors.clusters_live`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk import netaddr
from flowhawk.behavior.views import MEASURES
from flowhawk.config import Duration
from flowhawk.detectors import clusters_text as txt
from flowhawk.detectors.base import UTC_US, Batch, conform_alarms, empty_alarms
from flowhawk.detectors.behavior_base import BehaviorDetector, BehaviorSettings
from flowhawk.detectors.clusters_features import prepared
from flowhawk.detectors.clusters_live import NO_VECTORS, LastVectors, Previous
from flowhawk.detectors.clusters_model import Model, Params, Spec, train
from flowhawk.detectors.clusters_scan import Hits, Rule, scan
from flowhawk.schema import EAST_WEST, EXTERNAL, NORTH_SOUTH


class ClusterSettings(BehaviorSettings):
    retrain_every: Duration = Field(
        default=86400.0, description="Retrain the clusters after this much event time."
    )
    weight: float = Field(
        default=40.0, ge=0, le=100, description="Risk (0-100) an alarm with score 1 contributes."
    )
    min_history: int = Field(
        default=5, ge=1, description="Active buckets a key needs in the history to alarm."
    )
    min_clusters: int = Field(
        default=6, ge=1, le=30, description="Fewest clusters tried when choosing their number."
    )
    max_clusters: int = Field(
        default=12, ge=1, le=30, description="Most clusters tried when choosing their number."
    )
    sample_rows: int = Field(
        default=200_000, ge=100, description="History rows sampled to fit scaling and clusters."
    )
    select_rows: int = Field(
        default=2000, ge=100, description="Rows sampled to choose the number of clusters."
    )
    min_threshold: float = Field(
        default=1.0, gt=0, description="Lowest threshold self-tuning may choose (distance ratio)."
    )
    own_min_threshold: float = Field(
        default=0.75,
        gt=0,
        description=(
            "Lowest threshold a key's own (from `own_threshold_rows` buckets) may be: "
            "below 1 it may alarm inside a cluster's spread, where its own history is tighter."
        ),
    )
    own_threshold_rows: int = Field(
        default=2400,
        ge=1,
        description=(
            "Active buckets a key needs in the history to get a threshold of its own, tuned "
            "on its own scores (2400 one-minute buckets: 40 hours); others use the view's."
        ),
    )
    erratic_rows: int = Field(
        default=3,
        ge=1,
        description=(
            "Scored buckets (its first `min_history` too, but not a first use of a "
            "cluster among them) from which a key's own scores can raise (never lower) its "
            "threshold above the view's, until it has `own_threshold_rows`."
        ),
    )
    threshold: float | None = Field(
        default=None, gt=0, description="Fixed threshold on the distance ratio (no self-tuning)."
    )
    site_thresholds: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default={}, description="Fixed thresholds per site name, over `threshold` and tuning."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the sampling and the clustering.")
    jumps: bool = Field(
        default=True,
        description=(
            "Also alarm when a key moves to a cluster it never used and its history makes "
            "that rarer than the false-alarm budget (Good-Turing), beyond `min_threshold`."
        ),
    )

    def params(self) -> Params:
        """The training parameters these settings give."""
        return Params(
            min_history=self.min_history,
            budget=self.false_alarm_budget,
            min_threshold=self.min_threshold,
            own_min_threshold=self.own_min_threshold,
            min_clusters=self.min_clusters,
            max_clusters=self.max_clusters,
            sample_rows=self.sample_rows,
            select_rows=self.select_rows,
            seed=self.seed,
            jumps=self.jumps,
            own_rows=self.own_threshold_rows,
            erratic_rows=self.erratic_rows,
        )


class MixtureSettings(ClusterSettings):
    min_clusters: int = Field(
        default=1, ge=1, le=30, description="Fewest mixture components tried (chosen by BIC)."
    )
    max_clusters: int = Field(
        default=6, ge=1, le=30, description="Most mixture components tried (chosen by BIC)."
    )
    sample_rows: int = Field(
        default=30_000, ge=100, description="History rows sampled to fit scaling and mixture."
    )
    own_threshold_rows: int = Field(
        default=1000,
        ge=1,
        description=(
            "Active buckets a key needs in the history to get a threshold of its own, tuned "
            "on its own scores (1000 one-minute buckets: about 17 hours); others use the "
            "view's. Sooner than k-means: a vector's mix (a DNS client's answers 25x larger "
            "at the same query rate) is often usual for the view and only unusual for the key."
        ),
    )


class ClusterDetector(BehaviorDetector):
    """One view's behavior vectors (magnitude or velocity) against its clustering model."""

    Settings = ClusterSettings
    family = "M10-M25"
    velocity: ClassVar[bool]
    mixture: ClassVar[bool] = False

    def __init__(self, settings, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, context)
        self.view = self.views[0]
        self.spec = Spec(self.view, self.velocity, self.mixture)
        self._compiled: Model | None = None
        self._compiled_from: object = None
        self.last: LastVectors | None = None  # velocity: the view's last vectors (shared)
        if self.velocity:
            s = self._s
            self.last = LastVectors.join(context, self.view, s.horizon, s.retrain_every, self)

    @property
    def _s(self) -> ClusterSettings:
        assert isinstance(self.settings, ClusterSettings)
        return self.settings

    # -- model ---------------------------------------------------------------------------

    def train(self, history_until: datetime) -> dict[str, pl.DataFrame]:
        return train(
            self.history(self.view, history_until), self.spec, self._params(), history_until
        )

    def _params(self) -> Params:
        return self._s.params()

    def _model(self) -> Model | None:
        if self._compiled_from is not self.model:
            self._compiled = Model.from_tables(self.spec, self.model)
            self._compiled_from = self.model
        return self._compiled

    # -- scoring -------------------------------------------------------------------------

    def detect(self, batch: Batch) -> pl.DataFrame:
        rows = batch.log.get(self.view)
        model = self._model()
        if rows is None or rows.height == 0 or model is None:
            return empty_alarms()
        prep = prepared(rows, self.view)
        before = self._previous(batch, prep.n)
        hits = scan(model, prep, before, self._rule(rows, prep.order))
        if len(hits.idx) == 0:
            return empty_alarms()
        return self._alarms(rows, prep, model, hits, before, batch.bucket_seconds)

    def _rule(self, rows: pl.DataFrame, order: np.ndarray) -> Rule:
        s = self._s
        per_row = None
        if s.site_thresholds:
            site = rows.get_column("site").replace_strict(
                s.site_thresholds, default=None, return_dtype=pl.Float64
            )
            per_row = np.ascontiguousarray(site.to_numpy()[order], dtype=np.float64)
        return Rule(self._params(), s.threshold, per_row, s.min_score)

    def _alarms(self, rows, prep, model, h: Hits, before: Previous, bucket_s):  # type: ignore[no-untyped-def]
        idx, own = h.idx, h.own
        centre = model.centre(own)[:, : len(MEASURES)]
        extra: dict[str, object] = {
            "_v": h.value.astype(np.float64),
            "_thr": h.threshold,
            "_jump": h.nearest != own,
            "_k": own + 1,
            "_n": h.history,
            "_used": h.used,
        }
        if self.velocity:
            pb, pl_ = prep.prev[idx], before.prev[idx]
            prev = np.where((pb >= 0)[:, None], prep.X[np.maximum(pb, 0)], 0.0)
            if len(before.vectors):
                live = before.vectors[np.maximum(pl_, 0)]
                prev = np.where((pb < 0)[:, None], live, prev)
            when = np.where(pb >= 0, prep.buckets[np.maximum(pb, 0)], 0)
            if len(before.times):
                when = np.where(pb < 0, before.times[np.maximum(pl_, 0)], when)
            extra["_prev_at"] = pl.Series(when * 1_000_000).cast(UTC_US)
            for j, m in enumerate(MEASURES):
                extra[f"p_{m}"] = np.expm1(prev[:, j].astype(np.float64))
            expected = prev + centre
        else:
            expected = centre
        for j, m in enumerate(MEASURES):
            extra[f"e_{m}"] = np.expm1(np.maximum(expected[:, j], 0.0))
        sub = rows[prep.order[idx]].with_columns([pl.Series(k, x) for k, x in extra.items()])
        return conform_alarms(self._columns(sub.sort("bucket"), model, bucket_s))

    def _columns(self, sub: pl.DataFrame, model: Model, bucket_s: int) -> pl.DataFrame:
        view = self.view
        ratio = pl.col("_v")
        kind = "behavior" if not self.velocity else "change since its previous active bucket"
        label = _model_label(self.mixture, self._s.horizon, self.version, model.span_days)
        k_of = pl.concat_str([pl.col("_k").cast(pl.String), pl.lit(f" of {len(model.C)}")])
        now = txt.vector(view, "", bucket_s)
        if self.velocity:
            observed = pl.concat_str(
                [now, pl.lit("; previous active bucket "),
                 pl.col("_prev_at").dt.strftime("%Y-%m-%d %H:%M"), pl.lit(": "),
                 txt.vector(view, "p_", bucket_s)]
            )  # fmt: skip
            expected = pl.concat_str(
                [pl.lit("the usual change (cluster "), k_of,
                 pl.lit(") would give about "), txt.vector(view, "e_", bucket_s),
                 pl.lit(f" ({label})")]
            )  # fmt: skip
        else:
            observed = now
            expected = pl.concat_str(
                [pl.lit("usual cluster "), k_of, pl.lit(": about "),
                 txt.vector(view, "e_", bucket_s), pl.lit(f" ({label})")]
            )  # fmt: skip
        reason = pl.concat_str(
            [txt.subject(view), pl.lit(f": {kind} "), ratio.round(1).cast(pl.String),
             pl.lit("x farther than usual from its normal clusters (threshold "),
             pl.col("_thr").round(1).cast(pl.String), pl.lit(")"),
             pl.when(pl.col("_jump")).then(pl.concat_str(
                 [pl.lit(", jumped to a cluster it never used in "), txt.count(pl.col("_n")),
                  pl.lit(" active buckets (it used "), pl.col("_used").cast(pl.String),
                  pl.lit(")")])).otherwise(pl.lit(""))]
        )  # fmt: skip
        return sub.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=pl.col("bucket"),
            ts_end=pl.col("bucket") + pl.duration(seconds=bucket_s),
            **_where(view),
            direction=self._direction(sub),
            score=ratio / (1.0 + ratio),
            observed=observed,
            expected=expected,
            observed_value=ratio,
            expected_value=pl.col("_thr"),
            threshold=pl.col("_thr"),
            reason=reason,
        )

    def _direction(self, sub: pl.DataFrame) -> pl.Expr:
        if self.view.startswith("ext_"):
            return pl.lit(NORTH_SOUTH)
        if self.view.startswith("int_"):
            return pl.lit(EAST_WEST)
        if self.view != "comm":
            return pl.lit("any")
        inside = []
        for side in ("src_ip", "dst_ip"):
            hi, lo, _ = netaddr.parse(sub.get_column(side))
            net = self.context.internal.contains(hi, lo) | self.context.local_scope.contains(hi, lo)
            inside.append(pl.Series(net))
        si, di = pl.lit(inside[0]), pl.lit(inside[1])
        return (
            pl.when(si & di)
            .then(pl.lit(EAST_WEST))
            .when(si | di)
            .then(pl.lit(NORTH_SOUTH))
            .otherwise(pl.lit(EXTERNAL))
        )

    # -- live state: the last vector of each key (velocity), shared per view --------------

    def _previous(self, batch: Batch, n: int) -> Previous:
        if self.last is None:
            return Previous(np.full(n, -1, dtype=np.int64), NO_VECTORS, np.zeros(0, np.int64))
        return self.last.step(self, batch, self.trained_until)

    def observe(self, batch: Batch) -> None:
        if self.last is not None:
            self.last.step(self, batch, self.trained_until)

    def live_state(self) -> dict[str, pa.Table]:
        return self.last.tables() if self.last is not None else {}

    def load_live_state(self, state: dict[str, pa.Table]) -> None:
        if self.last is not None:
            self.last.load(state)


def _model_label(mixture: bool, horizon: float, version: int, span_days: float) -> str:
    days = horizon / 86400.0
    kind = "Gaussian-mixture" if mixture else "k-means"
    span = f"{span_days * 24:.1f} h" if span_days < 2 else f"{span_days:.1f} d"
    return f"{days:g}-day {kind} model v{version}, {span} of history"


def _where(view: str) -> dict[str, pl.Expr]:
    """Alarm columns naming the key; ``*`` for endpoints the view does not key by."""
    star = pl.lit("*")
    if view == "comm":
        ends = {"src_ip": pl.col("src_ip"), "dst_ip": pl.col("dst_ip"), "entity": pl.lit(None)}
    elif view == "port":
        ends = {"src_ip": star, "dst_ip": star, "entity": pl.lit(None)}
    elif view == "client_port":
        ends = {"src_ip": pl.col("src_ip"), "dst_ip": star, "entity": pl.col("src_ip")}
    elif view == "server_port":
        ends = {"src_ip": star, "dst_ip": pl.col("dst_ip"), "entity": pl.col("dst_ip")}
    else:
        ends = {"src_ip": pl.col("ip"), "dst_ip": star, "entity": pl.col("ip")}
    if view in ("comm", "port", "client_port", "server_port"):
        svc = {"dst_port": pl.col("dst_port"), "proto": pl.col("proto")}
    else:
        proto = view.split("_")[-1]
        num = {"tcp": pl.lit(6), "udp": pl.lit(17)}.get(proto)
        if num is None and proto == "icmp":
            num = pl.when(pl.col("ip").str.contains(":")).then(pl.lit(58)).otherwise(pl.lit(1))
        svc = {"dst_port": pl.lit(0), "proto": num if num is not None else pl.lit(None)}
    return {"site": pl.col("site"), **ends, **svc}


# -- the sixteen methods -----------------------------------------------------------------


class CommVelocity(ClusterDetector):
    method = "M10"
    title = "clustering: communication velocity"
    views = ("comm",)
    velocity = True


class CommMagnitude(ClusterDetector):
    method = "M11"
    title = "clustering: communication magnitude"
    views = ("comm",)
    velocity = False


class PortVelocity(ClusterDetector):
    method = "M12"
    title = "clustering: port velocity"
    views = ("port",)
    velocity = True


class PortMagnitude(ClusterDetector):
    method = "M13"
    title = "clustering: port magnitude"
    views = ("port",)
    velocity = False


class ClientPortVelocity(ClusterDetector):
    method = "M14"
    title = "clustering: client port velocity"
    views = ("client_port",)
    velocity = True


class ClientPortMagnitude(ClusterDetector):
    method = "M15"
    title = "clustering: client port magnitude"
    views = ("client_port",)
    velocity = False


class ServerPortVelocity(ClusterDetector):
    method = "M16"
    title = "clustering: server port velocity"
    views = ("server_port",)
    velocity = True


class ServerPortMagnitude(ClusterDetector):
    method = "M17"
    title = "clustering: server port magnitude"
    views = ("server_port",)
    velocity = False


class CommMixtureVelocity(ClusterDetector):
    method = "M18"
    title = "clustering (Gaussian mixture): communication velocity"
    Settings = MixtureSettings
    views = ("comm",)
    velocity = True
    mixture = True


class CommMixtureMagnitude(ClusterDetector):
    method = "M19"
    title = "clustering (Gaussian mixture): communication magnitude"
    Settings = MixtureSettings
    views = ("comm",)
    velocity = False
    mixture = True


class ExternalTcpVelocity(ClusterDetector):
    method = "M20"
    title = "clustering: external TCP velocity"
    views = ("ext_tcp",)
    velocity = True


class InternalTcpMagnitude(ClusterDetector):
    method = "M21"
    title = "clustering: internal TCP magnitude"
    views = ("int_tcp",)
    velocity = False


class ExternalUdpVelocity(ClusterDetector):
    method = "M22"
    title = "clustering: external UDP velocity"
    views = ("ext_udp",)
    velocity = True


class InternalUdpMagnitude(ClusterDetector):
    method = "M23"
    title = "clustering: internal UDP magnitude"
    views = ("int_udp",)
    velocity = False


class ExternalIcmpVelocity(ClusterDetector):
    method = "M24"
    title = "clustering: external ICMP velocity"
    views = ("ext_icmp",)
    velocity = True


class InternalIcmpMagnitude(ClusterDetector):
    method = "M25"
    title = "clustering: internal ICMP magnitude"
    views = ("int_icmp",)
    velocity = False


CLUSTER_DETECTORS: tuple[type[ClusterDetector], ...] = (
    CommVelocity,
    CommMagnitude,
    PortVelocity,
    PortMagnitude,
    ClientPortVelocity,
    ClientPortMagnitude,
    ServerPortVelocity,
    ServerPortMagnitude,
    CommMixtureVelocity,
    CommMixtureMagnitude,
    ExternalTcpVelocity,
    InternalTcpMagnitude,
    ExternalUdpVelocity,
    InternalUdpMagnitude,
    ExternalIcmpVelocity,
    InternalIcmpMagnitude,
)
