"""Joining events back to flows: a score for every input record, traffic for every event.

After detection, one pass over the run's archived flows gives each flow the risk
and methods of the event of its communication and window (0 and none when there
is no event), expands stitched biflows back to the records they came from, and
sums each event's traffic (flows, packets and bytes both ways) for the reports.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from flowhawk.archive import ArchiveWriter
from flowhawk.events import EVENT_KEY, with_window

FLOW_SCORE_COLUMNS = ["flow_id", "input", "risk", "methods"]
_COLUMNS = [
    "ts_start",
    "site",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "proto",
    "src_pkts",
    "src_bytes",
    "dst_pkts",
    "dst_bytes",
    "service",
    "input",
    "flow_id",
]


def score_flows(
    writer: ArchiveWriter,
    events: pl.DataFrame,
    window_seconds: float,
    lineage: pl.DataFrame,
    out_csv: Path,
) -> pl.DataFrame:
    """Write ``out_csv`` (one row per input record); return events with traffic columns."""
    keys = events.select(
        *EVENT_KEY, "id", "risk", methods=pl.col("methods").list.sort().list.join(";")
    )
    stitched_inputs = lineage.get_column("input").unique() if lineage.height else None
    parts: list[pl.DataFrame] = []
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "wb") as fh:
        fh.write((",".join(FLOW_SCORE_COLUMNS) + "\n").encode())
        for _, flows in writer.iter_partitions(_COLUMNS):
            flows = with_window(flows, window_seconds, "ts_start")
            joined = flows.join(keys, on=EVENT_KEY, how="left", nulls_equal=True)
            scores = joined.select(
                "flow_id",
                "input",
                pl.col("risk").fill_null(0.0),
                pl.col("methods").fill_null(""),
            )
            _expand(scores, lineage, stitched_inputs).write_csv(fh, include_header=False)
            hit = joined.filter(pl.col("id").is_not_null())
            if hit.height:
                parts.append(
                    hit.group_by("id").agg(
                        flows=pl.len(),
                        first_ts=pl.col("ts_start").min(),
                        src_port=pl.col("src_port").sort_by("ts_start").first(),
                        src_pkts=pl.col("src_pkts").sum(),
                        src_bytes=pl.col("src_bytes").sum(),
                        dst_pkts=pl.col("dst_pkts").sum(),
                        dst_bytes=pl.col("dst_bytes").sum(),
                        service=pl.col("service").drop_nulls().first(),
                    )
                )
    traffic_cols = [
        "flows",
        "src_port",
        "src_pkts",
        "src_bytes",
        "dst_pkts",
        "dst_bytes",
        "service",
    ]
    if not parts:
        return events.with_columns(
            flows=pl.lit(0, pl.UInt32),
            src_port=pl.lit(None, pl.Int32),
            src_pkts=pl.lit(0, pl.Int64),
            src_bytes=pl.lit(0, pl.Int64),
            dst_pkts=pl.lit(0, pl.Int64),
            dst_bytes=pl.lit(0, pl.Int64),
            service=pl.lit(None, pl.String),
        )
    traffic = (
        pl.concat(parts)
        .sort("first_ts")
        .group_by("id", maintain_order=True)
        .agg(
            flows=pl.col("flows").sum(),
            src_port=pl.col("src_port").first(),
            src_pkts=pl.col("src_pkts").sum(),
            src_bytes=pl.col("src_bytes").sum(),
            dst_pkts=pl.col("dst_pkts").sum(),
            dst_bytes=pl.col("dst_bytes").sum(),
            service=pl.col("service").drop_nulls().first(),
        )
    )
    out = events.join(traffic, on="id", how="left", maintain_order="left")
    return out.with_columns(
        [pl.col(c).fill_null(0) for c in traffic_cols if c not in ("src_port", "service")]
    )


def _expand(
    scores: pl.DataFrame, lineage: pl.DataFrame, stitched_inputs: pl.Series | None
) -> pl.DataFrame:
    """Replace each stitched biflow by one row per record it was made of."""
    if stitched_inputs is None:
        return scores
    from_stitched = pl.col("input").is_in(stitched_inputs.implode())
    plain = scores.filter(~from_stitched)
    records = scores.filter(from_stitched).join(
        lineage, left_on=["input", "flow_id"], right_on=["input", "biflow_id"], how="inner"
    )
    records = records.select(pl.col("flow_id_right").alias("flow_id"), "input", "risk", "methods")
    return pl.concat([plain, records])
