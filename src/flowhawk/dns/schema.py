"""The DNS transaction table: one row per query and its response, like Zeek's dns.log.

Every DNS reader (:mod:`flowhawk.dns.pcap`, :mod:`flowhawk.dns.zeek`) yields tables in
:data:`DNS_SCHEMA`, so DNS from a capture and DNS from a sensor's log are stored,
queried and turned into passive DNS the same way.

Conventions:

* ``src`` is the client (who sent the query), ``dst`` the server, also for a
  response seen without its query (the response's destination is then the client);
* ``ts`` is the time of the query, or of the response when no query was seen;
* ``query`` is lower-case without the trailing dot (``www.example.com``; the root is
  ``""``); ``qtype_name`` / ``rcode_name`` spell the numbers as dnspython and Zeek do
  (``A``, ``AAAA``, ``TYPE65534``; ``NOERROR``, ``NXDOMAIN``);
* ``answers`` are the answer section's records in order, as text: addresses for
  A/AAAA, target names for CNAME/PTR/NS/DNAME/MX/SRV (lower-case, no trailing dot),
  the joined strings for TXT, the presentation form for anything else; ``ttls`` and
  ``answer_types`` run beside them;
* ``rcode``, the answers and the AA/RA flags are null for a query left unanswered;
* ``rtt`` is seconds from query to response; ``query_bytes`` / ``response_bytes`` are
  DNS message sizes (without the TCP length prefix), null when the source does not
  know them (Zeek logs do not carry them).
"""

from __future__ import annotations

import pyarrow as pa

from flowhawk import schema

TS = pa.timestamp("us", tz="UTC")

DNS_SCHEMA = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("src_ip", pa.string()),  # client
        pa.field("src_port", pa.int32()),
        pa.field("dst_ip", pa.string()),  # server
        pa.field("dst_port", pa.int32()),
        pa.field("proto", pa.int16()),  # 17 UDP, 6 TCP
        pa.field("trans_id", pa.int32()),
        pa.field("query", pa.string()),
        pa.field("qclass", pa.int32()),
        pa.field("qtype", pa.int32()),
        pa.field("qtype_name", pa.string()),
        pa.field("rcode", pa.int16()),
        pa.field("rcode_name", pa.string()),
        pa.field("aa", pa.bool_()),
        pa.field("tc", pa.bool_()),
        pa.field("rd", pa.bool_()),
        pa.field("ra", pa.bool_()),
        pa.field("answers", pa.list_(pa.string())),
        pa.field("ttls", pa.list_(pa.float64())),
        pa.field("answer_types", pa.list_(pa.string())),
        pa.field("rtt", pa.float64()),  # seconds
        pa.field("query_bytes", pa.int32()),
        pa.field("response_bytes", pa.int32()),
        pa.field("uid", pa.string()),  # Zeek's connection uid, when the source has one
        pa.field("input", pa.string(), nullable=False),
    ]
)

#: Columns naming the transaction's endpoints (the pairing key without ``trans_id``).
ENDPOINT_COLUMNS = ("src_ip", "src_port", "dst_ip", "dst_port", "proto")


def empty() -> pa.Table:
    """An empty DNS table."""
    return DNS_SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Cast and reorder ``table`` to :data:`DNS_SCHEMA`; missing columns become null.

    Raises :class:`ValueError` when ``ts`` or ``input`` is missing.
    """
    return schema.conform(table, DNS_SCHEMA)


def type_name(number: int) -> str:
    """The mnemonic of a DNS record type (``A``, ``HTTPS``, ``TYPE12345``)."""
    import dns.rdatatype

    try:
        return dns.rdatatype.to_text(number)  # type: ignore[arg-type]
    except ValueError:
        return f"TYPE{number}"


def rcode_name(number: int) -> str:
    """The mnemonic of a response code (``NOERROR``, ``NXDOMAIN``, ``RCODE4095``)."""
    import dns.rcode

    try:
        return dns.rcode.to_text(number)  # type: ignore[arg-type]
    except ValueError:
        return f"RCODE{number}"
