"""N6's reading of flows: which flows can be scan attempts, and how much each one weighs.

A scanner's attempts mostly fail: the address is not in use, the port is closed or
filtered. A busy client's connections mostly succeed. Each attempt therefore gets a
weight by what came back:

* ``1.0`` *unanswered or rejected*: the server sent nothing, the source reported a
  failed handshake (Zeek ``S0``, ``REJ``, ``RSTOS0``, ``RSTRH``, ``SH``, ``SHR``;
  Argus ``REQ``, ``INT``), or the TCP flags show the client's SYN never got a SYN-ACK;
  an ICMP request with no reply;
* ``0.5`` *probe*: answered, but nothing was exchanged: a TCP handshake at most (the
  client sent no more than 4 packets, the server no more than 2, and no packet averaged
  more than a header's bytes, 60 for IPv4 and 80 for IPv6), or an answered ICMP request
  (a ping sweep of live hosts);
* ``0.0`` *success*: a real exchange (data, or any answered UDP flow). Successes never
  count as targets; they only dilute the evidence of a source (see :mod:`scan_windows`).

Flows are oriented client to server, so responses are not attempts; ICMP counts only
for request types (echo, timestamp, information, address mask; ICMPv6 echo), so the
unreachable messages targets send back are not attempts either. Destinations in the
local scope (multicast, broadcast, loopback, link-local) are left out: discovery
protocols talk to them all the time.
"""

from __future__ import annotations

import polars as pl

from flowhawk import netaddr
from flowhawk.netaddr import NetworkSet

FAILED = 1.0
PROBE = 0.5
SUCCESS = 0.0

#: Connection states (Zeek conn_state, Argus State) of attempts the server never accepted.
FAILED_STATES = ("S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "REQ", "INT")
#: ICMP request types (in ``dst_port`` as ``type * 256 + code``) by protocol number.
ICMP_REQUESTS = {1: (8, 13, 15, 17), 58: (128,)}
_SYN, _RST, _ACK = 0x02, 0x04, 0x10

#: Columns of the attempt rows :func:`attempts` returns.
ATTEMPT_COLUMNS = (
    "site",
    "src_ip",
    "dst_ip",
    "dst_port",
    "proto",
    "direction",
    "src_internal",
    "dst_internal",
    "t",  # ts_start, epoch microseconds
    "te",  # ts_end, epoch microseconds
    "w",  # attempt weight: FAILED, PROBE or SUCCESS
    "_i",  # row number in the batch (event-time order)
)


def _icmp_request(proto: pl.Expr, port: pl.Expr) -> pl.Expr:
    itype = port // 256
    return pl.any_horizontal(
        [(proto == p) & itype.is_in(list(types)) for p, types in ICMP_REQUESTS.items()]
    )


def weight(flows: pl.DataFrame) -> pl.Expr:
    """The attempt weight of each flow (FAILED, PROBE or SUCCESS); nulls read as zeros."""
    schema = flows.schema
    proto = pl.col("proto")
    src_pkts = pl.col("src_pkts").fill_null(0)
    dst_pkts = pl.col("dst_pkts").fill_null(0)
    tcp = proto == 6
    icmp = proto.is_in(list(ICMP_REQUESTS))
    failed = dst_pkts <= 0
    if "state" in schema:
        failed = failed | pl.col("state").is_in(list(FAILED_STATES)).fill_null(False)
    if "src_tcp_flags" in schema and "dst_tcp_flags" in schema:
        src_flags = pl.col("src_tcp_flags").cast(pl.Int32)
        dst_flags = pl.col("dst_tcp_flags").cast(pl.Int32)
        no_synack = (dst_flags & (_SYN | _ACK)) != (_SYN | _ACK)
        failed = failed | (tcp & ((src_flags & _SYN) != 0) & no_synack).fill_null(False)
    header = pl.when(pl.col("dst_ip").str.contains(":")).then(80).otherwise(60)
    no_payload = (pl.col("src_bytes").fill_null(0) <= header * src_pkts) & (
        pl.col("dst_bytes").fill_null(0) <= header * dst_pkts
    )
    probe = icmp | (tcp & (src_pkts <= 4) & (dst_pkts <= 2) & no_payload)
    return (
        pl.when(failed)
        .then(pl.lit(FAILED))
        .when(probe)
        .then(pl.lit(PROBE))
        .otherwise(pl.lit(SUCCESS))
    )


def attempts(flows: pl.DataFrame, local_scope: NetworkSet) -> pl.DataFrame:
    """The flows that can be scan attempts (TCP and UDP with a port, ICMP requests), as
    :data:`ATTEMPT_COLUMNS` rows in batch order; rows with missing keys are skipped."""
    if flows.height == 0:
        return _empty()
    df = flows.with_row_index("_i").with_columns(
        pl.col("_i").cast(pl.Int64),
        pl.col("site").fill_null(""),
        pl.col("proto").cast(pl.Int16),
        pl.col("dst_port").cast(pl.Int32),
        pl.col("src_internal").fill_null(False),
        pl.col("dst_internal").fill_null(False),
        pl.col("direction").fill_null(""),
    )
    proto, port = pl.col("proto"), pl.col("dst_port")
    eligible = (
        ((proto.is_in([6, 17]) & (port > 0)) | _icmp_request(proto, port))
        & pl.col("src_ip").is_not_null()
        & pl.col("dst_ip").is_not_null()
        & (pl.col("src_ip") != pl.col("dst_ip"))
        & pl.col("ts_start").is_not_null()
    )
    df = df.filter(eligible.fill_null(False))
    if df.height == 0:
        return _empty()
    if len(local_scope):
        dsts = df.get_column("dst_ip").unique()
        hi, lo, ok = netaddr.parse(dsts)
        scoped = dsts.filter(pl.Series(ok & local_scope.contains(hi, lo)))
        df = df.filter(~pl.col("dst_ip").is_in(scoped.implode()))
    return df.select(
        "site",
        "src_ip",
        "dst_ip",
        "dst_port",
        "proto",
        "direction",
        "src_internal",
        "dst_internal",
        t=pl.col("ts_start").dt.epoch("us"),
        te=pl.coalesce(pl.col("ts_end"), pl.col("ts_start")).dt.epoch("us"),
        w=weight(df),
        _i="_i",
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "site": pl.String,
            "src_ip": pl.String,
            "dst_ip": pl.String,
            "dst_port": pl.Int32,
            "proto": pl.Int16,
            "direction": pl.String,
            "src_internal": pl.Boolean,
            "dst_internal": pl.Boolean,
            "t": pl.Int64,
            "te": pl.Int64,
            "w": pl.Float64,
            "_i": pl.Int64,
        }
    )
