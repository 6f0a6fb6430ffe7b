"""Record scanning for classic pcap and pcapng: where each packet is, and when.

A numba kernel walks a window of the capture held in a ``uint8`` array and returns,
per record, the offset of the packet data in the window, the captured and original
lengths, the timestamp in microseconds and the link type. It stops at the first
record that does not fit completely in the window, so the caller slides the window
and resumes: a capture of any size is read in bounded memory, and a pipe (tcpdump's
``-w -``) is scanned the same way as a file.

Classic pcap: both byte orders, microsecond and nanosecond magics, and the
"modified" (Kuznetzov) 24-byte record header. pcapng: sections in either byte order,
any number of interfaces each with its own link type, ``if_tsresol`` and
``if_tsoffset``; Enhanced, Simple and obsolete Packet Blocks. Other blocks are
skipped. A packet naming an interface that was never described gets link type
:data:`LT_BAD_RECORD`, which the decoder counts as a bad record.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from flowhawk.jit import numba

# numba reads its cache location at import: point it at a user cache unless the user
# chose one, so an installation in a read-only site-packages still caches kernels.

# Scanner return codes.
SCAN_NEED_MORE = 0  # the next record is not complete in the window (or the window ended)
SCAN_FULL = 1  # the output arrays are full; call again from the returned position
SCAN_CORRUPT = 2  # the structure at the returned position is invalid

#: Link type given to a packet whose pcapng interface is unknown.
LT_BAD_RECORD = -1
#: Largest classic-pcap record believed; above this the record header is garbage.
MAX_PCAP_CAPLEN = 1 << 20
#: pcapng interfaces remembered per section (packets on later ones are bad records).
MAX_INTERFACES = 4096

_PCAP_MAGICS: dict[bytes, tuple[bool, bool, int]] = {
    # magic -> (big endian, nanosecond timestamps, record header length)
    b"\xd4\xc3\xb2\xa1": (False, False, 16),
    b"\xa1\xb2\xc3\xd4": (True, False, 16),
    b"\x4d\x3c\xb2\xa1": (False, True, 16),
    b"\xa1\xb2\x3c\x4d": (True, True, 16),
    b"\x34\xcd\xb2\xa1": (False, False, 24),  # Kuznetzov's modified pcap
    b"\xa1\xb2\xcd\x34": (True, False, 24),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOMS = (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a")
PCAP_HEADER_LEN = 24

# pcapng scanner state slots and interface table columns.
_ST_BIG, _ST_NIF, _ST_LAST_TS, _ST_SECTION = 0, 1, 2, 3
_IF_LT, _IF_KIND, _IF_MUL, _IF_DIV, _IF_OFF, _IF_SNAP = 0, 1, 2, 3, 4, 5


class Records(NamedTuple):
    """Columns describing the records found in one window."""

    offset: np.ndarray  # int64: packet data offset in the window
    caplen: np.ndarray  # int32: bytes captured
    origlen: np.ndarray  # int32: bytes on the wire
    ts_us: np.ndarray  # int64: microseconds since the epoch
    linktype: np.ndarray  # int32: LINKTYPE_* of the packet's interface


def capture_kind(head: bytes) -> str | None:
    """``"pcap"`` or ``"pcapng"`` when ``head`` starts a capture of that kind, else None."""
    if len(head) >= PCAP_HEADER_LEN and head[:4] in _PCAP_MAGICS:
        return "pcap"
    if len(head) >= 12 and head[:4] == _PCAPNG_SHB and head[8:12] in _PCAPNG_BOMS:
        return "pcapng"
    return None


class RecordScanner:
    """Finds records in successive windows of one capture; keeps pcapng interface state."""

    def __init__(self, head: bytes):
        kind = capture_kind(head)
        if kind is None:
            raise ValueError("not a pcap or pcapng capture (unknown magic number)")
        self.kind = kind
        if kind == "pcap":
            self.big, self.nanos, self.record_header = _PCAP_MAGICS[head[:4]]
            fmt = ">I" if self.big else "<I"
            # The upper bits of the link type field carry FCS information (libpcap's
            # LT_LINKTYPE mask keeps the rest).
            self.linktype = struct.unpack(fmt, head[20:24])[0] & 0x03FF_FFFF
            self.start = PCAP_HEADER_LEN
        else:
            self.linktype = -1
            self.start = 0
            self._state = np.zeros(4, dtype=np.int64)
            self._ifs = np.zeros((MAX_INTERFACES, 6), dtype=np.int64)

    def scan(
        self, buf: np.ndarray, pos: int, end: int, max_records: int
    ) -> tuple[Records, int, int]:
        """Scan ``buf[pos:end]``; return the records, the position reached and a SCAN_* code."""
        off = np.empty(max_records, dtype=np.int64)
        cap = np.empty(max_records, dtype=np.int32)
        orig = np.empty(max_records, dtype=np.int32)
        ts = np.empty(max_records, dtype=np.int64)
        lt = np.empty(max_records, dtype=np.int32)
        if self.kind == "pcap":
            n, pos, code = _scan_pcap(
                buf,
                pos,
                end,
                self.big,
                self.nanos,
                self.record_header,
                self.linktype,
                off,
                cap,
                orig,
                ts,
                lt,
            )
        else:
            n, pos, code = _scan_pcapng(
                buf, pos, end, self._state, self._ifs, off, cap, orig, ts, lt
            )
        return Records(off[:n], cap[:n], orig[:n], ts[:n], lt[:n]), int(pos), int(code)


@numba.njit(cache=True, nogil=True)
def _u16(buf: np.ndarray, p: int, big: bool) -> int:
    if big:
        return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
    return np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8)


@numba.njit(cache=True, nogil=True)
def _u32(buf: np.ndarray, p: int, big: bool) -> int:
    if big:
        return (
            (np.int64(buf[p]) << 24)
            | (np.int64(buf[p + 1]) << 16)
            | (np.int64(buf[p + 2]) << 8)
            | np.int64(buf[p + 3])
        )
    return (
        np.int64(buf[p])
        | (np.int64(buf[p + 1]) << 8)
        | (np.int64(buf[p + 2]) << 16)
        | (np.int64(buf[p + 3]) << 24)
    )


@numba.njit(cache=True, nogil=True)
def _scan_pcap(buf, pos, end, big, nanos, hdr, linktype, off, cap, orig, ts, lt):
    n = 0
    nmax = off.shape[0]
    pos = np.int64(pos)
    while n < nmax:
        if pos + hdr > end:
            return n, pos, SCAN_NEED_MORE
        caplen = _u32(buf, pos + 8, big)
        if caplen > MAX_PCAP_CAPLEN:
            return n, pos, SCAN_CORRUPT
        if pos + hdr + caplen > end:
            return n, pos, SCAN_NEED_MORE
        frac = _u32(buf, pos + 4, big)
        if nanos:
            frac = frac // 1000
        ts[n] = _u32(buf, pos, big) * np.int64(1_000_000) + frac
        off[n] = pos + hdr
        cap[n] = caplen
        orig[n] = _u32(buf, pos + 12, big)
        lt[n] = linktype
        n += 1
        pos += hdr + caplen
    return n, pos, SCAN_FULL


@numba.njit(cache=True, nogil=True)
def _read_idb(buf, pos, blen, big, ifs, i):
    """Fill interface row ``i`` from the Interface Description Block at ``pos``."""
    ifs[i, _IF_LT] = _u16(buf, pos + 8, big)
    ifs[i, _IF_SNAP] = _u32(buf, pos + 12, big)
    resol = np.int64(6)  # default: microseconds
    offset_s = np.int64(0)
    p = pos + 16
    lim = pos + blen - 4
    while p + 4 <= lim:
        code = _u16(buf, p, big)
        olen = _u16(buf, p + 2, big)
        if code == 0 or p + 4 + olen > lim:
            break
        if code == 9 and olen >= 1:
            resol = np.int64(buf[p + 4])
        elif code == 14 and olen >= 8:
            if big:
                offset_s = (_u32(buf, p + 4, big) << 32) | _u32(buf, p + 8, big)
            else:
                offset_s = (_u32(buf, p + 8, big) << 32) | _u32(buf, p + 4, big)
        p += 4 + ((olen + 3) & ~3)
    ifs[i, _IF_OFF] = offset_s * np.int64(1_000_000)
    if resol & 0x80:  # power-of-two resolution: 2^-e seconds
        ifs[i, _IF_KIND] = 1
        ifs[i, _IF_MUL] = min(resol & 0x7F, 62)
        ifs[i, _IF_DIV] = 1
    else:  # power-of-ten resolution: 10^-r seconds
        r = min(resol, 18)
        ifs[i, _IF_KIND] = 0
        ifs[i, _IF_MUL] = 1
        ifs[i, _IF_DIV] = 1
        while r < 6:
            ifs[i, _IF_MUL] *= 10
            r += 1
        while r > 6:
            ifs[i, _IF_DIV] *= 10
            r -= 1


@numba.njit(cache=True, nogil=True)
def _to_us(ifs, i, t):
    if ifs[i, _IF_KIND] == 0:
        return (t // ifs[i, _IF_DIV]) * ifs[i, _IF_MUL] + ifs[i, _IF_OFF]
    e = ifs[i, _IF_MUL]
    whole = t >> e
    frac = t & ((np.int64(1) << e) - 1)
    if e > 40:  # keep frac * 1e6 inside 64 bits
        frac >>= e - 40
        e = np.int64(40)
    return whole * 1_000_000 + ((frac * 1_000_000) >> e) + ifs[i, _IF_OFF]


@numba.njit(cache=True, nogil=True)
def _scan_pcapng(buf, pos, end, st, ifs, off, cap, orig, ts, lt):
    n = 0
    nmax = off.shape[0]
    pos = np.int64(pos)
    while n < nmax:
        if pos + 12 > end:
            return n, pos, SCAN_NEED_MORE
        b = buf[pos : pos + 4]
        if b[0] == 0x0A and b[1] == 0x0D and b[2] == 0x0D and b[3] == 0x0A:
            # Section Header Block: its byte-order magic decides how to read the rest.
            if buf[pos + 8] == 0x1A and buf[pos + 9] == 0x2B:
                big = True
            elif buf[pos + 8] == 0x4D and buf[pos + 9] == 0x3C:
                big = False
            else:
                return n, pos, SCAN_CORRUPT
            blen = _u32(buf, pos + 4, big)
            if blen < 28 or blen % 4 != 0:
                return n, pos, SCAN_CORRUPT
            if pos + blen > end:
                return n, pos, SCAN_NEED_MORE
            if _u32(buf, pos + blen - 4, big) != blen:
                return n, pos, SCAN_CORRUPT
            st[_ST_BIG] = 1 if big else 0
            st[_ST_NIF] = 0  # interfaces are numbered per section
            st[_ST_SECTION] = 1
            pos += blen
            continue
        if st[_ST_SECTION] == 0:
            return n, pos, SCAN_CORRUPT
        big = st[_ST_BIG] == 1
        btype = _u32(buf, pos, big)
        blen = _u32(buf, pos + 4, big)
        if blen < 12 or blen % 4 != 0:
            return n, pos, SCAN_CORRUPT
        if pos + blen > end:
            return n, pos, SCAN_NEED_MORE
        if _u32(buf, pos + blen - 4, big) != blen:
            return n, pos, SCAN_CORRUPT
        nif = st[_ST_NIF]
        if btype == 1:  # Interface Description Block
            if blen < 20:
                return n, pos, SCAN_CORRUPT
            if nif < ifs.shape[0]:
                _read_idb(buf, pos, blen, big, ifs, nif)
            st[_ST_NIF] = nif + 1
        elif btype == 6 or btype == 2:  # Enhanced / obsolete Packet Block
            if blen < 32:
                return n, pos, SCAN_CORRUPT
            caplen = _u32(buf, pos + 20, big)
            if caplen > blen - 32:
                return n, pos, SCAN_CORRUPT
            ifid = _u32(buf, pos + 8, big) if btype == 6 else _u16(buf, pos + 8, big)
            known = ifid < nif and ifid < ifs.shape[0]
            if known:
                t = (_u32(buf, pos + 12, big) << 32) | _u32(buf, pos + 16, big)
                st[_ST_LAST_TS] = _to_us(ifs, ifid, t)
                lt[n] = ifs[ifid, _IF_LT]
            else:
                lt[n] = LT_BAD_RECORD
            ts[n] = st[_ST_LAST_TS]
            off[n] = pos + 28
            cap[n] = caplen
            orig[n] = _u32(buf, pos + 24, big)
            n += 1
        elif btype == 3:  # Simple Packet Block: interface 0, no timestamp of its own
            if blen < 16:
                return n, pos, SCAN_CORRUPT
            origlen = _u32(buf, pos + 8, big)
            caplen = min(origlen, blen - 16)
            if nif > 0 and ifs[0, _IF_SNAP] > 0:
                caplen = min(caplen, ifs[0, _IF_SNAP])
            lt[n] = ifs[0, _IF_LT] if nif > 0 else LT_BAD_RECORD
            ts[n] = st[_ST_LAST_TS]  # the spec gives none: reuse the previous packet's
            off[n] = pos + 12
            cap[n] = caplen
            orig[n] = origlen
            n += 1
        pos += blen
    return n, pos, SCAN_FULL
