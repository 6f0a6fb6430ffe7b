"""NetFlow v5 decoder, vectorized: every header, then every record, of a batch is read by
one ``np.frombuffer`` each; Python touches a datagram only to slice it.

Header (24 bytes): version 5, count, sysUptime (ms), unix seconds and residual
nanoseconds, flow sequence (flows sent before this packet), engine type and id
(the "domain": ``type << 8 | id``), sampling interval (top 2 bits mode, low 14 bits
interval; counters are multiplied by the interval whatever the mode, since Juniper
announces 1:1000 with mode 0). Records are 48 bytes; first/last are sysUptime ms,
converted with the header's time (see :mod:`.timestamps`). A datagram whose count
does not fit its length (or is 0) is dropped ("record count mismatch"); bytes after
the counted records are ignored and counted ("trailing bytes").
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from flowhawk.collect.decode import columns, sequence
from flowhawk.collect.decode.base import NETFLOW5, DecodeResult, ExporterState

_HEADER = 24
_RECORD = 48
HEADER = np.dtype(
    [
        ("version", ">u2"),
        ("count", ">u2"),
        ("uptime", ">u4"),
        ("secs", ">u4"),
        ("nsecs", ">u4"),
        ("seq", ">u4"),
        ("etype", "u1"),
        ("eid", "u1"),
        ("sampling", ">u2"),
    ]
)
RECORD = np.dtype(
    {
        "names": [
            "src4",
            "dst4",
            "pkts",
            "bytes",
            "first_up",
            "last_up",
            "sport",
            "dport",
            "flags",
            "proto",
        ],
        "formats": [">u4", ">u4", ">u4", ">u4", ">u4", ">u4", ">u2", ">u2", "u1", "u1"],
        "offsets": [0, 4, 16, 20, 24, 28, 32, 34, 37, 38],
        "itemsize": _RECORD,
    }
)


class NetFlow5Decoder:
    """Decodes NetFlow v5 export packets of one exporter."""

    protocol = NETFLOW5

    def decode(
        self, datagrams: list[bytes], recv_us: list[int], state: ExporterState
    ) -> DecodeResult:
        errors: Counter = Counter()
        index = [i for i, d in enumerate(datagrams) if len(d) >= _HEADER]
        if len(index) < len(datagrams):
            errors["truncated header"] += len(datagrams) - len(index)
        if not index:
            return DecodeResult(DecodeResult.empty().flows, errors)
        hdr = np.frombuffer(b"".join([datagrams[i][:_HEADER] for i in index]), dtype=HEADER)
        sizes = np.array([len(datagrams[i]) for i in index])
        ends = _HEADER + _RECORD * hdr["count"].astype(np.int64)
        version_ok = hdr["version"] == 5
        fits = version_ok & (hdr["count"] > 0) & (ends <= sizes)
        errors["unsupported version"] += int((~version_ok).sum())
        errors["record count mismatch"] += int((version_ok & ~fits).sum())
        errors["trailing bytes"] += int((fits & (ends < sizes)).sum())
        domains = hdr["etype"].astype(np.int64) << 8 | hdr["eid"]
        rates = np.maximum(hdr["sampling"].astype(np.int64) & 0x3FFF, 1)
        times = np.asarray(recv_us, dtype=np.int64)[index]
        for domain in np.unique(domains[version_ok]):
            self._account(
                state, int(domain), hdr, fits, version_ok & ~fits, domains == domain, rates, times
            )
        errors = +errors  # drop the zero counts
        keep = np.flatnonzero(fits)
        if not len(keep):
            return DecodeResult(DecodeResult.empty().flows, errors)
        body = b"".join([datagrams[index[k]][_HEADER : ends[k]] for k in keep])
        hdr, counts = hdr[keep], hdr["count"][keep].astype(np.int64)
        n = int(counts.sum())
        rec = np.frombuffer(body, dtype=RECORD, count=n)
        raw = {name: rec[name].astype(np.uint64) for name in RECORD.names}
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        ctx = {
            "export_us": hdr["secs"].astype(np.int64) * 1_000_000 + hdr["nsecs"] // 1000,
            "uptime_ms": hdr["uptime"].astype(np.int64),
            "rate": rates[keep],
            "seq": hdr["seq"].astype(np.int64),
            "domain": domains[keep],
            "order": np.asarray(index, dtype=np.int64)[keep] << 16,
        }
        ctx = {k: np.repeat(v, counts) for k, v in ctx.items()}
        ctx["off"] = np.arange(n, dtype=np.int64) - starts  # record index in its datagram
        ctx["order"] = ctx["order"] + ctx["off"]
        ctx["sys_init_ms"] = np.full(n, -1, dtype=np.int64)
        part = columns.assemble(raw, ctx, [])
        rec = columns.records([part] if part else [], NETFLOW5, state.exporter)
        return DecodeResult(None, errors, records=[rec] if rec is not None else [])

    @staticmethod
    def _account(
        state: ExporterState,
        domain: int,
        hdr: np.ndarray,
        fits: np.ndarray,
        bad: np.ndarray,
        mine: np.ndarray,
        rates: np.ndarray,
        times: np.ndarray,
    ) -> None:
        stats = state.domain(NETFLOW5, domain)
        good = mine & fits
        stats.errors += int((mine & bad).sum())
        if not good.any():
            return
        stats.packets += int(good.sum())
        stats.flows += int(hdr["count"][good].sum())
        stats.sampling = int(rates[good][-1])
        stats.last_seen_us = max(stats.last_seen_us, int(times[good].max()))
        memo = state.options.setdefault(f"{NETFLOW5}/{domain}", {})
        sequence.observe_records(stats, memo, hdr["seq"][good], hdr["count"][good])
