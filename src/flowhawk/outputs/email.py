"""The email output: one message per batch of events, sent with the stdlib ``smtplib``.

A message has a plain-text summary, one line per event (risk, start time, source ->
destination:port, methods, reason; riskiest first) and the batch's event documents as
an ``events.json`` attachment (a JSON array). The subject is a template (Python
``str.format``) with these fields:

- ``{count}``: events in the message; ``{max_risk}``: the highest risk (a number, so
  ``{max_risk:.0f}`` works);
- ``{site}``: the events' sites, comma separated (one site when they share it);
- ``{methods}``: their methods, comma separated; ``{name}``: the output's name.

``security`` picks how the connection is protected: ``none`` (plain SMTP, port 25),
``starttls`` (upgrade with STARTTLS, usually port 587; the server must offer it) or
``ssl`` (TLS from the first byte, usually port 465). With TLS the server's certificate
is verified against ``ca_file`` (else the system's CAs) and must name ``smtp_host``,
unless ``verify = false``. ``username``/``password`` log in (AUTH) after TLS is up.

Each batch opens its own SMTP session (mail servers drop idle connections). SMTP and
network errors raise :class:`~flowhawk.outputs.base.DeliveryError` and the batch is
sent again later, so a recipient may get a message twice (at least once); when the
server accepts some recipients and refuses others, the message counts as delivered and
the refused addresses are logged.
"""

from __future__ import annotations

import json
import logging
import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from flowhawk.outputs.base import DeliveryError, Document, Output, OutputSettings
from flowhawk.outputs.stream import client_tls_context

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = "[flowhawk] {count} event(s), max risk {max_risk:.0f} ({site})"

_SAMPLE = {"count": 1, "max_risk": 50.0, "site": "site", "methods": "M1", "name": "mail"}


def subject_fields(docs: list[Document], name: str) -> dict[str, Any]:
    """The values the subject template can use for a batch."""
    sites = sorted({str(d.get("site")) for d in docs if d.get("site") is not None})
    methods = sorted({str(m) for d in docs for m in d.get("methods") or ()})
    return {
        "count": len(docs),
        "max_risk": max((float(d.get("risk") or 0.0) for d in docs), default=0.0),
        "site": ", ".join(sites),
        "methods": ", ".join(methods),
        "name": name,
    }


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def summary_line(doc: Document) -> str:
    """One event as a line of the message text."""
    dst = doc.get("dst_ip") or "?"
    if ":" in dst:
        dst = f"[{dst}]"
    port = doc.get("dst_port")
    target = f"{dst}:{port}" if port is not None else dst
    risk = float(doc.get("risk") or 0.0)
    methods = ",".join(str(m) for m in doc.get("methods") or ())
    return (
        f"{risk:5.1f}  {doc.get('ts_start') or '-'}  {doc.get('src_ip') or '?'} -> {target}"
        f"  {methods or '-'}  {_one_line(doc.get('reason'))}"
    )


def _address(v: str) -> str:
    _, addr = parseaddr(v)
    if "@" not in addr or any(c in v for c in "\r\n"):
        raise ValueError(f"{v!r} is not an email address")
    return v


