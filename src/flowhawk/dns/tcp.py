"""DNS over TCP: length-prefixed messages put back together from segments in order.

Each direction of a TCP connection is a byte stream of messages, each preceded by
its length in two bytes (RFC 1035 4.2.2). Segments are appended while they continue
the stream exactly (sequence number = next expected); a retransmission (a sequence
number already passed) is ignored; a gap (a lost or uncaptured segment) drops what
was held, counted as ``DNS over TCP with a gap``, and restarts from the new segment.
Out-of-order segments are not reordered. What is still held at the end of the
capture is counted as ``DNS over TCP message incomplete``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowhawk.diagnostics import Diagnostics

_SEQ_MOD = 1 << 32
_HALF = 1 << 31

#: A direction of a TCP connection: (src hi, src lo, dst hi, dst lo, sport, dport).
StreamKey = tuple[int, int, int, int, int, int]


@dataclass
class _Stream:
    next_seq: int
    held: bytes = b""
    ts: int = 0  # time of the segment that started the held message
    location: str = ""


class TcpStreams:
    """Reassembles DNS messages per TCP direction."""

    def __init__(self, input_name: str, diag: Diagnostics):
        self.input = input_name
        self.diag = diag
        self.streams: dict[StreamKey, _Stream] = {}

    def segment(
        self, key: StreamKey, seq: int, data: bytes, ts: int, location: str
    ) -> list[tuple[bytes, int, str]]:
        """Add one segment's payload; return the messages it completes (wire, ts, where)."""
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = _Stream(seq)
        if seq != stream.next_seq:
            if (seq - stream.next_seq) % _SEQ_MOD >= _HALF:  # before what was seen
                self.diag.ignore(self.input, "TCP retransmission of DNS data")
                return []
            if stream.held:
                self._lost(stream, "DNS over TCP with a gap", "a segment is missing")
        stream.next_seq = (seq + len(data)) % _SEQ_MOD
        if not stream.held:
            stream.ts, stream.location = ts, location
        buf = stream.held + data
        out = []
        while len(buf) >= 2:
            size = int.from_bytes(buf[:2], "big")
            if len(buf) < 2 + size:
                break
            out.append((buf[2 : 2 + size], stream.ts, stream.location))
            buf = buf[2 + size :]
            stream.ts, stream.location = ts, location
        stream.held = buf
        return out

    def finish(self) -> None:
        """Count the messages still incomplete at the end of the capture."""
        for stream in self.streams.values():
            if stream.held:
                self._lost(stream, "DNS over TCP message incomplete", "the capture ends first")
        self.streams.clear()

    def _lost(self, stream: _Stream, reason: str, why: str) -> None:
        detail = f"{len(stream.held)} bytes held; {why}"
        self.diag.skip(self.input, stream.location, reason, detail)
        stream.held = b""
