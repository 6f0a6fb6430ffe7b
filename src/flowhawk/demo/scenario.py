"""The demo network "Acme": two working days of an office and a plant, with incidents.

Day one is ordinary (flowhawk learns from it); the incidents happen on day two.

All external addresses are from the documentation ranges (RFC 5737), so the demo
data points at nobody real. :data:`INCIDENTS` is the ground truth printed next to
the results.
"""

from __future__ import annotations

import numpy as np

from flowhawk.demo.simulate import ALWAYS, HOUR, Stream

WORKSTATIONS = [f"10.10.1.{i}" for i in range(10, 40)]
DNS, DC, FILES, DB, APP = "10.10.0.53", "10.10.0.10", "10.10.0.20", "10.10.0.30", "10.10.0.40"
PLCS = [f"10.20.1.{i}" for i in range(10, 18)]
SCADA, HISTORIAN, HMI = "10.20.0.5", "10.20.0.6", "10.20.1.100"
WEB = [f"203.0.113.{i}" for i in range(1, 61)] + [f"198.51.100.{i}" for i in range(100, 130)]
RESOLVER, UPDATES = "198.51.100.53", "198.51.100.10"

PATIENT_ZERO = "10.10.1.23"
C2 = "203.0.113.66"
ROGUE = "10.10.1.250"
ROGUE_PEER = "192.0.2.77"
DROP = "198.51.100.200"
SILENT_PLC = "10.20.1.15"
HOARDER = "10.10.1.31"
BROKER = "10.20.0.7"
SENSORS = [f"10.20.1.{i}" for i in range(50, 54)]
DEAD_SENSOR = SENSORS[-1]
DNS_TUNNELER = "10.10.1.35"
TUNNEL_PEER = "192.0.2.99"
TOR_USER = "10.10.1.17"
TOR_RELAY = "192.0.2.101"  # listed as a Tor relay in the demo's intel feed
SCANNER = "10.10.1.28"
SCAN_PORTS = [21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 389, 443, 445, 993, 995, 1433, 1521]
SCAN_PORTS += [1723, 3306, 3389, 5432, 5900, 5985, 6379, 8000, 8080, 8443, 9000, 9200, 27017]
VENDOR = "192.0.2.150"
PROBER = "198.51.100.250"  # an internet host that probes the plant only
SYNCER, LISTED_SHARE = "10.10.1.20", "198.51.100.140"  # a habit with a listed server

DAY = 24 * HOUR
INCIDENTS = [
    ("08:55", f"{PATIENT_ZERO} looks up 40 random names (NXDOMAIN: a DGA), the 41st resolves"),
    ("09:00", f"{PATIENT_ZERO} starts beaconing to {C2}:8443 every 60 s (+-5 s)"),
    ("10:00", f"{HOARDER} pulls and pushes gigabytes over its usual SMB session to {FILES}"),
    ("11:00", f"{TOR_USER} uses Tor: half-hour TLS circuits to relay {TOR_RELAY}:9001 until 13:00"),
    ("12:00", f"{SCANNER} slowly scans 10.10.1.0/24 on 445/tcp: one address every 30 s"),
    ("13:00", f"vendor {VENDOR} holds a 4 h VNC session to HMI {HMI}:5900 (30-minute records)"),
    ("14:30", f"{SCANNER} scans {len(SCAN_PORTS)} ports of application server {APP}"),
    ("14:00", f"rogue device {ROGUE} appears and connects to {ROGUE_PEER}:4444"),
    ("15:00", f"{DNS_TUNNELER} tunnels data through DNS: 30 long queries a minute to {DNS}"),
    ("16:30", f"{PATIENT_ZERO} moves laterally: SMB and RDP to 12 workstations"),
    ("18:00", f"guarded database {DB} uploads ~200 MB to {DROP}:443"),
    ("19:00", f"DNS server {DNS} tunnels data over ICMP to {TUNNEL_PEER} (large echoes)"),
    ("20:00", f"PLC {SILENT_PLC} goes silent (no more Modbus polls answered)"),
    ("21:00", f"MQTT sensor {DEAD_SENSOR} stops reporting to its broker {BROKER}:1883"),
    ("22:00", f"internet host {PROBER} probes the plant's PLCs on Modbus 502/tcp (not the office)"),
    (
        "all day",
        f"{SYNCER} syncs with {LISTED_SHARE} every 2 h, a server the feed lists as malware",
    ),
]


