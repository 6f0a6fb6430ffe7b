"""Load for ``flowhawk serve``: the demo network as an endless exporter, and readings.

- :class:`Feed`: the Acme network's canonical flows (:func:`flowhawk.demo.demo_data`,
  normalized) in chunks of event time: day one once (what the learning period
  sees), then day two again and again, each round one day later than the previous, so
  event time goes on without a gap and every round brings the same incidents. A chunk
  is named by its index, so a sender can stop and another resume where it stopped.
- :class:`Sender`: a thread sending chunks as IPFIX (one
  :class:`~flowhawk.collect.replay.ExportStream`: one exporter, sequence numbers go on)
  over UDP to 127.0.0.1, paced in input flows per second by the replayer's token
  bucket. By default only the very first datagram of a stream carries the templates,
  so a collector that forgot them cannot decode what follows.
- :class:`RssSampler`: a process's resident memory (``VmRSS`` in ``/proc/PID/status``)
  sampled in a thread.
- :func:`metrics`: Prometheus text parsed into ``{(name, labels): value}``.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client.parser import text_string_to_metric_families

from flowhawk import config as cfgmod
from flowhawk.collect.replay import ExportSettings, ExportStream, Replayer, shift_times
from flowhawk.demo import DEMO_DAY, demo_data
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer

DAY_US = 86_400 * 1_000_000
CHUNK_ROWS = 2000


@cache
def demo_days() -> tuple[pa.Table, pa.Table]:
    """The demo's canonical flows of day one and of day two, each sorted by flow end."""
    raw, _dns = demo_data()
    flows = Normalizer(cfgmod.load(None), Diagnostics()).process(raw)
    flows = flows.take(pc.sort_indices(flows, [("ts_end", "ascending")]))
    second = pa.scalar(DEMO_DAY + timedelta(days=1), pa.timestamp("us", "UTC"))
    ends = flows.column("ts_end").cast(pa.timestamp("us", "UTC"))
    return flows.filter(pc.less(ends, second)), flows.filter(pc.greater_equal(ends, second))


class Feed:
    """Chunks of flows in event-time order: day one, then day two shifted by 0, 1, 2... days."""

    def __init__(self, chunk_rows: int = CHUNK_ROWS):
        self.chunk_rows = chunk_rows
        self.day1, self.day2 = demo_days()
        self.learn_chunks = -(-self.day1.num_rows // chunk_rows)
        self.round_chunks = -(-self.day2.num_rows // chunk_rows)

    def chunk(self, index: int) -> pa.Table:
        """Chunk ``index`` (0, 1, ...): day one's chunks first, then rounds of day two."""
        if index < self.learn_chunks:
            return self.day1.slice(index * self.chunk_rows, self.chunk_rows)
        k, j = divmod(index - self.learn_chunks, self.round_chunks)
        return shift_times(self.day2.slice(j * self.chunk_rows, self.chunk_rows), k * DAY_US)

    def index_at(self, day: int, fraction: float = 0.0) -> int:
        """The first chunk of day-two round ``day`` (0 = the demo's own day two), or the
        one ``fraction`` of the way through it."""
        return self.learn_chunks + day * self.round_chunks + int(fraction * self.round_chunks)

    @staticmethod
    def end_of(chunk: pa.Table) -> datetime:
        return pc.max(chunk.column("ts_end")).as_py().astimezone(UTC)


class _Stopped(Exception):
    pass


@dataclass
class SendStats:
    chunks: int = 0  # chunks handed to the encoder completely
    flows: int = 0
    records: int = 0  # flow records encoded (IPFIX: one per direction of a biflow)
    datagrams: int = 0  # datagrams the socket accepted
    send_errors: int = 0  # datagrams the socket refused (nobody listening is not one: UDP)
    started: float = 0.0
    stopped: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        span = (self.stopped or time.monotonic()) - self.started
        return self.flows / span if span > 0 else 0.0


class Sender:
    """Sends ``feed`` chunks from ``first`` on to 127.0.0.1:``port`` in a thread."""

    def __init__(
        self,
        feed: Feed,
        port: int,
        rate: float,
        first: int = 0,
        last: int | None = None,
        stream: ExportStream | None = None,
        extra: list[pa.Table] | None = None,
    ):
        self.feed = feed
        self.port = port
        self.rate = rate
        self.next = first  # index of the next chunk to send
        self.last = last  # stop after this chunk (None: until stop())
        self.extra = list(extra or [])  # tables sent after the last chunk
        self.stream = stream or ExportStream(ExportSettings("ipfix", template_every=0))
        self.stats = SendStats()
        self.done = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-sender", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> SendStats:
        self._halt.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the sender did not stop"
        return self.stats

    def wait(self, timeout: float) -> SendStats:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the sender did not finish in {timeout}s"
        return self.stats

    def _run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        target = ("127.0.0.1", self.port)
        st = self.stats

        def send(datagram: bytes) -> None:
            if self._halt.is_set():
                raise _Stopped
            try:
                sock.sendto(datagram, target)
                st.datagrams += 1
            except OSError:
                st.send_errors += 1

        replayer = Replayer(self.stream, send, self.rate)
        st.started = time.monotonic()
        try:
            while self.last is None or self.next <= self.last:
                chunk = self.feed.chunk(self.next)
                replayer.send(chunk)
                st.flows += chunk.num_rows
                st.records = replayer.stats.records
                st.chunks += 1
                self.next += 1
            for table in self.extra:
                replayer.send(table)
                st.flows += table.num_rows
                st.records = replayer.stats.records
        except _Stopped:
            pass
        except Exception as exc:  # reported by the test, not lost in a thread
            st.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            st.stopped = time.monotonic()
            sock.close()
            self.done.set()


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Samples a process's RSS every ``every`` seconds in a thread: (monotonic time, MiB)."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), rss_mib(self.pid)))
            self._halt.wait(self.every)

    def peak(self, since: float = 0.0) -> float:
        return max((m for t, m in self.samples if t >= since), default=0.0)


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as ``{(sample name, sorted labels): value}``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric_sum(values: dict, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in values.items() if n == name and want <= set(lab))
