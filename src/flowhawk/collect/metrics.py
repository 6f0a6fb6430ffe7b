"""Prometheus counters of the collector: everything received, decoded, dropped and why.

One registry per collector (not the process-wide default), so tests and several
components in one process never share counters. ``serve`` exposes ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from flowhawk.config import parse_hostport


class CollectorMetrics:
    """The collector's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.datagrams = Counter(
            "flowhawk_collector_datagrams",
            "Export datagrams received, by protocol.",
            ["protocol"],
            registry=r,
        )
        self.bytes = Counter("flowhawk_collector_bytes", "Bytes of datagrams received.", registry=r)
        self.flows = Counter(
            "flowhawk_collector_flows",
            "Flow records decoded, by protocol.",
            ["protocol"],
            registry=r,
        )
        self.decode_errors = Counter(
            "flowhawk_collector_decode_errors",
            "Datagrams, sets or records that could not be decoded, by reason.",
            ["reason"],
            registry=r,
        )
        self.ignored = Counter(
            "flowhawk_collector_ignored_records",
            "Records deliberately not used (formats not decoded, non-IP samples), by reason.",
            ["reason"],
            registry=r,
        )
        self.dropped = Counter(
            "flowhawk_collector_dropped_datagrams",
            "Datagrams lost before decoding, by reason (socket: the kernel's receive buffer "
            "overflowed).",
            ["reason"],
            registry=r,
        )
        self.sequence_lost = Counter(
            "flowhawk_collector_sequence_lost_records",
            "Records that exporters' sequence numbers say never arrived.",
            registry=r,
        )
        self.archived = Counter(
            "flowhawk_archive_flows", "Canonical flows written to the archive.", registry=r
        )
        self.files = Counter(
            "flowhawk_archive_files", "Parquet files written to the archive.", registry=r
        )
        self.queue = Gauge(
            "flowhawk_collector_queue_datagrams", "Datagrams waiting to be decoded.", registry=r
        )
        self.pending = Gauge(
            "flowhawk_collector_pending_records",
            "Data records held until their template arrives.",
            registry=r,
        )
        self.held = Gauge(
            "flowhawk_collector_unstitched_records",
            "Unidirectional records held for stitching into biflows.",
            registry=r,
        )
        self.exporters = Gauge(
            "flowhawk_collector_exporters", "Exporters seen since the start.", registry=r
        )
        self.dns_records = Counter(
            "flowhawk_collector_dns_records",
            "Records of the followed Zeek dns.logs ([collect] dns_logs), by outcome (read: "
            "DNS transactions parsed; bad: lines that could not be used).",
            ["outcome"],
            registry=r,
        )
        self._server = None

    def text(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, address: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``address`` (port 0 picks a free one); returns what is bound."""
        host, port = parse_hostport(address)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return host, server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
