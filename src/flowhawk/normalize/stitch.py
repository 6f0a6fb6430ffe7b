"""Stitching unidirectional records (NetFlow, nfdump, sFlow, Suricata netflow) into biflows.

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

Speed: only the key columns are sorted (on a 64-bit hash of the key; keys whose
hashes collide, about n**2 / 2**65 pairs, would be interleaved and cut into shorter
sessions); one compiled pass over the sorted records cuts sessions and sums each side;
text columns are then gathered once per session.
"""

from __future__ import annotations

import numpy as np
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
LINEAGE = {"input": pl.String, "flow_id": pl.String, "biflow_id": pl.String}

# Columns of the per-session array the kernel fills.
(
    S_FIRST,
    S_LAST,
    S_TS0,
    S_TS1,
    S_END,
    S_SAMPLING,
    S_IDX0,
    S_IDX1,
    S_FTS0,
    S_FTS1,
    S_PKTS0,
    S_PKTS1,
    S_BYTES0,
    S_BYTES1,
    S_FLAGS0,
    S_FLAGS1,
    S_FFLAGS0,
    S_FFLAGS1,
    S_REQ0,
    S_REQ1,
    S_VLAN,
    S_SERVICE,
    S_EXPORTER,
    S_STATE,
) = range(24)
_NS = 24


