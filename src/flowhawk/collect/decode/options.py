"""Options data (NetFlow v9 / IPFIX) that changes how flows are read, kept per domain.

Kept in ``ExporterState.options["<protocol>/<domain>"]`` (JSON-able):

- ``sampling``: the domain-wide announced rate (1 = unsampled), from options records
  carrying samplingInterval (34), samplerRandomInterval (50, without a sampler id),
  samplingPacketInterval/Space (305/306: rate (interval + space) / interval),
  samplingSize/Population (309/310) or samplingProbability (311);
- ``samplers``: rate per FLOW_SAMPLER_ID (48), for data records naming their sampler;
- ``selectors``: rate per PSAMP selectorId (302). IPFIX data records seldom name their
  selector, so a selector's rate is also taken as the domain-wide rate;
- ``sys_init_ms``: systemInitTimeMilliseconds (160), the base of IPFIX sysUpTime times;
- ``interfaces``: ``{ifindex: {"name": ..., "description": ...}}`` from
  interfaceName/Description (82/83) keyed by ingressInterface (10) or a v9
  interface scope;
- ``option_records``: how many options records were read.

Maps are bounded so a misbehaving exporter cannot grow the state without limit.
"""

from __future__ import annotations

from typing import Any

MAX_INTERFACES = 4096
MAX_SAMPLERS = 256
_MAX_RATE = 2**31 - 1


def _rate(rec: dict[str, Any]) -> int | None:
    for key in ("sampler_interval", "sampling"):
        if key in rec:
            return max(1, min(int(rec[key]), _MAX_RATE))
    if "pkt_interval" in rec:
        interval = int(rec["pkt_interval"])
        if interval <= 0:
            return None
        return max(1, min((interval + int(rec.get("pkt_space", 0))) // interval, _MAX_RATE))
    if "sampling_size" in rec and "sampling_population" in rec:
        size = int(rec["sampling_size"])
        if size <= 0:
            return None
        return max(1, min(int(rec["sampling_population"]) // size, _MAX_RATE))
    p = rec.get("sampling_probability")
    if isinstance(p, float) and 0.0 < p <= 1.0:
        return max(1, min(round(1.0 / p), _MAX_RATE))
    return None


def _put(opts: dict[str, Any], table: str, key: str, value: Any, limit: int) -> None:
    # Copy on write: a decoder keeps the map each data set was read under (see
    # templated.py), so a changed map is a new dict, never the old one changed.
    entries = opts.get(table) or {}
    if entries.get(key) != value and (key in entries or len(entries) < limit):
        opts[table] = {**entries, key: value}


def apply(records: list[dict[str, Any]], opts: dict[str, Any]) -> None:
    """Fold decoded options records into a domain's options dict."""
    for rec in records:
        rate = _rate(rec)
        if rate is not None:
            if "sampler_id" in rec:
                _put(opts, "samplers", str(rec["sampler_id"]), rate, MAX_SAMPLERS)
            elif "selector_id" in rec:
                _put(opts, "selectors", str(rec["selector_id"]), rate, MAX_SAMPLERS)
                opts["sampling"] = rate
            else:
                opts["sampling"] = rate
        if "sys_init_ms" in rec:
            opts["sys_init_ms"] = min(int(rec["sys_init_ms"]), 2**53)
        if "ifindex" in rec and ("ifname" in rec or "ifdesc" in rec):
            key = str(rec["ifindex"])
            entry = dict(opts.get("interfaces", {}).get(key, {}))
            if "ifname" in rec:
                entry["name"] = rec["ifname"]
            if "ifdesc" in rec:
                entry["description"] = rec["ifdesc"]
            _put(opts, "interfaces", key, entry, MAX_INTERFACES)
