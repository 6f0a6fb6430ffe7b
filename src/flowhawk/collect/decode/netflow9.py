"""NetFlow v9 (RFC 3954) decoder.

Header: version 9, count, sysUptime (ms), unix seconds, sequence (export packets
per source id), source id. FlowSet 0 holds templates, 1 options templates (scope
fields are scope *types*: system, interface, ...), >= 256 data. Field types >= 32768
are vendor types without an enterprise number. Flow times are sysUptime-relative
(FIRST/LAST_SWITCHED) unless the template carries absolute ones (ASA: 152/323).
The ``count`` header field must match the records (RFC 3954), or the FlowSets, data
records, flow data records or data sets (what various exporters count) when every
set could be read;
otherwise the datagram's flows are dropped as "record count mismatch".
The set walking, templates, options and pending data are in :mod:`.templated`.
"""

from __future__ import annotations

import struct
from collections import Counter

from flowhawk.collect.decode.base import NETFLOW9
from flowhawk.collect.decode.templated import Header, TemplateDecoder
from flowhawk.collect.decode.templates import Op, parse_v9_options, parse_v9_templates

_HEADER = struct.Struct("!HHIIII")


class NetFlow9Decoder(TemplateDecoder):
    """Decodes NetFlow v9 export packets of one exporter."""

    protocol = NETFLOW9
    template_set = 0
    options_set = 1
    per_packet_sequence = True

    def header(self, buf: bytes, errors: Counter) -> Header | None:
        if len(buf) < _HEADER.size:
            errors["truncated header"] += 1
            return None
        version, count, uptime, secs, seq, source = _HEADER.unpack_from(buf)
        if version != 9:
            errors["unsupported version"] += 1
            return None
        return Header(source, seq, secs * 1_000_000, uptime, _HEADER.size, len(buf), count)

    def count_ok(self, hdr: Header, counts: dict[str, int]) -> bool:
        # RFC 3954 counts every record (template, options template, data); many exporters
        # count FlowSets instead, some only data records or data sets, softflowd 1.1.0
        # only flow data records (not options data). A count that is none of these
        # means the datagram is not what its header says.
        return hdr.count in (
            counts["records"],
            counts["sets"],
            counts["data records"],
            counts["data sets"],
            counts["flow records"],
        )

    def parse_templates(
        self, set_id: int, buf: bytes, pos: int, end: int
    ) -> tuple[list[Op], str | None]:
        if set_id == self.options_set:
            return parse_v9_options(buf, pos, end)
        return parse_v9_templates(buf, pos, end)
