"""DNS transactions from pcap and pcapng captures (plain or gzip/bzip2/xz).

The capture is read in windows by the flow reader's record scanner
(:mod:`flowhawk.sources.pcap.capfile`) and each window's packets are decoded into
columns by its decoder. DNS packets are then selected in bulk with numpy: decoded
without error, UDP or TCP, one port in ``ports`` (53 by default; add 5353 for mDNS,
5355 for LLMNR). Only those have their payload located (:mod:`flowhawk.dns.payload`)
and parsed by dnspython (:mod:`flowhawk.dns.wire`); TCP payloads go through
:class:`~flowhawk.dns.tcp.TcpStreams` first. Messages are paired into transactions
incrementally (:class:`~flowhawk.dns.pairing.Pairer`), so memory holds a window of
capture and a minute of messages.

Counted, never raised (per input, by reason, located by byte offset): truncated and
malformed messages, IP fragments (``fragmented DNS message``: not reassembled), TCP
gaps and incomplete messages, a corrupt or cut-short capture. A file that is not a
capture raises :class:`~flowhawk.errors.InputError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk import netaddr
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import pairing, wire
from flowhawk.dns.tcp import TcpStreams
from flowhawk.errors import InputError
from flowhawk.sources.base import open_maybe_compressed

#: The DNS port; mDNS is 5353, LLMNR 5355.
DNS_PORTS: tuple[int, ...] = (53,)
WINDOW = 4 << 20
_SCAN_BATCH = 1 << 16


class _Batch:
    """The DNS messages of one window, before parsing."""

    def __init__(self) -> None:
        self.wires: list[bytes] = []
        self.where: list[str] = []
        self.cut: list[bool] = []
        self.ts: list[int] = []
        self.key: list[tuple[int, int, int, int, int, int]] = []
        self.proto: list[int] = []


def read_pcap(
    path: Path, diag: Diagnostics, ports: Sequence[int] = DNS_PORTS, window: int = WINDOW
) -> Iterator[pa.Table]:
    """Yield DNS transaction tables (:data:`~flowhawk.dns.schema.DNS_SCHEMA`) of a capture."""
    from flowhawk.sources.pcap.capfile import SCAN_CORRUPT, SCAN_FULL, RecordScanner

    name = str(path)
    try:
        fh = open_maybe_compressed(path)
    except OSError as exc:
        raise InputError(name, f"cannot open: {exc.strerror or exc}") from None
    with fh:
        try:
            head = fh.read(24)
            scanner = RecordScanner(head)
        except (OSError, EOFError) as exc:
            raise InputError(name, f"cannot read: {exc}") from None
        except ValueError:
            raise InputError(
                name, "is not a pcap or pcapng capture (unknown magic number)"
            ) from None
        reader = _Reader(name, diag, np.array(sorted(set(ports)), np.int64))
        buf = np.empty(max(window, 4096), np.uint8)
        buf[: len(head)] = np.frombuffer(head, np.uint8)
        base, pos, filled, corrupt = 0, scanner.start, len(head), False
        while True:
            while True:
                recs, pos, code = scanner.scan(buf, pos, filled, _SCAN_BATCH)
                if len(recs.offset):
                    reader.records(buf, recs, base)
                if code == SCAN_CORRUPT:
                    corrupt = True
                    detail = "invalid record or block header; the rest is not read"
                    diag.skip(name, f"offset {base + pos}", "corrupt capture record", detail)
                if code != SCAN_FULL:
                    break
            yield from reader.emit(final=False)
            if corrupt:
                break
            keep = filled - pos
            buf[:keep] = buf[pos:filled]
            base, filled, pos = base + pos, keep, 0
            if filled == len(buf):  # one record larger than the window
                buf = np.concatenate([buf, np.empty_like(buf)])
            try:
                n = fh.readinto(memoryview(buf)[filled:])
            except (OSError, EOFError) as exc:
                diag.skip(name, f"offset {base + filled}", "unreadable data", str(exc))
                n = 0
            if not n:
                break
            filled += n
        if not corrupt and filled > pos:
            detail = f"the capture ends {filled - pos} bytes into a record"
            diag.skip(name, f"offset {base + pos}", "truncated record", detail)
        reader.tcp.finish()
        yield from reader.emit(final=True)


class _Reader:
    """Per-capture state: TCP streams, the pairer and the messages of the window."""

    def __init__(self, name: str, diag: Diagnostics, ports: np.ndarray):
        self.name = name
        self.diag = diag
        self.ports = ports
        self.tcp = TcpStreams(name, diag)
        self.pairer = pairing.Pairer(name)
        self.batch = _Batch()

    def records(self, buf: np.ndarray, recs, base: int) -> None:
        from flowhawk.dns.payload import PL_BAD, PL_CUT, PL_FRAGMENT, payload_bounds
        from flowhawk.sources.pcap.decode import ST_OK, decode

        pk = decode(buf, recs)
        transport = (pk.proto == 17) | (pk.proto == 6)
        on_port = np.isin(pk.sport, self.ports) | np.isin(pk.dport, self.ports)
        idx = np.flatnonzero((pk.status == ST_OK) & transport & on_port)
        if idx.size == 0:
            return
        start, stop, status, seq = payload_bounds(
            buf, recs.offset[idx], recs.caplen[idx], recs.linktype[idx]
        )
        b = self.batch
        for j, i in enumerate(idx.tolist()):
            where = f"offset {base + int(recs.offset[i])}"
            st = int(status[j])
            proto = int(pk.proto[i])
            if st == PL_BAD:
                self.diag.skip(self.name, where, "malformed DNS packet", "bad UDP/TCP header")
                continue
            if st == PL_FRAGMENT:
                self.diag.skip(self.name, where, "fragmented DNS message", "not reassembled")
                continue
            data = buf[start[j] : stop[j]].tobytes()
            key = (
                int(pk.src_hi[i]),
                int(pk.src_lo[i]),
                int(pk.dst_hi[i]),
                int(pk.dst_lo[i]),
                int(pk.sport[i]),
                int(pk.dport[i]),
            )
            ts = int(pk.ts_us[i])
            if proto == 17:
                messages = [(data, ts, where)]
            elif not data:
                continue  # SYN, ACK, FIN: no DNS data
            elif st == PL_CUT:
                self.diag.skip(self.name, where, "truncated DNS message", "TCP segment cut")
                continue
            else:
                messages = self.tcp.segment(key, int(seq[j]), data, ts, where)
            for msg, msg_ts, msg_where in messages:
                b.wires.append(msg)
                b.where.append(msg_where)
                b.cut.append(st == PL_CUT)
                b.ts.append(msg_ts)
                b.key.append(key)
                b.proto.append(proto)

    def emit(self, final: bool) -> Iterator[pa.Table]:
        b, self.batch = self.batch, _Batch()
        if b.wires:
            done = self.pairer.add(_messages(b, self.name, self.diag))
            if done is not None:
                yield pairing.to_table(done)
        if final:
            done = self.pairer.flush()
            if done is not None:
                yield pairing.to_table(done)


def _messages(b: _Batch, name: str, diag: Diagnostics) -> pl.DataFrame:
    """Parse a window's messages into the frame :func:`pairing.pair` takes."""
    parsed = wire.parse(b.wires, b.where, b.cut, name, diag)
    kept = np.asarray(parsed.kept, np.int64)
    keys = np.asarray(b.key, np.uint64).reshape(-1, 6)[kept]
    cols = parsed.columns()
    frame = pl.DataFrame(
        {
            "ts": np.asarray(b.ts, np.int64)[kept],
            "src_ip": netaddr.format(keys[:, 0], keys[:, 1]),
            "src_port": keys[:, 4].astype(np.int32),
            "dst_ip": netaddr.format(keys[:, 2], keys[:, 3]),
            "dst_port": keys[:, 5].astype(np.int32),
            "proto": np.asarray(b.proto, np.int16)[kept],
            **{k: v for k, v in cols.items()},
        },
        schema_overrides={
            "trans_id": pl.Int32,
            "qclass": pl.Int32,
            "qtype": pl.Int32,
            "rcode": pl.Int16,
            "size": pl.Int32,
            "answers": pl.List(pl.String),
            "ttls": pl.List(pl.Float64),
            "answer_types": pl.List(pl.String),
            "query": pl.String,
        },
    )
    return frame
