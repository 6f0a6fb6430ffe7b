"""Where the transport payload of a decoded packet lies (numba), for DNS extraction.

The packet decoder (:mod:`flowhawk.sources.pcap.decode`) gives ports and protocols
but not where the payload starts. This kernel finds it for the few packets the DNS
reader selected by port: it walks the link layer with the decoder's own link walker
(every link type and encapsulation the flow reader supports), then the IP header
(IPv6 extension headers too) and the UDP or TCP header.

Per packet it returns the payload's start and end in the window, a status and, for
TCP, the sequence number and SYN/FIN/RST bits.
"""

from __future__ import annotations

import numpy as np

from flowhawk.jit import numba
from flowhawk.sources.pcap.decode import ST_OK, _link

PL_OK = 0
PL_CUT = 1  # the capture ends before the IP packet does (snapshot length)
PL_FRAGMENT = 2  # an IP fragment: the message is not whole in this packet
PL_BAD = 3  # headers that do not hold together


def payload_bounds(
    buf: np.ndarray, offsets: np.ndarray, caplens: np.ndarray, linktypes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start, stop, PL_* status, TCP sequence number) of each packet's payload."""
    n = len(offsets)
    start = np.zeros(n, np.int64)
    stop = np.zeros(n, np.int64)
    status = np.zeros(n, np.uint8)
    seq = np.zeros(n, np.int64)
    _bounds(buf, offsets, caplens, linktypes, start, stop, status, seq)
    return start, stop, status, seq


@numba.njit(cache=True, nogil=True, inline="always")
def _u16(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@numba.njit(cache=True, nogil=True)
def _bounds(buf, offs, caps, lts, start, stop, status, seq):
    for i in range(offs.shape[0]):
        p = offs[i]
        end = p + caps[i]
        st, et, q, _vid, _sm, _dm = _link(buf, p, end, lts[i])
        status[i] = PL_BAD
        if st != ST_OK or q + 20 > end:
            continue
        frag = False
        if et == 0x0800:
            ihl = np.int64(buf[q] & 0x0F) * 4
            total = _u16(buf, q + 2)
            if total == 0:
                total = end - q
            ip_end = q + total
            frag = (_u16(buf, q + 6) & 0x3FFF) != 0  # more fragments, or an offset
            nh = np.int64(buf[q + 9])
            l4 = q + ihl
        elif et == 0x86DD:
            if q + 40 > end:
                continue
            total = _u16(buf, q + 4) + 40
            if total == 40:
                total = end - q
            ip_end = q + total
            nh = np.int64(buf[q + 6])
            l4 = q + 40
            for _ in range(16):
                if l4 + 8 > end:
                    break
                if nh == 0 or nh == 43 or nh == 60:
                    nxt = np.int64(buf[l4])
                    l4 += (np.int64(buf[l4 + 1]) + 1) * 8
                    nh = nxt
                elif nh == 44:
                    frag = True
                    nh = np.int64(buf[l4])
                    l4 += 8
                else:
                    break
        else:
            continue
        limit = min(end, ip_end)
        if nh == 17:
            if l4 + 8 > limit:
                continue
            ulen = _u16(buf, l4 + 4)
            s = l4 + 8
            e = limit
            if ulen >= 8 and l4 + ulen < e:
                e = l4 + ulen
        elif nh == 6:
            if l4 + 20 > limit:
                continue
            s = l4 + (np.int64(buf[l4 + 12]) >> 4) * 4
            e = limit
            seq[i] = (_u16(buf, l4 + 4) << 16) | _u16(buf, l4 + 6)
            if s > e:
                continue
        else:
            continue
        start[i] = s
        stop[i] = e
        if frag:
            status[i] = PL_FRAGMENT
        elif end < ip_end:
            status[i] = PL_CUT
        else:
            status[i] = PL_OK
