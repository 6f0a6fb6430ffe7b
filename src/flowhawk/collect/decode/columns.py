"""From raw element columns to the raw flow schema (shared by the NetFlow and IPFIX decoders).

:func:`assemble` turns one template's worth of raw columns (see :mod:`.fields`) and
per-record context (export time, uptime, sampling, ids) into numeric canonical
columns; :func:`records` concatenates the parts of a batch into the numeric
:class:`~flowhawk.normalize.rawcolumns.RawColumns` the collector normalizes (addresses,
MACs and flow ids stay numbers until the archive), :func:`table` makes them a raw flow
table (strings written once per batch by numba kernels).

Rules that are decided here:

- Addresses: IPv6 (27/28) where the template has it and it is non-zero, else IPv4
  (8/12). A template with neither is not a flow (its records are counted as ignored).
- Counters: packets from 2 (delta), else 86 (total), else 298 (ASA initiator); bytes
  likewise from 1, 85, 231; where those are absent or 0, OUT_PKTS / OUT_BYTES (24 / 23),
  which egress exporters fill instead. Reverse counters (RFC 5103 PEN 29305 elements
  1/2/85/86, or ASA responder 232/299 next to their initiator pair) make a biflow:
  ``uni`` False, reverse counters and flags in ``dst_*``, ``orient`` "start" (the
  forward direction is the initiator) unless biflowDirection (239) says arbitrary (0)
  or perimeter (3); reverseInitiator (2) swaps the sides.
- TCP flags: 6 (the low 12 bits of a 2-byte tcpControlBits), or YAF's initial | union
  flags (CERT PEN 6871).
- Sampling: a record's own interval (34, 50, or 305/306 as (interval + space) /
  interval) wins over its sampler's (48 -> FLOW_SAMPLER_ID options, 302 -> selector
  options) over the domain-wide announced rate; counters are multiplied by it.
- ICMP (1, 58): ``dst_port`` = type * 256 + code from 32/139 or 176-179 when the
  template has them (else what the exporter put in the destination port), ``src_port`` 0.
- VLAN 0 and MAC 00:00:00:00:00:00 are what exporters send when they do not know:
  null.
- Times before 1970 or after 9999 are clamped to those bounds.
- ``state`` carries firewallEvent (233 / ASA 40005) as created/deleted/denied/...
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from flowhawk.collect.decode.timestamps import flow_times
from flowhawk.normalize.rawcolumns import DTYPES, NO_MAC, RawColumns
from flowhawk.schema import RAW_FLOW_SCHEMA

Part = dict[str, np.ndarray]

_MAPPED = np.uint64(0xFFFF_0000_0000)
_I64_MAX = np.int64(2**63 - 1)
_TS_MAX = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999 UTC, in µs


def _first(raw: dict[str, np.ndarray], *names: str) -> np.ndarray | None:
    for name in names:
        if name in raw:
            return raw[name]
    return None


def _address(raw: dict[str, np.ndarray], side: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    v4 = raw.get(side + "4")
    hi6 = raw.get(side + "6_hi")
    lo6 = raw.get(side + "6_lo")
    hi = np.zeros(n, dtype=np.uint64)
    lo = np.full(n, _MAPPED, dtype=np.uint64) if v4 is None else _MAPPED | v4
    if hi6 is not None and lo6 is not None:
        use6 = (hi6 | lo6) != 0 if v4 is not None else np.ones(n, dtype=bool)
        hi = np.where(use6, hi6, hi)
        lo = np.where(use6, lo6, lo)
    return hi, lo


def _port(
    raw: dict[str, np.ndarray], name: str, proto: np.ndarray, zeros: np.ndarray
) -> np.ndarray:
    if name in raw:
        return raw[name].astype(np.int64) & 0xFFFF
    # Only the protocol-specific elements (180-183): take the one matching the protocol.
    tcp = raw.get("tcp_" + name, zeros).astype(np.int64)
    udp = raw.get("udp_" + name, zeros).astype(np.int64)
    return np.where(proto == 6, tcp, np.where(proto == 17, udp, tcp | udp)) & 0xFFFF


def _pair(raw: dict[str, np.ndarray], initiator: str, responder: str) -> np.ndarray | None:
    # ASA-style biflows need both sides: a lone 232 (Huawei sends one, 2 bytes long) is
    # something else.
    return raw[responder] if initiator in raw and responder in raw else None


def _counter(
    raw: dict[str, np.ndarray],
    delta: str,
    total: str,
    initiator: str,
    responder: str,
    post: str,
) -> np.ndarray | None:
    v = _first(raw, delta, total)
    if v is None:
        v = _pair(raw, responder, initiator)  # the initiator's side of an ASA biflow
    out = raw.get(post)
    if out is not None:  # egress exporters fill OUT_BYTES/OUT_PKTS and leave IN_* zero
        v = out if v is None else np.where(v == 0, out, v)
    return v


def _flags(raw: dict[str, np.ndarray], name: str, *parts: str) -> np.ndarray | None:
    if name in raw:
        return raw[name]
    found = [raw[p] for p in parts if p in raw]
    return np.bitwise_or.reduce(found) if found else None


def _rate(raw: dict[str, np.ndarray], ctx: Part, maps: list[dict[str, Any]]) -> np.ndarray:
    rate = ctx["rate"].copy()
    epochs = ctx.get("epoch")
    for column, table in (("sampler_id", "samplers"), ("selector_id", "selectors")):
        ids = raw.get(column)
        if ids is None:
            continue
        for epoch, opts in enumerate(maps):  # the sampler maps each set was read under
            known = opts.get(table) or {}
            rows = True if epochs is None or len(maps) == 1 else epochs == epoch
            for key, value in known.items():
                rate[rows & (ids == np.uint64(int(key)))] = value
    own = _first(raw, "sampling", "sampler_interval")
    if own is not None:
        rate = np.where(own > 0, np.minimum(own, 2**31 - 1).astype(np.int64), rate)
    interval = raw.get("pkt_interval")
    if interval is not None:
        space = raw.get("pkt_space", np.zeros_like(interval))
        safe = np.maximum(interval, 1).astype(np.float64)
        r = np.minimum((safe + space.astype(np.float64)) / safe, 2**31 - 1).astype(np.int64)
        rate = np.where(interval > 0, r, rate)
    return np.clip(rate, 1, 2**31 - 1)


def _scaled(v: np.ndarray | None, rate: np.ndarray, n: int) -> np.ndarray:
    if v is None:
        return np.zeros(n, dtype=np.int64)
    v = np.minimum(v, np.uint64(2**63 - 1)).astype(np.int64)
    # Saturate instead of wrapping when a (bogus) counter times the rate overflows.
    return np.where(v > _I64_MAX // rate, _I64_MAX, v * rate)


def assemble(raw: dict[str, np.ndarray], ctx: Part, maps: list[dict[str, Any]]) -> Part | None:
    """Canonical numeric columns of ``n`` records, or None if the template has no address.

    ``ctx`` holds per-record arrays: export_us, uptime_ms, sys_init_ms, rate, domain,
    seq, off, order, and ``epoch``: the index in ``maps`` of the sampler / selector maps
    (``{"samplers": ..., "selectors": ...}``) that were current when the record's set
    came, so a sampler announced later in the batch does not apply to earlier data.
    """
    if not any(k in raw for k in ("src4", "dst4", "src6_hi", "dst6_hi")):
        return None
    n = len(ctx["export_us"])
    zeros = np.zeros(n, dtype=np.int64)
    src_hi, src_lo = _address(raw, "src", n)
    dst_hi, dst_lo = _address(raw, "dst", n)
    proto = raw.get("proto", zeros).astype(np.int64) & 0xFF
    sport = _port(raw, "sport", proto, zeros)
    dport = _port(raw, "dport", proto, zeros)
    icmp = (proto == 1) | (proto == 58)
    if icmp.any():
        tc4 = _first(raw, "icmp4")
        tc6 = _first(raw, "icmp6")
        if tc4 is None and "icmp4_type" in raw:
            tc4 = raw["icmp4_type"] * np.uint64(256) + raw.get("icmp4_code", zeros)
        if tc6 is None and "icmp6_type" in raw:
            tc6 = raw["icmp6_type"] * np.uint64(256) + raw.get("icmp6_code", zeros)
        if tc4 is not None or tc6 is not None:
            tc4 = tc6 if tc4 is None else tc4
            tc6 = tc4 if tc6 is None else tc6
            tc = np.where(proto == 58, tc6, tc4).astype(np.int64) & 0xFFFF  # type: ignore[arg-type]
            dport = np.where(icmp, tc, dport)
        sport = np.where(icmp, 0, sport)
    rate = _rate(raw, ctx, maps)
    fwd_p = _counter(raw, "pkts", "pkts_total", "init_pkts", "resp_pkts", "out_pkts")
    fwd_b = _counter(raw, "bytes", "bytes_total", "init_bytes", "resp_bytes", "out_bytes")
    rev_p = (
        _first(raw, "rev_pkts", "rev_pkts_total")
        if "rev_pkts" in raw or "rev_pkts_total" in raw
        else _pair(raw, "init_pkts", "resp_pkts")
    )
    rev_b = (
        _first(raw, "rev_bytes", "rev_bytes_total")
        if "rev_bytes" in raw or "rev_bytes_total" in raw
        else _pair(raw, "init_bytes", "resp_bytes")
    )
    biflow = rev_p is not None or rev_b is not None
    flags = _flags(raw, "flags", "yaf_flags", "yaf_union_flags")
    rflags = _flags(raw, "rev_flags", "yaf_rev_flags", "yaf_rev_union_flags")
    part: Part = {
        "src_hi": src_hi,
        "src_lo": src_lo,
        "dst_hi": dst_hi,
        "dst_lo": dst_lo,
        "sport": sport,
        "dport": dport,
        "proto": proto,
        "spkts": _scaled(fwd_p, rate, n),
        "sbytes": _scaled(fwd_b, rate, n),
        "dpkts": _scaled(rev_p, rate, n),
        "dbytes": _scaled(rev_b, rate, n),
        "sflags": _flag_column(flags, n),
        "dflags": _flag_column(rflags, n),
        "smac": _mac_column(_first(raw, "src_mac", "post_src_mac"), n),
        "dmac": _mac_column(_first(raw, "dst_mac", "post_dst_mac"), n),
        "uni": np.full(n, not biflow),
        "orient_ok": np.full(n, biflow),
        "sampling": rate,
    }
    vlan = _first(raw, "vlan", "dot1q_vlan")
    if vlan is None:
        part["vlan"] = np.full(n, -1, dtype=np.int32)
    else:
        v = (vlan.astype(np.int64) & 0xFFFF).astype(np.int32)
        part["vlan"] = np.where(v == 0, -1, v)  # 0: untagged
    event = raw.get("fw_event")
    part["state"] = (
        np.full(n, -1, dtype=np.int8)
        if event is None
        else np.where(event <= 5, event.astype(np.int64), -1).astype(np.int8)
    )
    start, end = flow_times(raw, ctx["export_us"], ctx["uptime_ms"], ctx["sys_init_ms"])
    # Garbage times (a corrupt field, a clock at 0) are kept within 1970..9999, where every
    # consumer (Python datetimes included) can still represent them.
    part["ts_start"] = np.clip(start, 0, _TS_MAX)
    part["ts_end"] = np.clip(end, 0, _TS_MAX)
    direction = raw.get("biflow_dir")
    if biflow and direction is not None:
        part["orient_ok"] = (direction == 1) | (direction == 2)
        swap = direction == 2  # reverseInitiator: the destination started it
        if swap.any():
            for a, b in (
                ("src_hi", "dst_hi"),
                ("src_lo", "dst_lo"),
                ("sport", "dport"),
                ("spkts", "dpkts"),
                ("sbytes", "dbytes"),
                ("sflags", "dflags"),
                ("smac", "dmac"),
            ):
                part[a], part[b] = (
                    np.where(swap, part[b], part[a]),
                    np.where(swap, part[a], part[b]),
                )
    for key in ("domain", "seq", "off", "order"):
        part[key] = ctx[key]
    return part


def _flag_column(flags: np.ndarray | None, n: int) -> np.ndarray:
    """TCP flags (12 bits) as int16, -1 (null) where the template has none."""
    if flags is None:
        return np.full(n, -1, dtype=np.int16)
    return (flags.astype(np.int64) & 0xFFF).astype(np.int16)


def _mac_column(mac: np.ndarray | None, n: int) -> np.ndarray:
    """MACs (``(n, 6)`` bytes) as 48-bit values; NO_MAC where absent or all zeros (what
    exporters send when they do not know)."""
    if mac is None:
        return np.full(n, NO_MAC, dtype=np.uint64)
    wide = np.zeros((n, 8), dtype=np.uint8)
    wide[:, 2:] = mac
    values = wide.view(">u8").ravel().astype(np.uint64)
    return np.where(values == 0, NO_MAC, values)


_KEYS = {  # part key -> RawColumns column
    "ts_start": "ts_start",
    "ts_end": "ts_end",
    "src_hi": "src_hi",
    "src_lo": "src_lo",
    "dst_hi": "dst_hi",
    "dst_lo": "dst_lo",
    "sport": "src_port",
    "dport": "dst_port",
    "proto": "proto",
    "spkts": "src_pkts",
    "sbytes": "src_bytes",
    "dpkts": "dst_pkts",
    "dbytes": "dst_bytes",
    "sflags": "src_tcp_flags",
    "dflags": "dst_tcp_flags",
    "vlan": "vlan",
    "smac": "src_mac",
    "dmac": "dst_mac",
    "state": "state",
    "orient_ok": "orient",
    "uni": "uni",
    "sampling": "sampling",
    "domain": "fid_domain",
    "seq": "fid_seq",
    "off": "fid_off",
}


def records(parts: list[Part], protocol: str, exporter: str) -> RawColumns | None:
    """The batch's parts as numeric columns of one input, in arrival order (None: no rows)."""
    parts = [p for p in parts if len(p["order"])]
    if not parts:
        return None
    col = parts[0]
    if len(parts) > 1:
        order = np.argsort(np.concatenate([p["order"] for p in parts]), kind="stable")
        col = {k: np.concatenate([p[k] for p in parts])[order] for k in _KEYS}
    cols = {name: col[key].astype(DTYPES[name], copy=False) for key, name in _KEYS.items()}
    for side in ("src_mac", "dst_mac"):
        if (cols[side] == NO_MAC).all():
            del cols[side]
    return RawColumns(f"{protocol}://{exporter}", exporter, cols)


def table(parts: list[Part], protocol: str, exporter: str) -> pa.Table:
    """One raw-flow table from the batch's parts, in arrival order."""
    got = records(parts, protocol, exporter)
    return RAW_FLOW_SCHEMA.empty_table() if got is None else got.to_table()
