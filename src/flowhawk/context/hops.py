"""East-west hops and relays around risky north-south events.

When an internal host reaches a risky external site, an analyst asks how it got
there: which internal hosts talked to it before (the 2nd hop) and who talked to them
(the 3rd hop). When a risky external host reaches in, the question turns around:
whom did the internal host talk to afterwards, and they in turn. For every
north-south event at or above ``[context] hops_min_risk`` this module builds that
small graph from the archived east-west flows in ``hops_window`` around the event:

- outbound event (client internal): edges *into* the internal host from
  ``window`` before the event's start to its end, then edges into those peers
  before their last edge to the host;
- inbound event (server internal): edges *out of* the internal host from the
  event's start to ``window`` after its end, then edges out of those peers after
  their first edge from the host.

Edges are per (client, server, port, protocol) with flows, bytes and first/last
times; each hop keeps its ``hops_max_edges`` largest by bytes.

Relays (N9): a device on the path that receives a connection and opens another
within ``relay_delay`` (a web service relaying a REST call into a SQL call). Each
outgoing flow of a hop device is paired with the latest incoming flow that started
at most ``relay_delay`` before it; a pair of communications is a relay when its
volumes agree: within ``relay_volume_ratio`` of each other for one or two pairs, a
Pearson correlation of log bytes of at least ``relay_min_correlation`` for more.

Everything is vectorized over all events at once; one read of the archive's
partitions that any event's window touches.

Nodes and relays carry slots for what :mod:`flowhawk.context.attach` knows about
each address (names from passive DNS, geo/AS of external ones); this module, which
only reads flows, leaves them null.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import polars as pl

from flowhawk import netaddr
from flowhawk.context.geoip import SCHEMA as GEO_SCHEMA
from flowhawk.normalize.context import EAST_WEST, NORTH_SOUTH

UTC_US = pl.Datetime("us", "UTC")
_FLOW_COLS = ["ts_start", "ts_end", "src_ip", "dst_ip", "dst_port", "proto", "direction"]
_BYTES = pl.col("src_bytes") + pl.col("dst_bytes")

EDGE = pl.Struct(
    {
        "hop": pl.Int8,
        "src": pl.String,
        "dst": pl.String,
        "dst_port": pl.Int32,
        "proto": pl.Int16,
        "flows": pl.Int64,
        "bytes": pl.Int64,
        "first": UTC_US,
        "last": UTC_US,
    }
)
#: Country, city and AS of an address (:data:`flowhawk.context.geoip.SCHEMA`).
GEO = pl.Struct(GEO_SCHEMA)
NAMES = pl.List(pl.String)
#: A node: its address, its role (``risky``, ``host``, ``hop2``, ``hop3``), and what
#: :mod:`flowhawk.context.attach` adds: the names DNS answered with it before the event
#: (as for the event's ends) and, for external nodes, its geo/AS. :func:`build` leaves
#: those null.
NODE = pl.Struct({"ip": pl.String, "role": pl.String, "names": NAMES, "geo": GEO})
#: A relay; ``inbound``/``outbound`` read ``client→server:port``. The ``*_names`` and
#: ``*_geo`` fields (null from :func:`build`, filled by attach) describe the inbound
#: call's client, the relaying host and the outbound call's server.
RELAY = pl.Struct(
    {
        "host": pl.String,
        "inbound": pl.String,
        "outbound": pl.String,
        "pairs": pl.Int64,
        "delay_s": pl.Float64,
        "in_bytes": pl.Int64,
        "out_bytes": pl.Int64,
        "correlation": pl.Float64,
        "inbound_names": NAMES,
        "host_names": NAMES,
        "outbound_names": NAMES,
        "inbound_geo": GEO,
        "host_geo": GEO,
        "outbound_geo": GEO,
    }
)
#: The addresses of a relay that attach describes (``{end}_names``, ``{end}_geo``).
RELAY_ENDS = ("inbound", "host", "outbound")
HOPS = pl.Struct({"nodes": pl.List(NODE), "edges": pl.List(EDGE)})
#: What :func:`build` returns.
CONTEXT_SCHEMA = {"id": pl.String, "hops": HOPS, "relays": pl.List(RELAY)}

#: Reads the archived flows of some hour partitions (their UTC starts), lazily.
FlowReader = Callable[[list[datetime]], pl.LazyFrame]


def anchors(events: pl.DataFrame, internal: netaddr.NetworkSet, min_risk: float) -> pl.DataFrame:
    """The risky north-south events with their internal host, orientation and time span."""
    ns = events.filter((pl.col("direction") == NORTH_SOUTH) & (pl.col("risk") >= min_risk))
    if ns.height == 0:
        return pl.DataFrame(
            schema={"id": pl.String, "host": pl.String, "outbound": pl.Boolean}
            | {"lo": UTC_US, "hi": UTC_US, "external": pl.String}
        )
    hi, lo, _ = netaddr.parse(ns.get_column("src_ip"))
    src_internal = pl.Series(internal.contains(hi, lo))
    return ns.select(
        "id",
        host=pl.when(src_internal).then("src_ip").otherwise("dst_ip"),
        outbound=src_internal,
        lo=pl.col("ts_start"),
        hi=pl.col("ts_end"),
        external=pl.when(src_internal).then("dst_ip").otherwise("src_ip"),
    )


def _hours(spans: pl.DataFrame) -> list[datetime]:
    """UTC hour starts touched by any ``[lo, hi]`` span."""
    hours = spans.select(
        pl.datetime_ranges(
            pl.col("lo").dt.truncate("1h"), pl.col("hi").dt.truncate("1h"), "1h"
        ).alias("h")
    ).explode("h")
    return hours.get_column("h").unique().sort().to_list()


def _level(flows: pl.DataFrame, at: pl.DataFrame, outbound: bool, hop: int) -> pl.DataFrame:
    """Per-flow edges of one hop: flows into (outbound events) or out of each ``at.node``
    within ``[lo, hi]``, with the peer they reach; ``at``: id, node, lo, hi, avoid."""
    near, far = ("dst_ip", "src_ip") if outbound else ("src_ip", "dst_ip")
    df = flows.join(at, left_on=near, right_on="node", how="inner")
    df = df.filter(
        pl.col("ts_start").is_between(pl.col("lo"), pl.col("hi"))
        & (pl.col(far) != pl.col("avoid").fill_null(""))
    )
    return df.select("id", *_FLOW_COLS[:-1], "bytes", peer=pl.col(far), hop=pl.lit(hop, pl.Int8))


def _edges(per_flow: pl.DataFrame, max_edges: int) -> pl.DataFrame:
    keys = ["id", "hop", "src_ip", "dst_ip", "dst_port", "proto"]
    edges = per_flow.group_by(keys).agg(
        flows=pl.len().cast(pl.Int64),
        bytes=pl.col("bytes").sum().cast(pl.Int64),
        first=pl.col("ts_start").min(),
        last=pl.col("ts_start").max(),
    )
    edges = edges.sort(
        ["id", "hop", "bytes", "src_ip", "dst_ip", "dst_port"],
        descending=[False, False, True, False, False, False],
    )
    return edges.group_by(["id", "hop"], maintain_order=True).head(max_edges)


def build(
    events: pl.DataFrame,
    read: FlowReader,
    internal: netaddr.NetworkSet,
    *,
    local_scope: netaddr.NetworkSet | None = None,
    min_pairs: int = 2,
    min_risk: float,
    window: float,
    max_edges: int,
    relay_delay: float,
    relay_ratio: float,
    relay_correlation: float,
) -> pl.DataFrame:
    """``id``, ``hops`` (:data:`HOPS`) and ``relays`` (list of :data:`RELAY`) for every
    north-south event at or above ``min_risk`` that has east-west hops or relays.

    ``internal``: what is inside (it decides each event's internal host);
    ``local_scope``: multicast, broadcast and link-local destinations, which are not
    hosts (announcements to them are neither hops nor relayed calls)."""
    anchor = anchors(events, internal, min_risk)
    if anchor.height == 0:
        return pl.DataFrame(schema=CONTEXT_SCHEMA)
    span = timedelta(seconds=window)
    anchor = anchor.with_columns(
        lo=pl.when("outbound").then(pl.col("lo") - span).otherwise("lo"),
        hi=pl.when("outbound").then("hi").otherwise(pl.col("hi") + span),
    )
    # One read: the east-west flows of those hours (2nd and 3rd hops are found among
    # them) and the north-south flows of the anchor hosts (the events' own, for relays).
    hosts = anchor.get_column("host").unique().implode()
    ns_of_hosts = (pl.col("direction") == NORTH_SOUTH) & (
        pl.col("src_ip").is_in(hosts) | pl.col("dst_ip").is_in(hosts)
    )
    data = (
        read(_hours(anchor))
        .filter((pl.col("direction") == EAST_WEST) | ns_of_hosts)
        .select(*_FLOW_COLS, bytes=_BYTES)
        .collect()
    )
    data = _without_local_scope(data, local_scope)
    flows = data.filter(pl.col("direction") == EAST_WEST)
    per_flow = []
    for outbound in (True, False):
        at = anchor.filter(pl.col("outbound") == outbound)
        if at.height == 0:
            continue
        hop2 = _level(
            flows, at.select("id", node="host", lo="lo", hi="hi", avoid="external"), outbound, 2
        )
        # 3rd hop: into a 2nd-hop peer before its last edge to the host (outbound), out
        # of it after its first edge from the host (inbound).
        bound = hop2.group_by("id", "peer").agg(
            first=pl.col("ts_start").min(), last=pl.col("ts_start").max()
        )
        bound = bound.join(at.select("id", "host", "lo", "hi"), on="id")
        nxt = bound.select(
            "id",
            node="peer",
            lo=pl.col("lo") if outbound else pl.col("first"),
            hi=pl.col("last") if outbound else pl.col("hi"),
            avoid="host",
        )
        per_flow += [hop2, _level(flows, nxt, outbound, 3)]
    hop_flows = pl.concat(per_flow)
    edges = _edges(hop_flows, max_edges)
    graphs = _graphs(anchor, edges)
    ns = data.filter(pl.col("direction") == NORTH_SOUTH)
    relays = _relays(anchor, hop_flows, ns, relay_delay, relay_ratio, relay_correlation, min_pairs)
    out = graphs.join(relays, on="id", how="full", coalesce=True)
    return out.with_columns(relays=pl.col("relays").fill_null(pl.lit([], pl.List(RELAY)))).select(
        list(CONTEXT_SCHEMA)
    )


def _without_local_scope(flows: pl.DataFrame, scope: netaddr.NetworkSet | None) -> pl.DataFrame:
    if scope is None or len(scope) == 0 or flows.height == 0:
        return flows
    ends = pl.concat([flows.get_column("src_ip"), flows.get_column("dst_ip")]).unique()
    hi, lo, _ = netaddr.parse(ends)
    local = ends.filter(pl.Series(scope.contains(hi, lo))).implode()
    return flows.filter(~pl.col("src_ip").is_in(local) & ~pl.col("dst_ip").is_in(local))


def _graphs(anchor: pl.DataFrame, edges: pl.DataFrame) -> pl.DataFrame:
    if edges.height == 0:
        return pl.DataFrame(schema={"id": pl.String, "hops": HOPS})
    edge_rows = edges.select(
        "id",
        edge=pl.struct(
            "hop",
            src="src_ip",
            dst="dst_ip",
            dst_port="dst_port",
            proto="proto",
            flows="flows",
            bytes="bytes",
            first="first",
            last="last",
        ),
    )
    ends = anchor.select("id", "host", "external")
    hop_nodes = edges.select(
        "id",
        ip=pl.concat_list("src_ip", "dst_ip"),
        role=pl.format("hop{}", "hop"),
    ).explode("ip")
    nodes = pl.concat(
        [
            # (a view's event about one host has "*" for its other side)
            ends.select("id", ip="external", role=pl.lit("risky")).filter(pl.col("ip") != "*"),
            ends.select("id", ip="host", role=pl.lit("host")),
            hop_nodes.join(ends, on="id")
            .filter((pl.col("ip") != pl.col("host")) & (pl.col("ip") != pl.col("external")))
            .select("id", "ip", "role"),
        ]
    )
    # a device reached at both hops is shown at the nearer one
    nodes = nodes.unique(["id", "ip"], keep="first", maintain_order=True)
    nodes = nodes.filter(pl.col("id").is_in(edges.get_column("id").unique().implode()))
    node_lists = nodes.group_by("id", maintain_order=True).agg(
        nodes=pl.struct("ip", "role", names=pl.lit(None, NAMES), geo=pl.lit(None, GEO))
    )
    edge_lists = edge_rows.group_by("id", maintain_order=True).agg(edges=pl.col("edge"))
    return node_lists.join(edge_lists, on="id").select(
        "id", hops=pl.struct("nodes", "edges").cast(HOPS)
    )


def _no_relays() -> pl.DataFrame:
    return pl.DataFrame(schema={"id": pl.String, "relays": pl.List(RELAY)})


def _relays(
    anchor: pl.DataFrame,
    hop_flows: pl.DataFrame,
    ns: pl.DataFrame,
    delay: float,
    ratio: float,
    min_corr: float,
    min_pairs: int,
) -> pl.DataFrame:
    """Relays among the event's own flows and its hop flows (see the module text).

    The event's own north-south flows (in ``ns``) take part: they are the hop into or
    out of the internal host."""
    ends = anchor.select("id", "host", "external", "lo", "hi")
    cols = ["id", "ts_start", "src_ip", "dst_ip", "dst_port", "proto", "bytes"]
    own = pl.concat(
        [
            ns.join(ends, left_on=["src_ip", "dst_ip"], right_on=client_server, how="inner")
            .filter(pl.col("ts_start").is_between(pl.col("lo"), pl.col("hi")))
            .select(cols)
            for client_server in (["host", "external"], ["external", "host"])
        ]
    )
    links = pl.concat([own, hop_flows.select(cols)]).unique(maintain_order=True)
    if links.height == 0:
        return _no_relays()
    incoming = links.select(
        "id",
        host="dst_ip",
        t_in="ts_start",
        inbound=pl.format("{}→{}:{}", "src_ip", "dst_ip", "dst_port"),
        in_from="src_ip",
        in_bytes="bytes",
    ).sort("t_in")
    outgoing = links.select(
        "id",
        host="src_ip",
        t_out="ts_start",
        outbound=pl.format("{}→{}:{}", "src_ip", "dst_ip", "dst_port"),
        out_to="dst_ip",
        out_bytes="bytes",
    ).sort("t_out")
    pairs = outgoing.join_asof(
        incoming,
        left_on="t_out",
        right_on="t_in",
        by=["id", "host"],
        strategy="backward",
        tolerance=timedelta(seconds=delay),
        check_sortedness=False,  # sorted by time above, which is what matters per group
    ).filter(pl.col("t_in").is_not_null() & (pl.col("in_from") != pl.col("out_to")))
    if pairs.height == 0:
        return _no_relays()
    lin, lout = (
        pl.col("in_bytes").cast(pl.Float64).log1p(),
        pl.col("out_bytes").cast(pl.Float64).log1p(),
    )
    per = pairs.group_by("id", "host", "inbound", "outbound").agg(
        pairs=pl.len().cast(pl.Int64),
        delay_s=(pl.col("t_out") - pl.col("t_in")).dt.total_microseconds().median() / 1e6,
        in_bytes=pl.col("in_bytes").sum().cast(pl.Int64),
        out_bytes=pl.col("out_bytes").sum().cast(pl.Int64),
        correlation=pl.corr(lin, lout),
    )
    per = per.with_columns(
        correlation=pl.when(pl.col("pairs") >= 3).then("correlation").otherwise(None)
    )
    agree = (pl.col("out_bytes") <= ratio * pl.col("in_bytes")) & (
        pl.col("in_bytes") <= ratio * pl.col("out_bytes")
    )
    relay = (
        per.filter(pl.col("pairs") >= min_pairs)
        .filter(
            pl.when(pl.col("pairs") >= 3)
            .then(pl.col("correlation").fill_nan(None).fill_null(0.0) >= min_corr)
            .otherwise(agree)
        )
        .sort(
            "id",
            "pairs",
            "host",
            "inbound",
            "outbound",
            descending=[False, True, False, False, False],
        )
    )
    return (
        relay.group_by("id", maintain_order=True)
        .agg(
            relays=pl.struct(
                "host",
                "inbound",
                "outbound",
                "pairs",
                "delay_s",
                "in_bytes",
                "out_bytes",
                "correlation",
                *[pl.lit(None, NAMES).alias(f"{end}_names") for end in RELAY_ENDS],
                *[pl.lit(None, GEO).alias(f"{end}_geo") for end in RELAY_ENDS],
            )
        )
        .with_columns(pl.col("relays").cast(pl.List(RELAY)))
    )
