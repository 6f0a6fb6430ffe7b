"""The syslog output: exact message bytes, and delivery to a real rsyslogd on loopback.

rsyslogd (see :mod:`tests.outputs.rsyslog`) parses what it receives; the tests check its
parse: priority, facility, severity, hostname, app-name, procid, msgid, the structured
data as ``mmpstrucdata`` unescapes it, and the message, which must give back the event
document (JSON) or the CEF fields.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest

from flowhawk.errors import ConfigError
from flowhawk.outputs import OUTPUTS, validate
from flowhawk.outputs.base import DeliveryError
from flowhawk.outputs.cef import cef_message
from flowhawk.outputs.syslog import Facility, SyslogOutput, local_hostname
from flowhawk.outputs.syslog_format import (
    FACILITIES,
    event_time,
    frame,
    param_escape,
    pri,
    rfc3164,
    rfc5424,
    severity,
    structured_data,
    timestamp_3164,
    truncate_utf8,
)
from tests.outputs.rsyslog import (
    Certs,
    Rsyslog,
    free_port,
    make_certs,
    skip_without_rsyslogd,
    syslog_down,
    syslog_receiver,
)

HOST = "sensor-1.example.net"
LOCAL4 = 20
REASON = 'beacon every 60s to "c2" ]x= a|b C:\\temp\\x; zurück, 東京\nsecond line'


def _alarm(method: str, name: str, score: float) -> dict[str, Any]:
    return {
        "method": method,
        "name": name,
        "score": score,
        "observed": "period 60.0s, jitter 2%",
        "expected": "irregular",
        "threshold": 0.5,
        "reason": REASON,
        "entity": "10.1.2.3",
        "observed_value": 60.0,
        "expected_value": None,
    }


def _docs() -> list[dict[str, Any]]:
    """Three events: north-south IPv4 (crit), east-west IPv4 (warning), IPv6 (info)."""
    common = {"status": "new", "verdict": None, "flows": 12, "src_bytes": 4096}
    return [
        {
            "id": "ev-0001-beacon",
            "ts_start": "2026-05-01T09:55:00.000000Z",
            "ts_end": "2026-05-01T10:05:03.250000Z",
            "site": "hq",
            "src_ip": "10.1.2.3",
            "dst_ip": "203.0.113.9",
            "src_port": 51514,
            "dst_port": 443,
            "proto": 6,
            "direction": "north-south",
            "risk": 87.5,
            "methods": ["N1", "M27"],
            "alarms": [_alarm("N1", "beaconing", 0.91), _alarm("M27", "listed host", 0.8)],
            "reason": REASON,
            **common,
        },
        {
            "id": "ev-0002-lateral",
            "ts_start": "2026-05-12T14:00:00.000000Z",
            "ts_end": "2026-05-12T14:09:59.000001Z",
            "site": 'lab "B" ]\\2',
            "src_ip": "10.1.2.3",
            "dst_ip": "10.9.9.9",
            "src_port": 50000,
            "dst_port": 445,
            "proto": 6,
            "direction": "east-west",
            "risk": 45.0,
            "methods": ["N10"],
            "alarms": [_alarm("N10", "new admin connection", 0.6)],
            "reason": REASON,
            **common,
        },
        {
            "id": "ev-0003-v6",
            "ts_start": "2026-12-31T23:50:00.000000Z",
            "ts_end": "2026-12-31T23:59:59.999999Z",
            "site": "dc",
            "src_ip": "2001:db8::5",
            "dst_ip": "2001:db8:ffff::9",
            "src_port": None,
            "dst_port": 53,
            "proto": 17,
            "direction": "north-south",
            "risk": 12.0,
            "methods": ["M1"],
            "alarms": [_alarm("M1", "new communication", 0.3)],
            "reason": "first seen",
            **common,
        },
    ]


SEVERITIES = {"ev-0001-beacon": 2, "ev-0002-lateral": 4, "ev-0003-v6": 6}
STAMPS_3164 = {
    "ev-0001-beacon": "May  1 10:05:03",
    "ev-0002-lateral": "May 12 14:09:59",
    "ev-0003-v6": "Dec 31 23:59:59",
}


def _settings(**kw: Any) -> SyslogOutput.Settings:
    base: dict[str, Any] = {"name": "siem", "hostname": HOST, "facility": "local4", "timeout": 3}
    return SyslogOutput.Settings(**(base | kw))


def _output(tmp_path: Path, **kw: Any) -> SyslogOutput:
    return SyslogOutput(_settings(**kw), tmp_path)


def _cef(text: str) -> tuple[list[str], dict[str, str]]:
    """A CEF message's header fields and extension, unescaped."""
    fields, cur, i = [], "", 0
    while len(fields) < 7:
        ch = text[i]
        if ch == "\\":
            cur += text[i + 1]
            i += 2
            continue
        if ch == "|":
            fields.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    ext: dict[str, str] = {}
    key, value, rest = None, "", text[i:]
    tokens = rest.split(" ")
    for tok in tokens:  # a token starting "key=" (unescaped =) begins a new pair
        head = tok.split("=", 1)[0]
        if "=" in tok and head.isalnum() and not head.endswith("\\"):
            if key is not None:
                ext[key] = value
            key, value = head, tok[len(head) + 1 :]
        else:
            value += " " + tok
    if key is not None:
        ext[key] = value
    unescape = {"\\\\": "\\", "\\=": "=", "\\n": "\n", "\\r": "\r"}
    for k, v in ext.items():
        out, j = "", 0
        while j < len(v):
            pair = v[j : j + 2]
            if pair in unescape:
                out, j = out + unescape[pair], j + 2
            else:
                out, j = out + v[j], j + 1
        ext[k] = out
    return fields, ext


