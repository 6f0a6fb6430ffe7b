"""Events as ArcSight Common Event Format (CEF:0) messages, escaped as the format requires.

Header fields escape ``\\`` and ``|``; extension values escape ``\\`` and ``=`` and
write line breaks as ``\\n``/``\\r``. The signature id is the event's leading method
(``M29``, ``N1`` ...), the name that method's alarm name, the severity the risk / 10.
IPv4 addresses go to ``src``/``dst``, IPv6 ones to ``c6a2``/``c6a3`` (labeled), as
ArcSight connectors do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flowhawk import __version__
from flowhawk.outputs.base import Document

VENDOR = "flowhawk"
PRODUCT = "flowhawk"

_PROTO = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "IPv6-ICMP", 132: "SCTP"}


def header_escape(text: str) -> str:
    """A CEF header field: backslash and pipe escaped, no line breaks."""
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", " ").replace("\n", " ")


def ext_escape(text: str) -> str:
    """A CEF extension value: backslash and equals escaped, line breaks as \\n and \\r."""
    text = text.replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def _epoch_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def severity(risk: float | None) -> int:
    """CEF severity 0-10 from risk 0-100."""
    return max(0, min(10, round((risk or 0.0) / 10)))


def cef_message(doc: Document) -> str:
    """One event document as a CEF:0 message (no syslog header)."""
    methods = doc.get("methods") or []
    lead = methods[0] if methods else "event"
    alarms = doc.get("alarms") or []
    name = next((a.get("name") for a in alarms if a.get("method") == lead), None) or lead
    header = "|".join(
        [
            "CEF:0",
            header_escape(VENDOR),
            header_escape(PRODUCT),
            header_escape(__version__),
            header_escape(lead),
            header_escape(str(name)),
            str(severity(doc.get("risk"))),
        ]
    )
    ext: list[tuple[str, Any]] = [
        ("rt", _epoch_ms(doc.get("ts_end"))),
        ("start", _epoch_ms(doc.get("ts_start"))),
        ("end", _epoch_ms(doc.get("ts_end"))),
    ]
    for side, v4, v6, port in (("src", "src", "c6a2", "spt"), ("dst", "dst", "c6a3", "dpt")):
        addr = doc.get(f"{side}_ip")
        if addr and ":" in addr:
            label = "Source" if side == "src" else "Destination"
            ext += [(v6, addr), (f"{v6}Label", f"{label} IPv6 Address")]
        else:
            ext.append((v4, addr))
        ext.append((port, doc.get(f"{side}_port")))
    proto = doc.get("proto")
    ext += [
        ("proto", _PROTO.get(proto, str(proto)) if proto is not None else None),
        ("out", doc.get("src_bytes")),
        ("in", doc.get("dst_bytes")),
        ("cnt", doc.get("flows")),
        ("cat", doc.get("direction")),
        ("externalId", doc.get("id")),
        ("msg", doc.get("reason")),
        ("cn1", round(float(doc["risk"]), 1) if doc.get("risk") is not None else None),
        ("cn1Label", "risk"),
        ("cs1", ",".join(methods)),
        ("cs1Label", "methods"),
        ("cs2", doc.get("site")),
        ("cs2Label", "site"),
        ("cs3", doc.get("status")),
        ("cs3Label", "status"),
    ]
    body = " ".join(f"{k}={ext_escape(str(v))}" for k, v in ext if v is not None and v != "")
    return f"{header}|{body}"
