"""``flowhawk serve`` end to end: exporters in, events out through the API, a real
rsyslogd and a webhook; tokens added while it runs; a clean stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from flowhawk import config as cfgmod
from flowhawk.collect.replay import ExportSettings, replay
from tests.outputs import rsyslog
from tests.outputs.receivers import webhook_receiver
from tests.serve.process import Served, conn_log, wait_until

pytestmark = pytest.mark.skipif(not rsyslog.available(), reason="needs Debian's rsyslogd")


def serve_config(syslog_port: int, hook_url: str) -> dict:
    return {
        "learning": {"period": "5m"},
        "sites": [{"name": "a", "networks": ["10.1.0.0/16"]}],
        "collect": {"listen": ["127.0.0.1:0"], "rollover": "1s", "checkpoint": "2s"},
        "serve": {"listen": "127.0.0.1:0"},
        "outputs": [
            {
                "name": "siem",
                "type": "syslog",
                "transport": "tcp",
                "port": syslog_port,
                "retry_min": 0.2,
            },
            {
                "name": "hook",
                "type": "webhook",
                "url": hook_url,
                "secret": "s" * 32,
                "retry_min": 0.2,
            },
        ],
    }


def test_serve_end_to_end(tmp_path):
    certs = rsyslog.make_certs(tmp_path / "certs")
    with rsyslog.Rsyslog(tmp_path / "rsyslog", certs) as syslogd, webhook_receiver() as hook:
        served = Served(serve_config(syslogd.ports["tcp"], hook.url), tmp_path / "data").start()
        try:
            assert served.token.startswith("fh_"), served.output()
            api = served.client()
            assert api.get("/api/v1/health").json() == {"status": "ok"}
            assert api.get("/api/v1/events").json()["total"] == 0
            log = conn_log(tmp_path / "conn.log")
            replay([log], f"127.0.0.1:{served.port}", ExportSettings("ipfix"), cfgmod.load(None))
            page = wait_until(
                lambda: (p := api.get("/api/v1/events").json())["total"] >= 5 and p,
                60,
                "5 new-communication events",
            )
            ids = {e["id"] for e in page["items"]}
            assert {e["dst_ip"] for e in page["items"]} >= {
                f"198.51.100.{20 + i}" for i in range(5)
            }
            assert all(
                "M1" in e["methods"] for e in page["items"] if e["dst_ip"].startswith("198.")
            )
            # every event reaches rsyslog and the webhook, with its id
            got = syslogd.wait_for(len(ids), timeout=30)
            assert {m["sd_parsed"]["flowhawk@32473"]["id"] for m in got} >= ids
            assert {json.loads(m["msg"])["id"] for m in got} >= ids
            wait_until(lambda: set(hook.ids()) >= ids, 30, "webhook deliveries")
            # a token added with the CLI while the service runs works at once
            new = subprocess.run(
                [sys.executable, "-m", "flowhawk", "tokens", "add", "--user", "admin", "-q",
                 "--data", str(served.data)],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            assert served.client(new).get("/api/v1/me").json()["user"] == "admin"
            metrics = api.get("/api/v1/metrics").text
            assert 'flowhawk_output_delivered_events_total{output="siem"}' in metrics
            assert "flowhawk_collector_datagrams_total" in metrics
            assert (
                'flowhawk_exporter_flows_total{domain="0",exporter="127.0.0.1",protocol="ipfix"}'
                in metrics
            )
            assert 'flowhawk_events_published_total{method="M1"}' in metrics
        finally:
            code = served.stop(signal.SIGTERM)
        assert code == 0, served.output()
        assert (served.data / "state").is_dir()
        assert "stopped:" in served.output()


def test_api_over_tls(tmp_path):
    """With [serve] tls_cert/tls_key the API answers HTTPS only, verifiable with the CA."""
    import ssl

    import httpx

    certs = rsyslog.make_certs(tmp_path / "certs")
    config = {
        "collect": {"listen": ["127.0.0.1:0"]},
        "serve": {"listen": "127.0.0.1:0", "tls_cert": str(certs.cert), "tls_key": str(certs.key)},
    }
    served = Served(config, tmp_path / "data").start()
    try:
        assert served.url.startswith("https://")
        with httpx.Client(
            base_url=served.url, verify=ssl.create_default_context(cafile=str(certs.ca)), timeout=10
        ) as api:
            assert api.get("/api/v1/health").json() == {"status": "ok"}
            assert api.get("/api/v1/events").status_code == 401
            auth = {"Authorization": f"Bearer {served.token}"}
            assert api.get("/api/v1/events", headers=auth).json()["total"] == 0
        unverified = httpx.Client(base_url=served.url, timeout=10)  # system CAs only
        with unverified, pytest.raises(httpx.ConnectError):
            unverified.get("/api/v1/health")
        plain = served.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{plain}/api/v1/health", timeout=5).raise_for_status()
    finally:
        assert served.stop() == 0, served.output()


@pytest.mark.slow
def test_demo_mode_shows_live_events_within_a_minute(tmp_path):
    """`serve --demo` feeds itself the Acme network: the C2 beacon is an event within 60 s;
    its DNS arrives live too (N4, N5, names next to addresses)."""
    import time

    t0 = time.monotonic()
    served = Served(None, tmp_path / "data", ["--demo", "--listen", "127.0.0.1:0"]).start()
    try:
        api = served.client()
        found = wait_until(
            lambda: api.get("/api/v1/events", params={"host": "203.0.113.66"}).json()["items"],
            90,
            "the demo's C2 events",
            every=1.0,
        )
        took = time.monotonic() - t0
        print(f"first C2 event after {took:.0f} s")
        assert took < 60, f"the first C2 event took {took:.0f} s"
        assert found[0]["src_ip"] == "10.10.1.23" and found[0]["site"] == "hq"
        # the resolver's dns.log is followed live: the DGA burst, the tunnel, names
        for method, client in (("N4", "10.10.1.23"), ("N5", "10.10.1.35")):
            (event,) = wait_until(
                lambda m=method: api.get("/api/v1/events", params={"method": m}).json()["items"],
                60,
                f"the demo's {method} event",
                every=1.0,
            )
            assert event["src_ip"] == client
        c2 = api.get("/api/v1/events", params={"host": "203.0.113.66"}).json()["items"]
        assert any(e["dst_names"] for e in c2), c2
    finally:
        assert served.stop() == 0, served.output()


def test_intel_feeds_reload_on_schedule_and_intel_option(tmp_path):
    """[intel] refresh reloads changed feeds while serving; --intel adds feeds ad hoc."""
    feed = tmp_path / "feed.txt"
    feed.write_text("198.51.100.7\n")
    extra = tmp_path / "extra.txt"
    extra.write_text("203.0.113.99\n")
    config = {
        "collect": {"listen": ["127.0.0.1:0"]},
        "serve": {"listen": "127.0.0.1:0"},
        "intel": {"refresh": "1s", "feeds": [{"source": str(feed), "name": "mine"}]},
    }
    served = Served(config, tmp_path / "data", ["--intel", str(extra)]).start()
    try:
        api = served.client()
        first = api.get("/api/v1/intel").json()
        assert {f["name"] for f in first["feeds"]} == {"mine", "extra"}
        look = api.get("/api/v1/intel/lookup", params={"value": "203.0.113.99"}).json()
        assert look["listed"] is True
        assert api.get("/api/v1/intel/lookup", params={"value": "192.0.2.44"}).json() == {
            "value": "192.0.2.44",
            "kind": "ip",
            "listed": False,
        }
        feed.write_text("198.51.100.7\n192.0.2.44\n")
        wait_until(
            lambda: api.get("/api/v1/intel/lookup", params={"value": "192.0.2.44"}).json()[
                "listed"
            ],
            20,
            "the changed feed to be reloaded",
        )
        now = api.get("/api/v1/intel").json()
        assert now["version"] != first["version"] and now["indicators"] == 3
        assert (
            f'flowhawk_intel_indicators{{version="{now["version"]}"}} 3.0'
            in api.get("/api/v1/metrics").text
        )
    finally:
        assert served.stop() == 0, served.output()
    assert (served.data / "intel" / "current").exists()
