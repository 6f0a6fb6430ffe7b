"""The information elements the NetFlow v9 / IPFIX decoders map, and what each becomes.

IANA IPFIX element numbers equal NetFlow v9 field types for 1-127 (RFC 3954 and
RFC 7012 share the registry), so one table serves both. Every element a decoder
understands maps to a *raw column* name (``src4``, ``bytes``, ``first_up``, ...) and
a *kind* (how its bytes are read); :mod:`flowhawk.collect.decode.columns` turns raw
columns into the canonical flow schema and decides precedence (``bytes`` over
``bytes_total`` over ``out_bytes``, ...). Elements not listed are skipped by length.

Keys are ``(pen, element)``: ``pen`` 0 for IANA elements (and for every NetFlow v9
field type, since v9 has no enterprise numbers: a v9 type >= 32768 is just a
vendor type), the Private Enterprise Number for IPFIX enterprise elements, and
:data:`V9_SCOPE` for NetFlow v9 options *scope* fields, whose types are scope
types (system, interface, ...), not elements.
"""

from __future__ import annotations

U, IP4, IP6, MAC, STR, F64 = "u", "ip4", "ip6", "mac", "str", "f64"

#: RFC 5103: reverse-direction elements are the forward element numbers under this PEN.
REVERSE_PEN = 29305
#: Pseudo-PEN marking NetFlow v9 options scope fields.
V9_SCOPE = -1
#: Template field length announcing a variable-length field (RFC 7011 section 7).
VARLEN = 65535