def ping(client: str, server: str, **kw: float) -> Stream:
    """An ICMP echo every minute (port 2048: type 8, code 0), 84 bytes each way."""
    return Stream(
        f"ping-{server}",
        [client],
        [server],
        2048,
        1,
        period=60,
        jitter=0.005,
        req_bytes=(4.43, 0.0),
        resp_bytes=(4.43, 0.0),
        duration=(-7.0, 0.3),
        **kw,  # type: ignore[arg-type]
    )


def probe(name: str, client: str, server: str, port: int, at: float, live: bool) -> Stream:
    """One scan attempt at ``at``: a live host answers the handshake and nothing more
    (3 packets of 40 bytes out, 2 of 60 back), any other address stays silent."""
    return Stream(
        name,
        [client],
        [server],
        port,
        6,
        period=DAY,
        phase=0.0,
        start=at,
        stop=at + 1.0,
        answered=1.0 if live else 0.0,
        req_bytes=(4.79, 0.0),
        resp_bytes=(4.79, 0.0),
        duration=(-4.0, 0.0),
        state="RSTO",
    )


def scans() -> list[Stream]:
    """The scanner's slow sweep of the office subnet on SMB and its scan of the app server."""
    sweep = [f"10.10.1.{i}" for i in range(1, 255) if f"10.10.1.{i}" != SCANNER]
    t0, t1 = DAY + 12 * HOUR, DAY + 14.5 * HOUR
    return [
        *[
            probe(f"scan-smb-{ip}", SCANNER, ip, 445, t0 + 30.0 * i, ip in WORKSTATIONS)
            for i, ip in enumerate(sweep)
        ],
        *[
            probe(f"scan-app-{port}", SCANNER, APP, port, t1 + 3.0 * i, port == 443)
            for i, port in enumerate(SCAN_PORTS)
        ],
    ]


