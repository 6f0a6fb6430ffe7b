"""Normal behavior of every device class, as :class:`~flowhawk.demo.simulate.Stream` s.

People make the office traffic: each workstation's user has their own arrival and
departure times (with day-to-day jitter), a lunch dip, an intensity of their own, days
off, rare weekend work; some machines stay on overnight. Machines that are on do
background work (NTP, updates, telemetry, DNS). Servers answer the office in
proportion to how many people are at work, and run their own schedules (nightly
backups, updates, time sync, monitoring). The public web server and the mail server
answer the internet on its own (UTC evening-peaked) rhythm. IoT devices and the plant
run around the clock on fixed periods with small jitter: MQTT sensors publish,
cloud devices report over MQTT/TLS, CoAP sensors send unanswered datagrams, the
building management system polls Modbus meters, the SCADA master polls PLCs and
feeds the historian, operators use HMIs in shifts.

All sizes are payload bytes drawn per flow (``model="real"``): packets follow from
TCP segmentation, handshakes and delayed ACKs, or one datagram per 1472 bytes.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from flowhawk.demo.simulate import ALWAYS, HOUR, Stream
from flowhawk.sim import site as S

DAY = 24 * HOUR
#: Relative internet activity by UTC hour (visitors of the public web server).
_NIGHT_TO_NOON = [0.6, 0.5, 0.4, 0.3, 0.25, 0.25, 0.3, 0.4, 0.55, 0.65, 0.7, 0.75]
INTERNET_DAY = np.array([*_NIGHT_TO_NOON, 0.8, 0.8, 0.8, 0.85, 0.9, 0.95, 1, 1, 1, 0.95, 0.85, 0.7])
#: Shape of a person's working day (when present), by hour.
_WORK_SHAPE = np.array([0.6] * 8 + [0.9, 1.0, 1.0, 0.95, 0.9, 0.9, 0.95, 0.9, 0.8, 0.7] + [0.6] * 6)


def _overlap(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fraction of each hour 0-23 inside [lo, hi): shape lo.shape + (24,)."""
    h = np.arange(24)
    return np.clip(np.minimum(hi[..., None], h + 1) - np.maximum(lo[..., None], h), 0.0, 1.0)


