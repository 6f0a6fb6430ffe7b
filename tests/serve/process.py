"""``flowhawk serve`` as a child process, the way a user runs it, and flows to feed it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from flowhawk.demo.zeekfmt import write_conn_log
from tests.flowbuild import raw
from tests.polling import wait_for

_API = re.compile(r"API: (https?://[^ ]+)/api/v1")
_UDP = re.compile(r"\(udp (\d+)\)")
_TOKEN = re.compile(r"^(fh_[0-9a-f]{8}_\S+)$", re.M)


class Served:
    """A running ``flowhawk serve``: its URL, collector port, admin token, output."""

    def __init__(self, config: dict[str, Any] | None, data: Path, extra: list[str] | None = None):
        self.data = data
        self.cfg_path = data.parent / "serve.toml"
        self.config_args: list[str] = []
        if config is not None:
            self.cfg_path.write_text(tomli_w.dumps(config))
            self.config_args = ["--config", str(self.cfg_path)]
        self.log = data.parent / "serve.log"
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.token = ""

    def start(self, timeout: float = 60.0) -> Served:
        out = open(self.log, "ab")  # noqa: SIM115 - the child's
        env = {**os.environ, "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowhawk", "serve", *self.config_args,
             "--data", str(self.data), *self.extra],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        out.close()
        deadline = time.monotonic() + timeout
        before = len(self.output())  # a restart appends to the same log
        while True:
            text = self.output()[before:]
            if "stop with Ctrl-C" in text:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flowhawk serve did not start:\n{text}")
            time.sleep(0.05)
        self.url = _API.search(text).group(1)  # type: ignore[union-attr]
        self.port = int(_UDP.search(text).group(1))  # type: ignore[union-attr]
        found = _TOKEN.findall(self.output())
        if found and not self.token:
            self.token = found[0]
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=10,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def wait_until(check: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    return wait_for(check, timeout, what, every)


def conn_log(path: Path, learn_minutes: int = 6, new_at: int = 7, news: int = 5) -> Path:
    """A conn.log: regular traffic for ``learn_minutes``, then ``news`` new communications."""
    rows = []
    for minute in range(learn_minutes + 3):
        for host in range(4):
            rows.append({"src_ip": f"10.1.0.{10 + host}", "dst_ip": "10.1.0.2", "dst_port": 53,
                         "proto": 17, "t": minute * 60 + host})  # fmt: skip
    for i in range(news):
        rows.append({"src_ip": "10.1.0.10", "dst_ip": f"198.51.100.{20 + i}", "dst_port": 443,
                     "t": new_at * 60 + i})  # fmt: skip
    table = raw(sorted(rows, key=lambda r: r["t"]))
    write_conn_log(table, path)
    return path
