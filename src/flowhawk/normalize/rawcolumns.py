"""Raw flows of one input as numpy columns: what the export decoders hand the normalizer.

A :class:`RawColumns` holds what :data:`flowhawk.schema.RAW_FLOW_SCHEMA` holds, with no
text: addresses are 128-bit ``(hi, lo)`` pairs (IPv4 mapped, as :mod:`flowhawk.netaddr`
holds them), MACs 48-bit values, flow ids the three numbers of ``"domain:seq:offset"``,
the connection state a code into :data:`STATES`, and the input and exporter one string
each for the whole part. Decoding, stitching, orienting and network context then never
make or parse a string per record; text is written once, by numba kernels, for the
canonical flows that are archived (:mod:`.columnar`), or by :meth:`RawColumns.to_table`
for callers that want raw flow tables.

Nulls: TCP flags and VLAN are -1, a MAC is :data:`NO_MAC` (a column of no MACs at all
is absent), the state is -1; ``orient`` True means "start" (the record knows who
started), False null; ``service`` is always null.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flowhawk.schema import ORIENT_START, RAW_FLOW_SCHEMA, TS

#: Connection states (firewall events) by code.
STATES = ("ignore", "created", "deleted", "denied", "alert", "update")
NO_MAC = np.uint64(1 << 63)  # outside 48 bits: no MAC

#: Every column and its dtype (``src_mac`` / ``dst_mac`` may be absent: no MACs).
DTYPES: dict[str, type] = {
    "ts_start": np.int64,  # µs since the epoch, UTC
    "ts_end": np.int64,
    "src_hi": np.uint64,
    "src_lo": np.uint64,
    "dst_hi": np.uint64,
    "dst_lo": np.uint64,
    "src_port": np.int32,
    "dst_port": np.int32,
    "proto": np.int16,
    "src_pkts": np.int64,
    "src_bytes": np.int64,
    "dst_pkts": np.int64,
    "dst_bytes": np.int64,
    "src_tcp_flags": np.int16,
    "dst_tcp_flags": np.int16,
    "vlan": np.int32,
    "src_mac": np.uint64,
    "dst_mac": np.uint64,
    "state": np.int8,
    "orient": np.bool_,
    "uni": np.bool_,
    "sampling": np.int32,
    "fid_domain": np.uint64,
    "fid_seq": np.uint64,
    "fid_off": np.uint64,
}
_STATES = pa.array(STATES)
_ORIENT = pa.array([ORIENT_START])


@dataclass
class RawColumns:
    """Raw flows of one input (``protocol://exporter``) as numpy columns (see module doc)."""

    input: str
    exporter: str
    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cols["ts_start"])

    def take(self, rows: np.ndarray) -> RawColumns:
        """The rows at ``rows`` (indices or a boolean mask)."""
        return RawColumns(self.input, self.exporter, {k: v[rows] for k, v in self.cols.items()})

    @staticmethod
    def concat(parts: list[RawColumns]) -> RawColumns:
        """The rows of ``parts`` (one input) one after the other."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        cols = {}
        for name in first.cols.keys() | {k for p in parts for k in p.cols}:
            if name in ("src_mac", "dst_mac") and any(name not in p.cols for p in parts):
                if not any(name in p.cols for p in parts):
                    continue
                cols[name] = np.concatenate(
                    [p.cols[name] if name in p.cols else np.full(len(p), NO_MAC) for p in parts]
                )
                continue
            cols[name] = np.concatenate([p.cols[name] for p in parts])
        return RawColumns(first.input, first.exporter, cols)

    def to_table(self) -> pa.Table:
        """The rows as a :data:`~flowhawk.schema.RAW_FLOW_SCHEMA` table (text made here)."""
        from flowhawk.collect.decode.textcols import ip_strings

        c, n = self.cols, len(self)
        ips = ip_strings(
            np.concatenate([c["src_hi"], c["dst_hi"]]), np.concatenate([c["src_lo"], c["dst_lo"]])
        )
        arrays = [
            pa.array(c["ts_start"]).view(TS),
            pa.array(c["ts_end"]).view(TS),
            ips.slice(0, n),
            ips.slice(n),
            pa.array(c["src_port"]),
            pa.array(c["dst_port"]),
            pa.array(c["proto"]),
            pa.array(c["src_pkts"]),
            pa.array(c["src_bytes"]),
            pa.array(c["dst_pkts"]),
            pa.array(c["dst_bytes"]),
            nullable(c["src_tcp_flags"]),
            nullable(c["dst_tcp_flags"]),
            nullable(c["vlan"]),
            macs(c.get("src_mac"), n),
            macs(c.get("dst_mac"), n),
            pa.nulls(n, pa.string()),
            labels(c["state"].astype(np.int64), _STATES),
            labels(np.where(c["orient"], 0, -1), _ORIENT),
            pa.array(c["uni"]),
            pa.array(c["sampling"]),
            pa.repeat(pa.scalar(self.exporter, pa.string()), n),
            pa.repeat(pa.scalar(self.input, pa.string()), n),
            flow_ids(c["fid_domain"], c["fid_seq"], c["fid_off"]),
        ]
        return pa.Table.from_arrays(arrays, schema=RAW_FLOW_SCHEMA)


def nullable(values: np.ndarray) -> pa.Array:
    """An Arrow column of ``values``, null where negative."""
    null = values < 0
    if null.all():
        return pa.nulls(len(values), pa.from_numpy_dtype(values.dtype))
    return pa.array(values, mask=null if null.any() else None)


def macs(values: np.ndarray | None, n: int) -> pa.Array:
    """MAC text of 48-bit values (null where :data:`NO_MAC`, or everywhere for None)."""
    if values is None or (values == NO_MAC).all():
        return pa.nulls(n, pa.string())
    from flowhawk.collect.decode.textcols import mac_strings

    return mac_strings(values, NO_MAC)


def labels(codes: np.ndarray, names: pa.Array) -> pa.Array:
    """``names[code]``, null where the code is negative."""
    if (codes < 0).all():
        return pa.nulls(len(codes), pa.string())
    return names.take(pa.array(np.maximum(codes, 0), mask=codes < 0))


def flow_ids(domain: np.ndarray, seq: np.ndarray, off: np.ndarray) -> pa.Array:
    """``"domain:seq:offset"`` text of the flow id numbers."""
    from flowhawk.collect.decode.textcols import joined_numbers

    return joined_numbers(domain, seq, off)
