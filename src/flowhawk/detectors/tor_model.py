"""The flow-shape model of M26: how much a TCP flow looks like a Tor connection.

Tor carries everything in fixed 514-byte cells inside long-lived TLS connections to
relays, whose OR ports are often 9001 or 443 (bridges and many relays: a random high
port). A client keeps its guard connection open for minutes to hours, padded when idle,
with cells both ways. Seen as flow counters only, that is a handful of numbers per flow,
each a column computed for a whole batch at once (:data:`FEATURES`):

* the server port: a relay port (``relay_port``), 443 (``tls_port``), or 10000 and up
  (``high_port``);
* the mean IP packet size each way, scaled to 0-1 by 1500 bytes (``size_c``,
  ``size_s``), and whether it falls in the cell band (``cells_c``, ``cells_s``: a TLS
  record of one cell is 543-600 bytes on the wire, interleaved ACKs pull the mean down,
  several cells per segment push it up);
* duration (``long``) and packets (``busy``), log-scaled to 0-1 and clipped at
  ``long_seconds`` / ``busy_packets``, so the model never extrapolates beyond what it
  was trained on;
* ``two_way`` (1 for equal bytes each way, 0 from a 100:1 ratio on) and ``client_share``
  (the client's share of the packets).

The score is a supervised model of those features, fitted by ``eval/train_tor.py`` on
real Tor flows captured from a private Tor network (``eval/torlab.py``: authorities,
guards, exits, a bridge, clients and an onion service run by Debian's tor) against
ordinary TCP flows of public captures, and shipped as plain numbers in
:data:`MODEL_FILE`: either a logistic model (``bias`` + weights) or a few small
regression trees (gradient boosting: the sum of the leaves a flow reaches, through the
logistic). Both are evaluated for a whole batch with Polars/NumPy; flows that are not
TCP or have fewer than ``min_packets`` packets either way score 0. The alarm threshold
and the figures it gives on flows the fit never saw are in eval/README.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

MODEL_FILE = Path(__file__).with_name("tor_model.json")
PORT_CLASSES = ("relay", "tls")
FEATURES = (
    "relay_port",
    "tls_port",
    "high_port",
    "size_c",
    "size_s",
    "cells_c",
    "cells_s",
    "long",
    "busy",
    "two_way",
    "client_share",
)
HIGH_PORT = 10000
#: Columns :meth:`ShapeModel.features` adds (the score is ``tor_shape``).
FEATURE_COLUMNS = ("tor_port", "tor_mean_c", "tor_mean_s", *(f"tor_{f}" for f in FEATURES))


@dataclass(frozen=True)
class Trees:
    """Regression trees as flat arrays: node ``i`` sends a flow left when
    ``x[feature[i]] <= cut[i]``; leaves have ``left[i] == -1`` and carry ``value[i]``."""

    depth: int
    roots: tuple[int, ...]
    feature: tuple[int, ...]
    cut: tuple[float, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    value: tuple[float, ...]

    def margin(self, x: np.ndarray) -> np.ndarray:
        """Sum over trees of the leaf each row of ``x`` reaches."""
        feature, cut = np.asarray(self.feature), np.asarray(self.cut)
        left, right, value = np.asarray(self.left), np.asarray(self.right), np.asarray(self.value)
        leaf = left < 0
        feature = np.where(leaf, 0, feature)
        total = np.zeros(x.shape[0])
        rows = np.arange(x.shape[0])
        for root in self.roots:
            node = np.full(x.shape[0], root)
            for _ in range(self.depth):
                go_left = x[rows, feature[node]] <= cut[node]
                node = np.where(leaf[node], node, np.where(go_left, left[node], right[node]))
            total += value[node]
        return total


@dataclass(frozen=True)
class ShapeModel:
    """Parameters of the shape score (see the module docstring)."""

    ports: dict[str, tuple[int, ...]]  # class -> server ports
    cell_band: tuple[float, float]  # mean IP bytes per packet
    long_seconds: float
    busy_packets: float
    min_packets: int
    threshold: float  # shape score from which an unlisted flow alarms
    bias: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)  # logistic: feature -> weight
    trees: Trees | None = None  # gradient-boosted trees instead of weights

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShapeModel:
        lo, hi = d["cell_band"]
        weights = {k: float(v) for k, v in d.get("weights", {}).items()}
        unknown = set(weights) - set(FEATURES)
        if unknown:
            raise ValueError(f"Tor shape model: unknown features {sorted(unknown)}")
        trees = d.get("trees")
        return cls(
            ports={k: tuple(int(p) for p in d["ports"][k]) for k in PORT_CLASSES},
            cell_band=(float(lo), float(hi)),
            long_seconds=float(d["long_seconds"]),
            busy_packets=float(d["busy_packets"]),
            min_packets=int(d["min_packets"]),
            threshold=float(d["threshold"]),
            bias=float(d.get("bias", 0.0)),
            weights=weights,
            trees=None if trees is None else Trees(
                depth=int(trees["depth"]),
                **{k: tuple(trees[k]) for k in ("roots", "feature", "cut", "left", "right",
                                                 "value")},
            ),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "ports": {k: list(v) for k, v in self.ports.items()},
            "cell_band": list(self.cell_band),
            "long_seconds": self.long_seconds,
            "busy_packets": self.busy_packets,
            "min_packets": self.min_packets,
            "threshold": self.threshold,
            "bias": self.bias,
        }
        if self.weights:
            d["weights"] = self.weights
        if self.trees is not None:
            t = self.trees
            d["trees"] = {
                "depth": t.depth,
                **{k: list(getattr(t, k)) for k in ("roots", "feature", "cut", "left", "right",
                                                     "value")},
            }  # fmt: skip
        return d

    @classmethod
    def load(cls, path: Path | None = None) -> ShapeModel:
        """The parameters in ``path`` (default: the shipped :data:`MODEL_FILE`)."""
        return cls.from_dict(json.loads((path or MODEL_FILE).read_text())["model"])

    def port_class(self) -> pl.Expr:
        port = pl.col("dst_port")
        expr = pl.lit("other")
        for name in reversed(PORT_CLASSES):
            expr = pl.when(port.is_in(list(self.ports[name]))).then(pl.lit(name)).otherwise(expr)
        return expr

    def feature_exprs(self) -> dict[str, pl.Expr]:
        """Every feature of :data:`FEATURES` as an expression over canonical flow columns."""
        lo, hi = self.cell_band
        mean_c = pl.col("src_bytes") / pl.col("src_pkts").clip(lower_bound=1)
        mean_s = pl.col("dst_bytes") / pl.col("dst_pkts").clip(lower_bound=1)
        seconds = (pl.col("ts_end") - pl.col("ts_start")).dt.total_microseconds() / 1e6
        packets = (pl.col("src_pkts") + pl.col("dst_pkts")).cast(pl.Float64)
        ratio = ((pl.col("src_bytes") + 1) / (pl.col("dst_bytes") + 1)).log().abs()
        port = pl.col("dst_port")
        return {
            "relay_port": port.is_in(list(self.ports["relay"])).cast(pl.Float64),
            "tls_port": port.is_in(list(self.ports["tls"])).cast(pl.Float64),
            "high_port": (port >= HIGH_PORT).cast(pl.Float64),
            "size_c": (mean_c / 1500.0).clip(0.0, 1.0),
            "size_s": (mean_s / 1500.0).clip(0.0, 1.0),
            "cells_c": mean_c.is_between(lo, hi).cast(pl.Float64),
            "cells_s": mean_s.is_between(lo, hi).cast(pl.Float64),
            "long": (seconds.clip(lower_bound=0).log1p() / math.log1p(self.long_seconds)).clip(
                0.0, 1.0
            ),
            "busy": (packets.log1p() / math.log1p(self.busy_packets)).clip(0.0, 1.0),
            "two_way": (1.0 - ratio / math.log(100.0)).clip(0.0, 1.0),
            "client_share": pl.col("src_pkts") / packets.clip(lower_bound=1.0),
        }

    def features(self, flows: pl.DataFrame) -> pl.DataFrame:
        """``flows`` with the feature columns (:data:`FEATURE_COLUMNS`) and ``tor_shape``."""
        exprs = self.feature_exprs()
        df = flows.with_columns(
            tor_port=self.port_class(),
            tor_mean_c=pl.col("src_bytes") / pl.col("src_pkts").clip(lower_bound=1),
            tor_mean_s=pl.col("dst_bytes") / pl.col("dst_pkts").clip(lower_bound=1),
            **{f"tor_{name}": expr for name, expr in exprs.items()},
        )
        eligible = (
            (pl.col("proto") == 6)
            & (pl.col("src_pkts") >= self.min_packets)
            & (pl.col("dst_pkts") >= self.min_packets)
        )
        if self.trees is not None:
            x = df.select([f"tor_{f}" for f in FEATURES]).to_numpy().astype(np.float64)
            margin = pl.Series("_margin", self.bias + self.trees.margin(x))
        else:
            z = pl.lit(self.bias)
            for name, weight in self.weights.items():
                z = z + weight * pl.col(f"tor_{name}")
            margin = df.select(z.alias("_margin")).to_series()
        shape = pl.when(eligible).then(1.0 / (1.0 + (-pl.col("_margin")).exp())).otherwise(0.0)
        return df.with_columns(margin).with_columns(tor_shape=shape).drop("_margin")

    def score(self, flows: pl.DataFrame) -> pl.Series:
        """The shape score (0-1) of every flow."""
        return self.features(flows).get_column("tor_shape")
