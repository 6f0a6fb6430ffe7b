"""Polars expressions that write the readable parts of alarms (endpoints, spans of time)."""

from __future__ import annotations

import polars as pl

from flowhawk.schema import PROTO_NAMES


def proto_text(proto: pl.Expr) -> pl.Expr:
    """``tcp``/``udp``/... for known protocol numbers, else the number."""
    return proto.cast(pl.Int64).replace_strict(
        {k: v for k, v in PROTO_NAMES.items()},
        default=proto.cast(pl.String),
        return_dtype=pl.String,
    )


def service(port: pl.Expr, proto: pl.Expr) -> pl.Expr:
    """``443/tcp``; ICMP shows ``icmp type/code``."""
    icmp = proto.is_in([1, 58])
    return (
        pl.when(icmp)
        .then(
            pl.concat_str(
                [
                    proto_text(proto),
                    pl.lit(" "),
                    (port // 256).cast(pl.String),
                    pl.lit("/"),
                    (port % 256).cast(pl.String),
                ]
            )
        )
        .otherwise(pl.concat_str([port.cast(pl.String), pl.lit("/"), proto_text(proto)]))
    )


def endpoint(ip: pl.Expr, port: pl.Expr, proto: pl.Expr) -> pl.Expr:
    """``8.8.8.8:53/udp`` (IPv6 in brackets), or ``ip (icmp 8/0)``."""
    icmp = proto.is_in([1, 58])
    host = (
        pl.when(ip.str.contains(":"))
        .then(pl.concat_str([pl.lit("["), ip, pl.lit("]")]))
        .otherwise(ip)
    )
    return (
        pl.when(icmp)
        .then(pl.concat_str([ip, pl.lit(" ("), service(port, proto), pl.lit(")")]))
        .otherwise(pl.concat_str([host, pl.lit(":"), service(port, proto)]))
    )


def history_span(since: pl.Expr, until: pl.Expr) -> pl.Expr:
    """How long history covers, as ``45 min``, ``3.5 h`` or ``12.0 d``."""
    minutes = (until - since).dt.total_seconds().cast(pl.Float64) / 60.0
    return (
        pl.when(minutes < 90)
        .then(pl.concat_str([minutes.round(0).cast(pl.Int64).cast(pl.String), pl.lit(" min")]))
        .when(minutes < 48 * 60)
        .then(pl.concat_str([(minutes / 60).round(1).cast(pl.String), pl.lit(" h")]))
        .otherwise(pl.concat_str([(minutes / 1440).round(1).cast(pl.String), pl.lit(" d")]))
    )
