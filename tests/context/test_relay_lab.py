"""N9 relays on real traffic: nginx relaying an outsider's requests to an internal API.

A private network namespace holds three addresses on its loopback: an outside client,
a web server running Debian's nginx as a reverse proxy, and an API server (Python's
http.server) behind it. The outsider fetches files of different sizes through the
proxy, each request on its own connection; nginx opens a new upstream connection for
each (HTTP/1.0 to the upstream, its default). tcpdump records it all, ``analyze``
reads the capture with the outsider on a threat feed, and the inbound event must carry
the web server as a relay of exactly those requests into the API.

Needs root (network namespaces), ``ip``, ``tcpdump`` and nginx (``apt-get install
nginx-light``; installed here when missing, as ``scripts/install.sh`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowhawk import config
from flowhawk.pipeline import run
from tests.polling import wait_for

OUTSIDER, WEB, API = "81.2.69.50", "10.0.0.80", "10.0.0.90"
SIZES = [3_000, 40_000, 9_000, 120_000, 20_000]  # bytes of each file fetched through the proxy

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {web}:80;
        location / {{
            proxy_pass http://{api}:8080;
            proxy_bind {web};
        }}
    }}
}}
"""


def _which_nginx() -> str | None:
    found = shutil.which("nginx")  # /usr/sbin is not on every user's PATH
    return found or next((p for p in ["/usr/sbin/nginx"] if Path(p).exists()), None)


def _nginx() -> str:
    found = _which_nginx()
    if found is None and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], capture_output=True)
        found = _which_nginx()
    if found is None:
        pytest.skip("nginx is not installed and could not be (apt-get install nginx-light)")
    return found


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tcpdump"):
        pytest.skip("needs root, ip and tcpdump to build a private network namespace")
    nginx = _nginx()
    ns = f"fhrelay{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen] = []
    try:
        inside = ["ip", "netns", "exec", ns]
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        for addr in (OUTSIDER, WEB, API):
            subprocess.run([*inside, "ip", "addr", "add", f"{addr}/32", "dev", "lo"], check=True)
        files = tmp_path / "files"
        files.mkdir()
        for k, size in enumerate(SIZES):
            (files / f"f{k}").write_bytes(bytes((k * 7 + i) % 251 for i in range(size)))
        procs.append(
            subprocess.Popen(
                [*inside, "python3", "-m", "http.server", "--bind", API, "8080"],
                cwd=files,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp_path, web=WEB, api=API))
        procs.append(
            subprocess.Popen(
                [*inside, nginx, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(
            lambda: (
                subprocess.run(
                    [*inside, "curl", "-sf", "-o", "/dev/null", f"http://{WEB}/f0"]
                ).returncode
                == 0
            ),
            timeout=20,
            what="nginx and the API to answer",
        )
        yield ns, tmp_path
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def test_nginx_relaying_an_outsider_into_the_api_is_a_relay(lab):
    ns, tmp = lab
    inside = ["ip", "netns", "exec", ns]
    pcap = tmp / "relay.pcap"
    dump = subprocess.Popen(
        [*inside, "tcpdump", "-i", "lo", "-U", "-w", str(pcap), "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # tcpdump announces nothing reliable on stderr before it listens
    for k in range(len(SIZES)):
        subprocess.run(
            [*inside, "curl", "-sf", "--interface", OUTSIDER, "-o", "/dev/null",
             f"http://{WEB}/f{k}"],
            check=True,
        )  # fmt: skip
        time.sleep(0.4)
    time.sleep(1.0)
    dump.terminate()
    dump.wait(timeout=10)
    assert pcap.stat().st_size > 0

    (tmp / "feed.txt").write_text(f"{OUTSIDER}\n")
    cfg_path = tmp / "flowhawk.toml"
    cfg_path.write_text(
        '[network]\ninternal = ["10.0.0.0/8"]\n'
        '[[intel.feeds]]\nsource = "feed.txt"\ncategory = "c2"\n'
    )
    run([pcap], config.load(cfg_path), tmp / "data", tmp / "out")
    events = [json.loads(line) for line in (tmp / "out" / "events.jsonl").open()]
    inbound = [e for e in events if e["src_ip"] == OUTSIDER and e["dst_ip"] == WEB]
    assert inbound, events
    relays = [r for e in inbound for r in e["relays"]]
    assert relays, inbound
    relay = relays[0]
    assert relay["host"] == WEB
    assert relay["outbound"] == f"{WEB}→{API}:8080"
    assert relay["pairs"] == len(SIZES)
    # the hop graph of the event holds the relayed calls into the API
    edges = {(e["src"], e["dst"], e["dst_port"]) for e in inbound[0]["hops"]["edges"]}
    assert (WEB, API, 8080) in edges, edges
