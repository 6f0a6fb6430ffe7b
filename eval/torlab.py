"""A private Tor network on this machine, captured to pcap: labelled Tor flows for M26.

Real Tor traffic with labels by construction. ``run`` builds a small Tor network with
Debian's ``tor`` (``TestingTorNetwork 1``) inside two network namespaces of its own, so
nothing reaches the host's network:

* ``wan``: three directory authorities (keys from ``tor-gencert``), relays (guards,
  middles, exits with ``ExitPolicy accept *:*``: the namespace has no route out), an
  unlisted bridge (``PublishServerDescriptor 0``, never in the consensus), and the web
  servers the exits fetch from (HTTP on 10.77.9.1:80, HTTPS on 10.77.9.2:443). Each
  node has its own 10.77.x.y address on the namespace's loopback and binds to it.
* ``lan``: the Tor clients (192.168.77.x, one of them through the bridge; half of the
  others are stopped and started again every 40-150 s, like a browser being closed, so
  their connections are short), an onion service, and the traffic driver, joined to
  ``wan`` by a veth pair: every client flow crosses ``lan0``, as it would cross a
  site's uplink.

By default: 3 authorities, 8 relays (3 guards, 3 middles, 2 exits), the bridge, 12
clients and the onion service, 25 tor processes in namespaces ``fht<pid>-wan`` and
``fht<pid>-lan``.

Every interface has an Ethernet MTU of 1500 with segmentation offload off
(``gso_max_size``), so TCP segments are wire-sized; the uplink is shaped with ``tbf``
(40 Mbit/s down, 10 Mbit/s up) and relays carry Tor's own ``BandwidthRate``. The
kernel here has no ``netem``: there is no added latency (the script says so when the
qdisc is missing), so round trips are a LAN's, not the internet's. ORPorts follow a seeded mix close
to the public network's (9001 most, then 443, other Tor-ish ports, random high ports);
the bridge listens on a random high port.

The seeded traffic plan drives the clients' SOCKS ports for ``--minutes``: web-like
page loads (a page and several objects over parallel streams), bulk downloads,
uploads, long slow "chat" streams, idle spells, and onion-service fetches, plus a few
plain HTTPS fetches that do not use Tor. tcpdump writes ``lan.pcap`` (the uplink:
client ↔ relay) and ``wan.pcap`` (the wan loopback: relay ↔ relay, exits ↔ web
servers, directory uploads), headers only. flowhawk's own pcap reader then turns both
into flows (``flows.parquet``), each labelled from the manifest (``lab.json``: every
node's address, ports, role, fingerprint):

* ``tor``: to a relay's or the bridge's ORPort (``relay``, ``role`` name it);
* ``tor_dir``: to an authority's DirPort (votes, descriptor uploads);
* ``exit_web``: an exit fetching from the web servers (ordinary HTTP);
* ``https``: a lan host fetching HTTPS directly; ``other``: anything else.

Keys, circuits and timings are Tor's own and differ between runs; the topology, the
port mix and the traffic plan are fixed by ``--seed``. Generated data stays out of the
repository (``--out``, default /tmp/flowhawk-torlab/run-SEED). Processes and
namespaces are removed on exit, on error and on SIGINT/SIGTERM.

Needs root (namespaces), ``tor`` and ``tor-gencert`` (``apt-get install tor``),
tcpdump and openssl.

Run:  .venv/bin/python eval/torlab.py run [--seed 1] [--minutes 5] [--out DIR]
      .venv/bin/python eval/torlab.py flows DIR   # (re)derive flows.parquet
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LAN_PREFIX = "192.168.77"
GATEWAY = f"{LAN_PREFIX}.254"
WEB = "10.77.9.1"
WEB_TLS = "10.77.9.2"
ONION_PORT = 8080  # the onion service's web server, on the lan host's loopback
DOWN_RATE, UP_RATE = "40mbit", "10mbit"
DEFAULT_OUT = Path("/tmp/flowhawk-torlab")
SNAPLEN = 160


class LabError(RuntimeError):
    """The lab could not be built or run (the message says what is missing)."""


# -- topology ----------------------------------------------------------------------


@dataclass
class Node:
    nick: str
    role: str  # auth, guard, middle, exit, bridge, client, onion
    ns: str  # "lan" or "wan"
    address: str
    orport: int = 0
    dirport: int = 0
    socks: int = 0
    rate: int = 0  # Tor BandwidthRate, bytes/s (0: unlimited)
    bridge: bool = False  # a client that enters through the bridge
    sessions: bool = False  # a client that is stopped and started again (short sessions)
    fingerprint: str = ""
    v3ident: str = ""


def orport(rng: random.Random) -> int:
    """An ORPort drawn like the public network's: 9001 most, 443 next, then the rest."""
    r = rng.random()
    if r < 0.40:
        return 9001
    if r < 0.70:
        return 443
    if r < 0.82:
        return rng.choice([9030, 9002, 9010, 9100, 8443, 8080, 80, 993])
    return rng.randrange(10000, 65000)


