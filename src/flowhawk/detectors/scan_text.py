"""N6's alarm rows: entity, score and the readable explanation of a scan."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import polars as pl

from flowhawk.detectors.base import UTC_US
from flowhawk.detectors.text import history_span, proto_text, service

if TYPE_CHECKING:
    from flowhawk.detectors.scan import ScanSettings

_EXAMPLES = 3


def _fmt(x: pl.Expr) -> pl.Expr:
    """A weighted count as ``12`` or ``12.5``."""
    return (
        pl.when(x == x.round(0))
        .then(x.cast(pl.Int64).cast(pl.String))
        .otherwise(x.round(1).cast(pl.String))
    )


def describe(
    rows: pl.DataFrame,
    seen: pl.DataFrame,
    kind: str,
    target: str,
    threshold: float,
    settings: ScanSettings,
    horizon_us: int,
) -> pl.DataFrame:
    """Alarm columns for the alarming probe rows of one kind (``_a`` numbers them;
    ``base``: the level the key had already alarmed at or learned, -1 none), with
    ``seen``: the targets of each alarm's window up to it (:meth:`TargetCounter.seen_targets`)."""
    ordered = seen.sort("_a", "first", target)
    examples = ordered.group_by("_a", maintain_order=True).agg(
        _ex=pl.col(target).head(_EXAMPLES).cast(pl.String).str.join(", ")
    )
    most = (
        seen.filter(pl.col("internal"))
        .sort("_a", pl.col("flows"), "first", target, descending=[False, True, False, False])
        .group_by("_a", maintain_order=True)
        .agg(_most=pl.col(target).first().cast(pl.String))
    )
    df = rows.join(examples, on="_a", how="left").join(most, on="_a", how="left")
    growth = settings.growth
    bar = pl.lit(threshold) * pl.lit(growth).pow(pl.col("k").cast(pl.Float64))
    icmp = pl.col("proto").is_in([1, 58])
    echo = (pl.col("dst_port") // 256).is_in([8, 128])
    horizontal = kind == "horizontal"
    if horizontal:
        name = (
            pl.when(icmp & echo)
            .then(pl.lit("ping sweep"))
            .when(icmp)
            .then(pl.lit("ICMP sweep"))
            .otherwise(pl.lit("horizontal scan"))
        )
        what = pl.concat_str(
            [
                pl.col("N").cast(pl.String),
                pl.lit(" hosts on "),
                service(pl.col("dst_port"), pl.col("proto")),
            ]
        )
        entity = (
            pl.when(pl.col("src_internal")).then("src_ip").otherwise(pl.coalesce("_most", "src_ip"))
        )
    else:
        name = pl.lit("vertical scan")
        what = pl.concat_str(
            [
                pl.col("N").cast(pl.String),
                pl.lit(" ports of "),
                pl.col("dst_ip"),
                pl.lit("/"),
                proto_text(pl.col("proto")),
            ]
        )
        entity = (
            pl.when(pl.col("src_internal"))
            .then("src_ip")
            .when(pl.col("dst_internal"))
            .then("dst_ip")
            .otherwise("src_ip")
        )
    unanswered = pl.col("F") / pl.col("N")
    magnitude = ((pl.col("E") / threshold).log() / math.log(16.0)).clip(0.0, 1.0)
    factor = pl.when(pl.col("src_internal")).then(1.0).otherwise(settings.external_factor)
    score = ((0.5 + 0.35 * magnitude + 0.15 * unanswered) * factor).clip(0.0, 1.0)
    ts = pl.col("t").cast(pl.Datetime("us", "UTC"))
    first = pl.col("first_ev").cast(pl.Datetime("us", "UTC"))
    hours = horizon_us / 3.6e9
    horizon = f"{hours:g} h"
    pct = (unanswered * 100).round(0).cast(pl.Int64).cast(pl.String)
    before = (
        pl.when(pl.col("base") < 0)
        .then(pl.lit(""))
        .when(pl.col("base") == pl.col("learned").fill_null(-1))
        .then(
            pl.concat_str(
                [pl.lit("; above what it reached while learning (bar "), _fmt(bar), pl.lit(")")]
            )
        )
        .otherwise(
            pl.concat_str([pl.lit("; grew past "), _fmt(bar), pl.lit(" since its last alarm")])
        )
    )
    external = (
        pl.when(pl.col("src_internal"))
        .then(pl.lit(""))
        .otherwise(
            pl.concat_str(
                [
                    pl.lit("; external scanner of the network"),
                    pl.when(pl.col("_most").is_not_null())
                    .then(pl.concat_str([pl.lit(", most probed internal host "), pl.col("_most")]))
                    .otherwise(pl.lit("")),
                ]
            )
        )
    )
    reason = pl.concat_str(
        [
            name,
            pl.lit(": "),
            pl.col("src_ip"),
            pl.lit(" probed "),
            what,
            pl.lit(" in "),
            history_span(first, ts),
            pl.lit(" ("),
            pl.col("F").cast(pl.String),
            pl.lit(" unanswered or rejected = "),
            pct,
            pl.lit("%, "),
            (pl.col("N") - pl.col("F")).cast(pl.String),
            pl.lit(" answered a handshake only, "),
            pl.col("S").cast(pl.String),
            pl.lit(" successful connections; e.g. "),
            pl.col("_ex").fill_null(""),
            pl.lit(")"),
            before,
            external,
        ]
    )
    return df.select(
        method=pl.lit("N6"),
        name=pl.lit("scan"),
        ts=ts.cast(UTC_US),
        ts_end=pl.col("te").cast(pl.Datetime("us", "UTC")).cast(UTC_US),
        site="site",
        src_ip="src_ip",
        dst_ip="dst_ip",
        dst_port="dst_port",
        proto="proto",
        direction="direction",
        score=score,
        entity=entity,
        observed=pl.concat_str(
            [name, pl.lit(" of "), what, pl.lit(", weighted "), _fmt(pl.col("E"))]
        ),
        expected=pl.concat_str(
            [pl.lit("under "), _fmt(bar), pl.lit(f" weighted targets per {horizon}")]
        ),
        observed_value=pl.col("E"),
        expected_value=bar,
        threshold=bar,
        reason=reason,
    )
