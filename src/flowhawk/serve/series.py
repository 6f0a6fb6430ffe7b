"""Behavior series for charts: one key of a behavioral-log view over 1, 7 or 30 days,
resampled, with the band of what is usual for it.

The band is descriptive, computed from the same series the chart shows: per measure,
the median and the 5th-95th percentiles of the key's resampled values, by hour of day
when the horizon holds several days (7d, 30d), over the whole horizon otherwise (1d).
It shows what the key usually does; the alarm's own threshold (from its detector's
model) is in the alarm.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from flowhawk.behavior.log import LogStore
from flowhawk.behavior.views import BY_NAME

#: horizon -> (span, resolution in seconds)
HORIZONS = {"1d": (timedelta(days=1), 300), "7d": (timedelta(days=7), 3600),
            "30d": (timedelta(days=30), 4 * 3600)}  # fmt: skip
MEASURES = ["bytes_out", "bytes_in", "pkts_out", "pkts_in", "flows"]
_ISO = "%Y-%m-%dT%H:%M:%SZ"


def view_of_event(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The behavioral-log view and key an event's communication is kept under."""
    src, dst = event.get("src_ip"), event.get("dst_ip")
    base = {"site": event.get("site"), "dst_port": event.get("dst_port"),
            "proto": event.get("proto")}  # fmt: skip
    if src == "*" and dst == "*":
        return "port", base
    if src == "*":
        return "server_port", {**base, "dst_ip": dst}
    if dst == "*":
        return "client_port", {**base, "src_ip": src}
    return "comm", {**base, "src_ip": src, "dst_ip": dst}


def key_series(
    data_dir: Path,
    view: str,
    key: dict[str, Any],
    end: datetime,
    horizon: str,
    sites: list[str] | None = None,
) -> dict[str, Any]:
    """The resampled series of ``key`` in ``view`` ending at ``end``, and its band."""
    span, step = HORIZONS[horizon]
    cols = [c for c in BY_NAME[view].key if c in key]
    rows = LogStore(data_dir / "behavior", "api").read(
        view, end - span, end + timedelta(seconds=1), share=False
    )
    cond = pl.lit(True)
    for c in cols:
        cond &= pl.col(c) == key[c]
    if sites is not None:
        cond &= pl.col("site").is_in(sites)
    rows = rows.filter(cond)
    out: dict[str, Any] = {
        "view": view,
        "key": {c: key[c] for c in cols},
        "horizon": horizon,
        "resolution_s": step,
        "since": (end - span).strftime(_ISO),
        "until": end.strftime(_ISO),
        "buckets": rows.height,
        "series": [],
        "band": [],
    }
    if rows.height == 0:
        return out
    series = (
        rows.sort("bucket")
        .group_by_dynamic("bucket", every=f"{step}s")
        .agg(pl.col(MEASURES).sum(), pl.col("peers").max())
        .upsample("bucket", every=f"{step}s")
        .with_columns(pl.col(MEASURES).fill_null(0), pl.col("peers").fill_null(0))
    )
    out["series"] = series.with_columns(pl.col("bucket").dt.strftime(_ISO)).to_dicts()
    out["band"] = _band(series, seasonal=span > timedelta(days=1))
    return out


def _band(series: pl.DataFrame, seasonal: bool) -> list[dict[str, Any]]:
    slot = pl.col("bucket").dt.hour() if seasonal else pl.lit(0)
    long = series.with_columns(slot=slot).unpivot(
        index=["bucket", "slot"], on=MEASURES, variable_name="measure"
    )
    stats = long.group_by("slot", "measure").agg(
        median=pl.col("value").median(),
        low=pl.col("value").quantile(0.05, "linear"),
        high=pl.col("value").quantile(0.95, "linear"),
    )
    band = long.select("bucket", "slot", "measure").join(stats, on=["slot", "measure"])
    return (
        band.sort("measure", "bucket")
        .select(pl.col("bucket").dt.strftime(_ISO), "measure", "median", "low", "high")
        .to_dicts()
    )
