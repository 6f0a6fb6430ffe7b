"""Routing each datagram to the decoder of its protocol, by its first bytes."""

from __future__ import annotations

import importlib
from collections import Counter

import pyarrow as pa

from flowhawk.collect.decode.base import (
    IPFIX,
    NETFLOW5,
    NETFLOW9,
    SFLOW5,
    Decoder,
    DecodeResult,
    ExporterState,
)
from flowhawk.schema import CANONICAL_ADDRESSES

_DECODERS = {
    NETFLOW5: "flowhawk.collect.decode.netflow5:NetFlow5Decoder",
    NETFLOW9: "flowhawk.collect.decode.netflow9:NetFlow9Decoder",
    IPFIX: "flowhawk.collect.decode.ipfix:IpfixDecoder",
    SFLOW5: "flowhawk.collect.decode.sflow:SFlowDecoder",
}


def protocol_of(datagram: bytes) -> str | None:
    """The protocol a datagram claims by its version field, or None."""
    if len(datagram) < 4:
        return None
    if datagram[0] == 0 and datagram[1] == 5:
        return NETFLOW5
    if datagram[0] == 0 and datagram[1] == 9:
        return NETFLOW9
    if datagram[0] == 0 and datagram[1] == 10:
        return IPFIX
    if datagram[:4] == b"\x00\x00\x00\x05":
        return SFLOW5
    return None


class ExportDecoder:
    """Decodes mixed datagrams (any of the four protocols) from one exporter at a time."""

    def __init__(self) -> None:
        self._decoders: dict[str, Decoder] = {}

    def decoder(self, protocol: str) -> Decoder:
        if protocol not in self._decoders:
            module, _, name = _DECODERS[protocol].partition(":")
            self._decoders[protocol] = getattr(importlib.import_module(module), name)()
        return self._decoders[protocol]

    def decode(
        self, datagrams: list[bytes], recv_us: list[int], state: ExporterState
    ) -> DecodeResult:
        """Flows of a batch of datagrams from ``state.exporter``, protocols mixed."""
        groups: dict[str, tuple[list[bytes], list[int]]] = {}
        errors: Counter = Counter()
        ignored: Counter = Counter()
        first = protocol_of(datagrams[0]) if datagrams else None
        head = datagrams[0][: 4 if first == SFLOW5 else 2] if first else b""
        if first is not None and all(len(d) >= 4 and d.startswith(head) for d in datagrams):
            groups[first] = (datagrams, recv_us)  # one protocol: the common case
        else:
            for data, t in zip(datagrams, recv_us, strict=True):
                proto = protocol_of(data)
                if proto is None:
                    errors["unknown protocol version"] += 1
                    continue
                group = groups.setdefault(proto, ([], []))
                group[0].append(data)
                group[1].append(t)
        unknown = errors["unknown protocol version"]
        seen = Counter(
            {p: len(g[0]) for p, g in groups.items()} | ({"unknown": unknown} if unknown else {})
        )
        records, tables, counters, pending = [], [], [], 0
        for proto, (data, times) in groups.items():
            res = self.decoder(proto).decode(data, times, state)
            errors.update(res.errors)
            ignored.update(res.ignored)
            pending += res.pending
            if res.records:
                records.extend(res.records)
                tables.append(None)  # its place among the tables, if they are made
            elif res.num_flows:
                tables.append(res.flows)
            if res.counters is not None and res.counters.num_rows:
                counters.append(res.counters)
        counter_table = pa.concat_tables(counters) if counters else None
        if not any(t is not None for t in tables):  # numeric only: the table when asked
            res = DecodeResult(None, errors, counter_table, pending, ignored, records)
            res.datagrams = seen
            return res
        made = iter(records)
        whole = [t if t is not None else next(made).to_table() for t in tables]
        # decoders format addresses from numbers: the normalizer need not re-parse them
        flows = pa.concat_tables(whole).replace_schema_metadata({CANONICAL_ADDRESSES: b"1"})
        res = DecodeResult(flows, errors, counter_table, pending, ignored)
        res.datagrams = seen
        return res
