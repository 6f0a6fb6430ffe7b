"""How events look outside: the JSON document and the Spot-style CSV row."""

from __future__ import annotations

import polars as pl

ISO = "%Y-%m-%dT%H:%M:%S%.6fZ"


def iso(col: str) -> pl.Expr:
    return pl.col(col).dt.convert_time_zone("UTC").dt.strftime(ISO)


def event_documents(events: pl.DataFrame) -> pl.DataFrame:
    """Events as the documents written to events.jsonl and served by the API."""
    cols = [
        pl.col("id"),
        iso("ts_start").alias("ts_start"),
        iso("ts_end").alias("ts_end"),
        pl.col("site"),
        pl.col("src_ip"),
        pl.col("dst_ip"),
        pl.col("src_port")
        if "src_port" in events.columns
        else pl.lit(None, pl.Int32).alias("src_port"),
        pl.col("dst_port"),
        pl.col("proto"),
        pl.col("direction"),
        pl.col("risk"),
        pl.col("methods"),
        pl.col("alarms"),
        pl.col("reason"),
    ]
    for extra in (
        "flows",
        "src_pkts",
        "src_bytes",
        "dst_pkts",
        "dst_bytes",
        "service",
        "src_groups",
        "dst_groups",
        "guarded",
        "src_names",
        "dst_names",
        "src_geo",
        "dst_geo",
        "hops",
        "relays",
    ):
        if extra in events.columns:
            cols.append(pl.col(extra))
    cols += [pl.lit("new").alias("status"), pl.lit(None, pl.String).alias("verdict")]
    return events.select(cols)


def suspicious_rows(events: pl.DataFrame, top: int) -> pl.DataFrame:
    """The top events in the shape of Apache Spot's suspicious-connects CSV, plus risk."""
    top_events = events.sort(["risk", "ts_start", "id"], descending=[True, False, False]).head(top)
    return top_events.with_row_index("rank", offset=1).select(
        "rank",
        iso("ts_start").alias("tstart"),
        iso("ts_end").alias("tend"),
        pl.col("src_ip").alias("sip"),
        pl.col("dst_ip").alias("dip"),
        pl.col("src_port").alias("sport"),
        pl.col("dst_port").alias("dport"),
        pl.col("proto"),
        pl.col("src_pkts").alias("ipkt"),
        pl.col("src_bytes").alias("ibyt"),
        pl.col("dst_pkts").alias("opkt"),
        pl.col("dst_bytes").alias("obyt"),
        pl.col("flows"),
        pl.col("score").round(4),
        pl.col("risk"),
        pl.col("methods").list.join(";").alias("methods"),
        pl.col("alarms")
        .list.eval(pl.element().struct.field("reason"))
        .list.join(" | ")
        .alias("reasons"),
        pl.col("direction"),
        pl.col("site"),
        pl.col("id").alias("event_id"),
    )