def stitch(
    uni: pl.DataFrame, gap_seconds: float = 60.0, lineage: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Biflows (raw columns, ``uni`` False) and lineage ``(input, flow_id, biflow_id)``.

    Without ``lineage`` (live collection: no input records to score) the lineage table
    is empty.
    """
    if uni.height == 0:
        return uni, pl.DataFrame(schema=LINEAGE)
    icmp = pl.col("proto").is_in([1, 58])
    key_port = pl.when(icmp).then(icmp_request_port(pl.col("proto"), pl.col("dst_port")))
    lo_first = (pl.col("src_ip") < pl.col("dst_ip")) | (
        (pl.col("src_ip") == pl.col("dst_ip")) & (pl.col("src_port") <= pl.col("dst_port"))
    )
    itype = pl.col("dst_port") // 256
    request = ((pl.col("proto") == 1) & itype.is_in(_REQUESTS_V4)) | (
        (pl.col("proto") == 58) & itype.is_in(_REQUESTS_V6)
    )
    keys = uni.select(
        _side=pl.when(lo_first).then(0).otherwise(1).cast(pl.Int64),
        _a_ip=pl.when(lo_first).then(pl.col("src_ip")).otherwise(pl.col("dst_ip")),
        _b_ip=pl.when(lo_first).then(pl.col("dst_ip")).otherwise(pl.col("src_ip")),
        _a_port=key_port.otherwise(
            pl.when(lo_first).then(pl.col("src_port")).otherwise(pl.col("dst_port"))
        ).cast(pl.Int32),
        _b_port=key_port.otherwise(
            pl.when(lo_first).then(pl.col("dst_port")).otherwise(pl.col("src_port"))
        ).cast(pl.Int32),
        _request=(icmp & request),
    )
    key = pl.concat([uni.select("input", "proto"), keys], how="horizontal").select(
        pl.struct("input", "proto", "_a_ip", "_a_port", "_b_ip", "_b_port").hash(0x57)
    )
    start = uni.get_column("ts_start").dt.epoch("us").to_numpy()
    side = keys.get_column("_side").to_numpy()
    hashed = key.to_series().to_numpy()
    order = np.lexsort((side, start, hashed))  # by key, then start, then side
    cols = [
        hashed,
        start,
        uni.get_column("ts_end").dt.epoch("us").to_numpy(),
        side,
        uni.get_column("src_pkts").to_numpy(),
        uni.get_column("src_bytes").to_numpy(),
        uni.get_column("src_tcp_flags").fill_null(0).cast(pl.Int64).to_numpy(),
        keys.get_column("_request").to_numpy(),
        uni.get_column("sampling").cast(pl.Int64).to_numpy(),
        *(
            uni.get_column(c).is_not_null().to_numpy()
            for c in ("vlan", "service", "exporter", "state")
        ),
    ]
    # The pass reads every column in key order: gathered first, its reads are sequential.
    record_session, sessions = _kernel()(
        order, *(c[order] for c in cols), int(gap_seconds * 1_000_000)
    )
    biflows = _assemble(uni, keys, sessions)
    if not lineage:
        return biflows, pl.DataFrame(schema=LINEAGE)
    records = uni.select(
        "input",
        "flow_id",
        biflow_id=uni.get_column("flow_id").gather(sessions[record_session, S_FIRST]),
    )
    return biflows, records


def _assemble(uni: pl.DataFrame, keys: pl.DataFrame, s: np.ndarray) -> pl.DataFrame:
    """Biflow columns from the per-session aggregates (client side chosen here)."""
    proto = uni.get_column("proto").to_numpy()[s[:, S_FIRST]]
    has0, has1 = s[:, S_IDX0] >= 0, s[:, S_IDX1] >= 0
    both = has0 & has1
    earlier0 = both & (s[:, S_FTS0] < s[:, S_FTS1])
    earlier1 = both & (s[:, S_FTS1] < s[:, S_FTS0])
    is_icmp, tcp = np.isin(proto, (1, 58)), proto == 6
    syn0 = (s[:, S_FFLAGS0] & _SYN) != 0
    syn1 = (s[:, S_FFLAGS1] & _SYN) != 0
    # A lone TCP record with SYN but no ACK is a connection attempt: its sender started.
    lone_syn0 = ~has1 & ((s[:, S_FLAGS0] & (_SYN | _ACK)) == _SYN)
    lone_syn1 = ~has0 & ((s[:, S_FLAGS1] & (_SYN | _ACK)) == _SYN)
    req0, req1 = s[:, S_REQ0] > 0, s[:, S_REQ1] > 0
    client = np.select(
        [
            is_icmp & req0 & ~req1,
            is_icmp & req1 & ~req0,
            tcp & ((earlier0 & syn0) | lone_syn0),
            tcp & ((earlier1 & syn1) | lone_syn1),
            ~tcp & ~is_icmp & earlier0,
            ~tcp & ~is_icmp & earlier1,
        ],
        [0, 1, 0, 1, 0, 1],
        default=-1,
    )
    decided = client >= 0
    first_side = keys.get_column("_side").to_numpy()[s[:, S_FIRST]]  # side of the earliest
    client = np.where(decided, client, first_side)
    c0 = client == 0
    first = pl.Series(s[:, S_FIRST])

    def pick(a: np.ndarray, b: np.ndarray, client_side: bool) -> np.ndarray:
        return np.where(c0 if client_side else ~c0, a, b)

    def take(column: str, idx: np.ndarray) -> pl.Series:
        """``uni[column]`` at ``idx`` (null where idx < 0)."""
        col = uni.get_column(column)
        if col.null_count() == col.len():  # common: NetFlow has no MACs, service, state
            return pl.repeat(None, len(idx), dtype=col.dtype, eager=True)
        got = col.gather(pl.Series(np.maximum(idx, 0)))
        return got.set(pl.Series(idx < 0), None) if (idx < 0).any() else got  # type: ignore[arg-type]

    k = keys.select("_a_ip", "_b_ip", "_a_port", "_b_port")[first]
    a_port, b_port = k.get_column("_a_port").to_numpy(), k.get_column("_b_port").to_numpy()
    flags0 = np.where(has0, s[:, S_FLAGS0], -1)
    flags1 = np.where(has1, s[:, S_FLAGS1], -1)
    mac_col = "src_mac"
    out = pl.DataFrame(
        {
            "ts_start": pl.Series(s[:, S_TS0]).cast(pl.Datetime("us", "UTC")),
            "ts_end": pl.Series(s[:, S_END]).cast(pl.Datetime("us", "UTC")),
            "src_ip": pl.select(
                pl.when(pl.Series(c0)).then(k["_a_ip"]).otherwise(k["_b_ip"])
            ).to_series(),
            "dst_ip": pl.select(
                pl.when(pl.Series(c0)).then(k["_b_ip"]).otherwise(k["_a_ip"])
            ).to_series(),
            "src_port": np.where(is_icmp, 0, pick(a_port, b_port, True)).astype(np.int32),
            "dst_port": np.where(is_icmp, a_port, pick(b_port, a_port, True)).astype(np.int32),
            "proto": proto,
            "src_pkts": pick(s[:, S_PKTS0], s[:, S_PKTS1], True),
            "src_bytes": pick(s[:, S_BYTES0], s[:, S_BYTES1], True),
            "dst_pkts": pick(s[:, S_PKTS0], s[:, S_PKTS1], False),
            "dst_bytes": pick(s[:, S_BYTES0], s[:, S_BYTES1], False),
            "src_tcp_flags": pick(flags0, flags1, True),
            "dst_tcp_flags": pick(flags0, flags1, False),
            "vlan": take("vlan", s[:, S_VLAN]),
            "src_mac": take(mac_col, pick(s[:, S_IDX0], s[:, S_IDX1], True)),
            "dst_mac": take(mac_col, pick(s[:, S_IDX0], s[:, S_IDX1], False)),
            "service": take("service", s[:, S_SERVICE]),
            "state": take("state", s[:, S_STATE]),
            "orient": pl.select(
                pl.when(pl.Series(decided)).then(pl.lit(ORIENT_START)).otherwise(None)
            ).to_series(),
            "uni": np.zeros(len(s), dtype=bool),
            "sampling": s[:, S_SAMPLING].astype(np.int32),
            "exporter": take("exporter", s[:, S_EXPORTER]),
            "input": uni.get_column("input").gather(first),
            "flow_id": uni.get_column("flow_id").gather(first),
        }
    )
    return out.with_columns(
        pl.col("proto").cast(pl.Int16),
        pl.col("src_tcp_flags", "dst_tcp_flags").replace(-1, None).cast(pl.Int16),
    )


_KERNEL = None


def _kernel():  # type: ignore[no-untyped-def]
    """The compiled session pass (numba, compiled on first use and cached on disk)."""
    global _KERNEL
    if _KERNEL is None:
        from flowhawk.jit import numba

        @numba.njit(cache=True, nogil=True)
        def sessions_of(
            order,
            key,
            start,
            end,
            side,
            pkts,
            nbytes,
            flags,
            request,
            sampling,
            has_vlan,
            has_service,
            has_exporter,
            has_state,
            gap,
        ):  # type: ignore[no-untyped-def]
            n = order.shape[0]
            record_session = np.empty(n, np.int64)
            out = np.empty((n, _NS), np.int64)
            s = -1
            latest = 0
            for j in range(n):
                i = order[j]  # the record's row; its values are at j
                if j == 0 or key[j] != key[j - 1] or start[j] > latest + gap:
                    s += 1
                    latest = end[j]
                    row = out[s]
                    row[:] = 0
                    row[S_FIRST] = i
                    row[S_TS0] = start[j]
                    row[S_END] = end[j]
                    row[S_IDX0] = -1
                    row[S_IDX1] = -1
                    row[S_VLAN] = -1
                    row[S_SERVICE] = -1
                    row[S_EXPORTER] = -1
                    row[S_STATE] = -1
                row = out[s]
                if end[j] > latest:
                    latest = end[j]
                if end[j] > row[S_END]:
                    row[S_END] = end[j]
                row[S_LAST] = i
                if sampling[j] > row[S_SAMPLING]:
                    row[S_SAMPLING] = sampling[j]
                d = side[j]
                if row[S_IDX0 + d] < 0:
                    row[S_IDX0 + d] = i
                    row[S_FTS0 + d] = start[j]
                    row[S_FFLAGS0 + d] = flags[j]
                row[S_PKTS0 + d] += pkts[j]
                row[S_BYTES0 + d] += nbytes[j]
                row[S_FLAGS0 + d] |= flags[j]
                if request[j]:
                    row[S_REQ0 + d] = 1
                if has_vlan[j] and row[S_VLAN] < 0:
                    row[S_VLAN] = i
                if has_service[j] and row[S_SERVICE] < 0:
                    row[S_SERVICE] = i
                if has_exporter[j] and row[S_EXPORTER] < 0:
                    row[S_EXPORTER] = i
                if has_state[j]:
                    row[S_STATE] = i  # the latest state wins
                record_session[i] = s
            return record_session, out[: s + 1].copy()

        _KERNEL = sessions_of
    return _KERNEL
