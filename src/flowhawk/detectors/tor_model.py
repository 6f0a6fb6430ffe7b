"""The flow-shape model of M26: how much a TCP flow looks like a Tor connection.

Tor carries everything in fixed 514-byte cells inside long-lived TLS connections to
relays, whose OR ports are often 9001 (directory: 9030; a Tor client's SOCKS port
9050/9150 shows on the wire when another host uses it as a proxy). Seen as flow
counters only, that gives five pieces of evidence, each a column computed for a whole
batch at once:

* ``port``: the server port's class (relay, socks, tls = 443, other), each class with
  its weight;
* ``cells``: how many directions (0-2) have a mean IP packet size in the cell band
  (a TLS record of one cell is 543-600 bytes on the wire; interleaved pure ACKs pull
  the mean down, several cells per segment push it up);
* ``long``: log duration against ``long_seconds`` (circuits live for minutes to hours),
  clipped to 0-1;
* ``busy``: log packets against ``busy_packets``, clipped to 0-1;
* ``two_way``: 1 for equal bytes each way, 0 from a 100:1 ratio on (circuits carry
  traffic both ways; a web download does not).

The shape score is the logistic of ``bias + port weight + Σ weight × evidence`` for TCP
flows with at least ``min_packets`` each way, else 0. The parameters are a small JSON
file (:data:`MODEL_FILE`) written by ``eval/train_tor.py``: the weights follow the
protocol, the alarm threshold is chosen there from ordinary traffic (see eval/README.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

MODEL_FILE = Path(__file__).with_name("tor_model.json")
PORT_CLASSES = ("relay", "socks", "tls")
EVIDENCE = ("cells", "long", "busy", "two_way")
#: Columns :meth:`ShapeModel.features` adds (the score is ``tor_shape``).
FEATURE_COLUMNS = ("tor_port", "tor_mean_c", "tor_mean_s", *(f"tor_{e}" for e in EVIDENCE))


@dataclass(frozen=True)
class ShapeModel:
    """Parameters of the shape score (see the module docstring)."""

    bias: float
    ports: dict[str, tuple[int, ...]]  # class -> server ports
    port_weights: dict[str, float]  # class (and "other") -> weight
    weights: dict[str, float]  # evidence -> weight
    cell_band: tuple[float, float]  # mean IP bytes per packet
    long_seconds: float
    busy_packets: float
    min_packets: int
    threshold: float  # shape score from which an unlisted flow alarms

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShapeModel:
        lo, hi = d["cell_band"]
        return cls(
            bias=float(d["bias"]),
            ports={k: tuple(int(p) for p in d["ports"][k]) for k in PORT_CLASSES},
            port_weights={k: float(d["port_weights"][k]) for k in (*PORT_CLASSES, "other")},
            weights={k: float(d["weights"][k]) for k in EVIDENCE},
            cell_band=(float(lo), float(hi)),
            long_seconds=float(d["long_seconds"]),
            busy_packets=float(d["busy_packets"]),
            min_packets=int(d["min_packets"]),
            threshold=float(d["threshold"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "bias": self.bias,
            "ports": {k: list(v) for k, v in self.ports.items()},
            "port_weights": self.port_weights,
            "weights": self.weights,
            "cell_band": list(self.cell_band),
            "long_seconds": self.long_seconds,
            "busy_packets": self.busy_packets,
            "min_packets": self.min_packets,
            "threshold": self.threshold,
        }

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

    def features(self, flows: pl.DataFrame) -> pl.DataFrame:
        """``flows`` with the evidence columns (:data:`FEATURE_COLUMNS`) and ``tor_shape``."""
        lo, hi = self.cell_band
        mean_c = pl.col("src_bytes") / pl.col("src_pkts").clip(lower_bound=1)
        mean_s = pl.col("dst_bytes") / pl.col("dst_pkts").clip(lower_bound=1)
        seconds = (pl.col("ts_end") - pl.col("ts_start")).dt.total_microseconds() / 1e6
        ratio = ((pl.col("src_bytes") + 1) / (pl.col("dst_bytes") + 1)).log().abs()
        df = flows.with_columns(
            tor_port=self.port_class(),
            tor_mean_c=mean_c,
            tor_mean_s=mean_s,
            tor_cells=mean_c.is_between(lo, hi).cast(pl.Float64)
            + mean_s.is_between(lo, hi).cast(pl.Float64),
            tor_long=(seconds.clip(lower_bound=0).log1p() / math.log1p(self.long_seconds)).clip(
                0.0, 1.0
            ),
            tor_busy=(
                (pl.col("src_pkts") + pl.col("dst_pkts")).cast(pl.Float64).log1p()
                / math.log1p(self.busy_packets)
            ).clip(0.0, 1.0),
            tor_two_way=(1.0 - ratio / math.log(100.0)).clip(0.0, 1.0),
        )
        port_weight = pl.col("tor_port").replace_strict(self.port_weights, return_dtype=pl.Float64)
        z = pl.lit(self.bias) + port_weight
        for name in EVIDENCE:
            z = z + self.weights[name] * pl.col(f"tor_{name}")
        eligible = (
            (pl.col("proto") == 6)
            & (pl.col("src_pkts") >= self.min_packets)
            & (pl.col("dst_pkts") >= self.min_packets)
        )
        shape = pl.when(eligible).then(1.0 / (1.0 + (-z).exp())).otherwise(0.0)
        return df.with_columns(tor_shape=shape)

    def score(self, flows: pl.DataFrame) -> pl.Series:
        """The shape score (0-1) of every flow."""
        return self.features(flows).get_column("tor_shape")
