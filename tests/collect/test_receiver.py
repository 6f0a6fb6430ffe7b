"""The UDP receiver: IPv4 and IPv6 sockets, bounded queue, kernel drop accounting."""

from __future__ import annotations

import socket
import time

import pytest

from flowhawk.collect.receiver import ListenError, Receiver, kernel_drops


def _wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_receives_on_ipv4_and_ipv6_same_port():
    probe = Receiver(["127.0.0.1:0"], 1 << 20, 1000)
    probe.start()
    port = probe.ports()[0][1]
    probe.stop()
    rx = Receiver([f"127.0.0.1:{port}", f"[::1]:{port}"], 1 << 20, 1000)
    rx.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4:
            s4.sendto(b"v4 datagram", ("127.0.0.1", port))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
            s6.sendto(b"v6 datagram", ("::1", port))
        _wait(lambda: len(rx.queue) == 2)
        got = sorted((d, a) for d, a, _ in rx.drain())
        assert got == [(b"v4 datagram", "127.0.0.1"), (b"v6 datagram", "::1")]
    finally:
        rx.stop()


def test_bind_failure_is_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        rx = Receiver([f"127.0.0.1:{port}"], 1 << 20, 1000)
        with pytest.raises(ListenError, match=f"127.0.0.1:{port}"):
            rx.start()


def test_full_queue_stops_reading_and_kernel_drops_are_counted():
    rx = Receiver(["127.0.0.1:0"], 65536, 1000)  # small buffer, small queue
    rx.start()
    port = rx.ports()[0][1]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(20_000):
                s.sendto(b"x" * 1000, ("127.0.0.1", port))
        _wait(lambda: len(rx.queue) >= 1000)
        time.sleep(0.2)
        assert len(rx.queue) <= 1000 + 512  # bounded: the thread stopped reading
        assert rx.stats.waits > 0
        dropped = rx.read_kernel_drops()
        taken = len(rx.drain())
        _wait(lambda: True)
        assert dropped > 0, "the kernel buffer overflowed and /proc/net/udp said so"
        assert taken + dropped <= 20_000
    finally:
        rx.stop()


def test_kernel_drops_ignores_unknown_inodes():
    assert kernel_drops({-1}) == {}
