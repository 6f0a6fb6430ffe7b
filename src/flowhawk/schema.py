"""The canonical flow schema: the one table shape every part of flowhawk speaks.

A *flow* is a bidirectional conversation between a client (``src``, the side that
started it, or that well-known ports say is the client) and a server (``dst``).
Readers and collectors produce *raw* flows (:data:`RAW_FLOW_SCHEMA`); the
normalizer stitches unidirectional records into biflows, orients them and adds
context, giving canonical flows (:data:`FLOW_SCHEMA`), which are archived and
handed to detectors.

Counters follow NetFlow conventions: bytes are IP-layer bytes (IP header
included), ``src_*`` counters are what the client sent, ``dst_*`` what the
server sent. ICMP type and code live in ``dst_port`` as ``type * 256 + code``
(the NetFlow convention), with ``src_port`` 0.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

# Orientation: how client and server were decided.
ORIENT_START = "start"  # the side that started the conversation was observed
ORIENT_PORT = "port"  # decided by well-known / lower port
ORIENT_NONE = "none"  # no rule applied (e.g. both ports equal, no ports)

# Direction of a flow relative to the internal networks.
NORTH_SOUTH = "north-south"
EAST_WEST = "east-west"
EXTERNAL = "external"
DIRECTIONS = (NORTH_SOUTH, EAST_WEST, EXTERNAL)

_RAW_FIELDS: list[pa.Field] = [
    pa.field("ts_start", TS, nullable=False),
    pa.field("ts_end", TS, nullable=False),
    pa.field("src_ip", pa.string(), nullable=False),
    pa.field("dst_ip", pa.string(), nullable=False),
    pa.field("src_port", pa.int32(), nullable=False),
    pa.field("dst_port", pa.int32(), nullable=False),
    pa.field("proto", pa.int16(), nullable=False),
    pa.field("src_pkts", pa.int64(), nullable=False),
    pa.field("src_bytes", pa.int64(), nullable=False),
    pa.field("dst_pkts", pa.int64(), nullable=False),
    pa.field("dst_bytes", pa.int64(), nullable=False),
    pa.field("src_tcp_flags", pa.int16()),
    pa.field("dst_tcp_flags", pa.int16()),
    pa.field("vlan", pa.int32()),
    pa.field("src_mac", pa.string()),
    pa.field("dst_mac", pa.string()),
    pa.field("service", pa.string()),  # application label (Zeek service, app_proto, ...)
    pa.field("state", pa.string()),  # connection state as the source reported it
    pa.field("orient", pa.string()),  # ORIENT_*; null = let the normalizer decide
    pa.field("uni", pa.bool_(), nullable=False),  # unidirectional record, to be stitched
    pa.field("sampling", pa.int32(), nullable=False),  # 1 = unsampled; counters already scaled
    pa.field("exporter", pa.string()),  # exporter / sensor address when known
    pa.field("input", pa.string(), nullable=False),  # where the record came from (file name)
    pa.field("flow_id", pa.string(), nullable=False),  # record id in its input
]

RAW_FLOW_SCHEMA = pa.schema(_RAW_FIELDS)

FLOW_SCHEMA = pa.schema(
    [f for f in _RAW_FIELDS if f.name != "uni"]
    + [
        pa.field("site", pa.string(), nullable=False),
        pa.field("src_internal", pa.bool_(), nullable=False),
        pa.field("dst_internal", pa.bool_(), nullable=False),
        pa.field("direction", pa.string(), nullable=False),
    ]
)

#: Schema metadata key a source sets on its tables when the addresses are already
#: canonical text (formatted from numbers by :mod:`flowhawk.netaddr`): the normalizer
#: then skips validating and re-spelling them.
CANONICAL_ADDRESSES = b"flowhawk.canonical_addresses"

RAW_COLUMNS = tuple(RAW_FLOW_SCHEMA.names)
FLOW_COLUMNS = tuple(FLOW_SCHEMA.names)

# IANA protocol numbers for the names that flow logs use.
PROTO_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "igmp": 2,
    "ipv4": 4,
    "tcp": 6,
    "egp": 8,
    "udp": 17,
    "ipv6": 41,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmp6": 58,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "ipv6icmp": 58,
    "eigrp": 88,
    "ospf": 89,
    "ospfigp": 89,
    "pim": 103,
    "vrrp": 112,
    "l2tp": 115,
    "sctp": 132,
    "udplite": 136,
}
PROTO_NAMES: dict[int, str] = {
    1: "icmp",
    2: "igmp",
    6: "tcp",
    17: "udp",
    41: "ipv6",
    47: "gre",
    50: "esp",
    51: "ah",
    58: "icmp6",
    89: "ospf",
    103: "pim",
    112: "vrrp",
    132: "sctp",
}


def proto_name(number: int) -> str:
    """Short protocol name for display (``tcp``), or the number as text."""
    return PROTO_NAMES.get(int(number), str(int(number)))


def empty_raw() -> pa.Table:
    """An empty table with the raw flow schema."""
    return RAW_FLOW_SCHEMA.empty_table()


def conform(table: pa.Table, schema: pa.Schema = RAW_FLOW_SCHEMA) -> pa.Table:
    """Cast and reorder ``table`` to ``schema``; missing nullable columns become null.

    Raises :class:`ValueError` naming the column when a required column is missing.
    """
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            columns.append(col)
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise ValueError(f"table lacks required column {field.name!r}")
    return pa.Table.from_arrays(columns, schema=schema)
