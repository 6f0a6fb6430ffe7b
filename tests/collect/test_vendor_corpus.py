"""NetFlow v5 / v9 and IPFIX decoders on 92 real export packets from ~20 vendors.

The corpus (../shared/data/conformance/netflow_ipfix_packets, from Logstash's netflow
codec) holds raw UDP payloads: template-only, data-only (decoded after the template
files named in :data:`CONTEXT`), options and deliberately invalid packets. A few
files are several datagrams captured back to back (``nc -k``); :func:`split_datagrams`
cuts them apart as the network would have delivered them.

Expected values were checked against tshark's NetFlow/IPFIX dissector (the last test
here compares every record with it) and, where it has them, against the values the
Logstash codec's own tests assert.
"""

from __future__ import annotations

import json
import struct
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.dispatch import ExportDecoder, protocol_of
from tests.conftest import SHARED_DATA

CORPUS = SHARED_DATA / "conformance" / "netflow_ipfix_packets"
NDPI = SHARED_DATA / "conformance" / "ndpi_pcaps" / "pcap"
T0 = 1_700_000_000_000_000  # receive time of the first datagram in a test (µs)

#: Every reason a decoder may give for input it could not use.
REASONS = frozenset(
    {
        "truncated header",
        "unsupported version",
        "record count mismatch",
        "trailing bytes",
        "bad message length",
        "truncated message",
        "bad set length",
        "reserved set id",
        "bad template",
        "too many templates",
        "no template",
        "truncated record",
        "trailing bytes in set",
        "unknown protocol version",
    }
)

_ASR9K = [
    "netflow9_test_cisco_asr9k_opttpl256",
    "netflow9_test_cisco_asr9k_opttpl257",
    "netflow9_test_cisco_asr9k_opttpl334",
    "netflow9_test_cisco_asr9k_tpl260",
    "netflow9_test_cisco_asr9k_tpl266",
]
_YAF = ["ipfix_test_yaf_tpls_option_tpl", "ipfix_test_yaf_tpl45841"]

#: The files each data file needs decoded before it (same exporter), in order.
CONTEXT: dict[str, list[str]] = {
    "ipfix_test_barracuda_data256": ["ipfix_test_barracuda_tpl"],
    "ipfix_test_barracuda_extended_uniflow_data256": [
        "ipfix_test_barracuda_extended_uniflow_tpl256"
    ],
    "ipfix_test_juniper_mx240_junos151r6s3_data512": [
        "ipfix_test_juniper_mx240_junos151r6s3_opttpl512"
    ],
    "ipfix_test_mikrotik_data258": ["ipfix_test_mikrotik_tpl"],
    "ipfix_test_mikrotik_data259": ["ipfix_test_mikrotik_tpl"],
    "ipfix_test_netscaler_data": ["ipfix_test_netscaler_tpl"],
    "ipfix_test_nokia_bras_data256": ["ipfix_test_nokia_bras_tpl"],
    "ipfix_test_openbsd_pflow_data": ["ipfix_test_openbsd_pflow_tpl"],
    "ipfix_test_procera_data52935": ["ipfix_test_procera_tpl52935"],
    "ipfix_test_viptela_data257": ["ipfix_test_viptela_tpl257"],
    "ipfix_test_vmware_vds_data264": ["ipfix_test_vmware_vds_tpl"],
    "ipfix_test_vmware_vds_data266": ["ipfix_test_vmware_vds_tpl"],
    "ipfix_test_vmware_vds_data266_267": ["ipfix_test_vmware_vds_tpl"],
    "ipfix_test_yaf_data45841": _YAF,
    "ipfix_test_yaf_data45873": _YAF,
    "ipfix_test_yaf_data53248": _YAF,
    "netflow9_test_cisco_aci_data256": ["netflow9_test_cisco_aci_tpl256-258"],
    "netflow9_test_cisco_asa_1_data": ["netflow9_test_cisco_asa_1_tpl"],
    "netflow9_test_cisco_asa_2_data": [
        "netflow9_test_cisco_asa_2_tpl_26x",
        "netflow9_test_cisco_asa_2_tpl_27x",
    ],
    "netflow9_test_cisco_asr9k_data256": _ASR9K,
    "netflow9_test_cisco_asr9k_data260": _ASR9K,
    "netflow9_test_cisco_nbar_data262": [
        "netflow9_test_cisco_nbar_opttpl260",
        "netflow9_test_cisco_nbar_tpl262",
    ],
    "netflow9_test_cisco_wlc_data261": [
        "netflow9_test_cisco_wlc_tpl",
        "netflow9_test_cisco_wlc_8510_tpl_262",
    ],
    "netflow9_test_field_layer2segmentid_data": ["netflow9_test_field_layer2segmentid_tpl"],
    "netflow9_test_fortigate_fortios_521_data256": ["netflow9_test_fortigate_fortios_521_tpl"],
    "netflow9_test_fortigate_fortios_521_data257": ["netflow9_test_fortigate_fortios_521_tpl"],
    "netflow9_test_fortigate_fortios_542_appid_data258_262": [
        "netflow9_test_fortigate_fortios_542_appid_tpl258-269"
    ],
    "netflow9_test_h3c_data3281": ["netflow9_test_h3c_tpl3281"],
    "netflow9_test_h3c_netstream_varstring_data3281": [
        "netflow9_test_h3c_netstream_varstring_tpl3281"
    ],
    "netflow9_test_huawei_netstream_data": ["netflow9_test_huawei_netstream_tpl"],
    "netflow9_test_macaddr_data": ["netflow9_test_macaddr_tpl"],
    "netflow9_test_nprobe_data": ["netflow9_test_nprobe_tpl"],
    "netflow9_test_paloalto_81_data257_1flowset_in_large_zerofilled_packet": [
        "netflow9_test_paloalto_81_tpl256-263"
    ],
    "netflow9_test_paloalto_panos_data": ["netflow9_test_paloalto_panos_tpl"],
    "netflow9_test_ubnt_edgerouter_data1024": ["netflow9_test_ubnt_edgerouter_tpl"],
    "netflow9_test_ubnt_edgerouter_data1025": ["netflow9_test_ubnt_edgerouter_tpl"],
}

