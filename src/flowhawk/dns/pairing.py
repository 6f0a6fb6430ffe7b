"""Queries paired with their responses: DNS messages to transactions, in columns.

A transaction's key is (client, client port, server, server port, protocol,
transaction id); the client of a response is its destination. Messages of one key
are put in time order and a response is paired with the message just before it when
that is a query of the same key at most :data:`PAIR_TIMEOUT` earlier. So a
retransmitted query leaves its first copy unanswered and pairs the second, a
duplicated response makes the second copy an unsolicited response, and a reused
transaction id later in the same conversation starts a new transaction. Every query
and every unpaired response is one row, as in Zeek's dns.log.

:class:`Pairer` does this incrementally for a capture read in windows: once the
newest message is :data:`PAIR_TIMEOUT` past a transaction's start, nothing later can
join it, so it is emitted and only the last :data:`PAIR_TIMEOUT` of messages is
kept. The result does not depend on the windows (for a capture in time order).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from flowhawk.dns import schema

#: Longest wait for a response, µs; a later response is unsolicited.
PAIR_TIMEOUT = 60_000_000

_KEY = ["_c_ip", "_c_port", "_s_ip", "_s_port", "proto", "trans_id"]
#: Message columns taken from the response of a pair.
_FROM_RESPONSE = ["rcode", "aa", "tc", "ra", "answers", "ttls", "answer_types"]


def pair(messages: pl.DataFrame, input_name: str) -> pl.DataFrame:
    """Transactions (DNS_SCHEMA columns, ``ts`` as int µs) of a message frame.

    ``messages`` has ``ts`` (int µs), ``src_ip``, ``src_port``, ``dst_ip``, ``dst_port``,
    ``proto``, ``response`` (bool), ``trans_id``, ``query``, ``qclass``, ``qtype``,
    ``rcode``, ``aa``, ``tc``, ``rd``, ``ra``, ``answers``, ``ttls``, ``answer_types``
    and ``size`` (bytes of the DNS message).
    """
    resp = pl.col("response")
    df = (
        messages.with_row_index("_seq")
        .with_columns(
            _c_ip=pl.when(resp).then(pl.col("dst_ip")).otherwise(pl.col("src_ip")),
            _c_port=pl.when(resp).then(pl.col("dst_port")).otherwise(pl.col("src_port")),
            _s_ip=pl.when(resp).then(pl.col("src_ip")).otherwise(pl.col("dst_ip")),
            _s_port=pl.when(resp).then(pl.col("src_port")).otherwise(pl.col("dst_port")),
        )
        .sort([*_KEY, "ts", "_seq"], nulls_last=True)
    )
    same_key = pl.all_horizontal(
        [pl.col(k).shift(1).eq_missing(pl.col(k)) for k in _KEY]
    ).fill_null(False)
    df = df.with_columns(
        _paired=resp
        & same_key
        & ~resp.shift(1).fill_null(True)
        & ((pl.col("ts") - pl.col("ts").shift(1)) <= PAIR_TIMEOUT)
    )
    # The row after a query is its response when that row is paired: take its columns.
    nxt = pl.col("_paired").shift(-1).fill_null(False)
    has_resp = (~resp) & nxt
    taken = [
        pl.when(has_resp).then(pl.col(c).shift(-1)).otherwise(None).alias(f"_r_{c}")
        for c in [*_FROM_RESPONSE, "ts", "size", "query", "qclass", "qtype", "rd"]
    ]
    df = df.with_columns(taken).filter(~pl.col("_paired"))
    q = ~resp  # rows left: queries (with their response, if any) and unpaired responses

    def from_response(c: str) -> pl.Expr:
        return pl.when(q).then(pl.col(f"_r_{c}")).otherwise(pl.col(c)).alias(c)

    out = df.select(
        pl.col("ts"),
        pl.col("_c_ip").alias("src_ip"),
        pl.col("_c_port").alias("src_port"),
        pl.col("_s_ip").alias("dst_ip"),
        pl.col("_s_port").alias("dst_port"),
        pl.col("proto"),
        pl.col("trans_id"),
        *[pl.coalesce(c, f"_r_{c}").alias(c) for c in ("query", "qclass", "qtype", "rd")],
        *[from_response(c) for c in _FROM_RESPONSE if c != "tc"],
        pl.when(q).then(pl.coalesce("_r_tc", "tc")).otherwise(pl.col("tc")).alias("tc"),
        ((pl.col("_r_ts") - pl.col("ts")) / 1_000_000).alias("rtt"),
        pl.when(q).then(pl.col("size")).otherwise(None).alias("query_bytes"),
        pl.when(q).then(pl.col("_r_size")).otherwise(pl.col("size")).alias("response_bytes"),
        pl.col("_seq"),
    )
    return out.sort("ts", "_seq").drop("_seq").with_columns(input=pl.lit(input_name))


def to_table(transactions: pl.DataFrame) -> pa.Table:
    """A :func:`pair` result as a DNS_SCHEMA table (type and rcode names added)."""
    df = transactions.with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        qtype_name=_names(transactions.get_column("qtype"), schema.type_name),
        rcode_name=_names(transactions.get_column("rcode"), schema.rcode_name),
    )
    return schema.conform(df.to_arrow())


def _names(numbers: pl.Series, namer) -> pl.Series:
    """Mnemonics of a column of numbers, computed once per distinct number."""
    distinct = numbers.drop_nulls().unique().to_list()
    mapping = {int(v): namer(int(v)) for v in distinct}
    return numbers.replace_strict(mapping, default=None, return_dtype=pl.String)


class Pairer:
    """Pairs messages arriving in time order, emitting transactions once complete."""

    def __init__(self, input_name: str):
        self.input = input_name
        self.pending: pl.DataFrame | None = None
        self.emitted_until: int | None = None  # transactions starting before this are out

    def add(self, messages: pl.DataFrame) -> pl.DataFrame | None:
        """Add messages; return the transactions that can no longer change (or None)."""
        if messages.height == 0:
            return None
        pending = messages if self.pending is None else pl.concat([self.pending, messages])
        cut = int(pending.get_column("ts").max()) - PAIR_TIMEOUT  # type: ignore[arg-type]
        done = self._emit(pending, cut)
        self.pending = pending.filter(pl.col("ts") >= cut - PAIR_TIMEOUT)
        return done

    def flush(self) -> pl.DataFrame | None:
        """Every transaction not emitted yet."""
        if self.pending is None:
            return None
        done = self._emit(self.pending, None)
        self.pending = None
        return done

    def _emit(self, pending: pl.DataFrame, cut: int | None) -> pl.DataFrame | None:
        tx = pair(pending, self.input)
        if self.emitted_until is not None:
            tx = tx.filter(pl.col("ts") >= self.emitted_until)
        if cut is not None:
            tx = tx.filter(pl.col("ts") < cut)
            self.emitted_until = cut if self.emitted_until is None else max(cut, self.emitted_until)
        return tx if tx.height else None
