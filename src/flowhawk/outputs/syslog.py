"""The syslog output: events as RFC 5424 or RFC 3164 messages over UDP, TCP or TLS.

Each event document becomes one message (:mod:`flowhawk.outputs.syslog_format` builds
the bytes: priority from the event's risk, structured data, JSON or CEF payload).

- **UDP** (RFC 5426): one datagram per event, on a connected socket so that a refusal
  reported by the receiver's host fails the next delivery (which is then retried).
  A datagram holds at most ``max_udp`` bytes (default 8192, rsyslog's default message
  size; RFC 5426 only promises 480 bytes everywhere and 2048 bytes usually). A longer
  message is cut at that size, so its JSON no longer parses; the first cut is logged
  as a warning and all are counted in :attr:`SyslogOutput.truncated`. Use TCP or TLS
  for events whose alarms carry long explanations.
- **TCP** (RFC 6587) and **TLS** (RFC 5425): one persistent connection, a batch
  written with one ``sendall``. Syslog receivers never answer, so before each batch the
  connection is read without waiting: end of stream (the receiver closed it or
  restarted) means reconnecting first rather than writing into a dead connection.
  Delivery is at least once and, as with any plain syslog stream, a receiver that fails
  after accepting bytes loses them.
- **TLS** uses the standard library's ``ssl``: the server's certificate is verified
  against ``ca_file`` (else the system's CAs) and must name ``server_name`` (else
  ``host``, an address or a name); ``cert_file``/``key_file`` present a client
  certificate. ``verify = false`` turns all checking off (encryption only).

Failures raise :class:`~flowhawk.outputs.base.DeliveryError` naming the output, the
receiver and what went wrong; the delivery layer retries. Unusable TLS files are
configuration errors, raised when the output is built.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from flowhawk.outputs.base import DeliveryError, Document, Output, OutputSettings
from flowhawk.outputs.stream import Stream, client_tls_context
from flowhawk.outputs.syslog_format import (
    FACILITIES,
    frame,
    rfc3164,
    rfc5424,
    truncate_utf8,
)

log = logging.getLogger(__name__)

Facility = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
]  # fmt: skip

_TLS_ONLY = ("ca_file", "cert_file", "key_file", "server_name")


@functools.cache
def local_hostname() -> str:
    """This machine's fully qualified name when it has one, else its host name."""
    fqdn = socket.getfqdn()
    name = fqdn if "." in fqdn and not fqdn.startswith("localhost") else socket.gethostname()
    name = "".join(c for c in name if "!" <= c <= "~")[:255]
    return name or "-"


