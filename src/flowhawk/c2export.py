"""The C2 blocklist: N2's command-and-control candidates, as CSV or STIX 2.1 indicators.

Candidates come from the N2 alarms in a data directory's event store: one row per
external server with when it was first and last seen beaconed to, its bots and its
highest beacon score. A candidate N2 found by its DNS name (a beacon whose addresses
rotate) gives a row for the name (type ``domain-name``, with its ``addresses``) and one
for each of its addresses (with the name in ``names``), as the alarm's ``observed``
lists them (:data:`flowhawk.detectors.beacon.NAME_OBSERVED`). The STIX bundle holds one
``indicator`` per row (pattern ``[ipv4-addr:value = '…']``, ``ipv6-addr`` or
``domain-name``), valid from its first sighting, created by a ``flowhawk`` identity;
ids are UUIDv5 of the value, so exporting again gives the same ids and a consumer
updates rather than duplicates. flowhawk's own STIX reader (and any STIX 2.1
consumer) loads the bundle as a feed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from flowhawk.detectors.beacon import NAME_OBSERVED
from flowhawk.sinks.store import connect, store_path

#: Namespace of the UUIDv5 ids of exported objects.
NAMESPACE = uuid.UUID("6f1c9c1e-4b7a-5d43-9a51-2f0c8d0e7a11")
CSV_COLUMNS = [
    "indicator",
    "type",
    "first_seen",
    "last_seen",
    "bots",
    "n_bots",
    "score",
    "names",
    "addresses",
]
_TS = pl.Datetime("us", "UTC")
_SCHEMA: dict[str, pl.DataType] = {
    "indicator": pl.String(),
    "type": pl.String(),
    "first_seen": _TS,
    "last_seen": _TS,
    "bots": pl.List(pl.String()),
    "n_bots": pl.UInt32(),
    "score": pl.Float64(),
    "names": pl.List(pl.String()),  # an address: the DNS names it was reached by
    "addresses": pl.List(pl.String()),  # a name: its addresses
}


def candidates(data_dir: Path, min_score: float = 0.0) -> pl.DataFrame:
    """C2 candidates found so far in ``data_dir`` (empty when none or no store)."""
    empty = pl.DataFrame(schema=_SCHEMA)
    if not store_path(data_dir).exists():
        return empty
    con = connect(data_dir, read_only=True)
    try:
        alarms = con.sql(
            "SELECT dst_ip, src_ip, ts, ts_end, score, observed FROM alarms "
            "WHERE method = 'N2' AND score >= ?",
            params=[min_score],
        ).pl()
    finally:
        con.close()
    if alarms.height == 0:
        return empty
    alarms = alarms.with_columns(
        pl.col("ts", "ts_end").dt.convert_time_zone("UTC").cast(_TS),
        name=pl.col("observed").str.extract(NAME_OBSERVED, 1),
        addresses=pl.col("observed").str.extract(NAME_OBSERVED, 2).str.split(", "),
    )
    # every address a candidate was reached at: the alarm's own, and a name's listed ones
    at = pl.concat_list(pl.col("dst_ip"), pl.col("addresses").fill_null([]))
    by_address = (
        alarms.with_columns(ip=at.list.unique())
        .explode("ip")
        .group_by("ip")
        .agg(
            *_sightings(),
            names=pl.col("name").drop_nulls().unique().sort(),
        )
        .rename({"ip": "indicator"})
        .with_columns(
            addresses=pl.lit([], pl.List(pl.String)),
            type=pl.when(pl.col("indicator").str.contains(":"))
            .then(pl.lit("ipv6-addr"))
            .otherwise(pl.lit("ipv4-addr")),
        )
    )
    by_name = (
        alarms.filter(pl.col("name").is_not_null())
        .with_columns(ip=at)
        .explode("ip")
        .group_by("name")
        .agg(*_sightings(), addresses=pl.col("ip").unique().sort())
        .rename({"name": "indicator"})
        .with_columns(names=pl.lit([], pl.List(pl.String)), type=pl.lit("domain-name"))
    )
    out = pl.concat([by_address.select(_SCHEMA.keys()), by_name.select(_SCHEMA.keys())])
    return out.select([pl.col(c).cast(t) for c, t in _SCHEMA.items()]).sort(
        "first_seen", "type", "indicator"
    )


def _sightings() -> list[pl.Expr]:
    return [
        pl.col("ts").min().alias("first_seen"),
        pl.col("ts_end").max().alias("last_seen"),
        pl.col("src_ip").unique().sort().alias("bots"),
        pl.col("src_ip").n_unique().cast(pl.UInt32).alias("n_bots"),
        pl.col("score").max().round(3).alias("score"),
    ]


def to_csv(found: pl.DataFrame) -> str:
    """``indicator,type,first_seen,last_seen,bots,n_bots,score,names,addresses`` (lists
    space-separated)."""
    return (
        found.with_columns(
            pl.col("bots", "names", "addresses").list.join(" "),
            pl.col("first_seen").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            pl.col("last_seen").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        .select(CSV_COLUMNS)
        .write_csv()
    )


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def to_stix(found: pl.DataFrame, created: datetime | None = None) -> dict:
    """A STIX 2.1 bundle with one indicator per candidate."""
    now = _stamp(created or datetime.now(UTC))
    identity = f"identity--{uuid.uuid5(NAMESPACE, 'flowhawk')}"
    objects: list[dict] = [
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": identity,
            "created": now,
            "modified": now,
            "name": "flowhawk",
            "identity_class": "system",
        }
    ]
    for row in found.iter_rows(named=True):
        value = row["indicator"]
        bots = ", ".join(row["bots"])
        also = ""
        if row["names"]:
            also = f"; reached by the DNS name(s) {', '.join(row['names'])}"
        if row["addresses"]:
            also = f"; at {', '.join(row['addresses'])}"
        objects.append(
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": f"indicator--{uuid.uuid5(NAMESPACE, 'c2:' + value)}",
                "created_by_ref": identity,
                "created": now,
                "modified": now,
                "name": f"C2 candidate {value}",
                "description": f"Beaconed to by {row['n_bots']} internal host(s): {bots}{also}; "
                f"last seen {_stamp(row['last_seen'])}; beacon score {row['score']}",
                "indicator_types": ["malicious-activity"],
                "pattern": f"[{row['type']}:value = '{value}']",
                "pattern_type": "stix",
                "valid_from": _stamp(row["first_seen"]),
                "labels": ["c2"],
            }
        )
    return {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid5(NAMESPACE, 'bundle:' + now)}",
        "objects": objects,
    }


def write(found: pl.DataFrame, fmt: str, out: Path | None) -> str:
    """The blocklist as text in ``fmt`` (csv or stix), also written to ``out`` if given."""
    text = to_csv(found) if fmt == "csv" else json.dumps(to_stix(found), indent=1) + "\n"
    if out is not None:
        out.write_text(text)
    return text
