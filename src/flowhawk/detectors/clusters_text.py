"""Readable behavior vectors and subjects for the alarms of the clustering models.

A vector is written in the log's own units, e.g. ``sent 48.2 MB in 31.0 k pkts,
received 1.2 MB in 20.1 k pkts, 12 flows, 3 peers, 5 ports, 34.0 s of flow time in
1 min``. What ``peers`` and ``ports`` count depends on the view (see
:mod:`flowhawk.behavior.views`), so each view names them (or leaves out one that is
constant, like the peers of a communication).
"""

from __future__ import annotations

import polars as pl

from flowhawk.detectors.text import endpoint, service

#: What the ``peers`` and ``ports`` measures count in each view (None: always 1, omitted).
LABELS: dict[str, tuple[tuple[str, str] | None, tuple[str, str] | None]] = {
    "comm": (None, ("client port", "client ports")),
    "port": (("client", "clients"), ("server", "servers")),
    "client_port": (("server", "servers"), None),
    "server_port": (("client", "clients"), ("client port", "client ports")),
}
_DEVICE = (("peer", "peers"), ("port", "ports"))

SCOPE = {"ext": "external", "int": "internal"}


def _num(x: pl.Expr, digits: int = 1) -> pl.Expr:
    return x.round(digits).cast(pl.String)


def count(x: pl.Expr) -> pl.Expr:
    """``812``, ``31.0 k``, ``4.2 M``."""
    x = x.cast(pl.Float64)
    return (
        pl.when(x < 10_000)
        .then(x.round(0).cast(pl.Int64).cast(pl.String))
        .when(x < 1e6)
        .then(pl.concat_str([_num(x / 1e3), pl.lit(" k")]))
        .when(x < 1e9)
        .then(pl.concat_str([_num(x / 1e6), pl.lit(" M")]))
        .otherwise(pl.concat_str([_num(x / 1e9), pl.lit(" G")]))
    )


def size(x: pl.Expr) -> pl.Expr:
    """``812 B``, ``48.2 kB``, ``1.2 MB``, ``3.1 GB``."""
    x = x.cast(pl.Float64)
    return (
        pl.when(x < 1000)
        .then(pl.concat_str([x.round(0).cast(pl.Int64).cast(pl.String), pl.lit(" B")]))
        .when(x < 1e6)
        .then(pl.concat_str([_num(x / 1e3), pl.lit(" kB")]))
        .when(x < 1e9)
        .then(pl.concat_str([_num(x / 1e6), pl.lit(" MB")]))
        .otherwise(pl.concat_str([_num(x / 1e9), pl.lit(" GB")]))
    )


def seconds(x: pl.Expr) -> pl.Expr:
    """``0.12 s``, ``34.0 s``, ``1.5 h``."""
    x = x.cast(pl.Float64)
    return (
        pl.when(x < 1)
        .then(pl.concat_str([_num(x, 2), pl.lit(" s")]))
        .when(x < 3600)
        .then(pl.concat_str([_num(x), pl.lit(" s")]))
        .otherwise(pl.concat_str([_num(x / 3600), pl.lit(" h")]))
    )


def _counted(x: pl.Expr, words: tuple[str, str]) -> pl.Expr:
    one = x.cast(pl.Float64).round(0) == 1
    return pl.concat_str(
        [count(x), pl.lit(" "), pl.when(one).then(pl.lit(words[0])).otherwise(pl.lit(words[1]))]
    )


def vector(view: str, prefix: str, bucket_seconds: int) -> pl.Expr:
    """The vector in columns ``{prefix}pkts_out`` ... ``{prefix}duration``, readable."""
    peers, ports = LABELS.get(view, _DEVICE)

    def c(m: str) -> pl.Expr:
        return pl.col(f"{prefix}{m}")

    pkts, flows = ("pkt", "pkts"), ("flow", "flows")
    parts = [
        pl.lit("sent "), size(c("bytes_out")), pl.lit(" in "), _counted(c("pkts_out"), pkts),
        pl.lit(", received "), size(c("bytes_in")), pl.lit(" in "), _counted(c("pkts_in"), pkts),
        pl.lit(", "), _counted(c("flows"), flows),
    ]  # fmt: skip
    if peers is not None:
        parts += [pl.lit(", "), _counted(c("peers"), peers)]
    if ports is not None:
        parts += [pl.lit(", "), _counted(c("ports"), ports)]
    span = f"{bucket_seconds // 60} min" if bucket_seconds % 60 == 0 else f"{bucket_seconds} s"
    parts += [pl.lit(", "), seconds(c("duration")), pl.lit(f" of flow time in {span}")]
    return pl.concat_str(parts)


def subject(view: str) -> pl.Expr:
    """Who an alarm is about, e.g. ``10.0.0.7 -> 203.0.113.9:443/tcp``."""
    if view == "comm":
        return pl.concat_str(
            [
                pl.col("src_ip"),
                pl.lit(" -> "),
                endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto")),
            ]
        )
    svc = service(pl.col("dst_port"), pl.col("proto"))
    if view == "port":
        return pl.concat_str([pl.lit("service "), svc, pl.lit(" (all clients and servers)")])
    if view == "client_port":
        return pl.concat_str([pl.lit("client "), pl.col("src_ip"), pl.lit(" on "), svc])
    if view == "server_port":
        return pl.concat_str([pl.lit("server "), pl.col("dst_ip"), pl.lit(" on "), svc])
    if view == "device":
        return pl.concat_str([pl.col("ip"), pl.lit(" (all its traffic)")])
    scope, proto = view.split("_")
    return pl.concat_str([pl.col("ip"), pl.lit(f" {SCOPE[scope]} {proto.upper()} traffic")])