#: Flows each file gives (after its context) and what it is rejected for, if anything.
EXPECTED: dict[str, tuple[int, dict[str, int]]] = {
    "netflow5": (30, {}),
    "netflow5_test_invalid01": (0, {"record count mismatch": 1}),  # count 55582 in 1464 bytes
    "netflow5_test_invalid02": (0, {"record count mismatch": 1}),  # count 163 in 1464 bytes
    "netflow5_test_juniper_mx80": (29, {}),
    "netflow5_test_microtik": (30, {}),
    # Logstash names it invalid because its parser assumes 4-byte aligned sets (the
    # options template set is 22 bytes), and tshark stops after the header's count of 2.
    # It is softflowd's layout: count = flow data records (one IPv6, one IPv4); nfcapd
    # decodes both with no bad packet, and so do we.
    "netflow9_test_invalid01": (2, {}),
    # data for templates 259 / 262 that never came: held, then dropped
    "netflow9_test_iptnetflow_reduced_size_encoding_tpldata260": (12, {"no template": 6}),
    # an 83-byte template over a 100-byte set: 17 bytes are not padding
    "netflow9_test_nprobe_dpi": (1, {"trailing bytes in set": 1}),
    "ipfix_test_netscaler_data": (3, {"no template": 1}),  # set 280 has no template
    "ipfix": (12, {}),
    "ipfix_test_mikrotik_data258": (28, {}),
    "ipfix_test_mikrotik_data259": (18, {}),
    "ipfix_test_openbsd_pflow_data": (26, {}),
    "netflow9_test_cisco_asa_1_data": (14, {}),
    "netflow9_test_cisco_asa_2_data": (19, {}),
    "netflow9_test_cisco_asr9k_data260": (21, {}),
    "netflow9_test_macaddr_data": (29, {}),
    "netflow9_test_ubnt_edgerouter_data1024": (8, {}),
    "netflow9_cisco_asr1001x_tpl259": (25, {}),
    "netflow9_test_0length_fields_tpl_data": (10, {}),
    "netflow9_test_cisco_1941K9": (29, {}),
    "netflow9_test_fortigate_fortios_542_appid_data258_262": (17, {}),
    "netflow9_test_h3c_data3281": (16, {}),
    "netflow9_test_valid01": (7, {}),
}


def split_datagrams(data: bytes) -> list[bytes]:
    """Cut back-to-back export packets apart (v5 by count, IPFIX by length, v9 by FlowSets)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        version = int.from_bytes(data[pos : pos + 2], "big")
        end = len(data)
        if version == 5:
            count = int.from_bytes(data[pos + 2 : pos + 4], "big")
            end = pos + 24 + 48 * count if count else end
        elif version == 10:
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            end = pos + length if length >= 16 else end
        elif version == 9:  # a set id of 9 cannot be a FlowSet (2-255 are reserved): a header
            p = pos + 20
            while p + 4 <= len(data):
                set_id, length = struct.unpack_from("!HH", data, p)
                if set_id == 9:
                    end = p
                    break
                if length < 4:
                    break
                p += length
        end = min(end, len(data)) if end > pos else len(data)
        out.append(data[pos:end])
        pos = end
    return out


def datagrams(*names: str) -> list[bytes]:
    return [d for name in names for d in split_datagrams((CORPUS / f"{name}.dat").read_bytes())]


def decode(
    names: list[str], state: ExporterState | None = None, decoder: ExportDecoder | None = None
):
    """Decode the files in order as one exporter's traffic; (result of the last, state)."""
    state = state or ExporterState("192.0.2.1")
    decoder = decoder or ExportDecoder()
    result = None
    for name in names:
        dgs = datagrams(name)
        result = decoder.decode(dgs, [T0 + i for i in range(len(dgs))], state)
    return result, state