FIELDS: dict[tuple[int, int], tuple[str, str]] = {
    # Counters. Precedence between alternatives is decided in columns.py.
    (0, 1): ("bytes", U),  # octetDeltaCount / IN_BYTES
    (0, 2): ("pkts", U),  # packetDeltaCount / IN_PKTS
    (0, 23): ("out_bytes", U),  # postOctetDeltaCount / OUT_BYTES
    (0, 24): ("out_pkts", U),  # postPacketDeltaCount / OUT_PKTS
    (0, 85): ("bytes_total", U),  # octetTotalCount
    (0, 86): ("pkts_total", U),  # packetTotalCount
    (0, 231): ("init_bytes", U),  # initiatorOctets (Cisco ASA NSEL biflows)
    (0, 232): ("resp_bytes", U),  # responderOctets
    (0, 298): ("init_pkts", U),  # initiatorPackets
    (0, 299): ("resp_pkts", U),  # responderPackets
    (REVERSE_PEN, 1): ("rev_bytes", U),
    (REVERSE_PEN, 2): ("rev_pkts", U),
    (REVERSE_PEN, 85): ("rev_bytes_total", U),
    (REVERSE_PEN, 86): ("rev_pkts_total", U),
    (REVERSE_PEN, 6): ("rev_flags", U),
    # YAF (CERT PEN 6871) reports TCP flags as initial + union of the rest; 0x4000 marks
    # its reverse elements.
    (6871, 14): ("yaf_flags", U),
    (6871, 15): ("yaf_union_flags", U),
    (6871, 16398): ("yaf_rev_flags", U),
    (6871, 16399): ("yaf_rev_union_flags", U),
    # Flow key. Post-NAT addresses and ports (225-228, 281, 282) are deliberately absent:
    # they are not the flow's addresses.
    (0, 8): ("src4", IP4),
    (0, 12): ("dst4", IP4),
    (0, 27): ("src6", IP6),
    (0, 28): ("dst6", IP6),
    (0, 7): ("sport", U),
    (0, 11): ("dport", U),
    (0, 180): ("udp_sport", U),
    (0, 181): ("udp_dport", U),
    (0, 182): ("tcp_sport", U),
    (0, 183): ("tcp_dport", U),
    (0, 4): ("proto", U),
    (0, 6): ("flags", U),
    (0, 32): ("icmp4", U),  # icmpTypeCodeIPv4
    (0, 139): ("icmp6", U),  # icmpTypeCodeIPv6
    (0, 176): ("icmp4_type", U),
    (0, 177): ("icmp4_code", U),
    (0, 178): ("icmp6_type", U),
    (0, 179): ("icmp6_code", U),
    # Layer 2.
    (0, 58): ("vlan", U),  # vlanId / SRC_VLAN
    (0, 243): ("dot1q_vlan", U),
    (0, 56): ("src_mac", MAC),  # sourceMacAddress / IN_SRC_MAC
    (0, 80): ("dst_mac", MAC),  # destinationMacAddress / IN_DST_MAC
    (0, 57): ("post_dst_mac", MAC),  # postDestinationMacAddress / OUT_DST_MAC
    (0, 81): ("post_src_mac", MAC),  # postSourceMacAddress / OUT_SRC_MAC
    # Time.
    (0, 22): ("first_up", U),  # flowStartSysUpTime / FIRST_SWITCHED (ms)
    (0, 21): ("last_up", U),  # flowEndSysUpTime / LAST_SWITCHED (ms)
    (0, 150): ("start_s", U),
    (0, 151): ("end_s", U),
    (0, 152): ("start_ms", U),
    (0, 153): ("end_ms", U),
    (0, 154): ("start_us", U),  # NTP format (RFC 7011 section 6.1.9)
    (0, 155): ("end_us", U),
    (0, 156): ("start_ns", U),  # NTP format
    (0, 157): ("end_ns", U),
    (0, 158): ("start_delta_us", U),  # microseconds before the export time
    (0, 159): ("end_delta_us", U),
    (0, 160): ("sys_init_ms", U),  # systemInitTimeMilliseconds
    (0, 161): ("dur_ms", U),
    (0, 162): ("dur_us", U),
    (0, 323): ("obs_ms", U),  # observationTimeMilliseconds (ASA event time)
    # Direction and state.
    (0, 239): ("biflow_dir", U),  # biflowDirection
    (0, 233): ("fw_event", U),  # firewallEvent
    (0, 40005): ("fw_event", U),  # Cisco ASA NF_F_FW_EVENT (NetFlow v9 only)
    # Sampling (options data, or per data record).
    (0, 34): ("sampling", U),  # samplingInterval / SAMPLING_INTERVAL
    (0, 35): ("sampling_algo", U),
    (0, 48): ("sampler_id", U),  # samplerId / FLOW_SAMPLER_ID
    (0, 49): ("sampler_mode", U),
    (0, 50): ("sampler_interval", U),  # samplerRandomInterval / FLOW_SAMPLER_RANDOM_INTERVAL
    (0, 302): ("selector_id", U),
    (0, 304): ("selector_algo", U),
    (0, 305): ("pkt_interval", U),  # samplingPacketInterval
    (0, 306): ("pkt_space", U),  # samplingPacketSpace
    (0, 309): ("sampling_size", U),
    (0, 310): ("sampling_population", U),
    (0, 311): ("sampling_probability", F64),
    # Interfaces (options data).
    (0, 10): ("ifindex", U),  # ingressInterface / INPUT_SNMP
    (0, 82): ("ifname", STR),
    (0, 83): ("ifdesc", STR),
    # NetFlow v9 options scope types (RFC 3954 section 6.1).
    (V9_SCOPE, 1): ("scope_system", U),
    (V9_SCOPE, 2): ("ifindex", U),
    (V9_SCOPE, 3): ("scope_linecard", U),
    (V9_SCOPE, 4): ("scope_cache", U),
    (V9_SCOPE, 5): ("scope_template", U),
}

_LENGTHS = {IP4: (4,), IP6: (16,), MAC: (6,), F64: (8,)}


def lookup(pen: int, element: int, length: int) -> tuple[str, str] | None:
    """Raw column and kind for a template field, or None when not mapped or of unusable length.

    Unsigned integers may use reduced-size encoding (RFC 7011 section 6.2: any length
    1-8); addresses, MACs and floats must have their natural length; a zero-length
    field carries nothing.
    """
    entry = FIELDS.get((pen, element))
    if entry is None or length == 0:
        return None
    kind = entry[1]
    if length == VARLEN:
        return entry if kind == STR else None
    if kind == U:
        return entry if length <= 8 else None
    if kind == STR:
        return entry
    return entry if length in _LENGTHS[kind] else None
