"""Syslog messages of events: priority, RFC 5424 and RFC 3164 lines, TCP framing.

Everything here is a pure function of an event document and the output's settings, so
the exact bytes can be checked without a network.

- **Priority.** ``PRI = facility * 8 + severity``. The severity follows the event's risk
  (0-100): 80 or more is 2 (crit), 60 or more 3 (err), 40 or more 4 (warning), 20 or
  more 5 (notice), anything lower (or no risk) 6 (info).
- **RFC 5424.** ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG``. TIMESTAMP is
  the event's end (``ts_end``, when the window's last flow ended), in UTC with
  microseconds and ``Z``; the send time only when the document has none. One structured
  data element, ``[flowhawk@32473 id="..." risk="..." site="..." methods="..."]``,
  carries what receivers filter on without parsing MSG; its values escape ``\\``,
  ``"`` and ``]`` (RFC 5424 §6.3.3). MSG is UTF-8 *without* the byte order mark by
  default: the RFC asks for one, but receivers keep it as part of the message (rsyslog's
  ``msg`` property then starts with U+FEFF and the JSON behind it no longer parses as
  JSON), so it is written only when ``bom`` is set.
- **RFC 3164.** ``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG``, the day padded with a
  space, English month names whatever the locale, the time the event's end in UTC (the
  format has no zone).
- **Framing** over TCP and TLS: octet counting (``LEN SP MSG``, RFC 6587 §3.4.1 and RFC
  5425) or a line feed after each message (RFC 6587 §3.4.2). With line feeds a line feed
  inside a message would split it, so any is written as the two characters ``\\n``;
  JSON and CEF payloads never hold one, only a structured-data value could.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flowhawk.outputs.base import Document
from flowhawk.outputs.cef import cef_message

#: Enterprise number of the structured-data id (IANA's example number, RFC 5612).
ENTERPRISE_NUMBER = 32473
SD_ID = f"flowhawk@{ENTERPRISE_NUMBER}"

#: Facility names and codes (RFC 5424 §6.2.1, names as syslog.conf spells them).
FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "solaris-cron": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}

#: (lowest risk, severity), highest first; below the last: 6 (info).
SEVERITY_BY_RISK = ((80.0, 2), (60.0, 3), (40.0, 4), (20.0, 5))
INFO = 6

BOM = "\ufeff"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def severity(risk: float | None) -> int:
    """Syslog severity of an event of this risk (see the module documentation)."""
    value = float(risk) if risk is not None else 0.0
    return next((sev for low, sev in SEVERITY_BY_RISK if value >= low), INFO)


def pri(facility: int, sev: int) -> int:
    """The PRI value: facility code times 8 plus severity."""
    if not 0 <= facility <= 23 or not 0 <= sev <= 7:
        raise ValueError(f"facility {facility} / severity {sev} out of range")
    return facility * 8 + sev


def event_time(doc: Document) -> datetime:
    """The event's end in UTC (``ts_end``, else ``ts_start``, else now)."""
    for key in ("ts_end", "ts_start"):
        text = doc.get(key)
        if text:
            try:
                moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC)
    return datetime.now(UTC)


def timestamp_5424(moment: datetime) -> str:
    """RFC 5424 TIMESTAMP: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timestamp_3164(moment: datetime) -> str:
    """RFC 3164 TIMESTAMP in UTC: ``Mmm dd hh:mm:ss`` with the day padded by a space."""
    moment = moment.astimezone(UTC)
    return f"{_MONTHS[moment.month - 1]} {moment.day:2d} {moment:%H:%M:%S}"


def param_escape(value: str) -> str:
    """A structured-data PARAM-VALUE: ``\\``, ``"`` and ``]`` escaped by a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def structured_data(doc: Document) -> str:
    """The event's structured-data element (id, risk, site, methods; absent ones left out)."""
    params: list[tuple[str, str]] = []
    if doc.get("id") is not None:
        params.append(("id", str(doc["id"])))
    if doc.get("risk") is not None:
        params.append(("risk", format(round(float(doc["risk"]), 1), "g")))
    if doc.get("site") is not None:
        params.append(("site", str(doc["site"])))
    if doc.get("methods"):
        params.append(("methods", ",".join(str(m) for m in doc["methods"])))
    if not params:
        return "-"
    return "[" + " ".join([SD_ID, *(f'{k}="{param_escape(v)}"' for k, v in params)]) + "]"


def payload(doc: Document, fmt: str) -> str:
    """MSG: the document as compact single-line JSON, or a CEF:0 message."""
    if fmt == "cef":
        return cef_message(doc)
    if fmt == "json":
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)
    raise ValueError(f"unknown syslog payload format {fmt!r} (json or cef)")


def rfc5424(
    doc: Document,
    *,
    facility: int,
    hostname: str,
    app_name: str,
    procid: str,
    msgid: str,
    fmt: str = "json",
    bom: bool = False,
) -> bytes:
    """One RFC 5424 message (no framing)."""
    header = " ".join(
        [
            f"<{pri(facility, severity(doc.get('risk')))}>1",
            timestamp_5424(event_time(doc)),
            hostname or "-",
            app_name or "-",
            procid or "-",
            msgid or "-",
            structured_data(doc),
        ]
    )
    return f"{header} {BOM if bom else ''}{payload(doc, fmt)}".encode()


def rfc3164(
    doc: Document, *, facility: int, hostname: str, tag: str, procid: str, fmt: str = "json"
) -> bytes:
    """One RFC 3164 message (no framing); the tag carries the process id."""
    prio = pri(facility, severity(doc.get("risk")))
    stamp = timestamp_3164(event_time(doc))
    return f"<{prio}>{stamp} {hostname} {tag}[{procid}]: {payload(doc, fmt)}".encode()


def frame(message: bytes, framing: str) -> bytes:
    """One message framed for a stream: octet counting or a trailing line feed."""
    if framing == "octet-counting":
        return b"%d %s" % (len(message), message)
    if framing == "lf":
        return message.replace(b"\n", b"\\n") + b"\n"
    raise ValueError(f"unknown syslog framing {framing!r} (octet-counting or lf)")


def truncate_utf8(message: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, cut before a partial UTF-8 character."""
    if len(message) <= limit:
        return message
    return message[:limit].decode("utf-8", "ignore").encode()