def group_rows(name: str) -> list[dict]:
    result, _ = decode([*CONTEXT.get(name, []), name])
    return result.flows.to_pylist()


def pcap_udp_payloads(path: Path) -> list[tuple[int, bytes]]:
    """(time µs, UDP payload) of each IPv4/IPv6 UDP packet of a classic pcap file."""
    data = path.read_bytes()
    magic = data[:4]
    e = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    assert linktype == 1, "Ethernet captures only"
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(e + "IIII", data, pos)
        frame, pos = data[pos + 16 : pos + 16 + incl], pos + 16 + incl
        off, ethertype = 14, struct.unpack_from("!H", frame, 12)[0]
        while ethertype == 0x8100:
            ethertype, off = struct.unpack_from("!H", frame, off + 2)[0], off + 4
        if ethertype == 0x0800 and frame[off + 9] == 17:
            l4 = off + (frame[off] & 15) * 4
        elif ethertype == 0x86DD and frame[off + 6] == 17:
            l4 = off + 40
        else:
            continue
        length = struct.unpack_from("!H", frame, l4 + 4)[0]
        out.append(
            (sec * 1_000_000 + (frac // 1000 if nano else frac), frame[l4 + 8 : l4 + length])
        )
    return out


# -- every file ------------------------------------------------------------------------

ALL = sorted(p.stem for p in CORPUS.glob("*.dat"))


def test_corpus_is_all_there() -> None:
    assert len(ALL) == 92
    assert {f for files in CONTEXT.values() for f in files} | set(CONTEXT) <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_every_file_decodes_or_is_rejected_for_a_reason(name: str) -> None:
    decoder = ExportDecoder()
    _, state = decode(CONTEXT.get(name, []), decoder=decoder)
    templates = dict(state.templates)
    option_records = sum(o.get("option_records", 0) for o in state.options.values())
    result, state = decode([name], state, decoder)
    protocol = protocol_of(datagrams(name)[0])
    errors = Counter(result.errors)
    if protocol != "netflow5":  # what is still waiting for a template will never get one
        errors.update(decoder.decoder(protocol).flush(state))
    assert set(errors) <= REASONS, errors
    learned = [k for k, v in state.templates.items() if templates.get(k) != v]
    options = sum(o.get("option_records", 0) for o in state.options.values()) - option_records
    assert result.flows.num_rows or learned or options or errors or result.ignored
    if name == "netflow9_test_cisco_wlc_data261":  # per-client application usage: no peer
        assert dict(result.ignored) == {"not a flow record": 19}
    else:
        assert not result.ignored
    if name in EXPECTED:
        assert (result.flows.num_rows, dict(errors)) == EXPECTED[name]
    elif "invalid" not in name:
        assert not errors
    if name == "netflow9_test_invalid01":  # the flows nfcapd 1.7.1 stores from it, 1 packet
        # each; its options data announce 1-in-100 sampling, which we apply (nfcapd does not)
        got = sorted(
            (r["src_ip"], r["dst_ip"], r["src_pkts"], r["sampling"])
            for r in result.flows.to_pylist()
        )
        assert got == [
            ("192.168.0.1", "192.168.0.105", 100, 100),
            ("2001:44b8:1118:7200::10", "2001:44b8:4030:cd91:8075:bae:d39d:2621", 100, 100),
        ]
    if result.flows.num_rows:
        assert result.flows.column("input")[0].as_py() == f"{protocol}://192.0.2.1"
        ids = result.flows.column("flow_id").to_pylist()
        assert len(set(ids)) == len(ids)


# -- field values, one or more records per vendor ----------------------------------------

_KEYS = (
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "proto",
    "src_pkts",
    "src_bytes",
    "dst_pkts",
    "dst_bytes",
)

# One block per checked record: "<file> <row>", then (indented) source, destination,
# ports, protocol, packets, bytes, reverse packets, reverse bytes | start | end, and the
# columns that differ from the usual (flags / VLAN / MACs / state / orient null, uni
# True, sampling 1) as name=value.
VALUES_TEXT = """
# softflowd v5: first-switched 0xffffffff is 1 ms before boot, not 49.7 days later
netflow5 0
    10.0.2.2 10.0.2.15 54435 22 6 5 230 0 0
    | 2015-05-02 18:38:04.898328 | 2015-05-02 18:38:07.476328
    | src_tcp_flags=16 flow_id=0:0:0
netflow5_test_microtik 29
    10.0.8.1 192.168.0.1 80 51826 6 13 11442 0 0
    | 2016-07-21 13:51:42.254932 | 2016-07-21 13:51:42.254932
    | src_tcp_flags=82
# Juniper announces 1:1000 sampling in the v5 header (mode 0): counters scaled
netflow5_test_juniper_mx80 28
    66.249.92.75 192.168.0.1 37387 80 6 2000 104000 0 0
    | 2016-07-21 13:52:33.936 | 2016-07-21 13:52:33.936
    | src_tcp_flags=16 sampling=1000
netflow9_test_valid01 0
    172.16.32.100 172.16.32.248 123 123 17 1 76 0 0
    | 2015-10-08 19:03:46.140 | 2015-10-08 19:03:46.141
    | src_tcp_flags=0 flow_id=0:1:152
# Cisco ASA NSEL: ICMP echo (8/0) in dst_port, absolute start, event time as end
netflow9_test_cisco_asa_1_data 1
    192.168.23.22 164.164.37.11 0 2048 1 0 56 0 0
    | 2015-10-09 09:47:48.169 | 2015-10-09 09:47:50.179
    | state=deleted
# ASA initiator/responder octets: a biflow
netflow9_test_cisco_asa_2_data 18
    192.168.0.1 192.168.0.18 56651 80 6 0 69 0 14178
    | 2016-07-21 13:50:36.395 | 2016-07-21 13:50:36.495
    | state=deleted orient=start uni=False
netflow9_test_cisco_asr9k_data260 20
    10.0.29.46 10.0.15.38 443 52364 6 2 112 0 0
    | 2016-12-06 10:08:52.377 | 2016-12-06 10:08:53.964
    | src_tcp_flags=18
netflow9_test_cisco_nbar_data262 4
    10.10.172.60 10.30.19.180 45269 161 17 36 2794 0 0
    | 2017-02-14 11:10:19.936 | 2017-02-14 11:10:20.008
    | src_mac=00:18:19:9e:6c:01 dst_mac=1c:df:0f:7e:c3:58
netflow9_test_cisco_aci_data256 0
    10.154.231.145 10.154.231.146 179 49411 6 2 99 0 0
    | 2018-10-15 11:28:04.019 | 2018-10-15 11:28:23.066
    | src_tcp_flags=24
# no time fields at all: the export time
netflow9_test_cisco_1941K9 0
    192.168.0.111 62.217.193.1 37301 53 17 1 75 0 0 | 2017-10-03 17:03:39 | 2017-10-03 17:03:39
    | src_tcp_flags=0 src_mac=ec:1f:72:11:9f:c1
netflow9_cisco_asr1001x_tpl259 0
    10.111.111.242 10.12.100.13 52444 53218 6 7 965 0 0
    | 2017-10-09 20:22:20.637 | 2017-10-09 20:22:20.731
netflow9_test_macaddr_data 0
    172.16.32.1 172.16.32.201 65058 22 6 0 0 0 0 | 2015-10-10 08:47:01 | 2015-10-10 08:47:01
    | src_mac=00:50:56:c0:00:01 dst_mac=00:0c:29:70:86:09
# Ubiquiti sends only the post (OUT_*) MACs
netflow9_test_ubnt_edgerouter_data1025 7
    192.168.1.102 10.2.0.95 47690 443 6 21 3668 0 0
    | 2016-09-10 15:02:53.375 | 2016-09-10 15:23:44.363
    | src_tcp_flags=27 src_mac=06:be:ef:be:ef:b9 dst_mac=44:d9:e7:be:ef:8e
netflow9_test_fortigate_fortios_521_data257 0
    192.168.99.7 31.13.87.36 61910 443 6 3 152 0 0
    | 2017-07-25 04:44:28.522 | 2017-07-25 04:44:37.522
netflow9_test_fortigate_fortios_542_appid_data258_262 0
    192.168.100.151 182.50.136.239 45380 80 6 6 748 0 0
    | 2018-05-11 00:54:09.580 | 2018-05-11 00:54:09.990
netflow9_test_paloalto_81_data257_1flowset_in_large_zerofilled_packet 0
    134.220.2.6 134.220.1.156 88 50234 6 3 363 0 0 | 2018-06-06 13:20:02 | 2018-06-06 13:20:02
    | src_tcp_flags=94 state=deleted
netflow9_test_paloalto_panos_data 0
    23.35.171.27 10.32.91.205 80 49519 6 1 70 0 0 | 2017-11-13 14:39:31 | 2017-11-13 14:39:31
    | src_tcp_flags=18 state=created
netflow9_test_h3c_data3281 0
    10.22.166.30 10.22.163.21 0 0 6 697 1027087 0 0
    | 2018-05-21 09:23:34.158 | 2018-05-21 09:25:03.677
    | src_tcp_flags=0
netflow9_test_h3c_netstream_varstring_data3281 0
    20.20.20.20 20.20.255.255 137 137 17 9 702 0 0
    | 2018-07-18 01:34:33.274 | 2018-07-18 01:35:02.969
    | src_tcp_flags=0
# Huawei's lone 2-byte element 232 is not an ASA responder counter
netflow9_test_huawei_netstream_data 0
    10.108.219.53 10.111.112.204 45587 2598 6 4 200 0 0
    | 2018-01-29 02:56:51.940 | 2018-01-29 03:02:19
    | src_tcp_flags=24
netflow9_test_nprobe_data 0
    172.16.32.201 172.16.32.1 22 65058 6 2 200 0 0
    | 2015-10-08 19:05:55.010 | 2015-10-08 19:05:55.015
    | src_tcp_flags=24
netflow9_test_streamcore_tpl_data260 0
    100.78.40.201 10.27.8.20 8080 53483 6 10 3943 0 0
    | 2017-01-11 11:22:43.939 | 2017-01-11 11:23:34.936
    | src_tcp_flags=26
# ipt-netflow reduced-size encoding (2-byte interface numbers and the like)
netflow9_test_iptnetflow_reduced_size_encoding_tpldata260 0
    37.122.1.226 193.151.198.166 27622 36025 6 3 156 0 0
    | 2018-02-18 05:46:45 | 2018-02-18 05:46:53.996
    | src_tcp_flags=2 src_mac=90:e2:ba:23:09:fc dst_mac=00:1b:21:bc:24:dd
netflow9_test_field_layer2segmentid_data 0
    192.168.200.136 80.82.237.40 61926 445 6 1 52 0 0 | 2018-01-16 09:44:47 | 2018-01-16 09:44:47
    | vlan=3174
# IN_BYTES/IN_PKTS are 0, the counters are in OUT_BYTES/OUT_PKTS
netflow9_test_0length_fields_tpl_data 9
    192.168.1.33 239.255.255.250 0 0 2 1 32 0 0
    | 2016-12-23 01:34:51.569 | 2016-12-23 01:34:51.569
    | src_tcp_flags=0
netflow9_test_unknown_tpl266_292_data 0
    192.168.0.3 192.168.0.2 137 137 17 1 78 0 0 | 2017-12-01 17:04:26 | 2017-12-01 17:04:26
# ICMPv6 router advertisement (134/0) in dst_port
netflow9_test_softflowd_tpl_data 6
    fe80::20c:29ff:fe83:3b6e ff02::1 0 34304 58 7 672 0 0
    | 2015-10-08 19:03:47.819 | 2015-10-08 19:04:25.900
    | src_tcp_flags=0
# softflowd IPFIX: sysUpTime times based on systemInitTimeMilliseconds from options
ipfix 0
    192.168.253.1 192.168.253.128 60560 22 6 5 260 0 0
    | 2015-05-13 11:20:13.506 | 2015-05-13 11:20:26.232
    | src_tcp_flags=16 flow_id=0:6:218
ipfix_test_openbsd_pflow_data 25
    192.168.0.1 192.168.0.17 80 64026 6 8 6425 0 0 | 2016-07-21 13:29:59 | 2016-07-21 13:30:01
# variable-length fields; dateTimeMicroseconds in NTP format
ipfix_test_netscaler_data 2
    192.168.0.1 10.0.0.1 51053 443 6 2 1541 0 0
    | 2016-11-11 12:09:19.000128 | 2016-11-11 12:09:19.000128
    | src_tcp_flags=24
ipfix_test_vmware_vds_data266_267 1
    fe80::5187:5cd8:d750:cdc9 ff02::1:3 61329 5355 17 2 144 0 0
    | 2016-12-22 12:25:49 | 2016-12-22 12:25:49
    | src_tcp_flags=0
# YAF RFC 5103 biflow: reverse counters and flags in dst_*, initial|union flags
ipfix_test_yaf_data45873 0
    172.16.32.100 172.16.32.215 63499 9997 6 4 172 2 92
    | 2016-12-25 12:58:33.345 | 2016-12-25 12:58:34.347
    | src_tcp_flags=211 dst_tcp_flags=19 orient=start uni=False
# sysUpTime times without systemInitTime: ends at the export time, keeps the duration
ipfix_test_barracuda_data256 7
    10.98.243.20 10.99.168.140 53 50294 17 1 113 0 0
    | 2017-06-29 13:58:07.632 | 2017-06-29 13:58:28
    | state=deleted
ipfix_test_barracuda_extended_uniflow_data256 0
    10.236.5.4 64.235.151.76 51917 443 6 0 0 0 0 | 2018-04-18 08:16:47 | 2018-04-18 08:16:47
    | src_mac=00:50:56:b9:26:46 state=created
ipfix_test_mikrotik_data258 0
    10.10.8.197 192.168.128.17 123 123 17 2 152 0 0 | 2017-07-19 16:18:08 | 2017-07-19 16:18:08
    | src_tcp_flags=0
ipfix_test_mikrotik_data259 17
    fe80::ff:fe00:1201 fe80::ff:fe00:1201 5678 5678 17 2 370 0 0
    | 2017-07-19 16:18:08 | 2017-07-19 16:18:08
    | src_tcp_flags=0
ipfix_test_nokia_bras_data256 0
    10.0.1.228 10.0.0.34 5878 80 6 0 0 0 0 | 2017-12-14 07:23:45.148 | 2017-12-14 07:23:45.148
    | flow_id=2228226:953:20
ipfix_test_procera_data52935 0
    181.214.87.71 138.44.161.14 53787 47838 6 0 0 0 0 | 2018-04-15 03:26:50 | 2018-04-15 03:29:02
ipfix_test_viptela_data257 0
    10.113.7.54 172.16.21.27 41717 443 6 8 775 0 0 | 2017-11-21 14:32:15 | 2017-11-21 14:32:15
    | src_tcp_flags=16
ipfix_test_ixia_tpldata271 0
    61.227.100.96 202.170.60.245 9487 43431 17 2 132 0 0
    | 2018-10-25 12:24:26.527 | 2018-10-25 12:24:32.022
    | src_tcp_flags=0
"""


def _value(text: str):
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    return int(text) if text.isdigit() else text


def _parse_values(text: str) -> list[tuple[str, int, dict]]:
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0] != " ":
            blocks.append([line])
        else:
            blocks[-1].append(line.strip())
    out = []
    for head, *rest in blocks:
        name, row = head.split()
        fields = [f.strip() for f in " ".join(rest).split("|")]
        want = dict(zip(_KEYS, map(_value, fields[0].split()), strict=True))
        want["ts_start"], want["ts_end"] = _ts(fields[1]), _ts(fields[2])
        if len(fields) > 3:
            want.update((k, _value(v)) for k, v in (kv.split("=", 1) for kv in fields[3].split()))
        out.append((name, int(row), want))
    return out


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


VALUES = _parse_values(VALUES_TEXT)


@pytest.mark.parametrize(
    ("name", "row", "expected"), VALUES, ids=[f"{v[0]}[{v[1]}]" for v in VALUES]
)
def test_vendor_values(name: str, row: int, expected: dict) -> None:
    got = group_rows(name)[row]
    want = {
        "src_tcp_flags": None,
        "dst_tcp_flags": None,
        "vlan": None,
        "src_mac": None,
        "dst_mac": None,
        "state": None,
        "orient": None,
        "uni": True,
        "sampling": 1,
        "service": None,
        "exporter": "192.0.2.1",
        **expected,
    }
    assert {k: got[k] for k in want} == want


def test_options_from_real_exporters() -> None:
    _, state = decode(["netflow9_test_juniper_srx_tplopt"])  # sampling algorithm 2, interval 1
    assert state.options["netflow9/142"]["sampling"] == 1
    _, state = decode(
        [
            *CONTEXT["ipfix_test_juniper_mx240_junos151r6s3_data512"],
            "ipfix_test_juniper_mx240_junos151r6s3_data512",
        ]
    )
    opts = state.options["ipfix/524288"]
    assert (opts["sampling"], opts["sys_init_ms"]) == (1000, 1262761598000)
    assert state.domains["ipfix/524288"].sampling == 1000
    _, state = decode([*_ASR9K, "netflow9_test_cisco_asr9k_data256"])  # IF_DESC by INPUT_SNMP
    assert state.options["netflow9/2177"]["interfaces"]["104"] == {"description": "TenGigE0_6_0_2"}
    _, state = decode(["ipfix"])  # softflowd: systemInitTimeMilliseconds, 1:1 PSAMP sampling
    assert state.options["ipfix/0"]["sys_init_ms"] == 1431516013506
    assert state.options["ipfix/0"]["sampling"] == 1


def test_softflowd_counts_the_current_message_in_its_ipfix_sequence() -> None:
    """Its 3 messages: sequence 6 with 6 flows, 7 with 1, 12 with 5: no gap, once understood."""
    _, state = decode(["ipfix"])
    stats = state.domains["ipfix/0"]
    assert (stats.sequence_gaps, stats.lost, stats.next_sequence) == (0, 0, 12)
    assert state.options["ipfix/0"]["seq"][2] == 1  # switched to the inclusive convention


def test_templates_survive_a_restart() -> None:
    """Templates saved as JSON decode data sent after a restart, with no new template."""
    name = "netflow9_test_cisco_asa_2_data"
    before, _ = decode([*CONTEXT[name], name])
    _, state = decode(CONTEXT[name])
    saved = json.loads(json.dumps(state.to_json()))
    after, restored = decode([name], ExporterState.from_json(saved), ExportDecoder())
    assert after.flows.equals(before.flows)
    assert restored.domains["netflow9/0"].flows == 19


# -- the NetFlow captures among the nDPI pcaps ---------------------------------------------


def _tshark_json(pcap: Path, port: int) -> list[dict]:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-d",
            f"udp.port=={port},cflow",
            "-T",
            "json",
            "--no-duplicate-keys",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [p["_source"]["layers"].get("cflow", {}) for p in json.loads(out)]


def _tshark_records(layers: list[dict]) -> tuple[list[tuple[dict, dict]], int]:
    """(header, record) per flow record tshark decoded, and sets it had no template for."""
    records, missing = [], 0
    for cflow in layers:
        for key, value in cflow.items():
            if key.startswith("pdu "):
                records.append((cflow, value))
            elif isinstance(value, dict) and key.startswith(("FlowSet", "Set")):
                missing += "no template found" in json.dumps(value)
                records += [(cflow, v) for k, v in value.items() if k.startswith("Flow ")]
    return records, missing


@pytest.mark.peer
@pytest.mark.parametrize(
    ("name", "port", "flows", "held", "templates"),
    [
        ("netflowv9.pcap", 2057, 0, 23, []),  # starts mid-stream: data sets, no template ever
        (
            "netflow-fritz.pcap",
            2055,
            0,
            0,
            ["ipfix/262400/461", "ipfix/262400/466", "ipfix/262400/467"],
        ),  # IPFIX templates only
    ],
)
def test_ndpi_netflow_captures(
    name: str, port: int, flows: int, held: int, templates: list[str]
) -> None:
    packets = pcap_udp_payloads(NDPI / name)
    decoder, state = ExportDecoder(), ExporterState("192.0.2.1")
    result = decoder.decode([p for _, p in packets], [t for t, _ in packets], state)
    assert (result.flows.num_rows, result.pending, sorted(state.templates)) == (
        flows,
        held,
        templates,
    )
    assert not result.errors
    proto = protocol_of(packets[0][1])
    assert decoder.decoder(proto).flush(state) == ({"no template": held} if held else {})
    records, missing = _tshark_records(_tshark_json(NDPI / name, port))
    assert (len(records), missing) == (flows, held)


# -- every record against tshark's dissector ---------------------------------------------


def write_pcap(path: Path, payloads: list[bytes], port: int = 2055) -> None:
    """A classic pcap of IPv4/UDP packets 192.0.2.1:40000 -> 192.0.2.2:``port``."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, payload in enumerate(payloads):
        udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
        ip = (
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                i & 0xFFFF,
                0,
                64,
                17,
                0,
                bytes([192, 0, 2, 1]),
                bytes([192, 0, 2, 2]),
            )
            + udp
        )
        frame = bytes(12) + b"\x08\x00" + ip
        out.append(struct.pack("<IIII", 1_600_000_000 + i, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def _one(record: dict, *keys: str) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, list):
            value = value[0]
        if value is not None:
            return value
    return None


def _us(value: str) -> int:
    """A decimal number of seconds (tshark's uptimes) in µs, exactly."""
    whole, _, frac = value.partition(".")
    return int(whole) * 1_000_000 + int((frac + "000000")[:6])


def _abs_us(text: str) -> int:
    """tshark's 'Jul 21, 2016 13:29:59.000000000 UTC' in µs."""
    stamp, _, frac = text.removesuffix(" UTC").partition(".")
    when = datetime.strptime(" ".join(stamp.split()), "%b %d, %Y %H:%M:%S").replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000 + int((frac + "000000")[:6])


def _address(record: dict, side: str) -> str | None:
    v6 = _one(record, f"cflow.{side}addrv6")  # templates with both: the one that is set
    return v6 if v6 not in (None, "::") else _one(record, f"cflow.{side}addr") or v6


def _expected(header: dict, record: dict) -> dict:
    """What our row must say, from tshark's fields (None: tshark does not say)."""
    octets = _one(record, "cflow.octets", "cflow.octets64")
    packets = _one(record, "cflow.packets", "cflow.packets64")
    if octets in (None, "0") and "cflow.post_octets" in record:  # egress exporters
        octets, packets = _one(record, "cflow.post_octets"), _one(record, "cflow.post_packets")
    octets = octets or _one(record, "cflow.permanent_octets", "cflow.initiator_octets")
    packets = packets or _one(record, "cflow.permanent_packets", "cflow.initiator_packets")
    want = {
        "src_ip": _address(record, "src"),
        "dst_ip": _address(record, "dst"),
        "proto": _one(record, "cflow.protocol"),
        "src_bytes": octets,
        "src_pkts": packets,
    }
    if want["proto"] not in ("1", "58"):
        want["src_port"] = _one(record, "cflow.srcport")
        want["dst_port"] = _one(record, "cflow.dstport")
    times = record.get("cflow.timedelta_tree", record)
    times = next((t for t in times if t), {}) if isinstance(times, list) else times
    for side, key in (("ts_start", "cflow.abstimestart"), ("ts_end", "cflow.abstimeend")):
        # tshark shows IPFIX sysUpTime times as if they were Unix times (1970): skip those
        if key in times and _abs_us(times[key]) > 946_684_800_000_000:
            want[side] = _abs_us(times[key])
    if "cflow.timestart" in times and "cflow.sysuptime" in header:  # v5 / v9 uptime-relative
        tree = header["cflow.timestamp_tree"]
        export = (
            int(tree["cflow.unix_secs"]) * 1_000_000 + int(tree.get("cflow.unix_nsecs", 0)) // 1000
        )
        uptime = _us(header["cflow.sysuptime"])
        for side, key in (("ts_start", "cflow.timestart"), ("ts_end", "cflow.timeend")):
            ago = uptime - _us(times[key])
            if abs(ago) < 2**31 * 1000:  # tshark does not wrap uptimes modulo 2^32 ms
                want[side] = export - ago
    return {k: v for k, v in want.items() if v is not None}


ORACLE_CASES = [n for n in ALL if n not in {f for fs in CONTEXT.values() for f in fs}]


@pytest.mark.peer
@pytest.mark.parametrize("name", ORACLE_CASES)
def test_against_tshark(name: str, tmp_path: Path) -> None:
    payloads = datagrams(*CONTEXT.get(name, []), name)
    write_pcap(tmp_path / "x.pcap", payloads)
    records, _ = _tshark_records(_tshark_json(tmp_path / "x.pcap", 2055))
    records = [
        (h, r)
        for h, r in records
        if _one(r, "cflow.srcaddr", "cflow.srcaddrv6", "cflow.dstaddr") is not None
    ]
    result = ExportDecoder().decode(payloads, [T0] * len(payloads), ExporterState("x"))
    rows = result.flows.to_pylist()
    if name == "netflow9_test_invalid01":  # tshark honours the count: 2 records = templates
        assert len(rows) == 2 and records == []
        return
    if "invalid" in name:  # rejected (see EXPECTED); tshark decodes what it can
        assert rows == []
        return
    if name == "netflow9_test_h3c_data3281":  # tshark stops at IPV4_ROUTER_SC of length 2
        records = records[:1]
        rows = rows[:1]
    assert len(rows) == len(records)
    for i, ((header, record), row) in enumerate(zip(records, rows, strict=True)):
        want = _expected(header, record)
        got = {k: row[k] for k in want}
        for k in ("src_bytes", "src_pkts"):
            if k in got:
                got[k] //= row["sampling"]  # tshark does not scale
        for k in ("ts_start", "ts_end"):
            if k in got:
                got[k] = int(got[k].timestamp() * 1_000_000)
        got = {k: v if isinstance(v, int) else str(v) for k, v in got.items()}
        want = {k: v if isinstance(v, int) else str(v) for k, v in want.items()}
        for k in ("src_ip", "dst_ip"):
            want[k] = want[k].lower() if k in want else want.get(k)
        assert {k: str(v) for k, v in got.items()} == {k: str(v) for k, v in want.items()}, i


def test_addresses_are_spelled_as_netaddr_spells_them() -> None:
    """The tables say their addresses are canonical: they must be netaddr's spelling."""
    import polars as pl

    from flowhawk import netaddr

    seen: set[str] = set()
    for name in ORACLE_CASES:
        flows = (
            ExportDecoder()
            .decode(
                datagrams(*CONTEXT.get(name, []), name),
                [T0] * len(datagrams(*CONTEXT.get(name, []), name)),
                ExporterState("x"),
            )
            .flows
        )
        seen.update(flows.column("src_ip").to_pylist() + flows.column("dst_ip").to_pylist())
    assert any(":" in a for a in seen) and any("." in a for a in seen)
    ips = sorted(seen)
    assert netaddr.canonical(pl.Series(ips)).to_list() == ips