def streams() -> list[Stream]:
    """Every stream of the two demo days (times in seconds from the first midnight, UTC)."""
    night = np.where(np.arange(24) < 7, 1.0, 0.3)
    targets = [w for w in WORKSTATIONS if w != PATIENT_ZERO][:12]
    plcs_ok = [p for p in PLCS if p != SILENT_PLC]
    return [
        # Office IT.
        Stream(
            "web",
            WORKSTATIONS,
            WEB,
            443,
            6,
            rate=40,
            zipf=1.2,
            service="ssl",
            req_bytes=(7.0, 0.8),
            resp_bytes=(10.0, 1.5),
            duration=(0.5, 1.2),
        ),
        Stream("web-http", WORKSTATIONS, WEB[:20], 80, 6, rate=4, zipf=1.2, service="http"),
        Stream(
            "dns",
            WORKSTATIONS,
            [DNS],
            53,
            17,
            rate=60,
            service="dns",
            req_bytes=(4.2, 0.2),
            resp_bytes=(5.0, 0.4),
            duration=(-5.0, 0.5),
        ),
        Stream(
            "dns-fwd",
            [DNS],
            [RESOLVER],
            53,
            17,
            rate=400,
            profile=np.ones(24) * 0.5,
            service="dns",
            req_bytes=(4.2, 0.2),
            resp_bytes=(5.0, 0.4),
            duration=(-4.0, 0.5),
        ),
        Stream("kerberos", WORKSTATIONS, [DC], 88, 6, rate=4, service="krb"),
        Stream("ldap", WORKSTATIONS, [DC], 389, 6, rate=6, service="ldap"),
        Stream(
            "smb-files",
            WORKSTATIONS,
            [FILES],
            445,
            6,
            rate=5,
            service="smb",
            resp_bytes=(11.0, 1.5),
        ),
        Stream("app", WORKSTATIONS, [APP], 443, 6, rate=10, service="ssl"),
        Stream("app-db", [APP], [DB], 5432, 6, rate=300, service="postgresql"),
        Stream(
            "ntp",
            [*WORKSTATIONS, DNS, DC, FILES, DB, APP],
            [DC],
            123,
            17,
            period=1024,
            jitter=0.01,
            service="ntp",
            req_bytes=(4.4, 0.01),
            resp_bytes=(4.4, 0.01),
        ),
        Stream(
            "updates",
            [DNS, DC, FILES, DB, APP],
            [UPDATES],
            443,
            6,
            period=3 * HOUR,
            jitter=0.05,
            service="ssl",
            resp_bytes=(13.0, 1.0),
        ),
        Stream(
            "backup",
            [DB],
            [FILES],
            445,
            6,
            period=DAY,
            start=HOUR,
            stop=2 * HOUR,
            service="smb",
            req_bytes=(20.0, 0.2),
            duration=(6.0, 0.2),
            profile=night,
        ),
        # Plant: SCADA polls every PLC over Modbus, the historian, an HMI.
        Stream(
            "modbus",
            [SCADA],
            plcs_ok,
            502,
            6,
            period=30,
            jitter=0.02,
            service="modbus",
            req_bytes=(4.6, 0.05),
            resp_bytes=(4.9, 0.05),
            duration=(-3.0, 0.3),
        ),
        Stream(
            "modbus-silent-plc",
            [SCADA],
            [SILENT_PLC],
            502,
            6,
            period=30,
            jitter=0.02,
            stop=DAY + 20 * HOUR,
            service="modbus",
            req_bytes=(4.6, 0.05),
            resp_bytes=(4.9, 0.05),
            duration=(-3.0, 0.3),
        ),
        Stream(
            "modbus-unanswered",
            [SCADA],
            [SILENT_PLC],
            502,
            6,
            period=30,
            jitter=0.02,
            start=DAY + 20 * HOUR,
            answered=0.0,
            req_bytes=(4.1, 0.01),
        ),
        Stream("historian", [SCADA], [HISTORIAN], 1433, 6, period=60, jitter=0.05, service="mssql"),
        Stream("hmi", [HMI], [SCADA], 443, 6, rate=20, profile=ALWAYS, service="ssl"),
        Stream(
            "mqtt",
            SENSORS[:-1],
            [BROKER],
            1883,
            6,
            period=60,
            jitter=0.02,
            service="mqtt",
            req_bytes=(5.0, 0.05),
            resp_bytes=(4.0, 0.05),
        ),
        Stream(
            "mqtt-dead-sensor",
            [DEAD_SENSOR],
            [BROKER],
            1883,
            6,
            period=60,
            jitter=0.02,
            stop=DAY + 21 * HOUR,
            service="mqtt",
            req_bytes=(5.0, 0.05),
            resp_bytes=(4.0, 0.05),
        ),
        # Monitoring: SCADA pings every PLC each minute (the silent PLC stops answering),
        # and the DNS server checks the uplink by pinging its upstream resolver.
        *[ping(SCADA, plc) for plc in plcs_ok],
        ping(SCADA, SILENT_PLC, stop=DAY + 20 * HOUR),
        ping(SCADA, SILENT_PLC, start=DAY + 20 * HOUR, answered=0.0),
        ping(DNS, RESOLVER),
        # Incidents.
        Stream(
            "dns-tunnel",
            [DNS_TUNNELER],
            [DNS],
            53,
            17,
            rate=1800,
            profile=ALWAYS,
            start=DAY + 15 * HOUR,
            stop=DAY + 15 * HOUR + 1200,
            service="dns",
            req_bytes=(5.4, 0.1),
            resp_bytes=(5.6, 0.1),
            duration=(-5.0, 0.5),
        ),
        Stream(
            "icmp-tunnel",
            [DNS],
            [TUNNEL_PEER],
            2048,
            1,
            rate=1800,
            profile=ALWAYS,
            start=DAY + 19 * HOUR,
            stop=DAY + 19.5 * HOUR,
            req_bytes=(6.9, 0.1),
            resp_bytes=(6.9, 0.1),
            duration=(-6.0, 0.3),
        ),
        Stream(
            "file-hoarding",
            [HOARDER],
            [FILES],
            445,
            6,
            rate=240,
            profile=ALWAYS,
            start=DAY + 10 * HOUR,
            stop=DAY + 10.25 * HOUR,
            service="smb",
            req_bytes=(15.5, 0.3),
            resp_bytes=(16.0, 0.3),
            duration=(3.0, 0.3),
        ),
        Stream(
            "c2-beacon",
            [PATIENT_ZERO],
            [C2],
            8443,
            6,
            period=60,
            jitter=0.05 / 3,
            start=DAY + 9 * HOUR,
            service="ssl",
            req_bytes=(6.2, 0.05),
            resp_bytes=(6.6, 0.05),
        ),
        Stream(
            "rogue",
            [ROGUE],
            [ROGUE_PEER, RESOLVER],
            4444,
            6,
            rate=30,
            profile=ALWAYS,
            start=DAY + 14 * HOUR,
            stop=DAY + 15 * HOUR,
        ),
        Stream(
            "lateral-smb",
            [PATIENT_ZERO],
            targets,
            445,
            6,
            rate=40,
            profile=ALWAYS,
            start=DAY + 16.5 * HOUR,
            stop=DAY + 17 * HOUR,
            service="smb",
        ),
        Stream(
            "lateral-rdp",
            [PATIENT_ZERO],
            targets[:4],
            3389,
            6,
            rate=8,
            profile=ALWAYS,
            start=DAY + 16.5 * HOUR,
            stop=DAY + 17 * HOUR,
            service="rdp",
        ),
        Stream(
            "exfil",
            [DB],
            [DROP],
            443,
            6,
            rate=12,
            profile=ALWAYS,
            start=DAY + 18 * HOUR,
            stop=DAY + 18.5 * HOUR,
            service="ssl",
            req_bytes=(16.6, 0.1),
            resp_bytes=(8.0, 0.5),
            duration=(4.0, 0.3),
        ),
        Stream(
            "tor",
            [TOR_USER],
            [TOR_RELAY],
            9001,
            6,
            period=1800,
            jitter=0.01,
            start=DAY + 11 * HOUR,
            stop=DAY + 13 * HOUR,
            service="ssl",
            req_bytes=(13.0, 0.3),
            resp_bytes=(15.0, 0.3),
            duration=(7.45, 0.05),
            packet_bytes=560,
        ),
        # Added last, so the streams above draw the same random numbers as before.
        *scans(),
        Stream(
            "vendor-vnc",
            [VENDOR],
            [HMI],
            5900,
            6,
            period=1800,
            phase=0.0,
            start=DAY + 13 * HOUR,
            stop=DAY + 17 * HOUR,
            client_port=51515,
            service="vnc",
            req_bytes=(12.0, 0.3),
            resp_bytes=(15.0, 0.3),
            duration=(float(np.log(1799.0)), 0.0),
        ),
        Stream(
            "plant-probe",
            [PROBER],
            PLCS,
            502,
            6,
            rate=160,
            profile=ALWAYS,
            start=DAY + 22 * HOUR,
            stop=DAY + 22.25 * HOUR,
            answered=0.3,
            req_bytes=(4.1, 0.05),
            resp_bytes=(4.5, 0.1),
        ),
        Stream(
            "listed-sync",
            [SYNCER],
            [LISTED_SHARE],
            443,
            6,
            period=2 * HOUR,
            jitter=0.1,
            profile=ALWAYS,
            service="ssl",
            req_bytes=(9.0, 0.5),
            resp_bytes=(11.0, 0.5),
        ),
    ]
