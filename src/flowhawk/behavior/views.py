"""The behavioral log: per time bucket and per key of each view, one aggregate row.

A *view* is a way of keying traffic (FlowScape's list): the communication (IP by IP
by port), a port, a client's use of a port, a server's port, each internal device,
and each internal device's external and internal TCP, UDP and ICMP traffic. For a
bucket (default one minute, by flow start) and a key, the row holds what the key
*sent* and *received* (from the key's own point of view), flows, distinct peers and
ports, and the summed duration.

Perspective per view: for ``comm``, ``port`` and ``client_port`` the key acts as the
client (sent = client to server); for ``server_port`` as the server; for ``device``
and the per-protocol device views, as itself, on whichever side of the flow it is.
"""

from __future__ import annotations

import math
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
_PROTOS = {"tcp": 6, "udp": 17, "icmp": (1, 58)}
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


def _measures(out_p: str, in_p: str, out_b: str, in_b: str, peer: str, port: str) -> list[pl.Expr]:
    return [
        pl.col(out_p).sum().alias("pkts_out"),
        pl.col(in_p).sum().alias("pkts_in"),
        pl.col(out_b).sum().alias("bytes_out"),
        pl.col(in_b).sum().alias("bytes_in"),
        pl.len().cast(pl.Int64).alias("flows"),
        pl.col(peer).n_unique().cast(pl.Int64).alias("peers"),
        pl.col(port).n_unique().cast(pl.Int64).alias("ports"),
        pl.col("_dur").sum().alias("duration"),
    ]


def aggregate(flows: pl.DataFrame, bucket_seconds: int = 60) -> dict[str, pl.DataFrame]:
    """The behavioral log rows of ``flows`` (canonical), per view name.

    Each frame has ``bucket`` (UTC), the view's key columns, then :data:`MEASURES`,
    sorted by bucket then key.
    """
    f = flows.with_columns(
        bucket=bucket_of(pl.col("ts_start"), bucket_seconds),
        _dur=(pl.col("ts_end") - pl.col("ts_start")).dt.total_microseconds() / 1e6,
    )
    codes = _Codes(f)
    f = codes.encode(f)
    # Distinct addresses are counted on their codes (the same counts, cheaper).
    client = _measures("src_pkts", "dst_pkts", "src_bytes", "dst_bytes", "_c_dst_ip", "dst_port")
    out = {
        "comm": codes.group(
            f,
            ("bucket", *COMM.key),
            [
                *client[:5],
                pl.lit(1, pl.Int64).alias("peers"),
                pl.col("src_port").n_unique().cast(pl.Int64).alias("ports"),
                client[7],
            ],
        ),
        "port": codes.group(
            f,
            ("bucket", *PORT.key),
            [
                *client[:5],
                pl.col("_c_src_ip").n_unique().cast(pl.Int64).alias("peers"),
                pl.col("_c_dst_ip").n_unique().cast(pl.Int64).alias("ports"),
                client[7],
            ],
        ),
        "client_port": codes.group(f, ("bucket", *CLIENT_PORT.key), client),
        "server_port": codes.group(
            f,
            ("bucket", *SERVER_PORT.key),
            _measures("dst_pkts", "src_pkts", "dst_bytes", "src_bytes", "_c_src_ip", "src_port"),
        ),
    }
    # Device views: each internal endpoint as itself (sent = what it sent).
    ends = pl.concat([_endpoint(f, "src", "dst"), _endpoint(f, "dst", "src")])
    dev = _measures("p_out", "p_in", "b_out", "b_in", "peer", "port")
    out["device"] = codes.group(ends, ("bucket", *DEVICE.key), dev)
    for (scope, proto), view in DEVICE_PROTO.items():
        want = _PROTOS[proto]
        proto_rule = (
            pl.col("proto").is_in(list(want))
            if isinstance(want, tuple)
            else (pl.col("proto") == want)
        )
        dir_rule = pl.col("direction") == ("north-south" if scope == "ext" else "east-west")
        out[view.name] = codes.group(ends.filter(proto_rule & dir_rule), ("bucket", *view.key), dev)
    return {name: _typed(df, BY_NAME[name]) for name, df in out.items()}


