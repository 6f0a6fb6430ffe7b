"""Real receivers on 127.0.0.1 for the output tests, and event documents to send them.

- :class:`WebhookReceiver`: a threaded ``http.server`` recording every POST; it can be
  told to answer the next N requests with an error or to answer slowly, and stopped
  and started again on the same port.
- :class:`SmtpReceiver`: aiosmtpd's ``Controller`` (a real SMTP server in a thread)
  recording every message; optionally STARTTLS, implicit TLS and AUTH.
- :class:`LineReceiver`: a threaded ``socketserver`` TCP (optionally TLS) server
  recording every line; stopping it also closes the connections it accepted.
- :func:`tls_files`: a self-signed certificate for 127.0.0.1/localhost made once with
  the ``openssl`` command.

:data:`RECEIVERS` maps each output type to a context manager factory yielding the
settings of an output aimed at a running receiver and a function returning the event
ids that receiver got so far; :data:`DOWN` maps it to settings aimed at nothing. The
contract tests run every registered output type against these.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import functools
import importlib.util
import json
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from flowhawk.outputs import OUTPUTS
from flowhawk.outputs.base import Output
from tests.polling import wait_for  # noqa: F401  (the output tests import it from here)

HOST = "127.0.0.1"


# -- helpers ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on (right now) on 127.0.0.1."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def event_doc(
    i: int,
    *,
    risk: float = 50.0,
    methods: tuple[str, ...] = ("N1",),
    site: str = "hq",
    prefix: str = "ev",
) -> dict[str, Any]:
    """An event document shaped as :func:`flowhawk.sinks.format.event_documents` makes it."""
    return {
        "id": f"{prefix}{i:04d}",
        "ts_start": f"2024-05-01T10:{i % 60:02d}:00.000000Z",
        "ts_end": f"2024-05-01T10:{i % 60:02d}:59.000000Z",
        "site": site,
        "src_ip": f"10.0.0.{i % 250 + 1}",
        "dst_ip": "203.0.113.7" if i % 2 else "2001:db8::7",
        "src_port": 40000 + i,
        "dst_port": 443,
        "proto": 6,
        "direction": "north-south",
        "risk": risk,
        "methods": list(methods),
        "alarms": [
            {
                "method": methods[0] if methods else "N1",
                "name": "beaconing",
                "score": 0.9,
                "observed": "every 60 s",
                "expected": "irregular",
                "reason": "regular beats\nto one server",
            }
        ],
        "reason": f'beacon #{i}: regular contacts every 60 s, "quoted" | piped = sign',
        "flows": 10 + i,
        "src_pkts": 20,
        "src_bytes": 1200,
        "dst_pkts": 20,
        "dst_bytes": 3400,
        "service": "https",
        "status": "new",
        "verdict": None,
    }


def docs(n: int, start: int = 0, **kw: Any) -> list[dict[str, Any]]:
    """``n`` event documents numbered from ``start``."""
    return [event_doc(i, **kw) for i in range(start, start + n)]


def build(settings: dict[str, Any], data_dir: Path) -> Output:
    """The registered output of ``settings["type"]`` built from a settings dict."""
    cls = OUTPUTS.get(settings["type"])
    return cls(cls.Settings.model_validate(settings), data_dir)


def ids_of(documents: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in documents]


@functools.cache
def tls_files() -> tuple[Path, Path]:
    """(certificate, key) PEM files of a self-signed certificate for 127.0.0.1 and
    localhost, made once per test process with the ``openssl`` command."""
    folder = Path(_TLS_DIR.name)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


_TLS_DIR = tempfile.TemporaryDirectory(prefix="flowhawk-tls-")


def server_tls_context() -> ssl.SSLContext:
    cert, key = tls_files()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


# -- webhook ---------------------------------------------------------------------------


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


@dataclass
class Request:
    """One request the webhook receiver got and the status it answered."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A threaded HTTP server on 127.0.0.1 recording POSTs (HTTP/1.0: no kept-alive
    connections, so stopping it really makes it unreachable)."""

    def __init__(self, port: int = 0):
        self.port = port
        self.requests: list[Request] = []
        self._failures: list[int] = []
        self.delay = 0.0  # seconds to wait before answering
        self.arrived = 0  # requests read so far (answered or not yet)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    def fail(self, times: int, status: int = 500) -> None:
        """Answer the next ``times`` requests with ``status``."""
        with self._lock:
            self._failures.extend([status] * times)

    def _answer(self) -> int:
        with self._lock:
            return self._failures.pop(0) if self._failures else 200

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.arrived += 1
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver._answer()
                with receiver._lock:
                    receiver.requests.append(
                        Request(self.path, _lower(self.headers.items()), body, status, time.time())
                    )
                reply = b"ok" if status < 300 else b"failing on purpose"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((HOST, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def accepted(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def events(self) -> list[dict[str, Any]]:
        """Event documents of the requests answered 2xx, in arrival order."""
        return [e for r in self.accepted() for e in r.json()["events"]]

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events()]


@contextmanager
def webhook_receiver(port: int = 0) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(port).start()
    try:
        yield receiver
    finally:
        receiver.stop()


# -- SMTP ------------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


class SmtpReceiver:
    """aiosmtpd's SMTP server on 127.0.0.1 recording every message.

    ``starttls``: offer STARTTLS (and require it before mail); ``implicit_tls``: TLS
    from the first byte; ``login``: (user, password) required by AUTH."""

    def __init__(
        self,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        login: tuple[str, str] | None = None,
    ):
        self.recorder = _Recorder()
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if starttls:
            kwargs.update(tls_context=server_tls_context(), require_starttls=True)
        if implicit_tls:
            kwargs["ssl_context"] = server_tls_context()
        if login is not None:

            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = (
                    isinstance(auth_data, LoginPassword)
                    and (
                        auth_data.login.decode(),
                        auth_data.password.decode(),
                    )
                    == login
                )
                return AuthResult(success=ok, handled=False)

            kwargs.update(authenticator=authenticate, auth_required=True)
            kwargs["auth_require_tls"] = starttls or implicit_tls
        self.controller = Controller(self.recorder, hostname=HOST, port=self.port, **kwargs)

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def envelopes(self) -> list[tuple[str, list[str], bytes]]:
        return list(self.recorder.envelopes)

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(content, policy=email.policy.default)  # type: ignore[misc]
            for _, _, content in self.envelopes
        ]

    def events(self) -> list[dict[str, Any]]:
        """Event documents of the events.json attachments, in arrival order."""
        out: list[dict[str, Any]] = []
        for msg in self.messages():
            for part in msg.iter_attachments():
                if part.get_filename() == "events.json":
                    out.extend(json.loads(part.get_content()))
        return out

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events()]


@contextmanager
def smtp_receiver(**kwargs: Any) -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(**kwargs).start()
    try:
        yield receiver
    finally:
        receiver.stop()


# -- TCP lines -------------------------------------------------------------------------


class LineReceiver:
    """A threaded TCP (optionally TLS) server on 127.0.0.1 recording every line."""

    def __init__(self, port: int = 0, tls: bool = False):
        self.port = port
        self.tls = tls
        self.lines: list[str] = []
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> LineReceiver:
        receiver = self
        ctx = server_tls_context() if self.tls else None

        class Handler(socketserver.StreamRequestHandler):
            def setup(self) -> None:
                if ctx is not None:
                    self.request = ctx.wrap_socket(self.request, server_side=True)
                with receiver._lock:
                    receiver.connections += 1
                    receiver._open.add(self.request)
                super().setup()

            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    for raw in self.rfile:
                        with receiver._lock:
                            receiver.lines.append(raw.decode().rstrip("\n"))

            def finish(self) -> None:
                with receiver._lock:
                    receiver._open.discard(self.request)
                with contextlib.suppress(OSError):
                    super().finish()

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that goes away mid-handshake is not a test failure

        server = Server((HOST, self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and close every accepted connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def ids(self) -> list[str]:
        with self._lock:
            return [json.loads(line)["id"] for line in self.lines]


@contextmanager
def line_receiver(port: int = 0, tls: bool = False) -> Iterator[LineReceiver]:
    receiver = LineReceiver(port, tls).start()
    try:
        yield receiver
    finally:
        receiver.stop()


# -- per output type: a running receiver, or nothing -------------------------------------

Received = Callable[[], list[str]]
Factory = Callable[[Path], AbstractContextManager[tuple[dict[str, Any], Received]]]

_FAST = {"timeout": 3.0, "retry_min": 0.05, "retry_max": 0.2}


@contextmanager
def _file(tmp: Path) -> Iterator[tuple[dict[str, Any], Received]]:
    path = tmp / "out" / "events.jsonl"

    def received() -> list[str]:
        if not path.exists():
            return []
        return [json.loads(x)["id"] for x in path.read_text().splitlines()]

    yield {"name": "file-out", "type": "file", "path": str(path), **_FAST}, received


@contextmanager
def _tcp(tmp: Path) -> Iterator[tuple[dict[str, Any], Received]]:
    with line_receiver() as r:
        yield {"name": "tcp-out", "type": "tcp", "host": HOST, "port": r.port, **_FAST}, r.ids


@contextmanager
def _webhook(tmp: Path) -> Iterator[tuple[dict[str, Any], Received]]:
    with webhook_receiver() as r:
        yield {"name": "hook", "type": "webhook", "url": r.url, "secret": "s3cret", **_FAST}, r.ids


@contextmanager
def _email(tmp: Path) -> Iterator[tuple[dict[str, Any], Received]]:
    with smtp_receiver() as r:
        settings = {
            "name": "mail",
            "type": "email",
            "smtp_host": HOST,
            "smtp_port": r.port,
            "sender": "flowhawk@example.org",
            "to": ["soc@example.org"],
            **_FAST,
        }
        yield settings, r.ids


def _down_network(kind: str, tmp: Path) -> dict[str, Any]:
    port = free_port()
    return {
        "tcp": {"name": "tcp-out", "type": "tcp", "host": HOST, "port": port, **_FAST},
        "webhook": {
            "name": "hook",
            "type": "webhook",
            "url": f"http://{HOST}:{port}/hook",
            **_FAST,
        },
        "email": {
            "name": "mail",
            "type": "email",
            "smtp_host": HOST,
            "smtp_port": port,
            "sender": "flowhawk@example.org",
            "to": ["soc@example.org"],
            **_FAST,
        },
    }[kind]


def _down_file(tmp: Path) -> dict[str, Any]:
    blocker = tmp / "not-a-directory"
    blocker.write_text("a file where the output needs a directory\n")
    return {"name": "file-out", "type": "file", "path": str(blocker / "events.jsonl"), **_FAST}


#: Output type -> receiver factory (settings aimed at a running receiver, received ids).
RECEIVERS: dict[str, Factory] = {
    "file": _file,
    "tcp": _tcp,
    "webhook": _webhook,
    "email": _email,
}

#: Output type -> settings aimed at a receiver that is down (nothing listens / unwritable).
DOWN: dict[str, Callable[[Path], dict[str, Any]]] = {
    "file": _down_file,
    "tcp": functools.partial(_down_network, "tcp"),
    "webhook": functools.partial(_down_network, "webhook"),
    "email": functools.partial(_down_network, "email"),
}

# Output types whose receivers live in their own helper modules register here: the
# syslog output's rsyslogd (tests/outputs/rsyslog.py). Types missing from RECEIVERS are
# skipped by the receiver-based contract tests, saying so.
if importlib.util.find_spec("tests.outputs.rsyslog") is not None:
    from tests.outputs.rsyslog import syslog_down, syslog_receiver

    RECEIVERS["syslog"] = syslog_receiver
    DOWN["syslog"] = syslog_down
