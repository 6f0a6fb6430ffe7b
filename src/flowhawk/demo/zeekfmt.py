"""Writing raw flows as a Zeek conn.log (TSV), the format most flow users know."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.schema import proto_name

FIELDS = [
    "ts",
    "uid",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "service",
    "duration",
    "orig_bytes",
    "resp_bytes",
    "conn_state",
    "local_orig",
    "local_resp",
    "missed_bytes",
    "history",
    "orig_pkts",
    "orig_ip_bytes",
    "resp_pkts",
    "resp_ip_bytes",
    "tunnel_parents",
]
TYPES = [
    "time",
    "string",
    "addr",
    "port",
    "addr",
    "port",
    "enum",
    "string",
    "interval",
    "count",
    "count",
    "string",
    "bool",
    "bool",
    "count",
    "string",
    "count",
    "count",
    "count",
    "count",
    "set[string]",
]
_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a well-spread 64-bit value per input."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uids(n: int, seed: str) -> pl.Series:
    """``n`` Zeek-style connection uids ("C" + 17 base-62 characters), deterministic in seed."""
    salt = np.uint64(int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "big"))
    idx = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        first = _mix(idx ^ salt)
        words = [first, _mix(first)]
    alphabet = np.frombuffer(_B62.encode(), dtype=np.uint8)
    chars = np.empty((n, 18), dtype=np.uint8)
    chars[:, 0] = ord("C")
    for j in range(17):
        w = words[0] if j < 10 else words[1]
        chars[:, j + 1] = alphabet[(w % np.uint64(62)).astype(np.intp)]
        if j < 10:
            words[0] = w // np.uint64(62)
        else:
            words[1] = w // np.uint64(62)
    return pl.Series(chars.view("S18").ravel().astype(str))


#: ICMP message type -> the type Zeek logs in ``id.resp_p`` for request/reply pairs.
_ICMP_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_COUNTERPART = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131}
_ICMP6_COUNTERPART |= {131: 130, 139: 140, 140: 139, 144: 145, 145: 144}


def zeek_ports(table: pa.Table) -> pa.Table:
    """ICMP rows (port = type * 256 + code) as Zeek logs them: the type in ``id.orig_p``
    and, in ``id.resp_p``, the counterpart type of request/reply messages, else the code."""
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    icmp = pl.col("proto").is_in([1, 58])
    kind, code = pl.col("dst_port") // 256, pl.col("dst_port") % 256
    other4 = kind.replace_strict(_ICMP_COUNTERPART, default=None)
    other6 = kind.replace_strict(_ICMP6_COUNTERPART, default=None)
    other = pl.when(pl.col("proto") == 1).then(other4).otherwise(other6)
    df = df.with_columns(
        src_port=pl.when(icmp).then(kind).otherwise(pl.col("src_port")),
        dst_port=pl.when(icmp).then(pl.coalesce(other, code)).otherwise(pl.col("dst_port")),
    )
    return df.to_arrow().cast(table.schema)


def write_conn_log(flows: pa.Table, path: Path, seed: str = "flowhawk") -> None:
    """Write ``flows`` (raw schema) as conn.log; IP bytes are counted with 40-byte headers."""
    df = pl.from_arrow(zeek_ports(flows))
    assert isinstance(df, pl.DataFrame)
    protos = {p: proto_name(p) for p in df.get_column("proto").unique().to_list()}
    hdr = pl.when(pl.col("proto") == 6).then(40).otherwise(28)
    out = df.select(
        ts=pl.concat_str(
            [
                (pl.col("ts_start").dt.epoch("us") // 1_000_000).cast(pl.String),
                pl.lit("."),
                (pl.col("ts_start").dt.epoch("us") % 1_000_000).cast(pl.String).str.zfill(6),
            ]
        ),
        uid=uids(df.height, seed),
        orig_h=pl.col("src_ip"),
        orig_p=pl.col("src_port"),
        resp_h=pl.col("dst_ip"),
        resp_p=pl.col("dst_port"),
        proto=pl.col("proto").replace_strict(protos, return_dtype=pl.String),
        service=pl.col("service").fill_null("-"),
        duration=((pl.col("ts_end") - pl.col("ts_start")).dt.total_microseconds() / 1e6)
        .round(6)
        .cast(pl.String),
        orig_bytes=(pl.col("src_bytes") - pl.col("src_pkts") * hdr).clip(0),
        resp_bytes=(pl.col("dst_bytes") - pl.col("dst_pkts") * hdr).clip(0),
        conn_state=pl.col("state").fill_null("OTH"),
        local_orig=pl.lit("-"),
        local_resp=pl.lit("-"),
        missed_bytes=pl.lit(0),
        history=pl.when(pl.col("proto") == 6)
        .then(pl.when(pl.col("dst_pkts") > 0).then(pl.lit("ShADadFf")).otherwise(pl.lit("S")))
        .otherwise(pl.when(pl.col("dst_pkts") > 0).then(pl.lit("Dd")).otherwise(pl.lit("D"))),
        orig_pkts=pl.col("src_pkts"),
        orig_ip_bytes=pl.col("src_bytes"),
        resp_pkts=pl.col("dst_pkts"),
        resp_ip_bytes=pl.col("dst_bytes"),
        tunnel_parents=pl.lit("(empty)"),
    )
    start = df.get_column("ts_start").min()
    opened = start.strftime("%Y-%m-%d-%H-%M-%S") if start else "1970-01-01-00-00-00"
    header = "\n".join(
        [
            "#separator \\x09",
            "#set_separator\t,",
            "#empty_field\t(empty)",
            "#unset_field\t-",
            "#path\tconn",
            f"#open\t{opened}",
            "#fields\t" + "\t".join(FIELDS),
            "#types\t" + "\t".join(TYPES),
        ]
    )
    with open(path, "w") as fh:
        fh.write(header + "\n")
        out.write_csv(fh, separator="\t", include_header=False, quote_style="never")
        fh.write(f"#close\t{opened}\n")