class EmailOutput(Output):
    """One email per batch: a text summary and the events as a JSON attachment."""

    type = "email"
    description = "An email per batch over SMTP: a text summary plus the events as JSON."

    class Settings(OutputSettings):
        type: Literal["email"] = Field(default="email", description="Output type: email.")
        smtp_host: str = Field(min_length=1, description="SMTP server address or name.")
        smtp_port: int = Field(
            default=25, ge=1, le=65535, description="SMTP port (587 starttls, 465 ssl)."
        )
        security: Literal["none", "starttls", "ssl"] = Field(
            default="none", description="none, starttls (upgrade) or ssl (TLS from the start)."
        )
        username: str | None = Field(default=None, description="Login name (AUTH); none: no login.")
        password: str | None = Field(default=None, description="Password of username.")
        sender: str = Field(description="From address, e.g. 'flowhawk <nba@example.org>'.")
        to: list[str] = Field(min_length=1, description="Recipient addresses.")
        subject: str = Field(
            default=DEFAULT_SUBJECT,
            description="Subject template: {count}, {max_risk}, {site}, {methods}, {name}.",
        )
        ca_file: Path | None = Field(
            default=None, description="starttls/ssl: PEM CA certificates to verify the server."
        )
        verify: bool = Field(
            default=True, description="starttls/ssl: verify the server's certificate and name."
        )

        @field_validator("sender")
        @classmethod
        def _sender(cls, v: str) -> str:
            return _address(v)

        @field_validator("to")
        @classmethod
        def _to(cls, v: list[str]) -> list[str]:
            return [_address(a) for a in v]

        @field_validator("subject")
        @classmethod
        def _subject(cls, v: str) -> str:
            try:
                v.format_map(_SAMPLE)
            except KeyError as exc:
                known = ", ".join("{" + k + "}" for k in _SAMPLE)
                raise ValueError(f"unknown field {{{exc.args[0]}}}; known: {known}") from None
            except (ValueError, IndexError) as exc:
                raise ValueError(f"not a valid template: {exc}") from None
            return v

        @model_validator(mode="after")
        def _combinations(self) -> EmailOutput.Settings:
            if (self.username is None) != (self.password is None):
                raise ValueError("username and password go together")
            if self.ca_file is not None and self.security == "none":
                raise ValueError("ca_file is only used with security = 'starttls' or 'ssl'")
            return self

    def __init__(self, settings: OutputSettings, data_dir: Path):
        if not isinstance(settings, EmailOutput.Settings):
            settings = EmailOutput.Settings.model_validate(settings.model_dump())
        super().__init__(settings, data_dir)
        self.cfg: EmailOutput.Settings = settings
        self.label = f"email output {settings.name!r} ({settings.smtp_host}:{settings.smtp_port})"
        self._tls = (
            client_tls_context(settings.ca_file, settings.verify, self.label)
            if settings.security != "none"
            else None
        )

    def message(self, docs: list[Document]) -> EmailMessage:
        """The message delivering ``docs``."""
        s = self.cfg
        fields = subject_fields(docs, s.name)
        msg = EmailMessage()
        msg["Subject"] = _one_line(s.subject.format_map(fields))
        msg["From"] = s.sender
        msg["To"] = ", ".join(s.to)
        msg["Date"] = formatdate(localtime=False)
        domain = parseaddr(s.sender)[1].rpartition("@")[2] or None
        msg["Message-ID"] = make_msgid(domain=domain)
        ranked = sorted(docs, key=lambda d: (-float(d.get("risk") or 0.0), str(d.get("ts_start"))))
        lines = [
            f"{len(docs)} event(s) from flowhawk, highest risk {fields['max_risk']:.1f}:",
            "",
            " risk  start  source -> destination:port  methods  reason",
            *(summary_line(d) for d in ranked),
            "",
            "The event documents are attached as events.json (a JSON array).",
        ]
        msg.set_content("\n".join(lines) + "\n")
        attachment = json.dumps(docs, ensure_ascii=False, indent=1).encode()
        msg.add_attachment(
            attachment, maintype="application", subtype="json", filename="events.json"
        )
        return msg

    def send(self, docs: list[Document]) -> None:
        """Send one message with the batch, or raise :class:`DeliveryError`."""
        if not docs:
            return
        s = self.cfg
        msg = self.message(docs)
        try:
            if s.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.timeout, context=self._tls
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout)
            with smtp:
                if s.security == "starttls":
                    smtp.starttls(context=self._tls)
                if s.username is not None and s.password is not None:
                    smtp.login(s.username, s.password)
                refused = smtp.send_message(
                    msg, from_addr=parseaddr(s.sender)[1], to_addrs=[parseaddr(a)[1] for a in s.to]
                )
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"{self.label}: the server does not support it: {exc}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"{self.label}: login as {s.username!r} refused: {exc}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{self.label}: {type(exc).__name__}: {exc}") from exc
        if refused:
            log.warning(
                "%s: recipients refused (the others got the message): %s",
                self.label,
                ", ".join(f"{a} ({code} {text!r})" for a, (code, text) in refused.items()),
            )