class SyslogOutput(Output):
    """Events to a syslog receiver (rsyslog, syslog-ng, a SIEM's collector)."""

    type = "syslog"
    description = "RFC 5424/3164 syslog over UDP, TCP or TLS; JSON or CEF messages."

    class Settings(OutputSettings):
        type: Literal["syslog"] = Field(default="syslog", description="Output type: syslog.")
        host: str = Field(default="127.0.0.1", min_length=1, description="Receiver address.")
        port: int | None = Field(
            default=None, ge=1, le=65535, description="Receiver port; default 514, 6514 for tls."
        )
        transport: Literal["udp", "tcp", "tls"] = Field(
            default="udp", description="udp (RFC 5426), tcp (RFC 6587) or tls (RFC 5425)."
        )
        rfc: Literal["5424", "3164"] = Field(
            default="5424", description="Message format: 5424 (structured) or 3164 (BSD)."
        )
        format: Literal["json", "cef"] = Field(
            default="json", description="Message body: the event as JSON, or CEF:0."
        )
        facility: Facility = Field(default="local0", description="Syslog facility name.")
        app_name: str = Field(
            default="flowhawk",
            max_length=48,
            description="APP-NAME (5424) or TAG (3164); printable ASCII, no spaces.",
        )
        hostname: str | None = Field(
            default=None,
            max_length=255,
            description="HOSTNAME field; default: this machine's FQDN, else its host name.",
        )
        msgid: str = Field(default="event", max_length=32, description="MSGID (5424).")
        framing: Literal["octet-counting", "lf"] = Field(
            default="octet-counting",
            description="tcp/tls framing: octet-counting (RFC 6587/5425) or lf (one line each).",
        )
        max_udp: int = Field(
            default=8192,
            ge=480,
            le=65507,
            description="Longest UDP datagram; longer messages are cut (and logged once).",
        )
        bom: bool = Field(
            default=False,
            description="Start 5424 messages with the UTF-8 byte order mark (most receivers "
            "keep it in the message text).",
        )
        ca_file: Path | None = Field(
            default=None, description="tls: PEM CA certificates to verify the receiver with."
        )
        cert_file: Path | None = Field(default=None, description="tls: client certificate (PEM).")
        key_file: Path | None = Field(
            default=None, description="tls: client key (PEM); default: inside cert_file."
        )
        verify: bool = Field(
            default=True, description="tls: verify the receiver's certificate and name."
        )
        server_name: str | None = Field(
            default=None, description="tls: name expected in the certificate; default: host."
        )

        @field_validator("rfc", mode="before")
        @classmethod
        def _rfc(cls, v: Any) -> Any:
            return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

        @field_validator("app_name", "hostname", "msgid")
        @classmethod
        def _printable(cls, v: str | None) -> str | None:
            if v is not None and (not v or any(not "!" <= c <= "~" for c in v)):
                raise ValueError(f"{v!r} must be printable ASCII without spaces")
            return v

        @field_validator(*_TLS_ONLY)
        @classmethod
        def _tls_only(cls, v: Any, info: ValidationInfo) -> Any:
            transport = info.data.get("transport")
            if v is not None and transport != "tls":
                raise ValueError(f"is only used with transport = 'tls' (not {transport!r})")
            if info.field_name == "key_file" and v is not None and not info.data.get("cert_file"):
                raise ValueError("needs cert_file (the certificate the key belongs to)")
            return v

        @property
        def effective_port(self) -> int:
            return self.port or (6514 if self.transport == "tls" else 514)

    def __init__(self, settings: OutputSettings, data_dir: Path):
        if not isinstance(settings, SyslogOutput.Settings):
            settings = SyslogOutput.Settings.model_validate(settings.model_dump())
        super().__init__(settings, data_dir)
        self.cfg: SyslogOutput.Settings = settings
        self.hostname = settings.hostname or local_hostname()
        self.facility = FACILITIES[settings.facility]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.label = (
            f"syslog output {settings.name!r} ({settings.transport} {host}:"
            f"{settings.effective_port})"
        )
        self.truncated = 0
        self._udp: socket.socket | None = None
        self._stream: Stream | None = None
        if settings.transport != "udp":
            tls = None
            if settings.transport == "tls":
                tls = client_tls_context(settings.ca_file, settings.verify, self.label,
                                         settings.cert_file, settings.key_file)  # fmt: skip
            self._stream = Stream(
                settings.host, settings.effective_port, settings.timeout, self.label, tls,
                settings.server_name,
            )  # fmt: skip

    # -- messages -------------------------------------------------------------------

    def message(self, doc: Document) -> bytes:
        """One event as a syslog message of this output (no framing)."""
        s = self.cfg
        procid = str(os.getpid())
        if s.rfc == "3164":
            return rfc3164(
                doc,
                facility=self.facility,
                hostname=self.hostname,
                tag=s.app_name,
                procid=procid,
                fmt=s.format,
            )
        return rfc5424(
            doc,
            facility=self.facility,
            hostname=self.hostname,
            app_name=s.app_name,
            procid=procid,
            msgid=s.msgid,
            fmt=s.format,
            bom=s.bom,
        )

    # -- connection -----------------------------------------------------------------

    def open(self) -> None:
        """Connect (UDP: resolve and connect the socket) unless connected."""
        if self._stream is not None:
            self._stream.open()
            return
        if self._udp is not None:
            return
        s = self.cfg
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(
                s.host, s.effective_port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.connect(addr)
            except OSError:
                sock.close()
                raise
            sock.settimeout(s.timeout)
        except OSError as exc:
            raise DeliveryError(f"{self.label}: cannot connect: {exc}") from exc
        self._udp = sock

    # -- delivery -------------------------------------------------------------------

    def send(self, docs: list[Document]) -> None:
        """Deliver every document as one message, or raise :class:`DeliveryError`."""
        if not docs:
            return
        messages = [self.message(doc) for doc in docs]
        if self._stream is not None:
            self._stream.send(b"".join(frame(m, self.cfg.framing) for m in messages))
            return
        self.open()
        assert self._udp is not None
        try:
            for msg in messages:
                self._udp.send(self._fit(msg))
        except OSError as exc:
            self._close_udp()
            raise DeliveryError(f"{self.label}: sending failed: {exc}") from exc

    def _fit(self, msg: bytes) -> bytes:
        limit = self.cfg.max_udp
        if len(msg) <= limit:
            return msg
        if not self.truncated:
            log.warning(
                "%s: a message of %d bytes was cut to max_udp = %d bytes (later cuts are "
                "counted, not logged); use transport tcp or tls for whole events",
                self.label,
                len(msg),
                limit,
            )
        self.truncated += 1
        return truncate_utf8(msg, limit)

    def _close_udp(self) -> None:
        sock, self._udp = self._udp, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """Close the connection (TLS: with a close_notify); never raises."""
        if self._stream is not None:
            self._stream.close()
        self._close_udp()
