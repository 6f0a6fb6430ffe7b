"""Canonical flows from numeric columns: orientation, network context and text, for
:class:`~flowhawk.normalize.rawcolumns.RawColumns` (the collector's records).

The rules are :func:`flowhawk.normalize.orient.orient_by_port` and
:func:`flowhawk.normalize.context.add_context`, computed on numbers: the port rule by a
65,536-entry rank table, ICMP types by 256-entry tables, internal sides and sites by
one compiled pass testing each address against the configured networks' 128-bit
ranges (no per-address text to parse, no join). Text is written at the end, for the
flows that are archived: addresses, MACs and flow ids by numba kernels, the few
distinct labels (orientation, direction, site, state) by taking from small arrays.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from flowhawk.collect.decode.textcols import ip_strings
from flowhawk.jit import numba
from flowhawk.normalize.context import NetworkContext
from flowhawk.normalize.orient import SERVICE_PORTS
from flowhawk.normalize.rawcolumns import (
    STATES,
    RawColumns,
    flow_ids,
    labels,
    macs,
    nullable,
)
from flowhawk.normalize.stitchcols import IS_REPLY_V4, IS_REPLY_V6, request_port
from flowhawk.schema import (
    EAST_WEST,
    EXTERNAL,
    FLOW_SCHEMA,
    NORTH_SOUTH,
    ORIENT_NONE,
    ORIENT_PORT,
    ORIENT_START,
    TS,
)


def _port_ranks() -> np.ndarray:
    ports = np.arange(65536)
    rank = np.where(ports < 1024, 1, np.where(ports < 49152, 2, 3)).astype(np.int8)
    rank[list(SERVICE_PORTS)] = 0
    return rank


#: :func:`flowhawk.normalize.orient.port_rank` of every port.
PORT_RANK = _port_ranks()
_ORIENTS = pa.array([ORIENT_START, ORIENT_PORT, ORIENT_NONE])
_DIRECTIONS = pa.array([EXTERNAL, NORTH_SOUTH, EAST_WEST])  # by number of internal sides
_STATES = pa.array(STATES)
_SWAP = (
    ("src_hi", "dst_hi"),
    ("src_lo", "dst_lo"),
    ("src_port", "dst_port"),
    ("src_pkts", "dst_pkts"),
    ("src_bytes", "dst_bytes"),
    ("src_tcp_flags", "dst_tcp_flags"),
    ("src_mac", "dst_mac"),
)


def orient(cols: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The columns oriented by the port rule where the start was not observed, and how
    each row was decided (index into start, port, none)."""
    proto = cols["proto"]
    sport, dport = cols["src_port"], cols["dst_port"]
    rs, rd = PORT_RANK[sport], PORT_RANK[dport]
    icmp = (proto == 1) | (proto == 58)
    weak = cols["orient"] & ~icmp & (proto != 6) & (rs <= 1) & (rd == 3)
    pending = ~cols["orient"] | weak
    itype = np.minimum(dport >> 8, 255)
    reply = np.where(proto == 1, IS_REPLY_V4[itype], IS_REPLY_V6[itype])
    by_port = (rs < rd) | ((rs == rd) & (sport < dport))
    swap = pending & np.where(icmp, reply, by_port)
    out = dict(cols)
    if swap.any():
        for a, b in _SWAP:
            if a in cols:
                out[a] = np.where(swap, cols[b], cols[a])
                out[b] = np.where(swap, cols[a], cols[b])
    sport, dport = out["src_port"], out["dst_port"]
    how = np.where(pending, np.where((sport == dport) & ~icmp, 2, 1), 0).astype(np.int8)
    fix_icmp = swap & icmp
    if fix_icmp.any():  # the swap moved the ICMP type/code into src_port: back, as a request
        out["dst_port"] = np.where(fix_icmp, request_port(proto, sport), dport).astype(np.int32)
        out["src_port"] = np.where(fix_icmp, 0, sport).astype(np.int32)
    return out, how


