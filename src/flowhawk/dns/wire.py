"""DNS wire messages to columns, with dnspython, counting what does not parse.

This is the one place a Python call per message is made (dnspython has no batch
parser); everything around it (finding the payloads, pairing queries with responses,
storage) works on whole columns. A message that cannot be read at all is counted in
:class:`~flowhawk.diagnostics.Diagnostics` and dropped:

* ``truncated DNS message``: shorter than the 12-byte header, or cut by the capture's
  snapshot length before its end;
* ``malformed DNS message``: dnspython rejects the header or question section (bad
  label, compression loop, counts past the end... and any non-DNS payload on port 53).

A message whose header and question read but whose later records do not (a response
cut short, one bad record) is kept with the records that did parse and counted as
``DNS message partly read``: the query name and response code are still worth having.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from flowhawk.diagnostics import Diagnostics

_A, _AAAA = dns.rdatatype.A, dns.rdatatype.AAAA
_TARGETS = {dns.rdatatype.CNAME, dns.rdatatype.PTR, dns.rdatatype.NS, dns.rdatatype.DNAME}
_TXT = {dns.rdatatype.TXT, dns.rdatatype.SPF}
_QR, _AA, _TC = int(dns.flags.QR), int(dns.flags.AA), int(dns.flags.TC)
_RD, _RA = int(dns.flags.RD), int(dns.flags.RA)
_TYPE_NAMES: dict[int, str] = {}


@dataclass
class Messages:
    """Parsed messages as Python lists, one entry per kept message (see :func:`parse`)."""

    kept: list[int] = field(default_factory=list)  # index of each kept message in the input
    response: list[bool] = field(default_factory=list)
    trans_id: list[int] = field(default_factory=list)
    query: list[str | None] = field(default_factory=list)
    qclass: list[int | None] = field(default_factory=list)
    qtype: list[int | None] = field(default_factory=list)
    rcode: list[int] = field(default_factory=list)
    aa: list[bool] = field(default_factory=list)
    tc: list[bool] = field(default_factory=list)
    rd: list[bool] = field(default_factory=list)
    ra: list[bool] = field(default_factory=list)
    answers: list[list[str]] = field(default_factory=list)
    ttls: list[list[float]] = field(default_factory=list)
    answer_types: list[list[str]] = field(default_factory=list)
    size: list[int] = field(default_factory=list)

    def columns(self) -> dict[str, list]:
        """The lists by column name (``kept`` left out)."""
        return {k: v for k, v in self.__dict__.items() if k != "kept"}


def name_text(name: dns.name.Name) -> str:
    """A DNS name as stored: lower-case, no trailing dot, the root as ``""``."""
    if name == dns.name.root:
        return ""
    return name.to_text(omit_final_dot=True).lower()


def _type_name(rdtype: int) -> str:
    text = _TYPE_NAMES.get(rdtype)
    if text is None:
        text = _TYPE_NAMES[rdtype] = dns.rdatatype.to_text(rdtype)  # type: ignore[arg-type]
    return text


def answer_text(rd: object) -> str:
    """One answer record's data as text (address, target name, TXT strings, or generic)."""
    rdtype = rd.rdtype  # type: ignore[attr-defined]
    if isinstance(rd, dns.rdata.GenericRdata):  # a class dnspython has no type for (mDNS)
        if (rdtype == _A and len(rd.data) == 4) or (rdtype == _AAAA and len(rd.data) == 16):
            return str(ipaddress.ip_address(rd.data))
        return rd.to_text()
    if rdtype in (_A, _AAAA):
        return rd.address  # type: ignore[attr-defined,no-any-return]
    if rdtype in _TARGETS:
        return name_text(rd.target)  # type: ignore[attr-defined]
    if rdtype == dns.rdatatype.MX:
        return name_text(rd.exchange)  # type: ignore[attr-defined]
    if rdtype == dns.rdatatype.SRV:
        return name_text(rd.target)  # type: ignore[attr-defined]
    if rdtype in _TXT:
        return b"".join(rd.strings).decode("utf-8", "backslashreplace")  # type: ignore[attr-defined]
    return rd.to_text()  # type: ignore[attr-defined,no-any-return]


def parse(
    wires: Sequence[bytes],
    locations: Sequence[str],
    cut: Sequence[bool],
    input_name: str,
    diag: Diagnostics,
) -> Messages:
    """Parse each wire message; ``cut[i]`` says the capture holds only its start.

    ``locations`` name each message in diagnostics (``offset 1234``).
    """
    out = Messages()
    for i, wire in enumerate(wires):
        try:
            msg = dns.message.from_wire(
                wire, keyring=False, ignore_trailing=True, continue_on_error=True
            )
        except dns.message.ShortHeader:
            detail = f"{len(wire)} bytes, less than the 12-byte header"
            diag.skip(input_name, locations[i], "truncated DNS message", detail)
            continue
        except (dns.exception.DNSException, ValueError, UnicodeError, IndexError) as exc:
            reason = "truncated DNS message" if cut[i] else "malformed DNS message"
            diag.skip(input_name, locations[i], reason, f"{type(exc).__name__}: {exc}")
            continue
        if msg.errors:
            if not msg.question and not cut[i]:
                first = msg.errors[0].exception
                detail = f"{type(first).__name__}: {first}"
                diag.skip(input_name, locations[i], "malformed DNS message", detail)
                continue
            first = msg.errors[0].exception
            detail = f"{len(msg.errors)} error(s), first {type(first).__name__}: {first}"
            if cut[i]:
                detail = "cut by the capture; " + detail
            diag.skip(input_name, locations[i], "DNS message partly read", detail)
        try:
            _add(out, msg, len(wire))
        except Exception as exc:  # a record dnspython parsed but cannot present
            _drop_partial(out)
            detail = f"{type(exc).__name__}: {exc}"
            diag.skip(input_name, locations[i], "malformed DNS message", detail)
            continue
        out.kept.append(i)
    return out


def _add(out: Messages, msg: dns.message.Message, size: int) -> None:
    flags = msg.flags
    out.response.append(bool(flags & _QR))
    out.trans_id.append(msg.id)
    if msg.question:
        q = msg.question[0]
        out.query.append(name_text(q.name))
        out.qclass.append(int(q.rdclass))
        out.qtype.append(int(q.rdtype))
    else:
        out.query.append(None)
        out.qclass.append(None)
        out.qtype.append(None)
    out.rcode.append(int(msg.rcode()))
    out.aa.append(bool(flags & _AA))
    out.tc.append(bool(flags & _TC))
    out.rd.append(bool(flags & _RD))
    out.ra.append(bool(flags & _RA))
    answers: list[str] = []
    ttls: list[float] = []
    types: list[str] = []
    for rrset in msg.answer:
        name = _type_name(rrset.rdtype)
        for rd in rrset:
            answers.append(answer_text(rd))
            ttls.append(float(rrset.ttl))
            types.append(name)
    out.answers.append(answers)
    out.ttls.append(ttls)
    out.answer_types.append(types)
    out.size.append(size)


def _drop_partial(out: Messages) -> None:
    """Undo a half-added message: cut every column back to the kept count."""
    n = len(out.kept)
    for values in out.columns().values():
        del values[n:]