# -- format ---------------------------------------------------------------------------


def test_severity_follows_risk_and_pri_is_facility_times_eight_plus_severity() -> None:
    assert [severity(r) for r in (None, 0, 19.9, 20, 39.9, 40, 59.9, 60, 79.9, 80, 100)] == [
        6, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2,
    ]  # fmt: skip
    assert pri(LOCAL4, 2) == 162
    assert pri(0, 0) == 0
    assert pri(23, 7) == 191
    with pytest.raises(ValueError):
        pri(24, 0)


def test_rfc5424_message_is_exact() -> None:
    doc = _docs()[1]
    msg = rfc5424(
        doc, facility=LOCAL4, hostname=HOST, app_name="flowhawk", procid="77", msgid="event"
    )
    sd = '[flowhawk@32473 id="ev-0002-lateral" risk="45" site="lab \\"B\\" \\]\\\\2" methods="N10"]'
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    expected = f"<164>1 2026-05-12T14:09:59.000001Z {HOST} flowhawk 77 event {sd} {body}"
    assert msg == expected.encode()
    assert b"\n" not in msg  # JSON escapes the reason's line break
    with_bom = rfc5424(doc, facility=0, hostname="h", app_name="a", procid="1", msgid="m", bom=True)
    assert f"{sd} \ufeff{{".encode() in with_bom


def test_structured_data_escapes_and_leaves_out_missing_values() -> None:
    assert param_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert structured_data({"id": "x", "risk": 87.54, "methods": ["N1", "M27"]}) == (
        '[flowhawk@32473 id="x" risk="87.5" methods="N1,M27"]'
    )
    assert structured_data({}) == "-"


