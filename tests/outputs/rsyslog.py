"""A real rsyslogd on loopback for output tests, and the certificates its TLS input uses.

:class:`Rsyslog` writes a configuration of its own into a work directory and runs
``/usr/sbin/rsyslogd -n -f CONF -i PIDFILE`` in the foreground as a child process, so
``/etc/rsyslog.conf`` is never read. It has four inputs on 127.0.0.1: ``udp`` (imudp),
``tcp`` (imtcp, plain), ``tls`` (imtcp with the gtls driver, any client) and
``tls_client`` (gtls, clients must show a certificate of the test CA). One imtcp module
serves the plain and the TLS listeners, each input naming its own stream driver (rsyslog
8.2106 and later). Every received message is written by one ruleset as a JSON line
(``option.jsonf``: rsyslog's own JSON escaping) with what rsyslog parsed out of it:
priority, facility, severity, time, hostname, app-name, procid, msgid, structured data
(as received, and as ``mmpstrucdata`` parsed it: ``sd_parsed``, SD-ID → parameter →
unescaped value), msg, the raw message and the input's name. rsyslog's own notices are
processed internally (``processInternalMessages``) and written to ``internal.log``, so
nothing reaches the machine's system log. Ports are picked free by binding port 0 first, or
given (to start a receiver where a sender already points).

:func:`make_certs` makes a CA, a server certificate for ``127.0.0.1``/``localhost`` and a
client certificate with the ``openssl`` command line. :func:`syslog_receiver` and
:func:`syslog_down` give the tests run over every output type a running receiver (with
the ids it got) and settings aimed at nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

RSYSLOGD = Path("/usr/sbin/rsyslogd")
INPUTS = ("udp", "tcp", "tls", "tls_client")


def available() -> bool:
    return RSYSLOGD.is_file() and os.access(RSYSLOGD, os.X_OK)


@dataclass(frozen=True)
class Certs:
    """PEM files: the CA, the server's certificate and key, a client's certificate and key."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def _ec_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def make_certs(directory: Path, ca_name: str = "flowhawk test CA") -> Certs:
    """A CA and certificates it signed: a server (127.0.0.1, localhost) and a client."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _ec_key(ca_key)
    _openssl(
        "req", "-x509", "-new", "-key", ca_key, "-out", ca, "-days", "2", "-subj", f"/CN={ca_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    signed = {}
    for who, cn, extensions in (
        ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
         "extendedKeyUsage=serverAuth\n"),
        ("client", "flowhawk client", "extendedKeyUsage=clientAuth\n"),
    ):  # fmt: skip
        key, csr, cert = (directory / f"{who}.{ext}" for ext in ("key", "csr", "pem"))
        ext = directory / f"{who}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n" + extensions)
        _ec_key(key)
        _openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={cn}")
        _openssl(
            "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext,
        )  # fmt: skip
        signed[who] = (cert, key)
    return Certs(ca, *signed["server"], *signed["client"])


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bound(port: int, proto: str) -> bool:
    """Whether 127.0.0.1:port is bound (UDP) or listening (TCP), from /proc/net."""
    want = f"0100007F:{port:04X}"
    with open(f"/proc/net/{proto}") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and (proto == "udp" or fields[3] == "0A"):
                return True
    return False


_TEMPLATE_FIELDS = (
    ("pri", "pri", ""),
    ("facility", "syslogfacility", ""),
    ("severity", "syslogseverity", ""),
    ("time", "timereported", ' dateFormat="rfc3339"'),
    ("hostname", "hostname", ""),
    ("app", "app-name", ""),
    ("procid", "procid", ""),
    ("msgid", "msgid", ""),
    ("sd", "structured-data", ""),
    ("msg", "msg", ""),
    ("raw", "rawmsg", ""),
    ("input", "inputname", ""),
    ("sd_parsed", "$!rfc5424-sd", ""),
)


class Rsyslog:
    """One rsyslogd child with udp, tcp, tls and tls_client inputs; a context manager."""

    def __init__(self, workdir: Path, certs: Certs, ports: dict[str, int] | None = None):
        self.workdir = workdir
        self.certs = certs
        self.ports = {
            name: (ports or {}).get(name)
            or free_port(socket.SOCK_DGRAM if name == "udp" else socket.SOCK_STREAM)
            for name in INPUTS
        }
        self.output = workdir / "messages.jsonl"
        self.internal = workdir / "internal.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        w, c, p = self.workdir, self.certs, self.ports
        fields = "\n".join(
            f'  property(outname="{out}" name="{prop}" format="jsonf"{extra})'
            for out, prop, extra in _TEMPLATE_FIELDS
        )
        tls = 'streamDriver.name="gtls" streamDriver.mode="1"'
        return f"""
