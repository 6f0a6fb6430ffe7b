"""The simulated site: who is on the network, with which address and role.

One site (flowhawk's default site: no configuration needed to read it) with an
office, a server room, IoT devices and a small plant:

- workstations ``10.1.16.0/20``, each used by one person;
- servers ``10.1.0.0/24``, one or more roles each (DNS, domain controller, files,
  intranet application, database, mail, public web, backup, monitoring, MQTT broker);
- IoT ``10.3.0.0/16``: MQTT sensors (connect, publish, disconnect on a fixed period),
  devices reporting to an IoT cloud over MQTT/TLS, CoAP sensors (UDP, never answered),
  Modbus power meters polled by the building management system, IP cameras whose
  clips the video recorder fetches;
- a plant ``10.2.0.0/16``: SCADA master, historian, building management, video
  recorder, engineering workstation, HMIs and PLCs.

External addresses come from ranges reserved for documentation and benchmarking
(RFC 5737, RFC 2544: ``192.0.2.0/24``, ``198.51.100.0/24``, ``203.0.113.0/24``,
``198.18.0.0/15``), so simulated data points at nobody real. The upper halves of
``192.0.2.0/24`` and ``203.0.113.0/24`` are never used by normal traffic: anomalies
take their new external addresses from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Server roles, in the order servers take them (fewer servers: roles are shared).
ROLES = ("dns", "dc", "files", "app", "db", "mail", "web", "backup", "monitor", "mqtt")
#: IoT device classes, in the order devices are dealt (a repeating pattern of 10).
IOT_PATTERN = ("mqtt", "mqtt", "cloud", "mqtt", "meter", "coap", "mqtt", "cloud", "meter", "camera")

RESOLVERS = ["198.51.100.53", "198.51.100.54"]
NTP_POOL = ["192.0.2.123", "192.0.2.124"]
UPDATES = ["198.51.100.10", "198.51.100.11", "198.51.100.12"]
TELEMETRY = ["203.0.113.40"]
CLOUD_STORAGE = ["203.0.113.20", "203.0.113.21", "203.0.113.22"]
IOT_CLOUD = "203.0.113.80"
INTERNET_CHECK = "192.0.2.1"
#: Reserved for anomalies (never used by normal traffic).
ANOMALY_EXTERNAL = [f"192.0.2.{i}" for i in range(128, 255)] + [
    f"203.0.113.{i}" for i in range(128, 255)
]


@dataclass(frozen=True)
class SiteSpec:
    """How big the site is."""

    workstations: int = 60
    servers: int = 10
    iot: int = 20
    plcs: int = 8
    hmis: int = 2
    web_sites: int = 400  # external web servers the office browses
    web_visitors: int = 20_000  # external clients of the public web server
    admins: int = 3  # workstations whose users administer servers (ssh, rdp)

    def check(self) -> None:
        limits = {
            "workstations": (1, 3000),
            "servers": (1, 200),
            "iot": (0, 5000),
            "plcs": (0, 250),
            "hmis": (0, 50),
            "web_sites": (10, 50_000),
            "web_visitors": (10, 30_000),
        }
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be {lo} to {hi} (got {value})")


@dataclass
class Site:
    """Addresses by role and class, built deterministically from a spec and a seed."""

    spec: SiteSpec
    workstations: list[str]
    servers: list[str]
    role: dict[str, str]  # role -> server address
    iot: dict[str, list[str]]  # class -> device addresses
    plcs: list[str]
    hmis: list[str]
    scada: str = "10.2.0.5"
    historian: str = "10.2.0.6"
    bms: str = "10.2.0.7"
    nvr: str = "10.2.0.8"
    engineering: str = "10.2.0.20"
    admins: list[str] = field(default_factory=list)
    web_sites: list[str] = field(default_factory=list)
    web_visitors: list[str] = field(default_factory=list)
    mail_peers: list[str] = field(default_factory=list)

    @property
    def internal_hosts(self) -> list[str]:
        ot = [self.scada, self.historian, self.bms, self.nvr, self.engineering]
        return [
            *self.workstations,
            *self.servers,
            *(a for devices in self.iot.values() for a in devices),
            *ot,
            *self.hmis,
            *self.plcs,
        ]

    def roles_of(self, address: str) -> list[str]:
        return [r for r, a in self.role.items() if a == address]


def _address(prefix: str, i: int, first: int = 10, per_block: int = 200) -> str:
    """``prefix.(i // per_block).(first + i % per_block)`` within a /16-ish block."""
    a, b = prefix.split(".")[:2]
    third = int(prefix.split(".")[2]) + i // per_block
    return f"{a}.{b}.{third}.{first + i % per_block}"


def _spread(rng: np.random.Generator, base: tuple[int, int], span: int, n: int) -> list[str]:
    """``n`` distinct addresses (host parts 1-254) from ``span`` /24s starting at ``base``."""
    picks = rng.choice(span * 254, n, replace=False)
    nets, hosts = picks // 254, picks % 254 + 1
    return [
        f"{base[0]}.{base[1] + int(net) // 256}.{int(net) % 256}.{int(host)}"
        for net, host in zip(nets, hosts, strict=True)
    ]


def build_site(spec: SiteSpec, seed: int) -> Site:
    """The site of ``spec``; external address pools depend on ``seed``."""
    spec.check()
    rng = np.random.default_rng([seed, 0x5173])
    workstations = [_address("10.1.16.0", i) for i in range(spec.workstations)]
    servers = [f"10.1.0.{10 + i}" for i in range(spec.servers)]
    role = {r: servers[i % spec.servers] for i, r in enumerate(ROLES)}
    iot: dict[str, list[str]] = {c: [] for c in dict.fromkeys(IOT_PATTERN)}
    for i in range(spec.iot):
        iot[IOT_PATTERN[i % len(IOT_PATTERN)]].append(_address("10.3.0.0", i))
    plcs = [_address("10.2.1.0", i) for i in range(spec.plcs)]
    hmis = [f"10.2.0.{30 + i}" for i in range(spec.hmis)]
    # External pools: web sites in 198.18.0.0/16, visitors and mail peers in 198.19.0.0/16.
    web_sites = _spread(rng, (198, 18), 256, spec.web_sites)
    visitors = _spread(rng, (198, 19), 200, spec.web_visitors)
    mail_peers = [f"198.19.{200 + i // 254}.{i % 254 + 1}" for i in range(300)]
    admins = workstations[: min(spec.admins, len(workstations))]
    return Site(
        spec=spec,
        workstations=workstations,
        servers=servers,
        role=role,
        iot=iot,
        plcs=plcs,
        hmis=hmis,
        admins=admins,
        web_sites=web_sites,
        web_visitors=visitors,
        mail_peers=mail_peers,
    )
