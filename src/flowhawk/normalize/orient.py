"""Client/server orientation by port, for flows whose start was not observed.

When nobody saw who started a conversation (a capture that begins mid-stream, a
lone NetFlow record), the server is the side on the more "service-like" port:
a well-known service port, then a system port (< 1024), then a registered port
(< 49152), then an ephemeral one; on a tie, the lower port. ICMP is oriented by
message type: the sender of a request (echo, timestamp, ...) is the client.

For protocols without a handshake (UDP, ...), "who sent first" is weak evidence: a
capture may begin with a response. As Zeek does, such a flow is flipped when its
first sender is on a service or system port and the other side on an ephemeral one.
"""

from __future__ import annotations

import polars as pl

from flowhawk.schema import ORIENT_NONE, ORIENT_PORT, ORIENT_START

#: Server ports above 1023 that are common enough to name the server side.
SERVICE_PORTS = frozenset(
    {
        1080,
        1194,
        1433,
        1434,
        1521,
        1701,
        1723,
        1812,
        1813,
        1883,
        1900,
        2049,
        2082,
        2083,
        2181,
        2375,
        2376,
        2379,
        2380,
        3000,
        3128,
        3268,
        3269,
        3306,
        3389,
        3478,
        3702,
        4500,
        4840,
        5000,
        5060,
        5061,
        5222,
        5269,
        5353,
        5355,
        5432,
        5671,
        5672,
        5900,
        5938,
        5985,
        5986,
        6379,
        6443,
        6514,
        6660,
        6661,
        6662,
        6663,
        6664,
        6665,
        6666,
        6667,
        6668,
        6669,
        6697,
        7000,
        7001,
        8000,
        8008,
        8080,
        8081,
        8086,
        8088,
        8443,
        8883,
        8888,
        9000,
        9001,
        9030,
        9042,
        9050,
        9090,
        9092,
        9100,
        9200,
        9300,
        9418,
        9443,
        10000,
        11211,
        15672,
        20000,
        27017,
        44818,
        47808,
        51820,
    }
)

#: ICMP/ICMPv6 reply type -> request type (the request's sender is the client).
ICMP_REPLY_TO_REQUEST = {0: 8, 14: 13, 16: 15, 18: 17}
ICMP6_REPLY_TO_REQUEST = {129: 128, 131: 130, 136: 135}
_ICMP_REQUESTS = set(ICMP_REPLY_TO_REQUEST.values())
_ICMP6_REQUESTS = set(ICMP6_REPLY_TO_REQUEST.values())


def port_rank(port: pl.Expr) -> pl.Expr:
    """0 = named service, 1 = system port, 2 = registered, 3 = ephemeral (lower is more server)."""
    return (
        pl.when(port.is_in(list(SERVICE_PORTS)))
        .then(0)
        .when(port < 1024)
        .then(1)
        .when(port < 49152)
        .then(2)
        .otherwise(3)
    )


def is_icmp(proto: pl.Expr) -> pl.Expr:
    return proto.is_in([1, 58])


def icmp_reply_type(proto: pl.Expr, port: pl.Expr) -> pl.Expr:
    """True where an ICMP flow's type (in dst_port) is a reply."""
    itype = port // 256
    return ((proto == 1) & itype.is_in(list(ICMP_REPLY_TO_REQUEST))) | (
        (proto == 58) & itype.is_in(list(ICMP6_REPLY_TO_REQUEST))
    )


def icmp_request_port(proto: pl.Expr, port: pl.Expr) -> pl.Expr:
    """The dst_port of the matching request for reply types; unchanged otherwise."""
    itype = port // 256
    code = port % 256
    v4 = itype.replace_strict(ICMP_REPLY_TO_REQUEST, default=itype)
    v6 = itype.replace_strict(ICMP6_REPLY_TO_REQUEST, default=itype)
    return (
        pl.when(proto == 1)
        .then(v4 * 256 + code)
        .when(proto == 58)
        .then(v6 * 256 + code)
        .otherwise(port)
    ).cast(pl.Int32)


def should_swap(df_src_port: pl.Expr, df_dst_port: pl.Expr, proto: pl.Expr) -> pl.Expr:
    """True where the port rule says the current ``src`` is the server."""
    rs, rd = port_rank(df_src_port), port_rank(df_dst_port)
    by_port = (rs < rd) | ((rs == rd) & (df_src_port < df_dst_port))
    return pl.when(is_icmp(proto)).then(icmp_reply_type(proto, df_dst_port)).otherwise(by_port)


SWAP_PAIRS = (
    ("src_ip", "dst_ip"),
    ("src_port", "dst_port"),
    ("src_pkts", "dst_pkts"),
    ("src_bytes", "dst_bytes"),
    ("src_tcp_flags", "dst_tcp_flags"),
    ("src_mac", "dst_mac"),
)


def swap_where(df: pl.DataFrame, mask: pl.Expr) -> pl.DataFrame:
    """Exchange src and dst columns on the rows where ``mask`` holds."""
    exprs = []
    for a, b in SWAP_PAIRS:
        if a in df.columns and b in df.columns:
            exprs.append(pl.when(mask).then(pl.col(b)).otherwise(pl.col(a)).alias(a))
            exprs.append(pl.when(mask).then(pl.col(a)).otherwise(pl.col(b)).alias(b))
    return df.with_columns(exprs)


def orient_by_port(df: pl.DataFrame) -> pl.DataFrame:
    """Orient rows whose ``orient`` is null by the port rule; record how each was decided."""
    weak = (
        (pl.col("orient") == ORIENT_START)
        & ~pl.col("proto").is_in([1, 6, 58])
        & (port_rank(pl.col("src_port")) <= 1)
        & (port_rank(pl.col("dst_port")) == 3)
    )
    df = df.with_columns(orient=pl.when(weak).then(None).otherwise(pl.col("orient")))
    pending = pl.col("orient").is_null()
    swap = pending & should_swap(pl.col("src_port"), pl.col("dst_port"), pl.col("proto"))
    df = df.with_columns(_swap=swap.fill_null(False))
    df = swap_where(df, pl.col("_swap"))
    # ICMP replies seen alone become the request's flow seen from the requester.
    fix_icmp = pl.col("_swap") & is_icmp(pl.col("proto"))
    decided = (
        pl.when(pending & (pl.col("src_port") == pl.col("dst_port")) & ~is_icmp(pl.col("proto")))
        .then(pl.lit(ORIENT_NONE))
        .when(pending)
        .then(pl.lit(ORIENT_PORT))
        .otherwise(pl.col("orient"))
    )
    # (the swap moved the ICMP type/code into src_port: put it back, as the request's type)
    return df.with_columns(
        dst_port=pl.when(fix_icmp)
        .then(icmp_request_port(pl.col("proto"), pl.col("src_port")))
        .otherwise(pl.col("dst_port")),
        src_port=pl.when(fix_icmp).then(pl.lit(0, pl.Int32)).otherwise(pl.col("src_port")),
        orient=decided,
    ).drop("_swap")
