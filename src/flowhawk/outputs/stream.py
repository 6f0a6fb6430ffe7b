"""A client byte stream (TCP, optionally TLS) to one receiver, for the stream outputs.

Shared by the TCP output and syslog over TCP/TLS: connect (and handshake) on demand,
notice before each write that the receiver ended the stream (it never sends anything
else), reconnect, and turn every socket failure into :class:`DeliveryError` naming the
output, so the delivery thread retries. :func:`client_tls_context` builds the TLS side
(also used by the webhook and email outputs).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from pathlib import Path

from flowhawk.errors import ConfigError
from flowhawk.outputs.base import DeliveryError


def client_tls_context(
    ca_file: Path | None,
    verify: bool,
    label: str,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext:
    """A client TLS context (with a client certificate when given); unreadable files are
    a :class:`ConfigError` naming them."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{label}: ca_file {ca_file}: {exc}") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            files = f"cert_file {cert_file}" + (f", key_file {key_file}" if key_file else "")
            raise ConfigError(f"{label}: {files}: {exc}") from None
    return ctx


class Stream:
    """One connection, opened when needed and replaced when the receiver ended it."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        label: str,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ):
        self.host, self.port, self.timeout, self.label = host, port, timeout, label
        self.tls = tls
        self.server_name = server_name or host
        self.sock: socket.socket | None = None

    def open(self) -> None:
        """Connect (and handshake) unless connected; raises :class:`DeliveryError`."""
        if self.sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_hostname=self.server_name)
                except OSError:
                    sock.close()
                    raise
            sock.settimeout(self.timeout)
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(
                f"{self.label}: the receiver's certificate was rejected: {exc.verify_message}"
            ) from exc
        except OSError as exc:
            raise DeliveryError(f"{self.label}: cannot connect: {exc}") from exc
        self.sock = sock

    def alive(self) -> bool:
        """False when the receiver ended the stream; anything it sent is discarded."""
        sock = self.sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        if not readable:
            return True
        sock.setblocking(False)
        try:
            return bool(sock.recv(65536))
        except (ssl.SSLWantReadError, BlockingIOError):
            return True  # TLS records without data (session tickets)
        except OSError:
            return False
        finally:
            sock.settimeout(self.timeout)

    def send(self, data: bytes) -> None:
        """Write ``data`` on a live connection (reconnecting first if the receiver ended
        the last one), or raise :class:`DeliveryError`."""
        if self.sock is not None and not self.alive():
            self.drop()
        self.open()
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.drop()
            raise DeliveryError(f"{self.label}: sending failed: {exc}") from exc

    def drop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """Close the connection (TLS: with a close_notify); never raises."""
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.settimeout(min(self.timeout, 1.0))
                self.sock = sock.unwrap()
            except (OSError, ValueError):
                pass
        self.drop()
