"""IPFIX (RFC 7011 / 7012, biflows RFC 5103) decoder.

Message header: version 10, message length, export time (s), sequence (data
records sent before this message in the observation domain), observation domain.
Set 2 holds templates, 3 options templates (field count 0 withdraws a template,
template id 2 / 3 with count 0 withdraws all of them), >= 256 data. Enterprise
elements carry a PEN; RFC 5103 reverse elements (PEN 29305) become ``dst_*``
counters. Exporters that count the current message in the sequence number are
detected per domain (see :mod:`.sequence`). Set walking, templates, options and
pending data are in :mod:`.templated`.
"""

from __future__ import annotations

import struct
from collections import Counter

from flowhawk.collect.decode.base import IPFIX
from flowhawk.collect.decode.templated import Header, TemplateDecoder
from flowhawk.collect.decode.templates import Op, parse_ipfix_templates

_HEADER = struct.Struct("!HHIII")


class IpfixDecoder(TemplateDecoder):
    """Decodes IPFIX messages of one exporter."""

    protocol = IPFIX
    template_set = 2
    options_set = 3
    per_packet_sequence = False
    detect_inclusive = True

    def header(self, buf: bytes, errors: Counter) -> Header | None:
        if len(buf) < _HEADER.size:
            errors["truncated header"] += 1
            return None
        version, length, export, seq, domain = _HEADER.unpack_from(buf)
        if version != 10:
            errors["unsupported version"] += 1
            return None
        if length < _HEADER.size:
            errors["bad message length"] += 1
            return None
        if length > len(buf):
            errors["truncated message"] += 1
            return None
        if length < len(buf):  # a datagram carries one message; the rest is not ours
            errors["trailing bytes"] += 1
        return Header(domain, seq, export * 1_000_000, -1, _HEADER.size, length)

    def parse_templates(
        self, set_id: int, buf: bytes, pos: int, end: int
    ) -> tuple[list[Op], str | None]:
        return parse_ipfix_templates(buf, pos, end, set_id == self.options_set)