def topology(seed: int, relays: int = 8, clients: int = 12, onion: bool = True) -> list[Node]:
    """The nodes of one lab network (roles, addresses, ports) for ``seed``."""
    rng = random.Random(f"topology-{seed}")
    nodes = [
        Node(f"auth{i}", "auth", "wan", f"10.77.0.{i}", orport(rng), rng.choice([80, 9030]))
        for i in (1, 2, 3)
    ]
    roles = ["guard", "middle", "exit"] * ((relays + 2) // 3)
    for i, role in enumerate(sorted(roles[:relays], key=["guard", "middle", "exit"].index)):
        rate = rng.choice([1, 2, 4, 8]) * 1_000_000
        nodes.append(Node(f"{role}{i + 1}", role, "wan", f"10.77.{1 + i % 4}.{10 + i}",
                          orport(rng), rate=rate))  # fmt: skip
    nodes.append(Node("bridge1", "bridge", "wan", "10.77.5.1", rng.randrange(10000, 65000)))
    for i in range(clients):
        nodes.append(Node(f"client{i + 1}", "client", "lan", f"{LAN_PREFIX}.{11 + i}",
                          socks=9050 + i, bridge=i == clients - 1,
                          sessions=i % 2 == 1 and i < clients - 1))  # fmt: skip
    if onion:
        nodes.append(Node("onion1", "onion", "lan", f"{LAN_PREFIX}.31"))
    return nodes


# -- traffic plan --------------------------------------------------------------------


def log_uniform(rng: random.Random, lo: float, hi: float) -> int:
    return round(lo * (hi / lo) ** rng.random())


def traffic_plan(seed: int, nodes: list[Node], seconds: float) -> list[dict[str, Any]]:
    """Seeded actions (``at`` seconds from the start) for every client and the https host."""
    rng = random.Random(f"traffic-{seed}")
    clients = [n for n in nodes if n.role == "client"]
    onion = any(n.role == "onion" for n in nodes)
    kinds = ["page"] * 12 + ["bulk"] * 3 + ["upload"] * 2 + ["chat"] * 2 + ["idle"] * 2
    kinds += ["onion"] * 2 if onion else []
    plan: list[dict[str, Any]] = []
    for c in clients:
        at, pace = rng.uniform(0, 10), rng.choice([5, 10, 20, 45])  # mean seconds between
        while at < seconds - 10:
            kind = rng.choice(kinds)
            act: dict[str, Any] = {"at": round(at, 2), "client": c.nick, "socks": c.socks}
            if kind == "page":
                act |= {"kind": "page", "page": log_uniform(rng, 8_000, 150_000),
                        "objects": [log_uniform(rng, 500, 60_000)
                                    for _ in range(rng.randint(2, 14))],
                        "parallel": rng.randint(2, 4)}  # fmt: skip
            elif kind == "bulk":
                act |= {"kind": "bulk", "size": log_uniform(rng, 500_000, 25_000_000)}
            elif kind == "upload":
                act |= {"kind": "upload", "size": log_uniform(rng, 20_000, 3_000_000)}
            elif kind == "chat":
                hold = max(5.0, min(rng.uniform(20, 120), seconds - at - 5))
                act |= {"kind": "chat", "hold": hold, "every": rng.uniform(2, 12)}
            elif kind == "onion":
                act |= {"kind": "onion", "page": log_uniform(rng, 5_000, 400_000)}
            else:
                act |= {"kind": "idle"}
            plan.append(act)
            gap = rng.expovariate(1 / pace) + (rng.uniform(30, 90) if kind == "idle" else 0)
            at += gap
    for _ in range(max(2, int(seconds // 60))):
        src = rng.choice(clients)
        plan.append({"at": round(rng.uniform(0, seconds - 10), 2), "client": src.nick,
                     "kind": "https", "bind": src.address,
                     "size": log_uniform(rng, 2_000, 2_000_000)})  # fmt: skip
    return sorted(plan, key=lambda a: (a["at"], a["client"]))


# -- web servers ----------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """``GET /bytes/N``: N bytes; ``GET /drip/SECONDS/EVERY``: a line every EVERY seconds;
    ``POST /upload``: reads the body, answers its length."""

    protocol_version = "HTTP/1.1"
    chunk = bytes(range(256)) * 256

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[0] == "bytes" and len(parts) == 2 and parts[1].isdigit():
            n = int(parts[1])
            self._head(n)
            while n > 0:
                piece = self.chunk[: min(n, len(self.chunk))]
                self.wfile.write(piece)
                n -= len(piece)
        elif parts[0] == "drip" and len(parts) == 3:
            hold, every = float(parts[1]), float(parts[2])
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            end = time.monotonic() + min(hold, 300)
            while time.monotonic() < end:
                self.wfile.write(b"message %f\n" % time.time())
                self.wfile.flush()
                time.sleep(every)
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        while n > 0:
            n -= len(self.rfile.read(min(n, 65536)) or b"x" * n)
        body = b"ok\n"
        self._head(len(body))
        self.wfile.write(body)

    def _head(self, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("Connection", "close")
        self.end_headers()


def serve(bind: str, port: int, cert: str | None, key: str | None) -> None:
    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


# -- traffic driver (runs inside the lan namespace) ------------------------------------


def socks_connect(socks_port: int, host: str, port: int, timeout: float = 60) -> socket.socket:
    """A TCP stream to ``host:port`` through the Tor SOCKS5 port on 127.0.0.1."""
    s = socket.create_connection(("127.0.0.1", socks_port), timeout=timeout)
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        raise OSError("SOCKS: no method accepted")
    name = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
    reply = _recv_exact(s, 4)
    if reply[1] != 0:
        raise OSError(f"SOCKS: connect to {host}:{port} refused (code {reply[1]})")
    bound = {1: 4, 4: 16}.get(reply[3]) or _recv_exact(s, 1)[0]
    _recv_exact(s, bound + 2)  # the bound address and port
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        piece = s.recv(n - len(data))
        if not piece:
            raise OSError("connection closed")
        data += piece
    return data


def http(s: socket.socket, host: str, path: str, body: int = 0) -> int:
    """Sends one request on ``s`` and reads the answer to the end; bytes received."""
    method = "POST" if body else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    head += f"Content-Length: {body}\r\n\r\n" if body else "\r\n"
    s.sendall(head.encode())
    block = b"u" * 16384
    while body > 0:
        s.sendall(block[: min(body, len(block))])
        body -= min(body, len(block))
    got = 0
    while piece := s.recv(65536):
        got += len(piece)
    s.close()
    return got


def act(a: dict[str, Any], onion_host: str | None) -> int:
    """One planned action; bytes received."""
    kind = a["kind"]
    if kind == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        raw = socket.create_connection((WEB_TLS, 443), timeout=60, source_address=(a["bind"], 0))
        return http(ctx.wrap_socket(raw), WEB_TLS, f"/bytes/{a['size']}")
    if kind == "idle":
        return 0
    if kind == "onion":
        if not onion_host:
            return 0
        s = socks_connect(a["socks"], onion_host, 80, timeout=90)
        return http(s, onion_host, f"/bytes/{a['page']}")
    if kind == "page":
        got = http(socks_connect(a["socks"], WEB, 80), WEB, f"/bytes/{a['page']}")
        objects = list(a["objects"])
        lock = threading.Lock()

        def worker() -> None:
            nonlocal got
            while True:
                with lock:
                    if not objects:
                        return
                    size = objects.pop(0)
                n = http(socks_connect(a["socks"], WEB, 80), WEB, f"/bytes/{size}")
                with lock:
                    got += n

        threads = [threading.Thread(target=worker) for _ in range(a["parallel"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return got
    if kind == "bulk":
        return http(socks_connect(a["socks"], WEB, 80, timeout=120), WEB, f"/bytes/{a['size']}")
    if kind == "upload":
        return http(socks_connect(a["socks"], WEB, 80), WEB, "/upload", body=a["size"])
    if kind == "chat":
        s = socks_connect(a["socks"], WEB, 80)
        return http(s, WEB, f"/drip/{a['hold']:.1f}/{a['every']:.1f}")
    raise ValueError(f"unknown action {kind}")


def drive(plan_file: Path, result_file: Path, seconds: float, onion_host: str | None) -> None:
    """Runs the plan in real time, each action in its own thread, for at most ``seconds``
    and 30 more for the actions still running; writes what happened."""
    plan = json.loads(plan_file.read_text())
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def run_one(a: dict[str, Any]) -> None:
        t0 = time.monotonic()
        try:
            got, error = act(a, onion_host), ""
        except OSError as exc:
            got, error = 0, str(exc) or type(exc).__name__
        with lock:
            results.append({**a, "received": got, "seconds": round(time.monotonic() - t0, 2),
                            "error": error})  # fmt: skip

    threads = []
    for a in plan:
        delay = a["at"] - (time.monotonic() - start)
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=run_one, args=(a,), daemon=True)
        t.start()
        threads.append(t)
    deadline = start + seconds + 30
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    result_file.write_text(json.dumps(sorted(results, key=lambda r: r["at"]), indent=1))


# -- the lab ---------------------------------------------------------------------------


def need_tools() -> dict[str, str]:
    """Paths of the programs the lab runs; LabError naming the package if one is missing."""
    if os.geteuid() != 0:
        raise LabError("the Tor lab needs root (it creates network namespaces)")
    tools = {}
    needed = {"tor": "tor", "tor-gencert": "tor", "tcpdump": "tcpdump", "openssl": "openssl"}
    for name, package in (needed | {"ip": "iproute2", "tc": "iproute2"}).items():
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
        if not path:
            raise LabError(f"{name} is not installed: run `apt-get install {package}`")
        tools[name] = path
    return tools


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


@dataclass
class Lab:
    """One running lab network; use as a context manager (everything is torn down)."""

    out: Path
    seed: int = 1
    relays: int = 8
    clients: int = 12
    onion: bool = True
    tag: str = field(default_factory=lambda: f"fht{os.getpid()}")
    nodes: list[Node] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    onion_host: str | None = None

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def exec(self, ns: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(ns), *args]

    def __enter__(self) -> Lab:
        self.tools = need_tools()
        self.out.mkdir(parents=True, exist_ok=True)
        self.nodes = topology(self.seed, self.relays, self.clients, self.onion)
        self._old = {s: signal.signal(s, _raise_exit) for s in (signal.SIGTERM, signal.SIGHUP)}
        try:
            self._network()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # network ----------------------------------------------------------------------

    def _network(self) -> None:
        lan, wan = self.ns("lan"), self.ns("wan")
        for name in (lan, wan):
            sh("ip", "netns", "add", name)
        sh("ip", "link", "add", "lan0", "netns", lan, "type", "veth", "peer", "name", "wan0",
           "netns", wan)  # fmt: skip
        for ns, dev, addr in (
            ("lan", "lan0", f"{LAN_PREFIX}.1/24"),
            ("wan", "wan0", f"{GATEWAY}/24"),
        ):
            run = self.exec(ns, "ip")
            for sysctl in (
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ):
                sh(*self.exec(ns, "sysctl", "-q", "-w", sysctl), check=False)
            sh(*run, "link", "set", "lo", "mtu", "1500", "gso_max_size", "1500", "up")
            sh(*run, "link", "set", dev, "mtu", "1500", "gso_max_size", "1500", "up")
            sh(*run, "addr", "add", addr, "dev", dev)
        for n in self.nodes:
            if n.ns == "lan":
                sh(*self.exec("lan", "ip", "addr", "add", f"{n.address}/24", "dev", "lan0"))
            else:
                sh(*self.exec("wan", "ip", "addr", "add", f"{n.address}/32", "dev", "lo"))
        for addr in (WEB, WEB_TLS):
            sh(*self.exec("wan", "ip", "addr", "add", f"{addr}/32", "dev", "lo"))
        sh(*self.exec("lan", "ip", "route", "add", "10.77.0.0/16", "via", GATEWAY))
        for ns, dev, rate in (("lan", "lan0", UP_RATE), ("wan", "wan0", DOWN_RATE)):
            sh(*self.exec(ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                          "burst", "64kb", "latency", "100ms"))  # fmt: skip
        probe = sh(*self.exec("lan", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                              "20ms"), check=False)  # fmt: skip
        if probe.returncode == 0:  # pragma: no cover - kernels with sch_netem
            sh(*self.exec("lan", "tc", "qdisc", "del", "dev", "lo", "root"))
            sh(*self.exec("lan", "tc", "qdisc", "replace", "dev", "lan0", "root", "netem",
                          "delay", "25ms", "5ms", "rate", UP_RATE))  # fmt: skip
            sh(*self.exec("wan", "tc", "qdisc", "replace", "dev", "wan0", "root", "netem",
                          "delay", "25ms", "5ms", "rate", DOWN_RATE))  # fmt: skip
            self.notes.append("netem: 50 ms round trip on the uplink")
        else:
            self.notes.append("no netem in this kernel: no added latency (tbf shaping only)")

    # processes ------------------------------------------------------------------------

    def spawn(
        self, name: str, ns: str, *args: str, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(self.exec(ns, *args), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.procs.append((name, proc))
        return proc

    def close(self) -> None:
        """Stops every process this lab started (tcpdump first: its pcap is flushed) and
        deletes the namespaces."""
        for name, proc in sorted(self.procs, key=lambda p: not p[0].startswith("tcpdump")):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if name.startswith("tcpdump") else signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        for suffix in ("lan", "wan"):
            name = self.ns(suffix)
            pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:  # anything left in our own namespace is ours
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", name, check=False)
        for sig, old in getattr(self, "_old", {}).items():
            signal.signal(sig, old)
        self._old = {}

    # tor ----------------------------------------------------------------------------

    def _keys(self) -> None:
        for n in self.nodes:
            d = self.out / "tor" / n.nick
            shutil.rmtree(d, ignore_errors=True)
            (d / "keys").mkdir(parents=True)
            if n.role == "auth":
                sh(self.tools["tor-gencert"], "--create-identity-key", "--passphrase-fd", "0",
                   "-m", "12", "-a", f"{n.address}:{n.dirport}",
                   "-i", str(d / "keys/authority_identity_key"),
                   "-s", str(d / "keys/authority_signing_key"),
                   "-c", str(d / "keys/authority_certificate"))  # fmt: skip
                cert = (d / "keys/authority_certificate").read_text()
                n.v3ident = cert.split("fingerprint ", 1)[1].split()[0]
            if n.role in ("auth", "guard", "middle", "exit", "bridge"):
                (d / "torrc").write_text(self._torrc(n, authorities=False))
                sh(self.tools["tor"], "-f", str(d / "torrc"), "--list-fingerprint", "--quiet")
                n.fingerprint = (d / "fingerprint").read_text().split()[1]

    def _torrc(self, n: Node, authorities: bool = True) -> str:
        d = self.out / "tor" / n.nick
        guards = ",".join(x.nick for x in self.nodes if x.role == "guard")
        exits = ",".join(x.nick for x in self.nodes if x.role == "exit")
        lines = [
            "TestingTorNetwork 1", f"DataDirectory {d}", f"PidFile {d}/pid",
            f"Log notice file {d}/notice.log", "SafeLogging 0", "ShutdownWaitLength 0",
            "DisableDebuggerAttachment 0", "AssumeReachable 1", "PathsNeededToBuildCircuits 0.25",
            f"TestingDirAuthVoteGuard {guards}", "TestingDirAuthVoteGuardIsStrict 1",
            f"TestingDirAuthVoteExit {exits}", "TestingDirAuthVoteExitIsStrict 1",
            "TestingDirAuthVoteHSDir *", "TestingMinExitFlagThreshold 0",
            "V3AuthNIntervalsValid 2", "ClientUseIPv6 0", "ControlPort 0",
            f"Nickname {n.nick}", f"OutboundBindAddress {n.address}",
        ]  # fmt: skip
        if authorities:
            lines += [
                f"DirAuthority {a.nick} orport={a.orport} no-v2 v3ident={a.v3ident} "
                f"{a.address}:{a.dirport} {a.fingerprint}"
                for a in self.nodes
                if a.role == "auth"
            ]
        else:  # only to make keys: a placeholder authority
            lines.append("DirAuthority x 127.0.0.1:1 " + "f" * 40)
        if n.orport:
            lines += [f"ORPort {n.address}:{n.orport}", f"Address {n.address}", "SocksPort 0"]
            lines += ["AddressDisableIPv6 1", "ContactInfo lab@example.invalid"]
        if n.rate:
            lines += [f"BandwidthRate {n.rate}", f"BandwidthBurst {2 * n.rate}"]
        if n.role == "auth":
            lines += [
                "AuthoritativeDirectory 1", "V3AuthoritativeDirectory 1",
                f"DirPort {n.address}:{n.dirport}", "V3AuthVotingInterval 5 minutes",
                "V3AuthVoteDelay 5", "V3AuthDistDelay 5", "TestingV3AuthInitialVotingInterval 20",
                "TestingV3AuthInitialVoteDelay 4", "TestingV3AuthInitialDistDelay 4",
            ]  # fmt: skip
        if n.role == "exit":
            lines += ["ExitRelay 1", "ExitPolicy accept *:*", "ExitPolicyRejectLocalInterfaces 0"]
        elif n.orport:
            lines += ["ExitRelay 0", "ExitPolicy reject *:*"]
        if n.role == "bridge":
            lines += ["BridgeRelay 1", "PublishServerDescriptor 0"]
        if n.role == "client":
            lines.append(f"SocksPort 127.0.0.1:{n.socks}")
            if n.bridge:
                b = next(x for x in self.nodes if x.role == "bridge")
                lines += ["UseBridges 1", f"Bridge {b.address}:{b.orport} {b.fingerprint}"]
        if n.role == "onion":
            lines += ["SocksPort 0", f"HiddenServiceDir {d}/hs",
                      f"HiddenServicePort 80 127.0.0.1:{ONION_PORT}"]  # fmt: skip
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 240) -> None:
        """Keys, torrcs, web servers, captures and every tor; returns once every client
        has bootstrapped (LabError after ``timeout`` seconds)."""
        self._keys()
        for n in self.nodes:
            (self.out / "tor" / n.nick / "torrc").write_text(self._torrc(n))
        cert, key = self.out / "web.crt", self.out / "web.key"
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
           "-subj", "/CN=www.example.test", "-keyout", str(key), "-out", str(cert))  # fmt: skip
        me = [sys.executable, str(Path(__file__).resolve()), "serve"]
        self.spawn("web", "wan", *me, "--bind", WEB, "--port", "80")
        self.spawn("web-tls", "wan", *me, "--bind", WEB_TLS, "--port", "443", "--cert",
                   str(cert), "--key", str(key))  # fmt: skip
        if self.onion:
            self.spawn("web-onion", "lan", *me, "--bind", "127.0.0.1", "--port", str(ONION_PORT))
        tcpdump = self.tools["tcpdump"]
        for ns, dev in (("lan", "lan0"), ("wan", "lo")):
            self.spawn(f"tcpdump-{ns}", ns, tcpdump, "-i", dev, "-s", str(SNAPLEN), "-U", "-n",
                       "-w", str(self.out / f"{ns}.pcap"), "tcp or udp",
                       log=self.out / f"tcpdump-{ns}.log")  # fmt: skip
        time.sleep(1.0)
        self.started = time.time()
        order = {
            "auth": 0,
            "guard": 1,
            "middle": 1,
            "exit": 1,
            "bridge": 1,
            "client": 2,
            "onion": 2,
        }
        for n in sorted(self.nodes, key=lambda x: order[x.role]):
            torrc = self.out / "tor" / n.nick / "torrc"
            self.spawn(f"tor-{n.nick}", n.ns, self.tools["tor"], "-f", str(torrc), "--quiet")
        self._wait_bootstrap(timeout)

    def _wait_bootstrap(self, timeout: float) -> None:
        waiting = {n.nick for n in self.nodes if n.role in ("client", "onion")}
        end = time.monotonic() + timeout
        while waiting and time.monotonic() < end:
            for name, proc in self.procs:
                if name.startswith("tor-") and proc.poll() is not None:
                    log = self.out / "tor" / name[4:] / "notice.log"
                    tail = log.read_text()[-600:] if log.exists() else ""
                    raise LabError(f"{name} exited ({proc.returncode}): {tail}")
            for nick in sorted(waiting):
                log = self.out / "tor" / nick / "notice.log"
                if log.exists() and "Bootstrapped 100%" in log.read_text():
                    waiting.discard(nick)
            time.sleep(1.0)
        if waiting:
            raise LabError(f"not bootstrapped after {timeout:.0f} s: {', '.join(sorted(waiting))}")
        hostname = self.out / "tor" / "onion1" / "hs" / "hostname"
        if self.onion and hostname.exists():
            self.onion_host = hostname.read_text().strip()
        self.bootstrapped = time.time()
        self.bootstrap_seconds = round(self.bootstrapped - self.started, 1)

    def drive(
        self, seconds: float, plan: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Runs ``plan`` (default: the seeded traffic plan) for ``seconds`` from inside the
        lan namespace; what each action did."""
        plan = plan or traffic_plan(self.seed, self.nodes, seconds)
        (self.out / "plan.json").write_text(json.dumps(plan, indent=1))
        result = self.out / "actions.json"
        me = [sys.executable, str(Path(__file__).resolve())]
        args = [*me, "drive", str(self.out / "plan.json"), str(result), "--seconds", str(seconds)]
        args += ["--onion", self.onion_host] if self.onion_host else []
        proc = self.spawn("driver", "lan", *args, log=self.out / "driver.log")
        done = threading.Event()
        sessions = threading.Thread(target=self._sessions, args=(seconds, done))
        sessions.start()
        try:
            proc.wait(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise LabError("the traffic driver did not finish") from None
        finally:
            done.set()
            sessions.join()
        if proc.returncode != 0:
            raise LabError(
                f"the traffic driver failed: {(self.out / 'driver.log').read_text()[-800:]}"
            )
        return json.loads(result.read_text())

    def _sessions(self, seconds: float, done: threading.Event) -> None:
        """Stops and restarts the ``sessions`` clients on a seeded schedule (sessions of
        40-150 s, 3-15 s apart), so some Tor connections are short, as when a browser
        is closed; their SOCKS port refuses actions planned in between."""
        rng = random.Random(f"sessions-{self.seed}")
        events = []
        for n in (n for n in self.nodes if n.sessions):
            at = rng.uniform(40, 150)
            while at < seconds - 20:
                pause = rng.uniform(3, 15)
                events += [(at, n.nick, "stop"), (at + pause, n.nick, "start")]
                at += pause + rng.uniform(40, 150)
        start = time.monotonic()
        for at, nick, what in sorted(events):
            if done.wait(max(0.0, at - (time.monotonic() - start))):
                return
            name = f"tor-{nick}"
            if what == "stop":
                old = next(p for n, p in self.procs if n == name)
                old.terminate()
                old.wait(timeout=10)
                self.procs.remove((name, old))
            else:
                torrc = self.out / "tor" / nick / "torrc"
                self.spawn(name, "lan", self.tools["tor"], "-f", str(torrc), "--quiet")

    def manifest(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "nodes": [asdict(n) for n in self.nodes],
            "web": WEB,
            "web_tls": WEB_TLS,
            "lan": f"{LAN_PREFIX}.0/24",
            "notes": self.notes,
            "onion": self.onion_host,
            "started": getattr(self, "started", None),
            "bootstrapped": getattr(self, "bootstrapped", None),
            "bootstrap_seconds": getattr(self, "bootstrap_seconds", None),
        }


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# -- flows ------------------------------------------------------------------------------


def lab_flows(out: Path) -> Any:
    """The run's pcaps as flowhawk flows, labelled from ``lab.json`` (see the module
    docstring); also written to ``flows.parquet``."""
    import polars as pl

    from flowhawk import config
    from flowhawk.diagnostics import Diagnostics
    from flowhawk.normalize import Normalizer
    from flowhawk.pipeline import read_inputs

    lab = json.loads((out / "lab.json").read_text())
    ready = datetime.fromtimestamp(lab["bootstrapped"] or 0, UTC)
    cfg = config.load(None)
    diag = Diagnostics()
    norm = Normalizer(cfg, diag)
    frames = []
    pcaps = [out / f"{ns}.pcap" for ns in ("lan", "wan") if (out / f"{ns}.pcap").exists()]
    for name, tables in read_inputs(pcaps, cfg, diag, fmt="pcap"):
        frames += [pl.from_arrow(norm.process(t)) for t in tables]
        frames.append(pl.from_arrow(norm.end_input(name)[0]))
    flows = pl.concat([f for f in frames if f.height], how="vertical_relaxed")
    nodes = pl.DataFrame(lab["nodes"])
    relays = nodes.filter(pl.col("orport") > 0)
    orports = relays.select(
        _ip=pl.col("address"), _port=pl.col("orport").cast(pl.Int32), relay=pl.col("nick"),
        role=pl.col("role"), fingerprint=pl.col("fingerprint"),
    )  # fmt: skip
    dirports = nodes.filter(pl.col("dirport") > 0).select(
        _ip=pl.col("address"), _port=pl.col("dirport").cast(pl.Int32), _dir=pl.col("nick")
    )
    flows = (
        flows.join(orports, left_on=["dst_ip", "dst_port"], right_on=["_ip", "_port"], how="left")
        .join(dirports, left_on=["dst_ip", "dst_port"], right_on=["_ip", "_port"], how="left")
        .with_columns(
            label=pl.when(pl.col("relay").is_not_null() & (pl.col("proto") == 6))
            .then(pl.lit("tor"))
            .when(pl.col("_dir").is_not_null())
            .then(pl.lit("tor_dir"))
            .when(pl.col("dst_ip") == WEB)
            .then(pl.lit("exit_web"))
            .when(pl.col("dst_ip") == WEB_TLS)
            .then(pl.lit("https"))
            .otherwise(pl.lit("other")),
            client_side=pl.col("src_ip").str.starts_with(f"{LAN_PREFIX}."),
            startup=pl.col("ts_start") < pl.lit(ready, dtype=pl.Datetime("us", "UTC")),
            formation=pl.col("ts_end") < pl.lit(ready, dtype=pl.Datetime("us", "UTC")),
            run=pl.lit(f"seed{lab['seed']}"),
            seed=pl.lit(lab["seed"]),
            input=pl.col("input").str.replace(r"^.*/", ""),
        )
        .drop("_dir")
    )
    flows.write_parquet(out / "flows.parquet")
    return flows


# -- command line -----------------------------------------------------------------------


def run_lab(out: Path, seed: int, minutes: float, relays: int, clients: int, onion: bool) -> None:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.time()
    with Lab(out, seed=seed, relays=relays, clients=clients, onion=onion) as lab:
        lab.start()
        print(f"lab up in {lab.bootstrap_seconds} s ({len(lab.nodes)} tor nodes); "
              f"{'; '.join(lab.notes)}", flush=True)  # fmt: skip
        results = lab.drive(minutes * 60)
        (out / "lab.json").write_text(json.dumps(lab.manifest(), indent=1))
    failed = [r for r in results if r["error"]]
    got = sum(r["received"] for r in results)
    print(f"{len(results)} actions, {len(failed)} failed, {got / 1e6:.1f} MB received "
          f"in {time.time() - t0:.0f} s")  # fmt: skip
    for r in failed[:5]:
        print(f"  failed: {r['client']} {r['kind']}: {r['error']}")
    flows = lab_flows(out)
    counts = flows.group_by("label").len().sort("label").rows()
    print(f"flows: {flows.height} ({', '.join(f'{k} {v}' for k, v in counts)}); wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="build the network, drive traffic, capture, write flows")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--minutes", type=float, default=5.0)
    r.add_argument("--relays", type=int, default=8)
    r.add_argument("--clients", type=int, default=12)
    r.add_argument("--no-onion", action="store_true")
    r.add_argument("--out", type=Path, help=f"default {DEFAULT_OUT}/run-SEED")
    f = sub.add_parser("flows", help="(re)derive flows.parquet from a run's pcaps")
    f.add_argument("out", type=Path)
    s = sub.add_parser("serve", help=argparse.SUPPRESS)
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cert")
    s.add_argument("--key")
    d = sub.add_parser("drive", help=argparse.SUPPRESS)
    d.add_argument("plan", type=Path)
    d.add_argument("result", type=Path)
    d.add_argument("--seconds", type=float, required=True)
    d.add_argument("--onion")
    args = ap.parse_args()
    try:
        if args.cmd == "run":
            out = args.out or DEFAULT_OUT / f"run-{args.seed}"
            run_lab(out, args.seed, args.minutes, args.relays, args.clients, not args.no_onion)
        elif args.cmd == "flows":
            flows = lab_flows(args.out)
            print(flows.group_by("label").len().sort("label"))
        elif args.cmd == "serve":
            serve(args.bind, args.port, args.cert, args.key)
        else:
            drive(args.plan, args.result, args.seconds, args.onion)
    except LabError as exc:
        sys.exit(f"torlab: {exc}")


if __name__ == "__main__":
    main()
