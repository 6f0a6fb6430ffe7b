"""``flowhawk serve --demo``: the service feeds itself with the simulated Acme network.

The demo's two days of flows (see :mod:`flowhawk.demo`) are written to
``DATA/demo/`` and sent by the built-in exporter as IPFIX over loopback to the
service's own collector, at ``rate`` flows per second, in their own event time
(March 2026): day one is learned, the incidents of day two arrive as live events.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from flowhawk import config as cfgmod
from flowhawk.collect.replay import ExportSettings, UdpSender, replay
from flowhawk.config import Config

log = logging.getLogger("flowhawk.serve")


class _Stopped(Exception):
    pass


def demo_config(folder: Path) -> tuple[Config, list[Path]]:
    """Write the demo inputs into ``folder``; the demo config and the flow inputs."""
    from flowhawk.demo import make_demo

    inputs, cfg_path = make_demo(folder)
    cfg = cfgmod.load(cfg_path)
    cfg.collect.listen = ["127.0.0.1:0"]  # only the built-in exporter talks to it
    cfg.collect.rollover = 2.0  # events trickle in as the days replay
    return cfg, [p for p in inputs if p.name.endswith("conn.log")]


class DemoFeeder:
    """Replays the demo flows to a collector port in a background thread."""

    def __init__(self, cfg: Config, inputs: list[Path], port: int, rate: float | None):
        self.cfg = cfg
        self.inputs = inputs
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

        def send(datagram: bytes) -> None:
            if self._stop.is_set():
                raise _Stopped
            udp.send(datagram)

        try:
            result = replay(
                self.inputs, self.target, ExportSettings(protocol="ipfix"), self.cfg,
                rate=self.rate, sender=send,
            )  # fmt: skip
            self.sent = result.stats.flows
            log.warning("demo: sent %d flows to %s", self.sent, self.target)
        except _Stopped:
            pass
        except Exception:
            log.exception("demo replay failed")
        finally:
            udp.stop()
            self.done.set()
