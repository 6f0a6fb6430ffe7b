"""Receiving many datagrams per system call: Linux ``recvmmsg(2)`` through ctypes.

Python's socket module reads one datagram per call, and each call gives up and takes
back the interpreter lock. :class:`BatchReader` reads up to ``slots`` datagrams of one
socket in one call (the lock is released once, for the call) into a preallocated
buffer of ``slots`` x 64 KiB, so the receiving thread keeps up with an exporter while
the other threads decode. Where ``recvmmsg`` is not available (not Linux, or no C
library found) :func:`batch_reader` returns None and the caller reads one datagram at
a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import sys

import numpy as np

#: Room for one datagram: the largest UDP payload fits (65,507 bytes over IPv4).
SLOT = 65536
#: Room for one sender address (``struct sockaddr_storage``).
NAME = 128
_MSG_DONTWAIT = 0x40
_MSG_TRUNC = 0x20


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def _libc():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = _libc()


class BatchReader:
    """Reads datagrams in batches; one reader serves any number of sockets, in turn."""

    def __init__(self, slots: int = 128):
        self.slots = slots
        self.data = np.zeros(slots * SLOT, np.uint8)
        self.names = np.zeros((slots, NAME), np.uint8)
        self._iov = (_IoVec * slots)()
        self._msgs = (_MMsgHdr * slots)()
        base, names = self.data.ctypes.data, self.names.ctypes.data
        for i in range(slots):
            self._iov[i].base = base + i * SLOT
            self._iov[i].len = SLOT
            hdr = self._msgs[i].hdr
            hdr.name = names + i * NAME
            hdr.iov = ctypes.addressof(self._iov[i])
            hdr.iovlen = 1
        # the kernel writes each message's length, address length and flags here
        raw = np.frombuffer(self._msgs, np.uint8).reshape(slots, ctypes.sizeof(_MMsgHdr))
        off_len = _MMsgHdr.len.offset
        off_namelen = _MMsgHdr.hdr.offset + _MsgHdr.namelen.offset
        off_flags = _MMsgHdr.hdr.offset + _MsgHdr.flags.offset
        self._len = raw[:, off_len : off_len + 4].view(np.uint32)[:, 0]
        self._namelen = raw[:, off_namelen : off_namelen + 4].view(np.uint32)[:, 0]
        self._flags = raw[:, off_flags : off_flags + 4].view(np.int32)[:, 0]
        self.view = memoryview(self.data)

    def read(self, sock: socket.socket, limit: int | None = None) -> int:
        """Datagrams now waiting on ``sock`` read into the slots (0: none, -1: closed).

        Datagram ``i`` is ``view[i * SLOT : i * SLOT + lengths[i]]``, its sender is
        :meth:`sender`.
        """
        vlen = self.slots if limit is None else max(1, min(limit, self.slots))
        self._namelen[:vlen] = NAME
        fd = sock.fileno()
        if fd < 0:
            return -1
        got = _RECVMMSG(fd, ctypes.addressof(self._msgs), vlen, _MSG_DONTWAIT, None)
        if got >= 0:
            return got
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            return 0
        return -1  # closed by stop() (EBADF) or otherwise unusable

    def lengths(self, n: int) -> list[int]:
        return self._len[:n].tolist()

    def truncated(self, n: int) -> int:
        """Datagrams of the last read larger than a slot (cut short by the kernel)."""
        return int((self._flags[:n] & _MSG_TRUNC).astype(bool).sum())

    def same_sender(self, n: int) -> bool:
        """Whether the last read's ``n`` datagrams all came from one address and port."""
        size = int(self._namelen[0])
        if n <= 1:
            return True
        if (self._namelen[:n] != size).any():
            return False
        rows = self.names[:n, :size]
        return bool((rows == rows[0]).all())

    def sender(self, i: int) -> tuple[int, bytes]:
        """(address family, address bytes) of datagram ``i``'s sender."""
        row = self.names[i]
        family = int(row[0]) | int(row[1]) << 8  # sa_family_t, host order (little endian)
        if family == socket.AF_INET6:
            return family, row[8:24].tobytes()
        return family, row[4:8].tobytes()


def batch_reader(slots: int = 128) -> BatchReader | None:
    """A :class:`BatchReader`, or None where ``recvmmsg`` is not available."""
    if _RECVMMSG is None or sys.byteorder != "little":
        return None
    return BatchReader(slots)
