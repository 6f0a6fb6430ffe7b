"""The email output against aiosmtpd's real SMTP server: message, STARTTLS, TLS, AUTH."""

from __future__ import annotations

import json

import pytest

from flowhawk.errors import ConfigError
from flowhawk.outputs import validate
from flowhawk.outputs.base import DeliveryError
from tests.outputs.receivers import (
    HOST,
    build,
    event_doc,
    free_port,
    ids_of,
    smtp_receiver,
    tls_files,
)


def settings(port: int, **kw):
    return {
        "name": "soc-mail",
        "type": "email",
        "smtp_host": HOST,
        "smtp_port": port,
        "sender": "flowhawk <nba@example.org>",
        "to": ["soc@example.org", "Oncall <oncall@example.org>"],
        "timeout": 5.0,
        **kw,
    }


def batch():
    return [
        event_doc(1, risk=42.5, methods=("N1",), site="hq"),
        event_doc(2, risk=91.0, methods=("M27", "M29"), site="branch"),
        event_doc(3, risk=63.0, methods=("N6",), site="hq"),
    ]


def test_subject_text_and_json_attachment(tmp_path):
    subject = "{count} events at {site}: max {max_risk:.0f} [{methods}] via {name}"
    with smtp_receiver() as r:
        out = build(settings(r.port, subject=subject), tmp_path)
        out.send(batch())
        out.send([])
        out.close()
        out.close()
        [(mail_from, rcpt_tos, _)] = r.envelopes
        assert mail_from == "nba@example.org"
        assert rcpt_tos == ["soc@example.org", "oncall@example.org"]
        [msg] = r.messages()
        assert msg["Subject"] == "3 events at branch, hq: max 91 [M27, M29, N1, N6] via soc-mail"
        assert msg["From"] == "flowhawk <nba@example.org>"
        assert "oncall@example.org" in msg["To"] and msg["Message-ID"].endswith("@example.org>")

        text = msg.get_body(preferencelist=("plain",)).get_content()
        lines = text.splitlines()
        assert lines[0] == "3 event(s) from flowhawk, highest risk 91.0:"
        assert lines[2] == " risk  start  source -> destination:port  methods  reason"
        events = lines[3:6]
        # riskiest first: risk, start, source -> destination:port, methods, reason
        assert events[0] == (
            " 91.0  2024-05-01T10:02:00.000000Z  10.0.0.3 -> [2001:db8::7]:443  M27,M29  "
            'beacon #2: regular contacts every 60 s, "quoted" | piped = sign'
        )
        assert events[1].startswith(
            " 63.0  2024-05-01T10:03:00.000000Z  10.0.0.4 -> 203.0.113.7:443  N6  "
        )
        assert events[2].startswith(" 42.5  ")

        [attachment] = list(msg.iter_attachments())
        assert attachment.get_filename() == "events.json"
        assert attachment.get_content_type() == "application/json"
        assert json.loads(attachment.get_content()) == batch()
        assert r.ids() == ids_of(batch())


def test_default_subject(tmp_path):
    with smtp_receiver() as r:
        build(settings(r.port), tmp_path).send(batch()[:1])
        assert r.messages()[0]["Subject"] == "[flowhawk] 1 event(s), max risk 42 (hq)"


def test_starttls_with_login(tmp_path):
    cert, _ = tls_files()
    with smtp_receiver(starttls=True, login=("nba", "pa55")) as r:
        s = settings(
            r.port, security="starttls", ca_file=str(cert), username="nba", password="pa55"
        )
        build(s, tmp_path).send(batch())
        assert r.ids() == ids_of(batch())
        wrong = build({**s, "password": "nope"}, tmp_path)
        with pytest.raises(DeliveryError, match="login as 'nba' refused"):
            wrong.send(batch())
        # without TLS the server refuses mail (it requires STARTTLS)
        with pytest.raises(DeliveryError, match="email output 'soc-mail'"):
            build(settings(r.port), tmp_path).send(batch())
        # the system CAs do not know the self-signed certificate ...
        untrusted = build({**s, "ca_file": None}, tmp_path)
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.send(batch())
        # ... unless verification is off (encryption only)
        build({**s, "ca_file": None, "verify": False}, tmp_path).send(batch()[:1])
        assert len(r.envelopes) == 2


def test_implicit_tls(tmp_path):
    cert, _ = tls_files()
    with smtp_receiver(implicit_tls=True) as r:
        build(settings(r.port, security="ssl", ca_file=str(cert)), tmp_path).send(batch())
        assert r.ids() == ids_of(batch())


def test_starttls_not_offered(tmp_path):
    cert, _ = tls_files()
    with smtp_receiver() as r:
        out = build(settings(r.port, security="starttls", ca_file=str(cert)), tmp_path)
        with pytest.raises(DeliveryError, match="does not support"):
            out.send(batch())
        assert r.envelopes == []


def test_server_down(tmp_path):
    with pytest.raises(DeliveryError, match="Connection refused"):
        build(settings(free_port()), tmp_path).send(batch())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"subject": "{count} at {where}"},
            r"'subject'.*unknown field \{where\}; known: \{count\}",
        ),
        ({"subject": "{max_risk:.0q}"}, "'subject'.*not a valid template"),
        ({"to": []}, "'to'"),
        ({"to": ["not an address"]}, "'to.*not an email address"),
        ({"sender": "x\n@y"}, "'sender'.*not an email address"),
        ({"username": "u"}, "username and password go together"),
        ({"ca_file": "/ca.pem"}, "ca_file is only used with security"),
        ({"security": "tls"}, "'security'"),
    ],
)
def test_settings_errors_name_the_key(extra, message):
    item = {
        "name": "m",
        "type": "email",
        "smtp_host": "mail.example.org",
        "sender": "a@example.org",
        "to": ["b@example.org"],
        **extra,
    }
    with pytest.raises(ConfigError, match=message):
        validate([item], "flowhawk.toml")
    with pytest.raises(ConfigError, match="missing key 'smtp_host'"):
        validate([{"name": "m", "type": "email", "sender": "a@b.c", "to": ["b@c.d"]}], "f")
