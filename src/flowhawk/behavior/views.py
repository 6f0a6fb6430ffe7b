"""The behavioral log: per time bucket and per key of each view, one aggregate row.

A *view* is a way of keying traffic (FlowScape's list): the communication (IP by IP
by port), a port, a client's use of a port, a server's port, each internal device,
and each internal device's external and internal TCP, UDP and ICMP traffic. For a
bucket (default one minute, by flow start) and a key, the row holds what the key
*sent* and *received* (from the key's own point of view), flows, distinct peers and
ports, and the summed duration (computed by :func:`flowhawk.behavior.aggregate.aggregate`).

Perspective per view: for ``comm``, ``port`` and ``client_port`` the key acts as the
client (sent = client to server); for ``server_port`` as the server; for ``device``
and the per-protocol device views, as itself, on whichever side of the flow it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

UTC_US = pl.Datetime("us", "UTC")

#: Aggregate columns every view row has, after the bucket and key columns.
MEASURES = ("pkts_out", "pkts_in", "bytes_out", "bytes_in", "flows", "peers", "ports", "duration")
MEASURE_TYPES = {
    "pkts_out": pl.Int64,
    "pkts_in": pl.Int64,
    "bytes_out": pl.Int64,
    "bytes_in": pl.Int64,
    "flows": pl.Int64,
    "peers": pl.Int64,
    "ports": pl.Int64,
    "duration": pl.Float64,
}


@dataclass(frozen=True)
class View:
    """One way of keying behavior."""

    name: str
    key: tuple[str, ...]  # key columns of the rows (site always first)
    description: str


COMM = View(
    "comm",
    ("site", "src_ip", "dst_ip", "dst_port", "proto"),
    "the communication: client, server, server port, protocol",
)
PORT = View("port", ("site", "dst_port", "proto"), "a service port, all clients and servers")
CLIENT_PORT = View(
    "client_port", ("site", "src_ip", "dst_port", "proto"), "a client's use of a service port"
)
SERVER_PORT = View(
    "server_port", ("site", "dst_ip", "dst_port", "proto"), "a server's service on a port"
)
DEVICE = View("device", ("site", "ip"), "an internal device, all its traffic")
#: The protocol numbers of each per-protocol device view.
PROTOCOLS = {"tcp": (6,), "udp": (17,), "icmp": (1, 58)}
DEVICE_PROTO = {
    (scope, proto): View(
        f"{scope}_{proto}",
        ("site", "ip"),
        f"an internal device's {'north-south' if scope == 'ext' else 'east-west'} "
        f"{proto.upper()} traffic",
    )
    for scope in ("ext", "int")
    for proto in ("tcp", "udp", "icmp")
}
VIEWS: tuple[View, ...] = (COMM, PORT, CLIENT_PORT, SERVER_PORT, DEVICE, *DEVICE_PROTO.values())
BY_NAME = {v.name: v for v in VIEWS}


def bucket_of(ts: pl.Expr, bucket_seconds: int) -> pl.Expr:
    """Start of the bucket of each time (epoch-aligned)."""
    return ts.dt.truncate(f"{bucket_seconds}s")


def typed(df: pl.DataFrame, view: View) -> pl.DataFrame:
    return df.select(
        pl.col("bucket").cast(UTC_US),
        *view.key,
        *(pl.col(m).cast(t) for m, t in MEASURE_TYPES.items()),
    )


def empty(view: View, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty log frame of ``view`` (``schema`` gives the key column types)."""
    return pl.DataFrame(
        schema={"bucket": UTC_US, **{k: schema[k] for k in view.key}, **MEASURE_TYPES}
    )
