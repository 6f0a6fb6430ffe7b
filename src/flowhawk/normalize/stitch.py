"""Stitching unidirectional records (NetFlow, nfdump, Suricata netflow) into biflows.

Records of one input are grouped by their direction-free 5-tuple (ICMP replies
keyed as their request) and cut into sessions: a record joins the session of the
previous records of its key when it starts no later than ``gap`` after the
latest end seen so far, so a long connection exported in active-timeout slices,
and the two directions of one exchange, become one flow (as ``nfdump -B`` does).

The client is the side that demonstrably started: the sender of an ICMP request,
the TCP side whose first record starts strictly earlier with a SYN, or for other
protocols the side that starts strictly earlier. Otherwise orientation is left to
the port rule (:mod:`flowhawk.normalize.orient`).

Every input record keeps a line in the lineage table (record id -> flow id), so
scores can be joined back to the records a user gave.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from flowhawk.normalize.orient import (
    ICMP6_REPLY_TO_REQUEST,
    ICMP_REPLY_TO_REQUEST,
    icmp_request_port,
)
from flowhawk.schema import ORIENT_START

_SYN, _ACK = 0x02, 0x10
_REQUESTS_V4 = list(ICMP_REPLY_TO_REQUEST.values())
_REQUESTS_V6 = list(ICMP6_REPLY_TO_REQUEST.values())


def stitch(uni: pl.DataFrame, gap_seconds: float = 60.0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Biflows (raw columns, ``uni`` False) and lineage ``(input, flow_id, biflow_id)``."""
    if uni.height == 0:
        return uni, pl.DataFrame(
            schema={"input": pl.String, "flow_id": pl.String, "biflow_id": pl.String}
        )
    icmp = pl.col("proto").is_in([1, 58])
    key_port = pl.when(icmp).then(icmp_request_port(pl.col("proto"), pl.col("dst_port")))
    lo_first = (pl.col("src_ip") < pl.col("dst_ip")) | (
        (pl.col("src_ip") == pl.col("dst_ip")) & (pl.col("src_port") <= pl.col("dst_port"))
    )
    itype = pl.col("dst_port") // 256
    request = ((pl.col("proto") == 1) & itype.is_in(_REQUESTS_V4)) | (
        (pl.col("proto") == 58) & itype.is_in(_REQUESTS_V6)
    )
    df = uni.with_columns(
        _side=pl.when(lo_first).then(0).otherwise(1).cast(pl.Int8),
        _a_ip=pl.when(lo_first).then(pl.col("src_ip")).otherwise(pl.col("dst_ip")),
        _b_ip=pl.when(lo_first).then(pl.col("dst_ip")).otherwise(pl.col("src_ip")),
        _a_port=key_port.otherwise(
            pl.when(lo_first).then(pl.col("src_port")).otherwise(pl.col("dst_port"))
        ),
        _b_port=key_port.otherwise(
            pl.when(lo_first).then(pl.col("dst_port")).otherwise(pl.col("src_port"))
        ),
        _flags=pl.col("src_tcp_flags").fill_null(0),
        _request=icmp & request,
    )
    key = ["input", "proto", "_a_ip", "_a_port", "_b_ip", "_b_port"]
    df = df.sort([*key, "ts_start", "_side"])
    gap = timedelta(seconds=gap_seconds)
    prev_end = pl.col("ts_end").cum_max().shift(1).over(key)
    df = df.with_columns(_new=(prev_end.is_null() | (pl.col("ts_start") > prev_end + gap)))
    df = df.with_columns(_session=pl.col("_new").cum_sum())

    sides = df.group_by(["_session", "_side"]).agg(
        first_ts=pl.col("ts_start").min(),
        last_ts=pl.col("ts_end").max(),
        pkts=pl.col("src_pkts").sum(),
        bytes=pl.col("src_bytes").sum(),
        flags=pl.col("_flags").bitwise_or(),
        first_flags=pl.col("_flags").first(),
        requests=pl.col("_request").any(),
        mac=pl.col("src_mac").drop_nulls().first(),
    )
    s0 = sides.filter(pl.col("_side") == 0).drop("_side")
    s1 = sides.filter(pl.col("_side") == 1).drop("_side")
    firsts = df.group_by("_session").agg(
        pl.col("flow_id").first().alias("biflow_id"),
        pl.col("_side").first().alias("_first_side"),
        pl.col("input").first(),
        pl.col("proto").first(),
        pl.col("_a_ip").first(),
        pl.col("_b_ip").first(),
        pl.col("_a_port").first(),
        pl.col("_b_port").first(),
        pl.col("ts_start").min(),
        pl.col("ts_end").max(),
        pl.col("vlan").drop_nulls().first(),
        pl.col("service").drop_nulls().first(),
        pl.col("state").drop_nulls().last(),
        pl.col("sampling").max(),
        pl.col("exporter").drop_nulls().first(),
    )
    s = firsts.join(s0, on="_session", how="left", suffix="_0").join(
        s1.rename({c: f"{c}_1" for c in s1.columns if c != "_session"}), on="_session", how="left"
    )
    s = s.rename({c: f"{c}_0" for c in s0.columns if c != "_session"})
    s = _choose_client(s)
    biflows = _assemble(s)
    lineage = df.join(s.select("_session", "biflow_id"), on="_session").select(
        "input", "flow_id", "biflow_id"
    )
    return biflows, lineage


