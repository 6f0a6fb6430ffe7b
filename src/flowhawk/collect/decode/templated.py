"""The engine shared by the NetFlow v9 and IPFIX decoders: sets, templates, pending data.

Per datagram only the set headers are walked in Python. Data sets of fixed-length
templates are not decoded there: their bytes are gathered per (compiled template,
domain) over the whole batch and decoded at the end with one ``np.frombuffer`` per
group; varlen templates are projected to fixed records first (see
:mod:`.templates`). Options data is decoded at once, so a sampling rate announced in
a datagram applies to the data sets after it.

Templates are keyed ``"<protocol>/<domain>/<template id>"`` in
``ExporterState.templates``. A new definition replaces the old one for the sets that
follow it; records already gathered keep the definition they were read with, since
groups are keyed by the compiled definition, not the id.

A data set whose template is unknown is kept (base64, in the domain's options under
``"pending"``, so it survives a restart) and decoded when the template arrives, with
its own datagram's header: at most :data:`PENDING_SETS` sets and
:data:`PENDING_BYTES` bytes per domain, for at most :data:`PENDING_US` of receive
time (checked when the domain sends again); beyond that the oldest are dropped and
counted as "no template". ``DecodeResult.pending`` is the number of sets held.

Rows come out in arrival order, and a batch gives the same rows as its datagrams
decoded one at a time: data sets keep the sampling rate, systemInitTime and sampler
maps current when they arrived (sampler maps are replaced, never changed in place,
so each set refers to the version it came under).
"""

from __future__ import annotations

import base64
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowhawk.collect.decode import columns, options, sequence
from flowhawk.collect.decode.base import DecodeResult, DomainStats, ExporterState
from flowhawk.collect.decode.templates import (
    Op,
    Template,
    compile_template,
    fixed_count,
    from_json,
    project,
    records_as_dicts,
    to_json,
    values,
)
from flowhawk.normalize.rawcolumns import RawColumns

PENDING_SETS = 64
PENDING_BYTES = 256 * 1024
PENDING_US = 60_000_000
MAX_TEMPLATES = 4096  # per exporter, all domains

_SET = struct.Struct("!HH")
_MAX_MS = 2**53  # milliseconds beyond any date we can represent; keeps contexts in int64


@dataclass(slots=True)
class Header:
    """What the decoders need from a NetFlow v9 / IPFIX message header."""

    domain: int
    seq: int
    export_us: int
    uptime_ms: int  # NetFlow v9 sysUptime; -1 for IPFIX
    pos: int  # first set
    end: int  # end of the message
    count: int = -1  # NetFlow v9 header record count (-1: none)


@dataclass(slots=True)
class _Domain:
    stats: DomainStats
    opts: dict[str, Any]  # the domain's options: sampling, interfaces, pending sets, ...


@dataclass(slots=True)
class _Group:
    """The records of one template definition and domain gathered over a batch."""

    chunks: list[Any] = field(default_factory=list)  # record bytes, one chunk per set
    counts: list[int] = field(default_factory=list)
    starts: list[Any] = field(default_factory=list)  # first record offset, or all (varlen)
    sets: list[tuple[int, ...]] = field(default_factory=list)  # per-set context, see _CTX


_CTX = ("export_us", "uptime_ms", "sys_init_ms", "rate", "seq", "epoch", "order")


@dataclass
class _Batch:
    state: ExporterState
    errors: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    groups: dict[tuple[Template, int], _Group] = field(default_factory=dict)
    cache: dict[tuple[int, int], Template | None] = field(default_factory=dict)
    domains: dict[int, _Domain] = field(default_factory=dict)
    committed: int = 0  # data sets committed so far: their order in the output
    # sampler / selector maps data sets were staged under, and their index by identity
    maps: list[dict[str, Any]] = field(default_factory=list)
    map_index: dict[tuple[int, int], int] = field(default_factory=dict)


