"""sFlow v5 decoder: datagrams to raw flow rows and interface counter rows.

Walking the datagrams is one numba kernel (:mod:`.sflow_walk`); every raw packet
header of the batch is then parsed in ONE call of the pcap packet decoder
(:func:`flowhawk.sources.pcap.decode.decode`), so sampled packets get exactly the
pcap reader's conventions (IPv4-mapped addresses, ICMP type*256+code in
``dst_port``, innermost non-zero VLAN, IP-layer lengths). Python work is per batch
and per distinct agent / source, never per sample.

What an sFlow flow row is:

- one flow sample (plain or expanded) = one row, the sampled packet scaled by the
  sample's sampling rate: ``src_pkts`` = rate, ``src_bytes`` = IP length * rate,
  ``sampling`` = rate (a rate of 0 is read as 1; the int32 column saturates at
  2**31 - 1), ``uni`` True, ``orient`` null;
- the packet comes from the raw packet header record (header protocols Ethernet,
  IPv4, IPv6, PPP and POS); without a usable one, from a sampled IPv4 / IPv6 record
  (whose ICMP type and code are read from its source and destination ports). The IP
  length is the IP header's; when that says 0 (IPv4 total length 0, IPv6 jumbogram)
  it is the frame length minus the stripped bytes and the link header;
- ``vlan``: the header's 802.1Q tag, else the extended switch record's source VLAN,
  else its destination VLAN; MACs from the header, else a sampled Ethernet record;
- ``ts_start`` = ``ts_end`` = the datagram's receive time: sFlow carries no flow
  timestamps (only the agent's uptime), and samples are sent within a second or so;
- ``exporter`` is the sFlow **agent address** from the datagram, not the UDP source
  (a relay or NAT may stand between them; an agent of address type 0 "unknown" falls
  back to the UDP source), ``input`` is ``sflow5://<agent>``, and ``flow_id`` is
  ``<sub-agent>:<datagram sequence>:<sample index in the datagram>``.

Flow samples whose packet is not IP (ARP...) or whose header protocol is not read,
flow samples without any packet record, unknown sample formats and counter records
other than generic interface counters (Ethernet, processor...) are counted in
:attr:`DecodeResult.ignored`, not as errors. Other flow records (extended router,
gateway, user...) are skipped without a count. Malformed datagrams are counted once
each in ``errors`` by the first damage found (:data:`.sflow_walk.REASONS`); sampled
headers too short or with a bad IP header are counted per sample.

Sequence tracking, in ``state.domain("sflow5", sub_agent)`` (key ``sub_agent``
when the agent is the UDP source, ``"<agent>/<sub_agent>"`` otherwise, so that
agents behind one relay stay apart): ``packets`` datagrams read, ``flows`` rows
produced, ``sequence_gaps`` jumps of the datagram sequence number, ``lost`` flow
samples missing from each data source's sample sequence (kept per source in
``state.options``) plus the increase of the agent's own drop counters, ``errors``
malformed datagrams (those too broken to name their agent count only in the
result), ``sampling`` the latest rate, ``next_sequence`` the next datagram sequence
number expected. A number behind the expected one by at most :data:`REORDER_WINDOW`
is a late arrival, further behind an agent restart; neither is counted.

Generic interface counters (0/1) in counter samples become rows of
:data:`COUNTER_SCHEMA` in :attr:`DecodeResult.counters` (None when there are none).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flowhawk import schema
from flowhawk.collect.decode import sflow_walk as w
from flowhawk.collect.decode import textcols as text
from flowhawk.collect.decode.base import SFLOW5, DecodeResult, ExporterState
from flowhawk.collect.decode.sflow_counters import COUNTER_SCHEMA, counters_table
from flowhawk.sources.pcap.capfile import Records
from flowhawk.sources.pcap.decode import (
    NO_MAC,
    ST_BAD_HEADER,
    ST_NOT_IP,
    ST_OK,
    ST_TRUNCATED,
    decode,
)

__all__ = ["COUNTER_SCHEMA", "SFlowDecoder"]

#: Per-sample reasons for sampled headers that give no flow (errors / ignored).
SAMPLE_ERRORS = {
    ST_TRUNCATED: "sampled packet truncated",
    ST_BAD_HEADER: "sampled packet has a bad IP header",
}
NOT_IP = "sampled packet not IP"
NO_PACKET = "flow sample without packet data"
HEADER_PROTOCOL = "sampled header protocol not decoded"

#: A sequence number this far behind the expected one is a late arrival; further
#: behind, the agent restarted.
REORDER_WINDOW = 256
#: Data sources whose sample sequence is tracked per domain (bounds the state).
MAX_SOURCES = 65536
_MAX_INT32 = (1 << 31) - 1
_EMPTY = schema.empty_raw()
# Smallest flow sample (header 8 + fields 28 + record count 4) and generic counter
# record (header 8 + 88): bounds on the rows a batch can hold.
_MIN_FLOW_SAMPLE, _MIN_COUNTER_RECORD = 40, 96


@dataclass
class SFlowDecoder:
    """Decodes sFlow v5 datagrams (see the module docstring for the conventions)."""

    protocol = SFLOW5

    def decode(
        self, datagrams: list[bytes], recv_us: list[int], state: ExporterState
    ) -> DecodeResult:
        n = len(datagrams)
        res = DecodeResult(_EMPTY)
        if n == 0:
            return res
        lens = np.fromiter(map(len, datagrams), np.int64, n)
        buf = np.frombuffer(b"".join(datagrams), np.uint8)
        off = np.zeros(n, np.int64)
        np.cumsum(lens[:-1], out=off[1:])
        recv = np.asarray(recv_us, np.int64)
        total = int(lens.sum())
        # Field-major arrays: one row per field, so that each field is contiguous.
        di = np.empty((w.N_D, n), np.int64)
        da = np.empty((2, n), np.uint64)
        fi = np.empty((w.N_F, total // _MIN_FLOW_SAMPLE + 1), np.int64)
        fa = np.empty((w.N_A, total // _MIN_FLOW_SAMPLE + 1), np.uint64)
        ci = np.empty((w.N_C, total // _MIN_COUNTER_RECORD + 1), np.uint64)
        ign = np.zeros(w.N_I, np.int64)
        nf, nc = w.walk(buf, off, lens, di, da, fi, fa, ci, ign)
        fi, fa, ci = fi[:, :nf], fa[:, :nf], ci[:, :nc]

        for code, count in enumerate(np.bincount(di[w.D_ERR], minlength=len(w.REASONS) + 1)):
            if code and count:
                res.errors[w.REASONS[code]] += int(count)
        for code, count in enumerate(ign):
            if count:
                res.ignored[w.IGNORED[code]] += int(count)

        agents, agent_of = _agents(di, da, state.exporter)
        dom_of, domains = _domains(di, agent_of, agents, state.exporter)
        flows, kept = self._flows(buf, di, fi, fa, recv, agents, agent_of, res)
        if flows is not None:
            res.flows = flows
        if nc:
            res.counters = counters_table(ci, di, recv, agents, agent_of)
        _update_state(state, domains, dom_of, di, fi, kept, recv)
        return res

    def _flows(self, buf, di, fi, fa, recv, agents, agent_of, res):
        """Raw flow table of the flow samples (None without any) and the kept-row mask."""
        nf = fi.shape[1]
        if nf == 0:
            return None, np.zeros(0, bool)
        proto = fi[w.F_PROTO] & 0xFF
        sport = fi[w.F_SPORT] & 0xFFFF
        dport = fi[w.F_DPORT] & 0xFFFF
        icmp = (proto == 1) | (proto == 58)  # sampled IP record: type, code in the ports
        dport = np.where(icmp, ((sport & 0xFF) << 8) | (dport & 0xFF), dport)
        sport = np.where(icmp, 0, sport)
        flags = fi[w.F_FLAGS] & 0xFF
        ip_len = fi[w.F_IPLEN].copy()
        shi, slo = fa[w.A_SHI].copy(), fa[w.A_SLO].copy()
        dhi, dlo = fa[w.A_DHI].copy(), fa[w.A_DLO].copy()
        smac, dmac = fa[w.A_SMAC].copy(), fa[w.A_DMAC].copy()
        vlan = np.full(nf, -1, np.int64)
        use = fi[w.F_IPV] != 0

        has_hdr = fi[w.F_HOFF] > 0
        parsed = np.flatnonzero(fi[w.F_LT] != w.LT_NONE)
        status = np.full(nf, 255, np.int64)
        if len(parsed):
            hlen, frame = fi[w.F_HLEN, parsed], fi[w.F_FRAME, parsed]
            rec = Records(
                fi[w.F_HOFF, parsed],
                hlen.astype(np.int32),
                np.minimum(frame, _MAX_INT32).astype(np.int32),
                recv[fi[w.F_DG, parsed]],
                fi[w.F_LT, parsed].astype(np.int32),
            )
            pk = decode(buf, rec)
            status[parsed] = pk.status
            ok = pk.status == ST_OK
            i = parsed[ok]
            pk_len = pk.ip_len[ok].copy()
            strip = fi[w.F_STRIP, i]
            w.fix_ip_lengths(buf, rec.offset[ok], hlen[ok], frame[ok], strip, pk_len)
            use[i] = True
            shi[i], slo[i], dhi[i], dlo[i] = (
                pk.src_hi[ok],
                pk.src_lo[ok],
                pk.dst_hi[ok],
                pk.dst_lo[ok],
            )
            sport[i], dport[i] = pk.sport[ok], pk.dport[ok]
            proto[i], flags[i], ip_len[i] = pk.proto[ok], pk.tcp_flags[ok], pk_len
            vlan[i] = pk.vlan[ok]
            pm = pk.src_mac[ok] != NO_MAC
            smac[i[pm]], dmac[i[pm]] = pk.src_mac[ok][pm], pk.dst_mac[ok][pm]

        # What gave no flow, and why (a sampled IP record rescues a bad header).
        lost = ~use
        _count(res.ignored, NOT_IP, lost & (status == ST_NOT_IP))
        for st, reason in SAMPLE_ERRORS.items():
            _count(res.errors, reason, lost & (status == st))
        _count(res.ignored, HEADER_PROTOCOL, lost & has_hdr & (fi[w.F_LT] == w.LT_NONE))
        _count(res.ignored, NO_PACKET, lost & ~has_hdr)
        if not use.any():
            return None, use

        vin, vout = fi[w.F_VIN], fi[w.F_VOUT]
        vlan = np.where(vlan >= 0, vlan, np.where(vin >= 0, vin, vout))
        k = np.flatnonzero(use)
        d = fi[w.F_DG, k]
        rate = np.maximum(fi[w.F_RATE, k], 1)
        tcp = proto[k] == 6
        n = len(k)
        zeros = np.zeros(n, np.int64)
        ts = pa.array(recv[d], type=schema.TS)
        cols = {
            "ts_start": ts,
            "ts_end": ts,
            "src_ip": text.ip_strings(shi[k], slo[k]),
            "dst_ip": text.ip_strings(dhi[k], dlo[k]),
            "src_port": sport[k].astype(np.int32),
            "dst_port": dport[k].astype(np.int32),
            "proto": proto[k].astype(np.int16),
            "src_pkts": rate,
            "src_bytes": np.clip(ip_len[k], 0, _MAX_INT32) * rate,  # < 2**63
            "dst_pkts": zeros,
            "dst_bytes": zeros,
            "src_tcp_flags": pa.array(flags[k].astype(np.int16), mask=~tcp),
            "dst_tcp_flags": pa.nulls(n, pa.int16()),
            "vlan": pa.array(vlan[k].astype(np.int32), mask=vlan[k] < 0),
            "src_mac": text.mac_strings(smac[k], NO_MAC),
            "dst_mac": text.mac_strings(dmac[k], NO_MAC),
            "uni": np.ones(n, bool),
            "sampling": np.minimum(rate, _MAX_INT32).astype(np.int32),
            "exporter": _per_row(agents, agent_of[d]),
            "input": _per_row([f"{SFLOW5}://{a}" for a in agents], agent_of[d]),
            "flow_id": text.joined_numbers(di[w.D_SUB, d], di[w.D_SEQ, d], fi[w.F_IDX, k]),
        }
        return schema.conform(pa.table(cols)), use


def _per_row(values: list[str], index: np.ndarray) -> pa.Array:
    """``values[index]`` as a string array (one distinct value, the usual case, is cheap)."""
    if len(values) == 1:
        return pa.repeat(pa.scalar(values[0], pa.string()), len(index))
    return pa.array(values, pa.string()).take(pa.array(index))


def _count(counter: Counter, reason: str, mask: np.ndarray) -> None:
    n = int(np.count_nonzero(mask))
    if n:
        counter[reason] += n


def _host(exporter: str) -> str:
    """The address part of an exporter name (``addr``, ``addr:port``, ``[v6]:port``)."""
    for name in (exporter, exporter.rsplit(":", 1)[0].strip("[]")):
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            continue
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return str(mapped or ip)
    return exporter


def _agents(di: np.ndarray, da: np.ndarray, exporter: str) -> tuple[list[str], np.ndarray]:
    """Distinct agent address strings and, per datagram, the index of its agent."""
    unknown = (di[w.D_ATYPE] == 0).astype(np.uint64)  # address type 0: the UDP source
    key = np.stack([da[0], da[1], unknown], axis=1)
    uniq, inverse = _unique_rows(key)
    names = []
    for hi, lo, unk in uniq.tolist():
        if unk:
            names.append(_host(exporter))
        elif hi == 0 and (lo >> 32) == 0xFFFF:
            names.append(str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF)))
        else:
            names.append(str(ipaddress.IPv6Address((hi << 64) | lo)))
    return names, inverse


def _domains(
    di: np.ndarray, agent_of: np.ndarray, agents: list[str], exporter: str
) -> tuple[np.ndarray, list[int | str]]:
    """Per datagram the index of its (agent, sub-agent) domain (-1 when unreadable)."""
    dom_of = np.full(di.shape[1], -1, np.int64)
    hdr = np.flatnonzero(di[w.D_HDR] == 1)
    if len(hdr) == 0:
        return dom_of, []
    key = (agent_of[hdr] << 32) | di[w.D_SUB, hdr]
    uniq, inverse = np.unique(key, return_inverse=True)
    dom_of[hdr] = inverse.reshape(-1)
    host = _host(exporter)
    keys: list[int | str] = []
    for k in uniq.tolist():
        agent, sub = agents[k >> 32], k & 0xFFFF_FFFF
        keys.append(sub if agent == host else f"{agent}/{sub}")
    return dom_of, keys


def _update_state(
    state: ExporterState,
    domains: list[int | str],
    dom_of: np.ndarray,
    di: np.ndarray,
    fi: np.ndarray,
    kept: np.ndarray,
    recv: np.ndarray,
) -> None:
    """Sequence numbers, losses and counts per domain (see the module docstring)."""
    g = len(domains)
    if g == 0:
        return
    stats = [state.domain(SFLOW5, key) for key in domains]
    hdr = dom_of >= 0
    dg_dom = dom_of[hdr]
    expected = np.array(
        [-1 if s.next_sequence is None else s.next_sequence for s in stats], np.int64
    )
    jumps, _ = w.sequences(dg_dom, di[w.D_SEQ, hdr], expected, REORDER_WINDOW)
    packets = np.bincount(dg_dom, minlength=g)
    errors = np.bincount(dg_dom, weights=di[w.D_ERR, hdr] != 0, minlength=g)
    last_seen = np.zeros(g, np.int64)
    np.maximum.at(last_seen, dg_dom, recv[hdr])

    lost = np.zeros(g, np.int64)
    flows = np.zeros(g, np.int64)
    rates: dict[int, int] = {}
    if fi.shape[1]:
        row_dom = dom_of[fi[w.F_DG]]
        flows = np.bincount(row_dom[kept], minlength=g)
        last = len(row_dom) - 1 - np.unique(row_dom[::-1], return_index=True)[1]
        rates = {int(row_dom[i]): max(int(fi[w.F_RATE, i]), 1) for i in last}
        lost = _source_losses(state, domains, row_dom, fi)

    for i, s in enumerate(stats):
        s.packets += int(packets[i])
        s.flows += int(flows[i])
        s.errors += int(errors[i])
        s.sequence_gaps += int(jumps[i])
        s.lost += int(lost[i])
        s.last_seen_us = max(s.last_seen_us, int(last_seen[i]))
        s.next_sequence = int(expected[i])
        if i in rates:
            s.sampling = rates[i]


def _source_losses(
    state: ExporterState, domains: list[int | str], row_dom: np.ndarray, fi: np.ndarray
) -> np.ndarray:
    """Flow samples missing per domain: sample sequence jumps and agent drops, by source."""
    key = np.stack([row_dom, fi[w.F_STYPE], fi[w.F_SIDX]], axis=1)
    uniq, inverse = _unique_rows(key)
    tables, expected, drops = [], np.full(len(uniq), -1, np.int64), np.full(len(uniq), -1, np.int64)
    for j, (dom, stype, sidx) in enumerate(uniq.tolist()):
        table = state.options.setdefault(f"{SFLOW5}/{domains[dom]}/sources", {})
        name = f"{stype}:{sidx}"
        tables.append((table, name))
        if name in table:
            expected[j], drops[j] = table[name]
    _, missing = w.sequences(inverse, fi[w.F_SEQ], expected, REORDER_WINDOW)
    dropped = w.drop_deltas(inverse, fi[w.F_DROPS], drops)
    for j, (table, name) in enumerate(tables):
        if name in table or len(table) < MAX_SOURCES:
            table[name] = [int(expected[j]), int(drops[j])]
    return np.bincount(uniq[:, 0], weights=missing + dropped, minlength=len(domains)).astype(
        np.int64
    )


def _unique_rows(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a 2-D array and each row's index among them; a batch usually
    has one agent and a few data sources, so the common cases skip the row sort."""
    if (key == key[0]).all():
        return key[:1], np.zeros(len(key), np.int64)
    if len(key) and key.min() >= 0 and key.max() < 1 << 20:  # small values: one 1-D key
        packed = key[:, 0].astype(np.int64)
        for c in range(1, key.shape[1]):
            packed = (packed << 20) | key[:, c].astype(np.int64)
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        return key[first], inverse.reshape(-1).astype(np.int64)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1).astype(np.int64)