class Ranges:
    """Networks as 128-bit ranges with the index of the set each came from."""

    def __init__(self, sets: list) -> None:  # type: ignore[type-arg]
        rows = [
            (n.start_hi, n.start_lo, n.end_hi, n.end_lo, owner)
            for owner, networks in enumerate(sets)
            for n in networks.networks
        ]
        arr = np.array(rows, dtype=object).reshape(-1, 5)
        self.start_hi = arr[:, 0].astype(np.uint64)
        self.start_lo = arr[:, 1].astype(np.uint64)
        self.end_hi = arr[:, 2].astype(np.uint64)
        self.end_lo = arr[:, 3].astype(np.uint64)
        self.owner = arr[:, 4].astype(np.int64)

    def first(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The lowest owner index of a range containing each address, or -1."""
        out = np.empty(len(hi), np.int64)
        _first_owner(
            hi, lo, self.start_hi, self.start_lo, self.end_hi, self.end_lo, self.owner, out
        )
        return out


@numba.njit(cache=True, nogil=True)
def _first_owner(hi, lo, s_hi, s_lo, e_hi, e_lo, owner, out):
    for i in range(hi.shape[0]):
        h, low = hi[i], lo[i]
        best = -1
        for r in range(s_hi.shape[0]):  # in owner order: the first range found is the one
            if (h > s_hi[r] or (h == s_hi[r] and low >= s_lo[r])) and (
                h < e_hi[r] or (h == e_hi[r] and low <= e_lo[r])
            ):
                best = owner[r]
                break
        out[i] = best


class ColumnarContext:
    """:class:`~flowhawk.normalize.context.NetworkContext` compiled for numeric columns."""

    def __init__(self, net: NetworkContext):
        self.net = net
        self.internal = Ranges([net.internal, net.local_scope])
        self.sites = Ranges(net.site_networks)
        self.names = pa.array([*net.site_names, net.default_site], pa.string())

    def table(self, rc: RawColumns) -> pa.Table:
        """Canonical flows (:data:`~flowhawk.schema.FLOW_SCHEMA`) of bidirectional rows."""
        c, how = orient(rc.cols)
        n = len(how)
        hi = np.concatenate([c["src_hi"], c["dst_hi"]])
        lo = np.concatenate([c["src_lo"], c["dst_lo"]])
        internal = self.internal.first(hi, lo) >= 0
        src_in, dst_in = internal[:n], internal[n:]
        site = pa.array(self._sites(hi, lo, n, rc.exporter))
        arrays = [
            pa.array(c["ts_start"]).view(TS),
            pa.array(c["ts_end"]).view(TS),
            *_split(ip_strings(hi, lo), n),
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
            _ORIENTS.take(pa.array(how)),
            pa.array(c["sampling"]),
            pa.repeat(pa.scalar(rc.exporter, pa.string()), n),
            pa.repeat(pa.scalar(rc.input, pa.string()), n),
            flow_ids(c["fid_domain"], c["fid_seq"], c["fid_off"]),
            self.names.take(site),
            pa.array(src_in),
            pa.array(dst_in),
            _DIRECTIONS.take(pa.array(src_in.astype(np.int8) + dst_in.astype(np.int8))),
        ]
        return pa.Table.from_arrays(arrays, schema=FLOW_SCHEMA)

    def _sites(self, hi: np.ndarray, lo: np.ndarray, n: int, exporter: str) -> np.ndarray:
        default = len(self.net.site_names)
        named = self.net.exporter_sites.get(exporter)
        if named is not None:  # the exporter's site wins over the networks'
            return np.full(n, self.net.site_names.index(named), np.int64)
        if not default:
            return np.zeros(n, np.int64)
        by_net = self.sites.first(hi, lo)
        src, dst = by_net[:n], by_net[n:]
        return np.where(src >= 0, src, np.where(dst >= 0, dst, default))


def _split(ips: pa.Array, n: int) -> tuple[pa.Array, pa.Array]:
    return ips.slice(0, n), ips.slice(n)
