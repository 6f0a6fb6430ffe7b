"""DNS: transactions from captures and Zeek logs, their Parquet store, passive DNS.

* :func:`read_dns` reads one input (pcap/pcapng, Zeek dns.log TSV or JSON, decided from
  its content) into tables of :data:`~flowhawk.dns.schema.DNS_SCHEMA`, one row per
  transaction; bad messages and records are counted in the Diagnostics, never raised;
* :mod:`flowhawk.dns.store` writes them under ``DATA/dns`` (date/hour partitions, as the
  flow archive) and reads a time range back;
* :mod:`flowhawk.dns.passive` keeps which names each address answered for, and when,
  and looks names up for columns of addresses.

Readers are imported on use: a capture pulls in numba, a log does not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from flowhawk.diagnostics import Diagnostics
from flowhawk.dns.schema import DNS_SCHEMA
from flowhawk.errors import InputError
from flowhawk.sources.base import read_head

__all__ = ["DNS_PORTS", "DNS_SCHEMA", "MDNS_PORTS", "dns_format", "read_dns"]

#: The DNS port; :data:`MDNS_PORTS` adds multicast DNS and LLMNR.
DNS_PORTS: tuple[int, ...] = (53,)
MDNS_PORTS: tuple[int, ...] = (53, 5353, 5355)


def dns_format(head: bytes) -> str | None:
    """``"pcap"``, ``"zeek-dns"`` or ``"zeek-dns-json"`` from an input's first bytes."""
    from flowhawk.sources.pcap.source import sniff_kind

    if sniff_kind(head) is not None:
        return "pcap"
    text = head.lstrip(b" \t\r\n")
    if text.startswith(b"#"):
        return "zeek-dns"
    if text.startswith(b"{"):
        return "zeek-dns-json"
    return None


def read_dns(path: Path, diag: Diagnostics, ports: Sequence[int] = DNS_PORTS) -> Iterator[pa.Table]:
    """DNS transaction tables of one input; :class:`InputError` if it holds no DNS.

    ``ports`` applies to captures (add 5353/5355 for mDNS/LLMNR).
    """
    name = str(path)
    if not path.is_file():
        raise InputError(name, "is not a file")
    kind = dns_format(read_head(path))
    if kind == "pcap":
        from flowhawk.dns.pcap import read_pcap

        return read_pcap(path, diag, ports)
    if kind == "zeek-dns":
        from flowhawk.dns.zeek import read_tsv

        return read_tsv(path, diag)
    if kind == "zeek-dns-json":
        from flowhawk.dns.zeek import read_json

        return read_json(path, diag)
    raise InputError(
        name, "is not a DNS input: neither a pcap/pcapng capture nor a Zeek dns.log (TSV, JSON)"
    )