global(workDirectory="{w / "spool"}" maxMessageSize="256k" net.enableDNS="off"
       processInternalMessages="on"
       defaultNetstreamDriverCAFile="{c.ca}" defaultNetstreamDriverCertFile="{c.cert}"
       defaultNetstreamDriverKeyFile="{c.key}")
module(load="imudp")
module(load="imtcp")
module(load="mmpstrucdata")
template(name="parsed" type="list" option.jsonf="on") {{
{fields}
}}
ruleset(name="received") {{
  action(type="mmpstrucdata")
  action(type="omfile" file="{self.output}" template="parsed")
}}
input(type="imudp" name="udp" address="127.0.0.1" port="{p["udp"]}" ruleset="received")
input(type="imtcp" name="tcp" address="127.0.0.1" port="{p["tcp"]}" ruleset="received")
input(type="imtcp" name="tls" address="127.0.0.1" port="{p["tls"]}" ruleset="received"
      {tls} streamDriver.authMode="anon")
input(type="imtcp" name="tls_client" address="127.0.0.1" port="{p["tls_client"]}"
      ruleset="received" {tls} streamDriver.authMode="x509/certvalid")
action(type="omfile" file="{self.internal}")
"""

    def start(self, timeout: float = 10.0) -> Rsyslog:
        (self.workdir / "spool").mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "rsyslog.conf"
        conf.write_text(self.config())
        stderr = open(self.workdir / "stderr.log", "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [str(RSYSLOGD), "-n", "-f", str(conf), "-i", str(self.workdir / "rsyslogd.pid")],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            cwd=self.workdir,
        )
        stderr.close()
        deadline = time.monotonic() + timeout
        while not all(
            _bound(port, "udp" if name == "udp" else "tcp") for name, port in self.ports.items()
        ):
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited ({self.proc.returncode}): {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rsyslogd did not open its ports: {self.log()}")
            time.sleep(0.02)
        complaints = (self.workdir / "stderr.log").read_text(errors="replace").strip()
        if complaints:  # rsyslogd goes on after configuration errors: do not
            self.stop()
            raise RuntimeError(f"rsyslogd did not accept its configuration: {complaints}")
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Rsyslog:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        """What rsyslogd said (stderr and its internal messages)."""
        parts = [
            path.read_text(errors="replace")
            for path in (self.workdir / "stderr.log", self.internal)
            if path.exists()
        ]
        return "\n".join(parts).strip()

    def messages(self) -> list[dict[str, Any]]:
        """Every message received so far, as parsed by rsyslog."""
        if not self.output.exists():
            return []
        text = self.output.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # a line being written is left for later
        got = [json.loads(line) for line in complete.splitlines() if line.strip()]
        for message in got:  # mmpstrucdata's parse, as JSON text; no structured data: ""
            message["sd_parsed"] = json.loads(message["sd_parsed"] or "{}")
        return got

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The messages once at least ``count`` arrived; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            if len(got) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(got) >= count, (
            f"rsyslogd wrote {len(got)} of {count} messages in {timeout}s: {got}\n{self.log()}"
        )
        return got


def skip_without_rsyslogd() -> None:
    if not available():
        pytest.skip(f"{RSYSLOGD} is not installed (apt-get install rsyslog rsyslog-gnutls)")


_FAST = {"timeout": 3.0, "retry_min": 0.05, "retry_max": 0.2}


@contextmanager
def syslog_receiver(
    tmp: Path,
) -> Iterator[tuple[dict[str, Any], Callable[[], list[str]]]]:
    """A running rsyslogd: syslog output settings (TLS) aimed at it, and the event ids
    it received so far (from the JSON messages), for tests run over every output type."""
    skip_without_rsyslogd()
    certs = make_certs(tmp / "syslog-certs")
    with Rsyslog(tmp / "rsyslogd", certs) as daemon:
        settings = {
            "name": "siem",
            "type": "syslog",
            "transport": "tls",
            "port": daemon.ports["tls"],
            "ca_file": str(certs.ca),
            **_FAST,
        }

        def received() -> list[str]:
            return [json.loads(m["msg"])["id"] for m in daemon.messages()]

        yield settings, received


def syslog_down(tmp: Path) -> dict[str, Any]:
    """Syslog output settings aimed at a TCP port nothing listens on."""
    port = free_port()
    return {"name": "siem", "type": "syslog", "transport": "tcp", "port": port, **_FAST}