def people(
    n: int, start: datetime, days: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(activity, on): users x hours. ``activity`` scales user-driven rates (0 when away,
    about 1 at a typical user's busiest hour); ``on`` is 1 while the machine runs."""
    weekday = (start.weekday() + np.arange(days)) % 7
    weekend = weekday >= 5
    arrive_i = np.clip(rng.normal(8.2, 0.6, n), 6.5, 10.5)
    length_i = np.clip(rng.normal(8.6, 0.6, n), 6.0, 10.5)
    lunch_i = np.clip(rng.normal(12.2, 0.4, n), 11.3, 13.3)
    intensity = rng.lognormal(0.0, 0.45, n)
    always_on = rng.random(n) < 0.12
    arrive = np.clip(arrive_i[:, None] + rng.normal(0, 0.35, (n, days)), 5.5, 12.0)
    leave = np.clip(arrive + length_i[:, None] + rng.normal(0, 0.5, (n, days)), arrive + 3, 23.5)
    works = np.where(weekend[None, :], rng.random((n, days)) < 0.04, rng.random((n, days)) > 0.07)
    # Weekend work: a short session around midday.
    w_arrive = rng.uniform(9.5, 14.0, (n, days))
    arrive = np.where(weekend[None, :], w_arrive, arrive)
    leave = np.where(weekend[None, :], w_arrive + rng.uniform(1.5, 4.0, (n, days)), leave)
    present = _overlap(arrive, leave) * works[..., None]
    lunch = lunch_i[:, None] + rng.normal(0, 0.15, (n, days))
    away = _overlap(lunch, lunch + 0.75) * 0.75
    day_mood = rng.lognormal(0.0, 0.2, (n, days))
    activity = np.clip(present - away, 0.0, None) * _WORK_SHAPE
    activity *= (intensity[:, None] * day_mood)[..., None]
    # Machines boot a little before the user arrives and shut down a little after.
    on = _overlap(arrive - 0.1, leave + 0.15) * works[..., None] > 0
    on |= always_on[:, None, None]
    return activity.reshape(n, days * 24), on.reshape(n, days * 24).astype(float)


def _daily(profile: np.ndarray, start: datetime, days: int, weekend: float) -> np.ndarray:
    """A 24-hour profile repeated over ``days`` with weekend days scaled: 1 x hours."""
    weekday = (start.weekday() + np.arange(days)) % 7
    scale = np.where(weekday >= 5, weekend, 1.0)
    return (scale[:, None] * profile[None, :]).reshape(1, days * 24)


def _pick(rng: np.random.Generator, choices: list[float], n: int) -> np.ndarray:
    return np.asarray(choices, dtype=float)[rng.integers(0, len(choices), n)]


#: What a flow of each kind of exchange looks like: lognormal (mu, sigma) of the
#: client's and the server's payload bytes and of the duration in seconds, the
#: service label (as Zeek names it) and any other fixed Stream fields.
# fmt: off
SHAPES: dict[str, dict] = {
    "web": {"req_bytes": (6.8, 0.9), "resp_bytes": (9.5, 1.7), "duration": (0.3, 1.2),
            "throughput": 2e6, "service": "ssl"},
    "http": {"req_bytes": (6.0, 0.5), "resp_bytes": (8.5, 1.5), "duration": (-1.0, 1.0),
             "service": "http"},
    "dns": {"req_bytes": (3.6, 0.25), "resp_bytes": (4.8, 0.4), "duration": (-5.5, 0.6),
            "service": "dns"},
    "ntp": {"req_bytes": (3.87, 0.0), "resp_bytes": (3.87, 0.0), "duration": (-6.0, 0.3),
            "client_port": 123, "service": "ntp"},
    "krb": {"req_bytes": (7.2, 0.3), "resp_bytes": (7.3, 0.3), "duration": (-3.0, 0.5),
            "service": "krb"},
    "ldap": {"req_bytes": (5.5, 0.5), "resp_bytes": (7.5, 1.0), "duration": (-2.5, 0.8),
             "service": "ldap"},
    "smb": {"req_bytes": (7.0, 1.2), "resp_bytes": (10.5, 2.0), "duration": (0.5, 1.5),
            "throughput": 20e6, "service": "smb"},
    "app": {"req_bytes": (7.0, 0.7), "resp_bytes": (9.0, 1.2), "duration": (-0.5, 1.0),
            "service": "ssl"},
    "imap": {"req_bytes": (6.0, 0.5), "resp_bytes": (8.0, 1.6), "duration": (1.0, 1.5),
             "service": "ssl"},
    "update": {"req_bytes": (7.5, 0.5), "resp_bytes": (12.0, 1.5), "duration": (1.0, 1.0),
               "throughput": 5e6, "service": "ssl"},
    "telemetry": {"req_bytes": (8.0, 0.4), "resp_bytes": (6.0, 0.2), "duration": (-1.0, 0.5),
                  "service": "ssl"},
    "sync": {"req_bytes": (9.0, 1.5), "resp_bytes": (7.5, 0.6), "duration": (0.0, 1.0),
             "throughput": 3e6, "service": "ssl"},
    "ssh": {"req_bytes": (8.0, 1.5), "resp_bytes": (9.0, 1.8), "duration": (4.0, 1.5),
            "service": "ssh"},
    "rdp": {"req_bytes": (11.0, 1.0), "resp_bytes": (13.0, 1.0), "duration": (6.0, 1.0),
            "service": "rdp"},
    "sql": {"req_bytes": (6.5, 0.8), "resp_bytes": (8.5, 1.5), "duration": (-3.0, 1.0)},
    "smtp": {"req_bytes": (9.5, 1.4), "resp_bytes": (6.5, 0.3), "duration": (0.0, 0.8),
             "service": "smtp"},
    "backup": {"req_bytes": (9.0, 0.5), "resp_bytes": (21.0, 0.6), "duration": (1.0, 0.5),
               "throughput": 20e6, "service": "ssh"},
    "ping": {"req_bytes": (4.025, 0.0), "resp_bytes": (4.025, 0.0), "duration": (-7.0, 0.3)},
    "snmp": {"req_bytes": (4.3, 0.1), "resp_bytes": (6.5, 0.5), "duration": (-5.0, 0.4),
             "service": "snmp"},
    "syslog": {"req_bytes": (5.0, 0.5), "answered": 0.0, "service": "syslog"},
    "bridge": {"req_bytes": (11.0, 0.2), "resp_bytes": (6.0, 0.2), "duration": (-1.0, 0.3),
               "service": "ssl"},
    "mqtt": {"req_bytes": (5.0, 0.15), "resp_bytes": (3.4, 0.05), "duration": (-3.5, 0.3),
             "service": "mqtt"},
    "mqtts": {"req_bytes": (7.5, 0.2), "resp_bytes": (6.2, 0.1), "duration": (-1.5, 0.3),
              "service": "ssl"},
    "coap": {"req_bytes": (4.6, 0.1), "answered": 0.0},
    "modbus": {"req_bytes": (2.485, 0.0), "resp_bytes": (3.7, 0.1), "duration": (-4.0, 0.3),
               "service": "modbus"},
    "rtsp": {"req_bytes": (5.5, 0.2), "resp_bytes": (15.5, 0.4), "duration": (1.0, 0.3),
             "throughput": 4e6},
    "historian": {"req_bytes": (11.3, 0.1), "resp_bytes": (5.5, 0.2), "duration": (-1.0, 0.3)},
    "export": {"req_bytes": (17.0, 0.3), "resp_bytes": (8.0, 0.3), "duration": (1.0, 0.3),
               "throughput": 20e6, "service": "smb"},
    "opcua": {"req_bytes": (6.0, 0.5), "resp_bytes": (8.0, 0.8), "duration": (-1.0, 0.8)},
    "engineering": {"req_bytes": (4.0, 0.5), "resp_bytes": (6.0, 0.8), "duration": (-2.0, 0.5),
                    "service": "modbus"},
}
# fmt: on
_PORTS = {"tcp": 6, "udp": 17, "icmp": 1}


def flow(name: str, clients: list[str], servers: list[str], port: str, shape: str, **kw) -> Stream:
    """A stream of ``shape`` to ``port`` ("443/tcp", "2048/icmp"), sizes in payload bytes."""
    number, proto = port.split("/")
    fields = {**SHAPES[shape], "model": "real", **kw}
    return Stream(name, clients, servers, int(number), _PORTS[proto], **fields)


def _by_period(
    name: str,
    clients: list[str],
    servers: list[str],
    port: str,
    shape: str,
    periods: np.ndarray,
    jitter: float,
) -> list[Stream]:
    """One periodic stream per distinct period (devices reporting at their own pace)."""
    out = []
    for p in sorted(set(periods.tolist())):
        group = [c for c, q in zip(clients, periods, strict=True) if q == p]
        out.append(
            flow(f"{name}-{int(p)}s", group, servers, port, shape, period=float(p), jitter=jitter)
        )
    return out


def _each(
    name: str, clients: list[str], servers: list[str], port: str, shape: str, **kw
) -> list[Stream]:
    """One stream per server: every client talks to every server on its own schedule."""
    return [flow(f"{name}-{srv}", clients, [srv], port, shape, **kw) for srv in servers]


def office_streams(
    site: S.Site, start: datetime, days: int, rng: np.random.Generator
) -> tuple[list[Stream], np.ndarray]:
    """Workstations: users' work, machines' background, admins' sessions."""
    ws, role = site.workstations, site.role
    activity, on = people(len(ws), start, days, rng)
    sync_idx = np.flatnonzero(rng.random(len(ws)) < 0.35)
    admin_idx = [ws.index(a) for a in site.admins]
    act = {"activity": activity}
    # fmt: off
    streams = [
        flow("ws-web", ws, site.web_sites, "443/tcp", "web", rate=38, zipf=1.1, burst=2.0,
             personal=6, personal_share=0.3, **act),
        flow("ws-http", ws, site.web_sites[:60], "80/tcp", "http", rate=3, zipf=1.0, **act),
        flow("ws-dns", ws, [role["dns"]], "53/udp", "dns", rate=45, burst=1.0, **act),
        flow("ws-dns-bg", ws, [role["dns"]], "53/udp", "dns", rate=5, activity=on),
        flow("ws-krb", ws, [role["dc"]], "88/tcp", "krb", rate=3, **act),
        flow("ws-ldap", ws, [role["dc"]], "389/tcp", "ldap", rate=5, **act),
        flow("ws-smb", ws, [role["files"]], "445/tcp", "smb", rate=6, **act),
        flow("ws-app", ws, [role["app"]], "443/tcp", "app", rate=12, **act),
        flow("ws-mail", ws, [role["mail"]], "993/tcp", "imap", rate=8, **act),
        flow("ws-ntp", ws, [role["dc"]], "123/udp", "ntp", period=1024, jitter=0.01, activity=on),
        flow("ws-updates", ws, S.UPDATES, "443/tcp", "update", period=4 * HOUR, jitter=0.1,
             activity=on),
        flow("ws-telemetry", ws, S.TELEMETRY, "443/tcp", "telemetry", period=900, jitter=0.15,
             activity=on),
    ]
    if len(sync_idx):
        streams.append(
            flow("ws-sync", [ws[i] for i in sync_idx], S.CLOUD_STORAGE, "443/tcp", "sync",
                 rate=5, activity=activity[sync_idx], personal=1, personal_share=1.0)
        )
    if admin_idx:
        admins, busy = [ws[i] for i in admin_idx], activity[admin_idx]
        streams += [
            flow("admin-ssh", admins, site.servers, "22/tcp", "ssh", rate=1.5, activity=busy),
            flow("admin-rdp", admins, [role["dc"]], "3389/tcp", "rdp", rate=0.3, activity=busy),
        ]
    return streams, activity


def server_streams(site: S.Site, start: datetime, days: int, load: np.ndarray) -> list[Stream]:
    """Servers: infrastructure, applications answering the office and the internet."""
    role, servers = site.role, site.servers
    mon = role["monitor"]
    watched = [s for s in servers if s != mon]
    internet = _daily(INTERNET_DAY, start, days, weekend=1.1)
    mail_days = _daily(np.ones(24), start, days, weekend=0.6)
    visitors = {"pooled": True, "client_zipf": 0.9, "rate": 1}
    # fmt: off
    return [
        flow("srv-dns", servers, [role["dns"]], "53/udp", "dns", rate=20, profile=ALWAYS),
        flow("dns-fwd", [role["dns"]], S.RESOLVERS, "53/udp", "dns", rate=1,
             activity=250 * load + 60, resp_bytes=(5.2, 0.5), duration=(-3.5, 0.6)),
        flow("srv-ntp", [s for s in servers if s != role["dc"]], [role["dc"]], "123/udp", "ntp",
             period=1024, jitter=0.01),
        flow("dc-ntp", [role["dc"]], S.NTP_POOL, "123/udp", "ntp", period=1024, jitter=0.01,
             duration=(-3.5, 0.3)),
        flow("srv-updates", servers, S.UPDATES, "443/tcp", "update", period=6 * HOUR,
             jitter=0.1, resp_bytes=(13.0, 1.5), throughput=10e6),
        flow("app-db", [role["app"]], [role["db"]], "5432/tcp", "sql", rate=1,
             activity=500 * load + 40),
        flow("web-in", site.web_visitors, [role["web"]], "443/tcp", "web", burst=1.5,
             activity=300 * internet, req_bytes=(7.0, 0.8), resp_bytes=(10.0, 1.5), **visitors),
        flow("web-in-http", site.web_visitors, [role["web"]], "80/tcp", "http",
             activity=30 * internet, resp_bytes=(6.2, 0.3), **visitors),
        flow("mail-in", site.mail_peers, [role["mail"]], "25/tcp", "smtp", rate=1, pooled=True,
             client_zipf=0.8, activity=25 * mail_days),
        flow("mail-out", [role["mail"]], site.mail_peers, "25/tcp", "smtp", rate=1, zipf=0.8,
             activity=15 * load + 1),
        *_each("backup", [role["backup"]], [s for s in servers if s != role["backup"]],
               "22/tcp", "backup", period=DAY, jitter=0.001, phase=1.5 * HOUR,
               phase_spread=2 * HOUR),
        flow("syslog", servers, [mon], "514/udp", "syslog", rate=40, profile=ALWAYS),
        flow("mqtt-bridge", [role["mqtt"]], [S.IOT_CLOUD], "8883/tcp", "bridge", period=60,
             jitter=0.02),
        # Monitoring: each server pinged every minute, polled over SNMP every 5 minutes.
        *_each("ping", [mon], [*watched, S.INTERNET_CHECK], "2048/icmp", "ping", period=60,
               jitter=0.005),
        *_each("snmp", [mon], watched, "161/udp", "snmp", period=300, jitter=0.01),
    ]


def iot_streams(site: S.Site, rng: np.random.Generator) -> list[Stream]:
    """IoT devices: periodic reports and polls, around the clock."""
    role, iot = site.role, site.iot
    broker = [role["mqtt"]]
    # fmt: off
    out = [
        *_by_period("mqtt", iot["mqtt"], broker, "1883/tcp", "mqtt",
                    _pick(rng, [15, 30, 60, 60, 120, 300], len(iot["mqtt"])), 0.004),
        *_by_period("cloud", iot["cloud"], [S.IOT_CLOUD], "8883/tcp", "mqtts",
                    _pick(rng, [60, 120, 300], len(iot["cloud"])), 0.01),
        *_by_period("coap", iot["coap"], broker, "5683/udp", "coap",
                    _pick(rng, [15, 20, 30], len(iot["coap"])), 0.004),
        *[flow(f"meter-{m}", [site.bms], [m], "502/tcp", "modbus", period=60, jitter=0.002)
          for m in iot["meter"]],
        *[flow(f"camera-{c}", [site.nvr], [c], "554/tcp", "rtsp", period=600, jitter=0.01)
          for c in iot["camera"]],
    ]
    if iot["cloud"]:
        out += [
            flow("cloud-dns", iot["cloud"], [role["dns"]], "53/udp", "dns", rate=2,
                 profile=ALWAYS),
            flow("cloud-ntp", iot["cloud"], S.NTP_POOL, "123/udp", "ntp", period=3600,
                 jitter=0.01, duration=(-3.5, 0.3)),
        ]
    return out


def plant_streams(
    site: S.Site, start: datetime, days: int, rng: np.random.Generator
) -> list[Stream]:
    """The plant: SCADA polling, historian, HMIs in shifts, the engineer's visits."""
    periods = _pick(rng, [15, 20, 30, 30, 60], len(site.plcs))
    # fmt: off
    out = [
        flow(f"scada-{plc}", [site.scada], [plc], "502/tcp", "modbus", period=float(p),
             jitter=0.004, resp_bytes=(4.0, 0.1))
        for plc, p in zip(site.plcs, periods, strict=True)
    ]
    out += [
        flow("historian", [site.scada], [site.historian], "1433/tcp", "historian", period=60,
             jitter=0.03),
        flow("scada-ntp", [site.scada], [site.role["dc"]], "123/udp", "ntp", period=1024,
             jitter=0.01),
        flow("historian-export", [site.historian], [site.role["files"]], "445/tcp", "export",
             period=DAY, jitter=0.001, phase=6 * HOUR),
    ]
    if site.hmis:
        shifts = _daily(np.array([0.6] * 6 + [1.0] * 16 + [0.6] * 2), start, days, weekend=0.7)
        out.append(flow("hmi", site.hmis, [site.scada], "4840/tcp", "opcua", rate=1,
                        activity=np.repeat(40 * shifts, len(site.hmis), axis=0)))
    if site.plcs:
        engineer, _ = people(1, start, days, rng)
        out.append(flow("engineering", [site.engineering], site.plcs, "502/tcp", "engineering",
                        rate=0.6, activity=engineer))
    return out


def normal_streams(
    site: S.Site, start: datetime, days: int, rng: np.random.Generator
) -> list[Stream]:
    """Every stream of the site's ordinary life over ``days`` from ``start`` (a midnight)."""
    office, activity = office_streams(site, start, days, rng)
    mean = activity.mean(axis=0, keepdims=True)
    load = mean / max(float(mean.max()), 1e-9)  # 1 at the site's busiest hour
    return [
        *office,
        *server_streams(site, start, days, load),
        *iot_streams(site, rng),
        *plant_streams(site, start, days, rng),
    ]
