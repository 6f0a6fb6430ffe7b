"""The webhook output against a real HTTP server: body, headers, signature, failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from flowhawk.errors import ConfigError
from flowhawk.outputs import validate
from flowhawk.outputs.base import DeliveryError
from flowhawk.outputs.delivery import Delivery
from tests.outputs.receivers import (
    HOST,
    Request,
    build,
    docs,
    free_port,
    ids_of,
    wait_for,
    webhook_receiver,
)

SECRET = "correct horse battery staple"


def verify(secret: str, request: Request, now: float, window: float = 300.0) -> bool:
    """What a receiver does: fresh timestamp, HMAC over "<timestamp>." + raw body."""
    timestamp = request.headers["x-flowhawk-timestamp"]
    if abs(now - int(timestamp)) > window:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), request.headers["x-flowhawk-signature"])


def settings(url: str, **kw):
    return {"name": "hook", "type": "webhook", "url": url, "timeout": 2.0, **kw}


def test_batch_body_headers_and_signature(tmp_path):
    with webhook_receiver() as r:
        out = build(
            settings(r.url, secret=SECRET, headers={"Authorization": "Bearer t0k"}), tmp_path
        )
        batch = docs(3)
        out.send(batch)
        out.send([])  # nothing to send: no request
        out.close()
        out.close()
        [req] = r.requests
        assert req.path == "/hook"
        assert json.loads(req.body) == {"events": batch}
        assert req.headers["content-type"] == "application/json"
        assert req.headers["x-flowhawk-event-ids"] == "ev0000,ev0001,ev0002"
        assert req.headers["authorization"] == "Bearer t0k"
        assert req.headers["user-agent"].startswith("flowhawk/")
        assert abs(int(req.headers["x-flowhawk-timestamp"]) - time.time()) < 5
        assert req.headers["x-flowhawk-signature"].startswith("sha256=")
        assert verify(SECRET, req, now=time.time())
        # what the receiver must reject
        assert not verify("wrong secret", req, now=time.time())
        tampered = Request(req.path, req.headers, req.body.replace(b"ev0001", b"ev0009"), 200, 0)
        assert not verify(SECRET, tampered, now=time.time())
        assert not verify(SECRET, req, now=time.time() + 301)  # replayed too late


def test_unsigned_without_secret(tmp_path):
    with webhook_receiver() as r:
        build(settings(r.url), tmp_path).send(docs(1))
        assert "x-flowhawk-signature" not in r.requests[0].headers


def test_failures_are_retried_with_backoff_until_delivered(tmp_path):
    with webhook_receiver() as r:
        r.fail(3, status=503)
        out = build(settings(r.url, secret=SECRET, retry_min=0.1, retry_max=1.0, batch=4), tmp_path)
        d = Delivery([out], [], tmp_path)
        d.start()
        try:
            d.publish(docs(10))
            wait_for(lambda: len(set(r.ids())) == 10, what="all events after failures")
        finally:
            d.stop()
        assert [q.status for q in r.requests[:4]] == [503, 503, 503, 200]
        assert sorted(set(r.ids())) == ids_of(docs(10))  # at least once: dedupe on id
        assert r.ids() == ids_of(docs(10))  # here exactly once, in order
        # three waits of at least 0.05, 0.1 and 0.2 s (half of each doubling bound)
        gaps = [b.at - a.at for a, b in zip(r.requests[:3], r.requests[1:4], strict=True)]
        assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2
        assert all(verify(SECRET, q, now=time.time()) for q in r.requests)
        assert (
            d.registry.get_sample_value("flowhawk_output_failures_total", {"output": "hook"}) == 3
        )


def test_error_answers_and_timeouts_raise(tmp_path):
    with webhook_receiver() as r:
        out = build(settings(r.url, timeout=0.5), tmp_path)
        r.fail(1, status=401)
        with pytest.raises(DeliveryError, match=r"HTTP 401 .*refuses the request"):
            out.send(docs(1))
        r.fail(1, status=500)
        with pytest.raises(DeliveryError, match="HTTP 500") as info:
            out.send(docs(1))
        assert "refuses" not in str(info.value)
        r.fail(1, status=429)
        with pytest.raises(DeliveryError, match="HTTP 429") as info:
            out.send(docs(1))
        assert "refuses" not in str(info.value)
        r.delay = 1.5
        t0 = time.monotonic()
        with pytest.raises(DeliveryError, match="no answer within timeout"):
            out.send(docs(1))
        assert time.monotonic() - t0 < 1.4
        r.delay = 0.0
        out.send(docs(1, start=7))
        assert "ev0007" in r.ids()
        out.close()
    with pytest.raises(DeliveryError, match="request failed"):
        build(settings(f"http://{HOST}:{free_port()}/x"), tmp_path).send(docs(1))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"url": "ftp://example.org/x"}, "'url'.*not an http:// or https:// URL"),
        ({"url": "http://"}, "'url'"),
        ({"headers": {"X-Flowhawk-Signature": "x"}}, "set by the output itself"),
        ({"headers": {"Bad Name": "x"}}, "not a valid header name"),
        ({"headers": {"X-A": "one\ntwo"}}, "one line of ASCII"),
        ({"secret": ""}, "'secret'"),
        ({"ca_file": "/x.pem"}, "only used with an https:// url"),
        ({"verify_tls": False}, "unknown key 'verify_tls'"),
    ],
)
def test_settings_errors_name_the_key(extra, message):
    item = {"name": "hook", "type": "webhook", "url": "http://example.org/hook", **extra}
    with pytest.raises(ConfigError, match=message) as info:
        validate([item], "flowhawk.toml")
    assert "[[outputs]] #1 (hook)" in str(info.value)


def test_unreadable_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="ca_file"):
        build(settings("https://example.org/x", ca_file=str(tmp_path / "missing.pem")), tmp_path)
