"""Passive DNS: which names each address was given as an answer for, and when.

From DNS transactions (:data:`~flowhawk.dns.schema.DNS_SCHEMA`) every A/AAAA answer
becomes an observation (address, name, time) at the response's time (``ts + rtt``,
or ``ts`` when the rtt is unknown). The name is the *queried* name, also when the
address was reached through a CNAME chain (``www.example.com`` → CNAME
``cdn.example.net`` → A 192.0.2.1 records 192.0.2.1 for ``www.example.com``), since
that is what the client asked for and what an analyst recognises. The last CNAME
target before the address (``cdn.example.net``, the address record's owner) is kept
too, with ``cname = true``. For Zeek logs, which carry no answer types, an answer that
is not an address is taken as a CNAME target.

Observations aggregate to (ip, name, cname, first_seen, last_seen, count); stores
merge by taking the earliest first_seen, the latest last_seen and summing counts, so
the result does not depend on how input was split. Addresses are canonical text
(:func:`flowhawk.netaddr.canonical`), so they match the flow tables' spelling.

:meth:`PassiveDns.names_for` answers for a whole column of addresses with one join.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk import netaddr
from flowhawk.archive import write_atomic

#: Where passive DNS lives in a data directory.
PDNS_FILE = Path("pdns") / "pdns.parquet"
#: How long after the asked time a name may have been first seen and still count, µs
#: (sensor clocks differ; a flow can start a moment before its DNS response is logged).
DEFAULT_SLACK_US = 60_000_000

_TS = pl.Datetime("us", "UTC")
PDNS_COLUMNS = {
    "ip": pl.String(),
    "name": pl.String(),
    "cname": pl.Boolean(),
    "first_seen": _TS,
    "last_seen": _TS,
    "count": pl.Int64(),
}
_KEY = ["ip", "name", "cname"]


def empty() -> pl.DataFrame:
    """An empty passive DNS table."""
    return pl.DataFrame(schema=PDNS_COLUMNS)


def build(dns: pl.DataFrame | pa.Table, cname_targets: bool = True) -> pl.DataFrame:
    """Aggregate the A/AAAA answers of DNS transactions into a passive DNS table."""
    df = dns if isinstance(dns, pl.DataFrame) else pl.from_arrow(dns)
    assert isinstance(df, pl.DataFrame)
    df = df.select("ts", "rtt", "query", "answers", "answer_types").filter(
        pl.col("answers").list.len() > 0, pl.col("query").is_not_null()
    )
    if df.height == 0:
        return empty()
    seen = pl.col("ts").cast(_TS) + pl.duration(
        microseconds=(pl.col("rtt").fill_null(0.0) * 1e6).round().cast(pl.Int64)
    )
    rows = (
        df.with_columns(seen=seen)
        .with_row_index("_tx")
        .explode("answers", "answer_types")
        .rename({"answers": "answer", "answer_types": "type"})
    )
    is_addr = pl.col("type").is_in(["A", "AAAA"]).fill_null(False)
    is_cname = (pl.col("type") == "CNAME") | (pl.col("type").is_null() & ~is_addr)
    rows = rows.with_columns(
        owner=pl.when(is_cname).then(pl.col("answer")).otherwise(None).forward_fill().over("_tx")
    ).filter(is_addr)
    parts = [rows.select(ip="answer", name="query", cname=pl.lit(False), seen="seen")]
    if cname_targets:
        parts.append(
            rows.filter(pl.col("owner").is_not_null()).select(
                ip="answer", name="owner", cname=pl.lit(True), seen="seen"
            )
        )
    obs = pl.concat(parts)
    obs = obs.with_columns(ip=_canonical(obs.get_column("ip"))).filter(pl.col("ip").is_not_null())
    table = obs.group_by(_KEY).agg(
        first_seen=pl.col("seen").min(), last_seen=pl.col("seen").max(), count=pl.len()
    )
    return _conform(table)


def merge(*tables: pl.DataFrame) -> pl.DataFrame:
    """One passive DNS table from several (earliest first, latest last, counts summed)."""
    frames = [_conform(t) for t in tables if t.height]
    if not frames:
        return empty()
    table = (
        pl.concat(frames)
        .group_by(_KEY)
        .agg(pl.col("first_seen").min(), pl.col("last_seen").max(), pl.col("count").sum())
    )
    return _conform(table)


def _conform(table: pl.DataFrame) -> pl.DataFrame:
    return table.select([pl.col(c).cast(t) for c, t in PDNS_COLUMNS.items()]).sort(
        "ip", "last_seen", "name"
    )


def _canonical(ips: pl.Series) -> pl.Series:
    if ips.len() == 0:
        return ips.cast(pl.String)
    return netaddr.canonical(ips.cast(pl.String))


class PassiveDns:
    """A passive DNS table with its persistence and lookups."""

    def __init__(self, table: pl.DataFrame | None = None):
        self.table = _conform(table) if table is not None else empty()

    @classmethod
    def load(cls, path: Path) -> PassiveDns:
        """The table saved at ``path`` (empty if there is none yet)."""
        return cls(pl.read_parquet(path) if path.is_file() else None)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> PassiveDns:
        """The passive DNS of a data directory (``DATA/pdns/pdns.parquet``)."""
        return cls.load(data_dir / PDNS_FILE)

    def update(self, dns: pl.DataFrame | pa.Table, cname_targets: bool = True) -> PassiveDns:
        """Add the answers of DNS transactions (in place); return self."""
        self.table = merge(self.table, build(dns, cname_targets))
        return self

    def save(self, path: Path) -> None:
        """Merge into what ``path`` holds and write it back atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        on_disk = pl.read_parquet(path) if path.is_file() else empty()
        self.table = merge(on_disk, self.table)
        write_atomic(self.table, path, "zstd")

    def names_for(
        self,
        ips: pl.Series,
        at: pl.Series | None = None,
        limit: int = 3,
        slack_us: int = DEFAULT_SLACK_US,
        include_cnames: bool = True,
    ) -> pl.Series:
        """Names per address (a list, most recently seen first, at most ``limit``).

        With ``at`` (times beside ``ips``), only names first seen at or before
        ``at + slack`` count, ranked by their last sighting up to that time. Addresses
        without names get an empty list. ``include_cnames=False`` keeps queried names
        only.
        """
        n = ips.len()
        query = pl.DataFrame({"_row": np.arange(n, dtype=np.int64), "ip": _canonical(ips)}).filter(
            pl.col("ip").is_not_null()
        )
        table = self.table if include_cnames else self.table.filter(~pl.col("cname"))
        if at is not None:
            query = query.with_columns(at=at.cast(_TS).gather(query.get_column("_row")))
        hits = query.join(table, on="ip", how="inner")
        rank = pl.col("last_seen")
        if at is not None:
            hits = hits.filter(
                pl.col("first_seen") <= pl.col("at") + pl.duration(microseconds=slack_us)
            )
            rank = pl.min_horizontal("last_seen", "at")
        names = (
            hits.with_columns(_rank=rank)
            .sort(["_row", "_rank", "cname", "name"], descending=[False, True, False, False])
            .group_by("_row", maintain_order=True)
            .agg(pl.col("name").unique(maintain_order=True).head(limit))
        )
        out = (
            pl.DataFrame({"_row": np.arange(n, dtype=np.int64)})
            .join(names, on="_row", how="left", maintain_order="left")
            .get_column("name")
        )
        return out.fill_null(pl.lit([], pl.List(pl.String))).alias("names")
