"""The contract between the collector and the export decoders.

The collector hands a decoder a *batch* of UDP datagrams from one exporter
(address) together with their receive times; the decoder returns raw flow columns
(:data:`flowhawk.schema.RAW_FLOW_SCHEMA`), optional side tables (sFlow interface
counters, options data) and counts of everything it could not use, by reason.
Decoders never raise on bad input and never do I/O; their only memory is the
per-exporter :class:`ExporterState` (templates, options, sequence numbers), which
serializes to JSON so templates survive a restart.

One decoder per protocol family, chosen per datagram from its first bytes:

- NetFlow v5: ``00 05`` (16-bit version 5)
- NetFlow v9: ``00 09``
- IPFIX: ``00 0a`` (version 10)
- sFlow v5: ``00 00 00 05`` (32-bit version 5)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from flowhawk.schema import CANONICAL_ADDRESSES, RAW_FLOW_SCHEMA

if TYPE_CHECKING:
    from flowhawk.normalize.rawcolumns import RawColumns

#: Protocol names as used in metrics, inventory and config.
NETFLOW5, NETFLOW9, IPFIX, SFLOW5 = "netflow5", "netflow9", "ipfix", "sflow5"


@dataclass
class DomainStats:
    """What one exporter has sent for one observation domain / source id / agent sub-id."""

    protocol: str = ""  # NETFLOW5 ...
    packets: int = 0  # datagrams decoded (even partly)
    flows: int = 0  # flow records decoded
    sequence_gaps: int = 0  # times the sequence number jumped forward
    lost: int = 0  # records (v5, v9 packets, IPFIX records, sFlow samples) the gaps account for
    errors: int = 0  # datagrams or sets that could not be decoded
    last_seen_us: int = 0  # receive time of the latest datagram
    next_sequence: int | None = None  # expected next sequence number
    sampling: int = 1  # current announced sampling rate (1 = unsampled)


@dataclass
class ExporterState:
    """Everything a decoder remembers about one exporter; JSON-serializable.

    ``templates`` maps a key chosen by the decoder (e.g. ``"ipfix/<domain>/<id>"``) to a
    JSON-able description of the template; ``options`` holds options data the decoder
    keeps (sampling intervals, interface names) the same way; ``domains`` has stats
    per observation domain keyed ``"<protocol>/<domain>"``.
    """

    exporter: str
    templates: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    domains: dict[str, DomainStats] = field(default_factory=dict)

    def domain(self, protocol: str, domain_id: int) -> DomainStats:
        key = f"{protocol}/{domain_id}"
        if key not in self.domains:
            self.domains[key] = DomainStats(protocol=protocol)
        return self.domains[key]

    def to_json(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "templates": self.templates,
            "options": self.options,
            "domains": {k: vars(v) for k, v in self.domains.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExporterState:
        state = cls(
            data["exporter"], dict(data.get("templates", {})), dict(data.get("options", {}))
        )
        for key, value in data.get("domains", {}).items():
            state.domains[key] = DomainStats(**value)
        return state


class DecodeResult:
    """Output of decoding one batch of datagrams from one exporter.

    NetFlow and IPFIX decoders give their flows as numeric columns (``records``, one
    :class:`~flowhawk.normalize.rawcolumns.RawColumns` per input), which the collector
    normalizes without text; ``flows`` is the same rows as a raw flow table, made on
    first use.
    """

    def __init__(
        self,
        flows: pa.Table | None = None,
        errors: Counter | None = None,
        counters: pa.Table | None = None,
        pending: int = 0,
        ignored: Counter | None = None,
        records: list[RawColumns] | None = None,
    ):
        self._flows = flows
        self.errors: Counter = Counter() if errors is None else errors  # reason -> dropped
        self.counters = counters  # sFlow interface counter samples (see sflow module)
        self.pending = pending  # data records held back waiting for their template
        self.ignored: Counter = Counter() if ignored is None else ignored  # not used, by reason
        self.records: list[RawColumns] = records or []  # numeric flows, decoded before `flows`
        self.datagrams: Counter = Counter()  # datagrams by protocol ("unknown": none)

    @property
    def flows(self) -> pa.Table:
        """RAW_FLOW_SCHEMA; exporter column = the exporter address."""
        if self._flows is None:
            tables = [r.to_table() for r in self.records]
            flows = pa.concat_tables(tables) if tables else RAW_FLOW_SCHEMA.empty_table()
            # formatted from numbers: the normalizer need not re-parse the addresses
            self._flows = flows.replace_schema_metadata({CANONICAL_ADDRESSES: b"1"})
        return self._flows

    @flows.setter
    def flows(self, table: pa.Table) -> None:
        self._flows = table
        self.records = []

    @property
    def num_flows(self) -> int:
        """Flow rows, without making the table."""
        if self._flows is not None:
            return self._flows.num_rows
        return sum(len(r) for r in self.records)

    @classmethod
    def empty(cls) -> DecodeResult:
        return cls(RAW_FLOW_SCHEMA.empty_table())


class Decoder(Protocol):
    """Decodes datagrams of one protocol family for one exporter."""

    protocol: str

    def decode(
        self, datagrams: list[bytes], recv_us: list[int], state: ExporterState
    ) -> DecodeResult:
        """Flows in ``datagrams`` (all from ``state.exporter``, in arrival order)."""
        ...
