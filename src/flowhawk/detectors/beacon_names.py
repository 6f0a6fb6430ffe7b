"""The DNS name a client had for the address it contacts, for N1/N2's name series.

A beacon to a name whose addresses rotate (fast flux, round-robin DNS, a C2 behind a
CDN) is split over many addresses, and no single address series looks regular. N1
therefore also follows each client's contacts per *name*: a flow is named when its
client looked the name up and got the flow's server address as an A/AAAA answer, at
or before the flow's start and at most ``memory`` earlier. The name is the *queried*
name (what the client asked for, as passive DNS records it), and the client's own
lookup counts, not anyone's: an address shared by many names (a CDN's) is named by
what this client asked for.

Names come from DNS transactions only (:attr:`~flowhawk.detectors.base.Batch.dns`,
the run's dns.logs and captures in ``analyze``, the followed dns.logs live): flows
carry no TLS server name (SNI). Behind a forwarding resolver the sensor must see the
clients' own queries; lookups the resolver makes on their behalf name nothing.

Memory: for each (client, address) pair the latest lookup that answered it (a stable
64-bit hash of the pair, the name, the time), forgotten ``memory`` after it. Within a
batch every flow is matched to the latest lookup of its pair at or before its start
(an as-of join), so names do not depend on how flows and DNS are batched, as long as
DNS reaches detection no later than the flows it names (``analyze`` replays both hour
by hour; live detection gets each rollover's DNS with its flows).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from flowhawk import netaddr
from flowhawk.detectors.base import UTC_US, restore_frame
from flowhawk.keyhash import stable_hash

#: One row per (client, address) pair: its latest lookup.
LOOKUP_SCHEMA: dict[str, pl.DataType] = {
    "pair": pl.UInt64(),  # stable hash of (client, address)
    "name": pl.String(),
    "t": pl.Int64(),  # time of the query, epoch microseconds
}
_PAIR = {"src_ip": pl.String(), "dst_ip": pl.String()}


def pair_hash(frame: pl.DataFrame) -> pl.Series:
    """The stable hash of each row's (``src_ip``, ``dst_ip``)."""
    return pl.Series("pair", stable_hash(frame, list(_PAIR), _PAIR), dtype=pl.UInt64)


def client_lookups(dns: pl.DataFrame, internal: netaddr.NetworkSet | None = None) -> pl.DataFrame:
    """The A/AAAA answers of DNS transactions as lookups (:data:`LOOKUP_SCHEMA`);
    with ``internal``, answers inside those networks are left out (outbound series
    only need external servers' names)."""
    rows = dns.select(
        src_ip="src_ip",
        name="query",
        t=pl.col("ts").cast(UTC_US).dt.epoch("us"),
        dst_ip="answers",
        kind="answer_types",
    ).filter(pl.col("dst_ip").list.len() > 0, pl.col("name").is_not_null())
    rows = rows.explode("dst_ip", "kind").filter(pl.col("kind").is_in(["A", "AAAA"]))
    if rows.height == 0:
        return pl.DataFrame(schema=LOOKUP_SCHEMA)
    rows = rows.with_columns(
        src_ip=netaddr.canonical(rows.get_column("src_ip")),
        dst_ip=netaddr.canonical(rows.get_column("dst_ip")),
    ).filter(pl.col("src_ip").is_not_null(), pl.col("dst_ip").is_not_null(), pl.col("name") != "")
    if internal is not None and len(internal) and rows.height:
        hi, lo, _ = netaddr.parse(rows.get_column("dst_ip"))
        rows = rows.filter(~pl.Series(internal.contains(hi, lo)))
    return rows.select(pair_hash(rows), "name", "t").sort("t", "pair", "name")


class ClientNames:
    """Each client's latest lookup per address, and the names of flows from them."""

    def __init__(self, memory: float, internal: netaddr.NetworkSet | None = None):
        self.memory_us = int(memory * 1_000_000)
        self.internal = internal
        self.table = pl.DataFrame(schema=LOOKUP_SCHEMA)

    def __len__(self) -> int:
        return self.table.height

    def name(self, rows: pl.DataFrame, dns: pl.DataFrame | None) -> pl.Series:
        """The name of each of ``rows`` (``src_ip``, ``dst_ip``, ``t``; null where the
        client had none), after taking in the lookups of ``dns`` (the same stretch of
        event time)."""
        if dns is not None and dns.height:
            fresh = client_lookups(dns, self.internal)
            if fresh.height:
                both = pl.concat([self.table, fresh]).sort("t", "pair", "name")
                # a pair's latest lookup is all later flows need; the batch's own flows
                # are matched against every lookup of the batch (below)
                matched = self._match(rows, both)
                self.table = both.group_by("pair").agg(pl.all().last()).sort("pair")
                return matched
        return self._match(rows, self.table)

    def _match(self, rows: pl.DataFrame, table: pl.DataFrame) -> pl.Series:
        if rows.height == 0 or table.height == 0:
            return pl.Series("name", [None] * rows.height, dtype=pl.String)
        left = rows.select(pair_hash(rows), "t").with_row_index("_row").sort("t")
        right = table.sort("t")
        joined = left.join_asof(
            right,
            on="t",
            by="pair",
            strategy="backward",
            tolerance=self.memory_us,
            check_sortedness=False,
        )
        return joined.sort("_row").get_column("name")

    def forget(self, before: int) -> None:
        """Drop lookups older than ``before`` (epoch microseconds) minus the memory."""
        self.table = self.table.filter(pl.col("t") >= before - self.memory_us)

    def state(self) -> pa.Table:
        return self.table.to_arrow()

    def load(self, table: pa.Table | None) -> None:
        self.table = restore_frame(table, LOOKUP_SCHEMA)
