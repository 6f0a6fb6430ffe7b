"""Aggregation of flows into the behavioral log's rows of every view, in one pass.

The flows are grouped once, by communication and the sides' internal flags (which
are functions of the addresses, so there is almost always one group per
communication). Every other view is a roll-up of those groups: a client's port and
a server's port of the communications, a port of those, each internal device of the
groups' internal ends. Only the distinct client ports of a communication and of a
server's port are counted over the flows again. Keys are dense codes
(:mod:`~flowhawk.behavior.dictionary`) packed into one integer, grouped by the
kernels of :mod:`~flowhawk.behavior.grouping`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from flowhawk.behavior.dictionary import Dictionary
from flowhawk.behavior.grouping import Grouping, pack
from flowhawk.behavior.views import (
    CLIENT_PORT,
    COMM,
    DEVICE,
    DEVICE_PROTO,
    PORT,
    PROTOCOLS,
    SERVER_PORT,
    UTC_US,
    VIEWS,
    View,
    empty,
    typed,
)
from flowhawk.schema import EAST_WEST, NORTH_SOUTH

_FLAGS = 12  # src internal (1), dst internal (2), direction x 4 (east-west, north-south, other)
_DIRECTION = {EAST_WEST: 0, NORTH_SOUTH: 1}
# The measures of a group, as its client sees them: packets sent and received, bytes
# sent and received, flow time in microseconds, flows.


def aggregate(flows: pl.DataFrame, bucket_seconds: int = 60) -> dict[str, pl.DataFrame]:
    """The behavioral log rows of ``flows`` (canonical), per view name.

    Each frame has ``bucket`` (UTC), the view's key columns, then the measures,
    sorted by bucket then key.
    """
    if flows.is_empty():
        schema = {**flows.schema, "ip": flows.schema["src_ip"]}
        return {v.name: empty(v, schema) for v in VIEWS}
    k = _Keys(flows, bucket_seconds)
    keys = k.pack(("bucket", *COMM.key, "flags"))
    sub = Grouping(keys)
    sums = np.hstack([sub.sums(k.counters), sub.sizes()[:, None]])
    # The communication: the sub-groups without their flags (the last packed digit).
    comm = Grouping.prefix(keys[sub.first], _FLAGS)
    rows, c_sums = sub.first[comm.first], comm.rollup(sums)
    comm_of_flow = comm.gid[sub.gid]
    out = {
        "comm": k.frame(
            COMM,
            rows,
            c_sums,
            peers=np.ones(comm.n, np.int64),
            ports=Grouping.given(comm_of_flow, comm.n).distinct(k.src_port),
        )
    }
    g = Grouping(k.pack(("bucket", *CLIENT_PORT.key), rows))
    out["client_port"] = k.frame(
        CLIENT_PORT, rows[g.first], g.rollup(c_sums), peers=g.sizes(), ports=np.ones(g.n, np.int64)
    )
    g = Grouping(k.pack(("bucket", *SERVER_PORT.key), rows))
    out["server_port"] = k.frame(
        SERVER_PORT,
        rows[g.first],
        g.rollup(c_sums),
        swap=True,
        peers=g.sizes(),
        ports=Grouping.given(g.gid[comm_of_flow], g.n).distinct(k.src_port),
    )
    g = Grouping(k.pack(("bucket", *PORT.key), rows))
    out["port"] = k.frame(
        PORT,
        rows[g.first],
        g.rollup(c_sums),
        peers=g.distinct(k.code["src_ip"][rows]),
        ports=g.distinct(k.code["dst_ip"][rows]),
    )
    out.update(_devices(k, sub.first, sums))
    return {v.name: typed(out[v.name], v) for v in VIEWS}


def _devices(k: _Keys, rows: np.ndarray, sums: np.ndarray) -> dict[str, pl.DataFrame]:
    """Device views: each internal end of the sub-groups (``rows``: a flow of each,
    ``sums`` their measures) as itself."""
    flags = k.code["flags"][rows]
    as_src = np.flatnonzero(flags & 1)
    at = np.concatenate([as_src, np.flatnonzero(flags & 2)])  # the sub-group of each end
    mine = np.arange(len(at)) >= len(as_src)  # the server's end: sent = client's received
    r = rows[at]
    src, dst = k.code["src_ip"][r], k.code["dst_ip"][r]
    dev, peer = np.where(mine, dst, src), np.where(mine, src, dst)
    port = k.code["dst_port"][r]
    # Grouped once per device and class (scope and protocol: 0-5 in DEVICE_PROTO's
    # order, 6 for none), the class the last packed digit; the device is the prefix.
    n_cls = len(DEVICE_PROTO) + 1
    cls = k.device_class(r, flags[at] // 4)
    fine_keys = pack(
        [k.code["bucket"], k.code["site"], dev, cls],
        [*k.sizes(("bucket", "site", "ip")), n_cls],
        (r, r, None, None),
    )
    fine = Grouping(fine_keys)
    fine_sums = fine.sums(sums, at, mine)
    g = Grouping.prefix(fine_keys[fine.first], n_cls)
    firsts = fine.first[g.first]
    per_end = Grouping.given(g.gid[fine.gid], g.n)
    out = {
        "device": k.frame(
            DEVICE,
            r[firsts],
            g.rollup(fine_sums),
            peers=per_end.distinct(peer),
            ports=per_end.distinct(port),
            ip=dev[firsts],
        )
    }
    peers, ports = fine.distinct(peer), fine.distinct(port)
    of = cls[fine.first]
    for i, view in enumerate(DEVICE_PROTO.values()):
        sel = np.flatnonzero(of == i)
        firsts = fine.first[sel]
        out[view.name] = k.frame(
            view,
            r[firsts],
            fine_sums[sel],
            peers=peers[sel],
            ports=ports[sel],
            ip=dev[firsts],
        )
    return out


class _Keys:
    """A batch's key columns as dense, value-ordered codes, and its counters."""

    def __init__(self, flows: pl.DataFrame, bucket_seconds: int):
        get = flows.get_column
        self.bucket_us = bucket_seconds * 1_000_000
        start = get("ts_start").dt.cast_time_unit("us").to_physical()
        ips = Dictionary([get("src_ip"), get("dst_ip")])
        self.dict = {
            "bucket": Dictionary([start // self.bucket_us]),
            "site": Dictionary([get("site")]),
            "ip": ips,
            "dst_port": Dictionary([get("dst_port")]),
            "proto": Dictionary([get("proto")]),
        }
        direction = flows.select(
            pl.col("direction").replace_strict(_DIRECTION, default=2, return_dtype=pl.Int64)
        ).to_series()
        flags = (
            get("src_internal").cast(pl.Int64)
            + 2 * get("dst_internal").cast(pl.Int64)
            + 4 * direction
        )
        self.code = {
            "bucket": self.dict["bucket"].codes[0],
            "site": self.dict["site"].codes[0],
            "src_ip": ips.codes[0],
            "dst_ip": ips.codes[1],
            "dst_port": self.dict["dst_port"].codes[0],
            "proto": self.dict["proto"].codes[0],
            "flags": flags.to_numpy(),
        }
        sport = get("src_port").cast(pl.Int64).fill_null(-1).to_numpy()
        self.src_port = sport - sport.min()
        dur = (get("ts_end") - get("ts_start")).dt.total_microseconds().fill_null(0)
        counters = [*(get(c) for c in ("src_pkts", "dst_pkts", "src_bytes", "dst_bytes")), dur]
        self.counters = np.empty((flows.height, len(counters)), np.int64)
        for i, c in enumerate(counters):
            self.counters[:, i] = c.fill_null(0).to_numpy()

    def sizes(self, columns: tuple[str, ...]) -> list[int]:
        return [_FLAGS if c == "flags" else len(self.dict[_SHARED.get(c, c)]) for c in columns]

    def pack(self, columns: tuple[str, ...], rows: np.ndarray | None = None) -> np.ndarray:
        """Packed codes of ``columns`` of each flow, or of ``rows``."""
        return pack([self.code[c] for c in columns], self.sizes(columns), rows)

    def device_class(self, rows: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Index in DEVICE_PROTO of each row's scope and protocol; one past the last
        for none."""
        protos = self.dict["proto"].values.to_numpy()
        kind = np.full(len(protos), -1, np.int64)
        for i, numbers in enumerate(PROTOCOLS.values()):
            kind[np.isin(protos, numbers)] = i
        k = kind[self.code["proto"][rows]]
        scope = np.where(direction == 1, 0, np.where(direction == 0, 1, -1))  # ext, int
        return np.where((k >= 0) & (scope >= 0), scope * 3 + k, len(DEVICE_PROTO))

    def frame(
        self,
        view: View,
        rows: np.ndarray,
        sums: np.ndarray,
        *,
        peers: np.ndarray,
        ports: np.ndarray,
        ip: np.ndarray | None = None,
        swap: bool = False,
    ) -> pl.DataFrame:
        """The log rows of ``view``: key values of ``rows`` (a flow of each group) or
        ``ip``, and the measures (``sums``, groups x measures; ``swap``: from the
        server's point of view)."""
        cols = []
        for c in ("bucket", *view.key):
            codes = ip if c == "ip" else self.code[c][rows]
            cols.append(self.dict[_SHARED.get(c, c)].values.gather(codes).alias(c))
        cols[0] = (cols[0] * self.bucket_us).cast(UTC_US)
        out, into = (1, 0) if swap else (0, 1)
        measures = {
            "pkts_out": sums[:, out],
            "pkts_in": sums[:, into],
            "bytes_out": sums[:, 2 + out],
            "bytes_in": sums[:, 2 + into],
            "flows": sums[:, 5],
            "peers": peers,
            "ports": ports,
            "duration": pl.Series(sums[:, 4]) / 1e6,  # summed in whole microseconds
        }
        return pl.DataFrame([*cols, *(pl.Series(n, v) for n, v in measures.items())])


#: Key columns coded by another's dictionary (addresses share one).
_SHARED = {"src_ip": "ip", "dst_ip": "ip"}
