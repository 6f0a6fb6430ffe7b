"""``flowhawk serve --demo``: the service feeds itself with the simulated Acme network.

The demo's two days of flows (see :mod:`flowhawk.demo`) are written to
``DATA/demo/`` and sent by the built-in exporter as IPFIX over loopback to the
service's own collector, at ``rate`` flows per second, in their own event time
(March 2026): day one is learned, the incidents of day two arrive as live events.

The demo resolver's Zeek dns.log is written alongside, as Zeek would write it: the
feeder appends its lines to ``DATA/demo/live-dns.log`` just before it sends the
flows of the same stretch of event time, and the demo configuration has the
collector follow that file (``[collect] dns_logs``), so the DGA burst and the DNS
tunnel (N4, N5) and the names next to addresses arrive live too.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.compute as pc

from flowhawk import config as cfgmod
from flowhawk.collect.replay import (
    ExportSettings,
    ExportStream,
    Replayer,
    UdpSender,
    read_flows,
)
from flowhawk.config import Config
from flowhawk.diagnostics import Diagnostics

log = logging.getLogger("flowhawk.serve")

CHUNK_ROWS = 512  # flows per step: a few minutes of the demo's event time
LIVE_DNS = "live-dns.log"


def demo_config(folder: Path) -> tuple[Config, list[Path]]:
    """Write the demo inputs into ``folder``; the demo config and the feeder's inputs
    (the conn.log, then the dns.log it writes out as it goes)."""
    from flowhawk.demo import make_demo

    inputs, cfg_path = make_demo(folder)
    cfg = cfgmod.load(cfg_path)
    cfg.collect.listen = ["127.0.0.1:0"]  # only the built-in exporter talks to it
    cfg.collect.rollover = 2.0  # events trickle in as the days replay
    live_dns = folder / LIVE_DNS
    live_dns.unlink(missing_ok=True)  # a new demo starts its resolver's log afresh
    cfg.collect.dns_logs = [live_dns]
    conn = [p for p in inputs if p.name.endswith("conn.log")]
    return cfg, conn + [p for p in inputs if p.name.endswith("dns.log")]


class DnsTail:
    """Writes a Zeek dns.log out line by line in event time, as Zeek would.

    Header lines go out at once; each data line (its first field is the time) once
    :meth:`until` reaches its time; the trailer (``#close``) at :meth:`finish`.
    """

    def __init__(self, source: Path, target: Path):
        lines = source.read_text().splitlines(keepends=True)
        body = [i for i, line in enumerate(lines) if not line.startswith("#")]
        first = body[0] if body else len(lines)
        last = body[-1] + 1 if body else len(lines)
        self._body = lines[first:last]
        self._times = [float(line.split("\t", 1)[0]) for line in self._body]
        self._trailer = lines[last:]
        self._next = 0
        self._out: TextIO = open(target, "a")  # noqa: SIM115 (kept open while the demo runs)
        self._out.writelines(lines[:first])
        self._out.flush()

    def until(self, seconds: float) -> None:
        """Write the lines up to ``seconds`` (epoch) not written yet."""
        start = self._next
        while self._next < len(self._body) and self._times[self._next] <= seconds:
            self._next += 1
        if self._next > start:
            self._out.writelines(self._body[start : self._next])
            self._out.flush()

    def finish(self) -> None:
        self.until(float("inf"))
        self._out.writelines(self._trailer)
        self._out.close()

    def close(self) -> None:
        self._out.close()


class DemoFeeder:
    """Replays the demo flows (and writes its DNS log) in a background thread."""

    def __init__(self, cfg: Config, inputs: list[Path], port: int, rate: float | None):
        self.cfg = cfg
        self.flow_inputs = [p for p in inputs if not p.name.endswith("dns.log")]
        self.dns_input = next((p for p in inputs if p.name.endswith("dns.log")), None)
        self.target = f"127.0.0.1:{port}"
        self.rate = rate
        self.sent = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowhawk-demo", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        udp = UdpSender(self.target).start()
        dns = None
        try:
            if self.dns_input is not None:
                dns = DnsTail(self.dns_input, self.dns_input.parent / LIVE_DNS)
            replayer = Replayer(ExportStream(ExportSettings(protocol="ipfix")), udp.send, self.rate)
            diag = Diagnostics()
            for flows in read_flows(self.flow_inputs, self.cfg, diag, chunk_rows=CHUNK_ROWS):
                if self._stop.is_set():
                    return
                if dns is not None:  # the lookups come just before the flows they name
                    dns.until(_last_end(flows))
                replayer.send(flows)
            if dns is not None:
                dns.finish()
                dns = None
            self.sent = replayer.stats.flows
            log.warning("demo: sent %d flows to %s", self.sent, self.target)
        except Exception:
            log.exception("demo replay failed")
        finally:
            if dns is not None:
                dns.close()
            udp.stop()
            self.done.set()


def _last_end(flows: pa.Table) -> float:
    """The latest flow end of ``flows``, epoch seconds."""
    end = pc.max(flows.column("ts_end")).cast(pa.timestamp("us")).cast(pa.int64()).as_py()
    return end / 1e6
