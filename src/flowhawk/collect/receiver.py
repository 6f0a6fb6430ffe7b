"""Receiving export datagrams: UDP sockets, one receive thread, a bounded queue.

The thread reads every socket until it would block and appends ``(datagram, exporter
address, receive time)`` to a queue the collector drains. When the queue holds
``queue_limit`` datagrams the thread stops reading: the kernel's socket buffer fills
and the kernel drops what does not fit. Those drops are read from ``/proc/net/udp``
and ``/proc/net/udp6`` (the ``drops`` column of each of our sockets), so memory stays
bounded and every loss is counted; on stop, what the sockets still hold is read and their
drops are read before they close. Where Linux's ``recvmmsg`` is available
(:mod:`.mmsg`) up to 128 datagrams are read per system call; otherwise each datagram is
received into one preallocated buffer. Either way each is copied out at its size, and
exporter addresses are spelled once each.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from flowhawk.collect.mmsg import SLOT, batch_reader
from flowhawk.config import parse_hostport
from flowhawk.errors import FlowhawkError

log = logging.getLogger("flowhawk.collect")

#: Datagrams read from one socket before looking at the others.
READ_BURST = 512


class ListenError(FlowhawkError):
    """A listening address cannot be bound."""


@dataclass
class Listener:
    """One bound UDP socket."""

    address: str  # as configured, e.g. "[::]:2055"
    sock: socket.socket
    inode: int
    kernel_drops: int = 0  # cumulative, as last read from /proc


@dataclass
class ReceiverStats:
    received: int = 0
    bytes: int = 0
    waits: int = 0  # times the thread paused because the queue was full
    truncated: int = 0  # datagrams larger than a receive slot, cut short by the kernel
    per_listener: dict[str, int] = field(default_factory=dict)


def open_socket(address: str, buffer: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``address`` with a large receive buffer."""
    host, port = parse_hostport(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:  # so [::]:P and 0.0.0.0:P can both be bound
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if granted < buffer:  # the kernel doubles what it grants; less means rmem_max capped it
            log.warning(
                "%s: receive buffer %d bytes granted of %d asked; raise net.core.rmem_max",
                address,
                granted // 2,
                buffer,
            )
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return sock


def kernel_drops(inodes: set[int]) -> dict[int, int]:
    """Cumulative receive drops the kernel counted for the UDP sockets with ``inodes``."""
    out: dict[int, int] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 13 and int(parts[9]) in inodes:
                        out[int(parts[9])] = int(parts[12])
        except (OSError, ValueError, StopIteration):
            continue
    return out


def exporter_address(addr: tuple) -> str:
    """The exporter's address as text, without an IPv6 zone."""
    return str(addr[0]).split("%", 1)[0]


class Receiver:
    """Receives datagrams on every listening address into a bounded queue."""

    def __init__(self, listen: list[str], socket_buffer: int, queue_limit: int):
        self.addresses = list(listen)
        self.socket_buffer = socket_buffer
        self.queue_limit = queue_limit
        self.listeners: list[Listener] = []
        self.queue: deque[tuple[bytes, str, int]] = deque()
        self.stats = ReceiverStats()
        self._stop = threading.Event()
        self._room = threading.Event()
        self._room.set()
        self._thread: threading.Thread | None = None
        self._final_drops: dict[int, int] | None = None  # read when the sockets closed
        self._buffer = bytearray(65535)  # each datagram is received here, then copied out
        self._names: dict[object, str] = {}  # exporter address as the kernel gives it -> text
        self._batch = batch_reader()  # None: one datagram per call

    def start(self) -> None:
        try:
            for address in self.addresses:
                sock = open_socket(address, self.socket_buffer)
                self.listeners.append(Listener(address, sock, os.fstat(sock.fileno()).st_ino))
        except ListenError:
            self._close()
            raise
        self._thread = threading.Thread(target=self._loop, name="flowhawk-receiver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving: what the sockets hold is read first (queued, whatever the
        limit), and their drop counts are read before they close, so that nothing sent
        before the stop is lost uncounted."""
        self._stop.set()
        self._room.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._final_drops = kernel_drops({lst.inode for lst in self.listeners})
        self._close()

    def _close(self) -> None:
        for lst in self.listeners:
            lst.sock.close()

    def ports(self) -> list[tuple[str, int]]:
        """(address, bound port) of every listener; port 0 in config means any free port."""
        return [(lst.address, lst.sock.getsockname()[1]) for lst in self.listeners]

    def drain(self, limit: int | None = None) -> list[tuple[bytes, str, int]]:
        """Take up to ``limit`` queued datagrams, oldest first."""
        n = len(self.queue) if limit is None else min(limit, len(self.queue))
        out = [self.queue.popleft() for _ in range(n)]
        if len(self.queue) < self.queue_limit:
            self._room.set()
        return out

    def read_kernel_drops(self) -> int:
        """New kernel drops on our sockets since the last call."""
        current = self._final_drops
        if current is None:  # still open
            current = kernel_drops({lst.inode for lst in self.listeners})
        new = 0
        for lst in self.listeners:
            total = current.get(lst.inode, lst.kernel_drops)
            new += max(0, total - lst.kernel_drops)
            lst.kernel_drops = total
        return new

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        for lst in self.listeners:
            sel.register(lst.sock, selectors.EVENT_READ, lst)
        queue = self.queue
        while not self._stop.is_set():
            if len(queue) >= self.queue_limit:
                self.stats.waits += 1
                self._room.clear()
                self._room.wait(0.1)  # let the kernel buffer take the excess (drops counted)
                continue
            for key, _ in sel.select(timeout=0.2):
                if not self._read(key.data, READ_BURST):
                    return
        for lst in self.listeners:  # stopping: what the socket holds, whatever the limit
            self._read(lst, None)
        sel.close()

    def _read(self, lst: Listener, limit: int | None) -> bool:
        """Queue datagrams of one socket until it would block (or ``limit``); False once
        the socket is closed."""
        if self._batch is not None:
            return self._read_batches(lst, limit)
        recv, append, buf = lst.sock.recvfrom_into, self.queue.append, self._buffer
        view = memoryview(buf)
        names = self._names
        got = nbytes = 0
        ok = True
        while limit is None or got < limit:
            try:
                n, addr = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # socket closed by stop()
                ok = False
                break
            name = names.get(addr[0])
            if name is None:
                name = names[addr[0]] = exporter_address(addr)
            append((view[:n].tobytes(), name, time.time_ns() // 1000))
            got += 1
            nbytes += n
        self._count(lst, got, nbytes)
        return ok

    def _count(self, lst: Listener, got: int, nbytes: int) -> None:
        stats = self.stats
        stats.received += got
        stats.bytes += nbytes
        stats.per_listener[lst.address] = stats.per_listener.get(lst.address, 0) + got

    def _read_batches(self, lst: Listener, limit: int | None) -> bool:
        """:meth:`_read` with ``recvmmsg``: many datagrams per system call."""
        reader, append, view, names = self._batch, self.queue.append, self._batch.view, self._names
        got = nbytes = 0
        ok = True
        while limit is None or got < limit:
            n = reader.read(lst.sock, None if limit is None else limit - got)
            if n <= 0:
                ok = n == 0
                break
            t = time.time_ns() // 1000
            lengths = reader.lengths(n)
            cut = reader.truncated(n)
            if cut:
                self.stats.truncated += cut
                log.warning("%s: %d datagrams over %d bytes were cut short", lst.address, cut, SLOT)
            same, name = reader.same_sender(n), ""  # one sender: its name is looked up once
            for i, size in enumerate(lengths):
                if not (same and name):
                    key = reader.sender(i)
                    name = names.get(key) or names.setdefault(key, _spell(key))
                append((view[i * SLOT : i * SLOT + size].tobytes(), name, t))
            got += n
            nbytes += sum(lengths)
            if n < reader.slots:
                break  # the socket is empty for now
        self._count(lst, got, nbytes)
        return ok


def _spell(key: tuple[int, bytes]) -> str:
    """An exporter address (family, packed address) as text."""
    return socket.inet_ntop(*key)