def test_rfc3164_message_pads_the_day_with_a_space() -> None:
    doc = _docs()[0]
    assert timestamp_3164(event_time(doc)) == "May  1 10:05:03"
    assert timestamp_3164(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == "Dec 31 23:59:59"
    msg = rfc3164(doc, facility=LOCAL4, hostname=HOST, tag="flowhawk", procid="9", fmt="cef")
    assert msg == f"<162>May  1 10:05:03 {HOST} flowhawk[9]: {cef_message(doc)}".encode()


def test_event_time_falls_back_to_start_then_now() -> None:
    assert event_time({"ts_start": "2026-05-01T09:55:00"}) == datetime(
        2026, 5, 1, 9, 55, tzinfo=UTC
    )
    before = datetime.now(UTC)
    assert before <= event_time({"ts_end": "not a time"}) <= datetime.now(UTC)


def test_cef_payload_is_cef_message_escaped() -> None:
    doc = _docs()[2]
    out = SyslogOutput(_settings(format="cef"), Path("."))
    msg = out.message(doc).decode()
    assert msg.endswith("] " + cef_message(doc))
    header, ext = _cef(cef_message(_docs()[0]))
    assert header[:2] == ["CEF:0", "flowhawk"] and header[4:] == ["N1", "beaconing", "9"]
    assert ext["msg"] == REASON
    assert "\\=" in cef_message(_docs()[0]) and "\n" not in cef_message(_docs()[0])


def test_framing_counts_bytes_and_lf_framing_escapes_line_feeds() -> None:
    assert frame("é".encode(), "octet-counting") == b"2 \xc3\xa9"
    assert frame(b"a\nb", "lf") == b"a\\nb\n"
    assert truncate_utf8("aé".encode(), 2) == b"a"
    assert truncate_utf8(b"abc", 5) == b"abc"


def test_settings_defaults_and_errors_name_the_setting(tmp_path: Path) -> None:
    assert "syslog" in OUTPUTS
    assert list(get_args(Facility)) == list(FACILITIES)  # every name has its code
    (udp,) = validate([{"name": "s", "type": "syslog", "rfc": 3164}], "cfg")
    assert isinstance(udp, SyslogOutput.Settings)
    assert (udp.transport, udp.effective_port, udp.rfc, udp.format) == ("udp", 514, "3164", "json")
    assert (udp.facility, udp.app_name, udp.msgid, udp.framing) == (
        "local0",
        "flowhawk",
        "event",
        "octet-counting",
    )
    assert _settings(transport="tls").effective_port == 6514
    bad = {
        "ca_file": "'ca_file': Value error, is only used with transport = 'tls'",
        "facility": "'facility': Input should be 'kern'",
        "app_name": "'app_name': Value error, 'a b' must be printable ASCII without spaces",
        "transport": "'transport': Input should be 'udp', 'tcp' or 'tls'",
        "port": "'port': Input should be less than or equal to 65535",
    }
    values = {"ca_file": "/x", "facility": "local9", "app_name": "a b", "transport": "sctp"}
    for key, message in bad.items():
        item = {"name": "s", "type": "syslog", key: values.get(key, 70000)}
        with pytest.raises(ConfigError, match="cfg: \\[\\[outputs\\]\\] #1 \\(s\\): ") as err:
            validate([item], "cfg")
        assert message in str(err.value)
    key_only = {"name": "s", "type": "syslog", "transport": "tls", "key_file": "/k"}
    with pytest.raises(ConfigError, match="'key_file': Value error, needs cert_file"):
        validate([key_only], "cfg")
    with pytest.raises(ConfigError, match=r"syslog output 's' \(tls 127.0.0.1:6514\): ca_file "):
        SyslogOutput(_settings(name="s", transport="tls", ca_file=tmp_path / "none.pem"), tmp_path)


# -- against rsyslogd -------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def receiver(tmp_path: Path, certs: Certs):
    skip_without_rsyslogd()
    with Rsyslog(tmp_path / "rsyslog", certs) as daemon:
        yield daemon


def _to(receiver: Rsyslog, transport: str, tmp_path: Path, **kw: Any) -> SyslogOutput:
    if transport == "tls":
        kw.setdefault("ca_file", receiver.certs.ca)
    port = receiver.ports[kw.pop("input", transport)]
    return _output(tmp_path, transport=transport, port=port, **kw)


def _deliver(out: SyslogOutput, docs: list[dict[str, Any]]) -> None:
    try:
        out.send(docs)
    finally:
        out.close()


def _payload_id(message: dict[str, Any], fmt: str) -> str:
    text = message["msg"].lstrip(" ")
    return json.loads(text)["id"] if fmt == "json" else _cef(text)[1]["externalId"]


ROUTES = [("udp", "5424"), ("tcp", "5424"), ("tls", "5424"), ("udp", "3164"), ("tcp", "3164")]
CASES = [(transport, rfc, fmt) for fmt in ("json", "cef") for transport, rfc in ROUTES]


@pytest.mark.parametrize(("transport", "rfc", "fmt"), CASES)
def test_rsyslog_receives_every_event(
    receiver: Rsyslog, tmp_path: Path, transport: str, rfc: str, fmt: str
) -> None:
    docs = _docs()
    _deliver(_to(receiver, transport, tmp_path, rfc=rfc, format=fmt), docs)
    got = receiver.wait_for(3)
    time.sleep(0.05)  # anything extra would have arrived by now
    got = receiver.messages()
    assert len(got) == 3
    by_id = {_payload_id(m, fmt): m for m in got}
    assert set(by_id) == set(SEVERITIES)
    for doc in docs:
        m = by_id[doc["id"]]
        sev = SEVERITIES[doc["id"]]
        assert (m["input"], m["pri"], m["facility"], m["severity"]) == (
            transport,
            str(LOCAL4 * 8 + sev),
            str(LOCAL4),
            str(sev),
        )
        assert (m["hostname"], m["app"], m["procid"]) == (HOST, "flowhawk", str(os.getpid()))
        text = m["msg"]
        if rfc == "5424":
            assert m["msgid"] == "event"
            assert m["time"] == doc["ts_end"]
            assert m["sd_parsed"] == {
                "flowhawk@32473": {
                    "id": doc["id"],
                    "risk": format(doc["risk"], "g"),
                    "site": doc["site"],
                    "methods": ",".join(doc["methods"]),
                }
            }
        else:
            prefix = f"<{m['pri']}>{STAMPS_3164[doc['id']]} {HOST} flowhawk[{os.getpid()}]:"
            assert m["raw"].startswith(prefix + " ")
            assert (m["msgid"], m["sd"]) == ("-", "-")
            text = text.removeprefix(" ")  # rsyslog keeps the space after the tag's colon
        if fmt == "json":
            assert json.loads(text) == doc
        else:
            assert text == cef_message(doc)
            header, ext = _cef(text)
            assert header[4:6] == [doc["methods"][0], doc["alarms"][0]["name"]]
            assert (ext["externalId"], ext["msg"], ext["cs2"]) == (
                doc["id"],
                doc["reason"],
                doc["site"],
            )
            if ":" in doc["src_ip"]:
                assert (ext["c6a2"], ext["c6a3"], ext["proto"]) == (
                    doc["src_ip"],
                    doc["dst_ip"],
                    "UDP",
                )
                assert "src" not in ext
            else:
                assert (ext["src"], ext["dst"], ext["dpt"]) == (
                    doc["src_ip"],
                    doc["dst_ip"],
                    str(doc["dst_port"]),
                )


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_line_feed_framing(receiver: Rsyslog, tmp_path: Path, transport: str) -> None:
    docs = _docs()
    _deliver(_to(receiver, transport, tmp_path, framing="lf"), docs)
    got = receiver.wait_for(3)
    assert [json.loads(m["msg"]) for m in got] == docs  # one connection: in order


def test_large_event_arrives_whole_over_tcp(receiver: Rsyslog, tmp_path: Path) -> None:
    doc = _docs()[0]
    doc["alarms"] = [_alarm("N1", f"beaconing {i}", 0.9) for i in range(150)]
    out = _to(receiver, "tcp", tmp_path)
    assert len(out.message(doc)) > 40_000
    _deliver(out, [doc])
    (m,) = receiver.wait_for(1)
    assert json.loads(m["msg"]) == doc


def test_udp_cuts_long_messages_and_warns_once(
    receiver: Rsyslog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doc = _docs()[0]
    doc["alarms"] = [_alarm("N1", f"beaconing {i}", 0.9) for i in range(10)]
    out = _to(receiver, "udp", tmp_path, max_udp=1000)
    full = out.message(doc)
    with caplog.at_level(logging.WARNING, logger="flowhawk.outputs.syslog"):
        _deliver(out, [doc, doc])
    got = receiver.wait_for(2)
    assert [m["raw"].encode() for m in got] == [full[:1000]] * 2
    assert out.truncated == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert f"a message of {len(full)} bytes was cut to max_udp = 1000 bytes" in warnings[0]


def test_bom_is_written_only_when_asked(receiver: Rsyslog, tmp_path: Path) -> None:
    doc = _docs()[0]
    _deliver(_to(receiver, "tcp", tmp_path, bom=True), [doc])
    (m,) = receiver.wait_for(1)
    assert m["msg"].startswith("\ufeff{")  # rsyslog keeps it: a JSON parser would not
    assert json.loads(m["msg"].removeprefix("\ufeff")) == doc


def test_default_hostname_is_this_machine(receiver: Rsyslog, tmp_path: Path) -> None:
    out = SyslogOutput(
        SyslogOutput.Settings(name="s", port=receiver.ports["udp"], timeout=3), tmp_path
    )
    _deliver(out, _docs()[:1])
    (m,) = receiver.wait_for(1)
    assert m["hostname"] == local_hostname() == out.hostname
    assert local_hostname() in (socket.getfqdn(), socket.gethostname())
    assert m["facility"] == "16"  # local0


def test_tls_verifies_the_receiver(receiver: Rsyslog, tmp_path: Path) -> None:
    other = make_certs(tmp_path / "other", "another CA")
    doc = _docs()[0]
    for kw in ({"ca_file": other.ca}, {"ca_file": None}, {"server_name": "wrong.example"}):
        out = _to(receiver, "tls", tmp_path, **kw)
        with pytest.raises(DeliveryError, match="certificate") as err:
            _deliver(out, [doc])
        assert f"syslog output 'siem' (tls 127.0.0.1:{receiver.ports['tls']})" in str(err.value)
    _deliver(_to(receiver, "tls", tmp_path, server_name="localhost"), [_docs()[1]])
    _deliver(_to(receiver, "tls", tmp_path, ca_file=None, verify=False), [_docs()[2]])
    got = receiver.wait_for(2)
    time.sleep(0.05)
    ids = [json.loads(m["msg"])["id"] for m in receiver.messages()]
    assert sorted(ids) == ["ev-0002-lateral", "ev-0003-v6"]  # nothing of the rejected ones
    assert len(got) == 2


def test_tls_client_certificate(receiver: Rsyslog, tmp_path: Path, certs: Certs) -> None:
    out = _to(
        receiver,
        "tls",
        tmp_path,
        input="tls_client",
        cert_file=certs.client_cert,
        key_file=certs.client_key,
    )
    _deliver(out, _docs())
    got = receiver.wait_for(3)
    assert {m["input"] for m in got} == {"tls_client"}
    assert [json.loads(m["msg"]) for m in got] == _docs()


def test_receiver_down_fails_fast_then_delivers_once_up(tmp_path: Path, certs: Certs) -> None:
    skip_without_rsyslogd()
    port = free_port()
    out = _output(tmp_path, transport="tcp", port=port, timeout=2)
    start = time.monotonic()
    with pytest.raises(DeliveryError, match=f"syslog output 'siem' \\(tcp 127.0.0.1:{port}\\)"):
        out.send(_docs())
    assert time.monotonic() - start < 1.5
    with Rsyslog(tmp_path / "rsyslog", certs, ports={"tcp": port}) as daemon:
        out.send(_docs())
        assert [json.loads(m["msg"])["id"] for m in daemon.wait_for(3)] == list(SEVERITIES)
        out.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_reconnects_after_the_receiver_restarts(
    tmp_path: Path, certs: Certs, transport: str
) -> None:
    skip_without_rsyslogd()
    first = Rsyslog(tmp_path / "first", certs).start()
    try:
        out = _to(first, transport, tmp_path)
        out.send(_docs()[:1])
        assert len(first.wait_for(1)) == 1
    finally:
        first.stop()
    with Rsyslog(tmp_path / "second", certs, ports=first.ports) as second:
        out.send(_docs()[1:])  # the old connection is dead: reconnect, no loss
        got = second.wait_for(2)
        assert [json.loads(m["msg"])["id"] for m in got] == ["ev-0002-lateral", "ev-0003-v6"]
        out.close()


def test_receiver_factories_for_every_output_tests(tmp_path: Path) -> None:
    with syslog_receiver(tmp_path / "up") as (item, received):
        (settings,) = validate([item], "cfg")
        _deliver(SyslogOutput(settings, tmp_path), _docs())
        deadline = time.monotonic() + 10
        while len(received()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(received()) == sorted(SEVERITIES)
    (down,) = validate([syslog_down(tmp_path)], "cfg")
    with pytest.raises(DeliveryError, match="cannot connect"):
        SyslogOutput(down, tmp_path).send(_docs())
