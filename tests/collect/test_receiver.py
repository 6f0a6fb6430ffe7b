"""The UDP receiver: IPv4 and IPv6 sockets, bounded queue, kernel drop accounting.

Each test runs with ``recvmmsg`` batches (where the platform has them) and with one
datagram per call, the fallback elsewhere."""

from __future__ import annotations

import socket
import time

import pytest

from flowhawk.collect.mmsg import batch_reader
from flowhawk.collect.receiver import ListenError, Receiver, kernel_drops

MODES = ["batches", "single"]


def _receiver(mode: str, listen: list[str], buffer: int, limit: int) -> Receiver:
    if mode == "batches" and batch_reader() is None:
        pytest.skip("recvmmsg is not available on this platform")
    rx = Receiver(listen, buffer, limit)
    if mode == "single":
        rx._batch = None
    return rx


def _wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", MODES)
def test_receives_on_ipv4_and_ipv6_same_port(mode):
    probe = Receiver(["127.0.0.1:0"], 1 << 20, 1000)
    probe.start()
    port = probe.ports()[0][1]
    probe.stop()
    rx = _receiver(mode, [f"127.0.0.1:{port}", f"[::1]:{port}"], 1 << 20, 1000)
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


@pytest.mark.parametrize("mode", MODES)
def test_full_queue_stops_reading_and_kernel_drops_are_counted(mode):
    rx = _receiver(mode, ["127.0.0.1:0"], 65536, 1000)  # small buffer, small queue
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


@pytest.mark.parametrize("mode", MODES)
def test_every_datagram_intact_in_order_with_its_sender(mode):
    """Senders interleaved within one batch, sizes from 1 byte to the largest UDP
    payload: each datagram arrives whole, in order, named by its sender's address."""
    rx = _receiver(mode, ["127.0.0.1:0", "[::1]:0"], 8 << 20, 100_000)
    rx.start()
    (_, port4), (_, port6) = rx.ports()
    sizes = [1, 2, 1400, 9000, 65507, 3, 1464]
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c,
        ):
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.2", 0))  # another exporter address
            sent = []
            for i in range(300):
                size = sizes[i % len(sizes)]
                data = (i.to_bytes(4, "big") * (size // 4 + 1))[:size]
                sock, dst, name = [
                    (a, ("127.0.0.1", port4), "127.0.0.1"),
                    (b, ("127.0.0.1", port4), "127.0.0.2"),
                    (c, ("::1", port6), "::1"),
                ][i % 3]
                sock.sendto(data, dst)
                sent.append((name, data))
        _wait(lambda: len(rx.queue) == len(sent))
        got = [(name, data) for data, name, _ in rx.drain()]
        for name in ("127.0.0.1", "127.0.0.2", "::1"):  # in order per sender
            assert [d for n, d in got if n == name] == [d for n, d in sent if n == name]
        assert rx.stats.received == len(sent)
        assert rx.stats.bytes == sum(len(d) for _, d in sent)
        assert rx.stats.truncated == 0
    finally:
        rx.stop()


def test_stop_reads_what_the_socket_holds():
    """Datagrams waiting when stop() is called are queued, none left behind."""
    rx = Receiver(["127.0.0.1:0"], 8 << 20, 10)  # a queue of 10: the thread stops early
    rx.start()
    port = rx.ports()[0][1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(2000):
            s.sendto(i.to_bytes(4, "big") * 100, ("127.0.0.1", port))
    _wait(lambda: len(rx.queue) >= 10)
    rx.stop()
    assert rx.read_kernel_drops() == 0
    got = [int.from_bytes(d[:4], "big") for d, _, _ in rx.drain()]
    assert got == list(range(2000))
