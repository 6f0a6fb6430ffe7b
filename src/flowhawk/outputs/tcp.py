"""The TCP output: events as lines (JSON or CEF) over one persistent TCP or TLS stream.

Each event document is one line ending in ``\\n`` (:func:`flowhawk.outputs.files.line`:
compact JSON, or a CEF:0 message), the whole batch written with one ``sendall``. This
is what log shippers and SIEM collectors accept as "JSON lines over TCP" (Logstash's
``json_lines`` codec, Vector's and Fluent Bit's ``tcp`` sources, Splunk raw TCP).

The connection is opened on the first batch and kept. The receiver never answers, so
before each batch a connection that became readable is checked: end of stream (the
receiver closed or restarted) means reconnecting before writing rather than writing
into a dead connection. Any failure closes the connection and raises
:class:`~flowhawk.outputs.base.DeliveryError`; the delivery layer reconnects and sends
the batch again. Delivery is at least once, and as with any stream without
acknowledgements, bytes a receiver accepted just before it failed are lost: use the
webhook output where every batch must be confirmed.

With ``tls = true`` the stream is TLS (standard library ``ssl``): the receiver's
certificate is verified against ``ca_file`` (else the system's CAs) and must name
``host``; ``verify = false`` turns checking off (encryption only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from flowhawk.outputs.base import Document, Output, OutputSettings
from flowhawk.outputs.files import line
from flowhawk.outputs.stream import Stream, client_tls_context


class TcpOutput(Output):
    """Events as JSON or CEF lines over a persistent TCP (or TLS) connection."""

    type = "tcp"
    description = "Lines (JSON or CEF) over one persistent TCP or TLS connection."

    class Settings(OutputSettings):
        type: Literal["tcp"] = Field(default="tcp", description="Output type: tcp.")
        host: str = Field(min_length=1, description="Receiver address or name.")
        port: int = Field(ge=1, le=65535, description="Receiver port.")
        format: Literal["json", "cef"] = Field(
            default="json", description="One line per event: compact JSON, or a CEF:0 message."
        )
        tls: bool = Field(default=False, description="Use TLS on the connection.")
        ca_file: Path | None = Field(
            default=None, description="tls: PEM CA certificates to verify the receiver with."
        )
        verify: bool = Field(
            default=True, description="tls: verify the receiver's certificate and name."
        )

        @model_validator(mode="after")
        def _tls_only(self) -> TcpOutput.Settings:
            if self.ca_file is not None and not self.tls:
                raise ValueError("ca_file is only used with tls = true")
            return self

    def __init__(self, settings: OutputSettings, data_dir: Path):
        if not isinstance(settings, TcpOutput.Settings):
            settings = TcpOutput.Settings.model_validate(settings.model_dump())
        super().__init__(settings, data_dir)
        self.cfg: TcpOutput.Settings = settings
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.label = f"tcp output {settings.name!r} ({host}:{settings.port})"
        tls = (
            client_tls_context(settings.ca_file, settings.verify, self.label)
            if settings.tls
            else None
        )
        self._stream = Stream(settings.host, settings.port, settings.timeout, self.label, tls)

    def open(self) -> None:
        """Connect (and handshake) unless connected; raises :class:`DeliveryError`."""
        self._stream.open()

    def send(self, docs: list[Document]) -> None:
        """Write one line per document, or raise :class:`DeliveryError`."""
        if docs:
            self._stream.send("".join(line(doc, self.cfg.format) + "\n" for doc in docs).encode())

    def close(self) -> None:
        """Close the connection (TLS: with a close_notify); never raises."""
        self._stream.close()