def _choose_client(s: pl.DataFrame) -> pl.DataFrame:
    """Add ``_client`` (0 or 1: which side is the client) and ``_decided`` (start observed)."""
    both = pl.col("first_ts_0").is_not_null() & pl.col("first_ts_1").is_not_null()
    earlier0 = both & (pl.col("first_ts_0") < pl.col("first_ts_1"))
    earlier1 = both & (pl.col("first_ts_1") < pl.col("first_ts_0"))
    icmp = pl.col("proto").is_in([1, 58])
    tcp = pl.col("proto") == 6
    syn0 = (pl.col("first_flags_0").fill_null(0) & _SYN) != 0
    syn1 = (pl.col("first_flags_1").fill_null(0) & _SYN) != 0
    # A lone TCP record with SYN but no ACK is a connection attempt: its sender started.
    lone_syn0 = pl.col("first_ts_1").is_null() & (
        (pl.col("flags_0").fill_null(0) & (_SYN | _ACK)) == _SYN
    )
    lone_syn1 = pl.col("first_ts_0").is_null() & (
        (pl.col("flags_1").fill_null(0) & (_SYN | _ACK)) == _SYN
    )
    req0 = pl.col("requests_0").fill_null(False)
    req1 = pl.col("requests_1").fill_null(False)
    client = (
        pl.when(icmp & req0 & ~req1)
        .then(0)
        .when(icmp & req1 & ~req0)
        .then(1)
        .when(tcp & ((earlier0 & syn0) | lone_syn0))
        .then(0)
        .when(tcp & ((earlier1 & syn1) | lone_syn1))
        .then(1)
        .when(~tcp & ~icmp & earlier0)
        .then(0)
        .when(~tcp & ~icmp & earlier1)
        .then(1)
        .otherwise(None)
    )
    return s.with_columns(_client=client).with_columns(
        _decided=pl.col("_client").is_not_null(),
        _client=pl.col("_client").fill_null(pl.col("_first_side")),
    )


def _assemble(s: pl.DataFrame) -> pl.DataFrame:
    c0 = pl.col("_client") == 0

    def side(name: str, client: bool) -> pl.Expr:
        a, b = pl.col(f"{name}_0"), pl.col(f"{name}_1")
        return pl.when(c0 if client else ~c0).then(a).otherwise(b)

    def ip(client: bool) -> pl.Expr:
        return pl.when(c0 if client else ~c0).then(pl.col("_a_ip")).otherwise(pl.col("_b_ip"))

    icmp = pl.col("proto").is_in([1, 58])
    port_a = pl.when(c0).then(pl.col("_a_port")).otherwise(pl.col("_b_port"))
    port_b = pl.when(c0).then(pl.col("_b_port")).otherwise(pl.col("_a_port"))
    return s.select(
        ts_start=pl.col("ts_start"),
        ts_end=pl.col("ts_end"),
        src_ip=ip(True),
        dst_ip=ip(False),
        src_port=pl.when(icmp).then(pl.lit(0)).otherwise(port_a).cast(pl.Int32),
        dst_port=pl.when(icmp).then(pl.col("_a_port")).otherwise(port_b).cast(pl.Int32),
        proto=pl.col("proto"),
        src_pkts=side("pkts", True).fill_null(0),
        src_bytes=side("bytes", True).fill_null(0),
        dst_pkts=side("pkts", False).fill_null(0),
        dst_bytes=side("bytes", False).fill_null(0),
        src_tcp_flags=side("flags", True).cast(pl.Int16),
        dst_tcp_flags=side("flags", False).cast(pl.Int16),
        vlan=pl.col("vlan"),
        src_mac=side("mac", True),
        dst_mac=side("mac", False),
        service=pl.col("service"),
        state=pl.col("state"),
        orient=pl.when(pl.col("_decided")).then(pl.lit(ORIENT_START)).otherwise(None),
        uni=pl.lit(False),
        sampling=pl.col("sampling"),
        exporter=pl.col("exporter"),
        input=pl.col("input"),
        flow_id=pl.col("biflow_id"),
    )