def _endpoint(f: pl.DataFrame, me: str, other: str) -> pl.DataFrame:
    """The flows of ``f`` whose ``me`` side (src or dst) is internal, as that device's."""
    return f.filter(pl.col(f"{me}_internal")).select(
        "_c_bucket",
        "_c_site",
        "proto",
        "direction",
        "_dur",
        _c_ip=pl.col(f"_c_{me}_ip"),
        peer=pl.col(f"_c_{other}_ip"),
        port=pl.col("dst_port"),
        p_out=pl.col(f"{me}_pkts"),
        p_in=pl.col(f"{other}_pkts"),
        b_out=pl.col(f"{me}_bytes"),
        b_in=pl.col(f"{other}_bytes"),
    )


#: The dictionary of each key column (addresses share one).
_DICTIONARY = {
    "bucket": "bucket",
    "site": "site",
    "src_ip": "ip",
    "dst_ip": "ip",
    "ip": "ip",
    "dst_port": "dst_port",
    "proto": "proto",
}


class _Codes:
    """Dictionary codes of a batch's key columns, for grouping on integers.

    A value's code is its rank among the batch's distinct values of its dictionary
    (addresses share one, so client, server and device codes agree), so ordering by
    codes orders by values. A key's codes are packed into one integer (mixed radix,
    most significant column first) when the dictionaries' sizes allow, so a group-by
    hashes one integer instead of several text columns, and sorting the groups by it
    sorts them by bucket then key. Rows and sums are exactly those of grouping on the
    values themselves: the same rows fall in each group, in the same order.
    """

    def __init__(self, f: pl.DataFrame):
        ips = pl.concat([f.get_column("src_ip").unique(), f.get_column("dst_ip").unique()])
        self.values = {
            "ip": ips.unique().sort(),
            **{c: f.get_column(c).unique().sort() for c in ("bucket", "site", "dst_port", "proto")},
        }

    def encode(self, f: pl.DataFrame) -> pl.DataFrame:
        """``f`` with ``_c_<column>``: the code of each key column."""
        return f.with_columns(
            self._code(f.get_column(c), _DICTIONARY[c]).alias(f"_c_{c}")
            for c in ("bucket", "site", "src_ip", "dst_ip", "dst_port", "proto")
        )

    def _code(self, column: pl.Series, dictionary: str) -> pl.Series:
        table = self.values[dictionary].to_frame("v").with_row_index("_c")
        joined = column.to_frame("v").join(
            table, on="v", how="left", nulls_equal=True, maintain_order="left"
        )
        return joined.get_column("_c")

    def group(self, df: pl.DataFrame, key: tuple[str, ...], aggs: list[pl.Expr]) -> pl.DataFrame:
        """``df`` grouped by ``key`` (codes ``_c_<column>``), aggregated, sorted by key, with
        the key columns as values again."""
        sizes = [len(self.values[_DICTIONARY[k]]) for k in key]
        codes = [f"_c_{k}" for k in key]
        if math.prod(sizes) < 2**63:
            packed = pl.lit(0, pl.UInt64)
            for c, n in zip(codes, sizes, strict=True):
                packed = packed * pl.lit(n, pl.UInt64) + pl.col(c).cast(pl.UInt64)
            g = df.group_by(packed.alias("_g")).agg(*aggs).sort("_g")
            rest = g.get_column("_g")
            unpacked = {}
            for c, n in reversed(list(zip(codes, sizes, strict=True))):
                unpacked[c] = rest % n
                rest = rest // n
            g = g.drop("_g").with_columns(unpacked[c].alias(c) for c in codes)
        else:
            g = df.group_by(*codes).agg(*aggs).sort(*codes)
        return g.with_columns(
            self.values[_DICTIONARY[k]].gather(g.get_column(f"_c_{k}")).alias(k) for k in key
        ).drop(codes)


def _typed(df: pl.DataFrame, view: View) -> pl.DataFrame:
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