class TemplateDecoder:
    """Base of :class:`NetFlow9Decoder` and :class:`IpfixDecoder`; subclasses read headers."""

    protocol = ""
    template_set = 0
    options_set = 1
    per_packet_sequence = True
    detect_inclusive = False

    def header(self, buf: bytes, errors: Counter) -> Header | None:
        raise NotImplementedError

    def parse_templates(
        self, set_id: int, buf: bytes, pos: int, end: int
    ) -> tuple[list[Op], str | None]:
        raise NotImplementedError

    def count_ok(self, hdr: Header, counts: dict[str, int]) -> bool:
        """Whether the header's record count agrees with what the datagram held."""
        return True

    # -- the batch ------------------------------------------------------------------

    def decode(
        self, datagrams: list[bytes], recv_us: list[int], state: ExporterState
    ) -> DecodeResult:
        batch = _Batch(state)
        for buf, t in zip(datagrams, recv_us, strict=True):
            try:
                self._datagram(batch, bytes(buf), int(t))
            except Exception as exc:  # a bug, not bad input: counted, and fuzzed to stay at zero
                batch.errors[f"decoder bug: {type(exc).__name__}"] += 1
        try:
            rec = self._finish(batch)
        except Exception as exc:
            batch.errors[f"decoder bug: {type(exc).__name__}"] += 1
            rec = None
        prefix = self.protocol + "/"
        pending = sum(
            len(o.get("pending", ()))
            for k, o in state.options.items()
            if k.startswith(prefix) and isinstance(o, dict)
        )
        records = [rec] if rec is not None else []
        return DecodeResult(None, batch.errors, None, pending, batch.ignored, records)

    def flush(self, state: ExporterState) -> Counter:
        """Drop every data set still waiting for its template (counted as "no template")."""
        errors: Counter = Counter()
        for key, opts in state.options.items():
            if key.startswith(self.protocol + "/") and opts.get("pending"):
                errors["no template"] += len(opts["pending"])
                state.domains.setdefault(key, DomainStats(protocol=self.protocol))
                state.domains[key].errors += len(opts["pending"])
                opts["pending"] = []
        return errors

    def _finish(self, batch: _Batch) -> RawColumns | None:
        parts = []
        for (tpl, domain), g in batch.groups.items():
            n = sum(g.counts)
            raw = values(tpl, b"".join(g.chunks), n)
            counts = np.asarray(g.counts)
            sets = np.asarray(g.sets, dtype=np.int64)
            ctx = {k: np.repeat(sets[:, i], counts) for i, k in enumerate(_CTX)}
            if tpl.varlen:
                ctx["off"] = np.concatenate(g.starts)
            else:  # offsets of fixed-length records: set start + index in the set * length
                first = np.repeat(np.cumsum(counts) - counts, counts)
                ctx["off"] = (
                    np.repeat(np.asarray(g.starts, dtype=np.int64), counts)
                    + (np.arange(n) - first) * tpl.minlen
                )
            ctx["order"] = ctx["order"] + ctx["off"]
            ctx["domain"] = np.full(n, domain, dtype=np.int64)
            part = columns.assemble(raw, ctx, batch.maps)
            if part is not None:
                parts.append(part)
        return columns.records(parts, self.protocol, batch.state.exporter)

    # -- one datagram -----------------------------------------------------------------

    def _domain(self, batch: _Batch, domain: int) -> _Domain:
        d = batch.domains.get(domain)
        if d is None:
            stats = batch.state.domain(self.protocol, domain)
            opts = batch.state.options.setdefault(f"{self.protocol}/{domain}", {})
            d = batch.domains[domain] = _Domain(stats, opts)
        return d

    def _datagram(self, batch: _Batch, buf: bytes, t: int) -> None:
        hdr = self.header(buf, batch.errors)
        if hdr is None:
            return
        dom = self._domain(batch, hdr.domain)
        stats, opts = dom.stats, dom.opts
        stats.packets += 1
        if t > stats.last_seen_us:
            stats.last_seen_us = t
        if opts.get("pending"):
            self._expire(batch, dom, t)
        view = memoryview(buf)
        pos, end = hdr.pos, hdr.end
        counts = {"records": 0, "sets": 0, "data records": 0, "data sets": 0, "flow records": 0}
        unknown, learned, complete = False, False, True
        own: list[tuple[Any, ...]] = []
        cache = batch.cache
        while end - pos >= 4:
            set_id, length = _SET.unpack_from(buf, pos)
            if length < 4 or pos + length > end:
                if any(view[pos:end]):  # not just zero padding up to the end of the datagram
                    self._error(batch, stats, "bad set length")
                    complete = False
                break
            body, set_end = pos + 4, pos + length
            counts["sets"] += 1
            if set_id >= 256:
                key = (hdr.domain, set_id)
                tpl = cache[key] if key in cache else self._template(batch, *key)
                if tpl is None:
                    self._hold(batch, dom, t, hdr, set_id, buf[body:set_end], body)
                    unknown = True
                else:
                    n = self._data(batch, tpl, hdr, dom, view, body, set_end, 0, own)
                    counts["records"] += n
                    counts["data records"] += n
                    counts["data sets"] += 1
                    if not tpl.options:
                        counts["flow records"] += n
            elif set_id in (self.template_set, self.options_set):
                ops, err = self.parse_templates(set_id, buf, body, set_end)
                if err:
                    self._error(batch, stats, err)
                    complete = False
                counts["records"] += len(ops)
                learned |= self._apply(batch, hdr.domain, ops, set_id == self.options_set)
            else:
                self._error(batch, stats, "reserved set id")
                complete = False
            pos = set_end
        if complete and not unknown and not self.count_ok(hdr, counts):
            self._error(batch, stats, "record count mismatch")
            own = []  # the datagram is not what its header says: keep none of its flows
        if learned and opts.get("pending"):  # held sets came first: they go first
            self._commit(batch, stats, self._retry(batch, hdr.domain, dom))
        self._commit(batch, stats, own)
        sequence.observe(
            stats,
            opts,
            hdr.seq,
            None if unknown else counts["data records"],
            self.per_packet_sequence,
            self.detect_inclusive,
        )

    @staticmethod
    def _error(batch: _Batch, stats: DomainStats, reason: str, n: int = 1) -> None:
        batch.errors[reason] += n
        stats.errors += n

    def _template(self, batch: _Batch, domain: int, tid: int) -> Template | None:
        data = batch.state.templates.get(f"{self.protocol}/{domain}/{tid}")
        tpl = batch.cache[(domain, tid)] = None if data is None else from_json(data)
        return tpl

    def _apply(self, batch: _Batch, domain: int, ops: list[Op], is_options: bool) -> bool:
        templates = batch.state.templates
        prefix = f"{self.protocol}/{domain}/"
        learned = False
        for op in ops:
            if op[0] == "define":
                key = prefix + str(op[1])
                if key not in templates and len(templates) >= MAX_TEMPLATES:
                    batch.errors["too many templates"] += 1
                    continue
                tpl = compile_template(op[2], op[3], is_options)
                templates[key] = to_json(tpl)
                batch.cache[(domain, op[1])] = tpl
                learned = True
            elif op[0] == "withdraw":
                templates.pop(prefix + str(op[1]), None)
                batch.cache[(domain, op[1])] = None
            else:  # withdraw all templates (or all options templates) of the domain
                for key in [k for k in templates if k.startswith(prefix)]:
                    if bool(templates[key].get("options")) == is_options:
                        del templates[key]
                        batch.cache[(domain, int(key.rsplit("/", 1)[1]))] = None
        return learned

    def _data(
        self,
        batch: _Batch,
        tpl: Template,
        hdr: Header,
        dom: _Domain,
        buf: Any,
        start: int,
        end: int,
        base: int,
        staged: list[tuple[Any, ...]],
    ) -> int:
        """Stage (or, for options, apply) one data set; the number of records in it."""
        opts = dom.opts
        if tpl.options:
            recs, err = records_as_dicts(tpl, bytes(buf[start:end]), 0, end - start)
            options.apply(recs, opts)
            opts["option_records"] = opts.get("option_records", 0) + len(recs)
            dom.stats.sampling = int(opts.get("sampling", 1))
            if err:
                self._error(batch, dom.stats, err)
            return len(recs)
        if tpl.varlen:
            data, offsets, err = project(tpl, bytes(buf[start:end]), 0, end - start)
            n = len(offsets)
            first: Any = np.asarray(offsets, dtype=np.int64) + (base + start)
        else:
            n, err = fixed_count(tpl, end - start)
            data = buf[start : start + n * tpl.minlen]
            first = base + start
        if err:
            self._error(batch, dom.stats, err)
        if n == 0:
            return 0
        if not tpl.flow:  # no address: statistics, per-client usage, MPLS-only records
            batch.ignored["not a flow record"] += n
            return n
        init = min(int(opts.get("sys_init_ms", -1)), _MAX_MS)
        rate = min(int(opts.get("sampling", 1)), 2**31 - 1)
        samplers, selectors = opts.get("samplers"), opts.get("selectors")
        epoch = batch.map_index.get((id(samplers), id(selectors)))
        if epoch is None:  # maps are replaced, never changed, when options change them
            epoch = batch.map_index[(id(samplers), id(selectors))] = len(batch.maps)
            batch.maps.append({"samplers": samplers, "selectors": selectors})
        ctx = (hdr.export_us, hdr.uptime_ms, init, rate, hdr.seq, epoch)
        staged.append((tpl, hdr.domain, data, n, first, ctx))
        return n

    @staticmethod
    def _commit(batch: _Batch, stats: DomainStats, staged: list[tuple[Any, ...]]) -> None:
        for tpl, domain, data, n, first, ctx in staged:
            g = batch.groups.get((tpl, domain))
            if g is None:
                g = batch.groups[(tpl, domain)] = _Group()
            g.chunks.append(data)
            g.counts.append(n)
            g.starts.append(first)
            # rows come out in the order sets are committed (held sets before the datagram
            # that brought their template), then by offset within the set
            g.sets.append((*ctx, batch.committed << 16))
            batch.committed += 1
            stats.flows += n

    # -- data waiting for its template --------------------------------------------------

    def _hold(
        self,
        batch: _Batch,
        dom: _Domain,
        t: int,
        hdr: Header,
        tid: int,
        body: bytes,
        offset: int,
    ) -> None:
        held = dom.opts.setdefault("pending", [])
        text = base64.b64encode(body).decode("ascii")
        held.append([tid, t, hdr.export_us, hdr.uptime_ms, hdr.seq, offset, text])
        size = sum(len(e[6]) * 3 // 4 for e in held)
        while held and (len(held) > PENDING_SETS or size > PENDING_BYTES):
            size -= len(held.pop(0)[6]) * 3 // 4
            self._error(batch, dom.stats, "no template")

    def _expire(self, batch: _Batch, dom: _Domain, t: int) -> None:
        held = dom.opts["pending"]
        keep = [e for e in held if t - e[1] <= PENDING_US]
        if len(keep) < len(held):
            self._error(batch, dom.stats, "no template", len(held) - len(keep))
            dom.opts["pending"] = keep

    def _retry(self, batch: _Batch, domain: int, dom: _Domain) -> list[tuple[Any, ...]]:
        """Stage the held sets whose template is now known; keep the others held."""
        keep: list[Any] = []
        staged: list[tuple[Any, ...]] = []
        for entry in dom.opts["pending"]:
            tid, _, export_us, uptime_ms, seq, offset, data = entry
            key = (domain, tid)
            tpl = batch.cache[key] if key in batch.cache else self._template(batch, *key)
            if tpl is None:
                keep.append(entry)
                continue
            body = base64.b64decode(data)
            hdr = Header(domain, seq, export_us, uptime_ms, 0, len(body))
            self._data(batch, tpl, hdr, dom, body, 0, len(body), offset, staged)
        dom.opts["pending"] = keep
        return staged
