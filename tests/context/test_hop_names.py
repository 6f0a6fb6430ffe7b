"""Names and geo on every node of the hop graph and every address of a relay.

One small site, analyzed from files (a Zeek conn.log and dns.log, as a user runs
``analyze``) and by live detection (the same flows archived and submitted with the same
DNS transactions, in two batches as they arrive): the stored hop graphs and relays must
be the same, each address carrying the names DNS answered with it before the event's
end (a later answer is not shown) and, when external, its country.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from flowhawk import config
from flowhawk.archive import ArchiveWriter
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import read_dns
from flowhawk.dns.passive import PDNS_FILE, PassiveDns
from flowhawk.live import LiveDetection
from flowhawk.pipeline import run
from tests.flowbuild import T0, canonical, raw

H, A, B = "10.0.0.5", "10.0.0.9", "10.0.0.20"
C2 = "81.2.69.7"
WEB, DB, OUTSIDER = "10.0.0.80", "10.0.0.90", "81.2.69.50"

FLOWS = [
    {"src_ip": B, "dst_ip": A, "dst_port": 3389, "t": 100},
    {"src_ip": A, "dst_ip": H, "dst_port": 22, "t": 200},
    {"src_ip": H, "dst_ip": C2, "dst_port": 443, "t": 300, "dur": 60},
    *[
        {"src_ip": OUTSIDER, "dst_ip": WEB, "dst_port": 443, "t": 400 + 30 * k}
        | {"src_bytes": 1000 * (k + 1)}
        for k in range(4)
    ],
    *[
        {"src_ip": WEB, "dst_ip": DB, "dst_port": 5432, "t": 400.3 + 30 * k}
        | {"src_bytes": 800 * (k + 1)}
        for k in range(4)
    ],
]
# (seconds after T0, name asked, address answered)
ANSWERS = [
    (50, "jump.corp.example", A),
    (60, "admin-pc.corp.example", B),
    (70, "ws5.corp.example", H),
    (80, "c2.bad.example", C2),
    (90, "web.corp.example", WEB),
    (91, "db.corp.example", DB),
    (92, "visitor.example.net", OUTSIDER),
    (5000, "later.corp.example", A),  # answered long after every event: never shown
]
LATE = 1000  # live: DNS before this arrives with the flows, the rest in a later batch

EXPECTED_NODES = {
    C2: (["c2.bad.example"], "GB"),
    H: (["ws5.corp.example"], None),
    A: (["jump.corp.example"], None),
    B: (["admin-pc.corp.example"], None),
}


def _conn_log(path: Path) -> None:
    fields = (
        "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes "
        "resp_bytes conn_state missed_bytes history orig_pkts orig_ip_bytes resp_pkts "
        "resp_ip_bytes"
    )
    lines = ["#separator \\x09", "#path\tconn", "#fields\t" + fields.replace(" ", "\t")]
    for i, r in enumerate(raw(FLOWS).to_pylist()):
        ts = (r["ts_start"] - T0).total_seconds() + T0.timestamp()
        dur = (r["ts_end"] - r["ts_start"]).total_seconds()
        row = [f"{ts:.6f}", f"C{i}", r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"]]
        row += ["tcp", "-", f"{dur:.6f}", r["src_bytes"] - 120, r["dst_bytes"] - 80, "SF", 0]
        row += ["ShADadFf", r["src_pkts"], r["src_bytes"], r["dst_pkts"], r["dst_bytes"]]
        lines.append("\t".join(str(v) for v in row))
    path.write_text("\n".join(lines) + "\n")


def _dns_log(path: Path) -> None:
    fields = "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto trans_id rtt query qtype_name"
    fields += " rcode_name answers TTLs"
    lines = [
        "#separator \\x09",
        "#set_separator\t,",
        "#path\tdns",
        "#fields\t" + "\t".join(fields.split()),
    ]
    for i, (t, name, ip) in enumerate(ANSWERS):
        row = [f"{T0.timestamp() + t:.6f}", f"D{i}", H, 50000 + i, "10.0.0.2", 53, "udp", i]
        row += ["0.001000", name, "A", "NOERROR", ip, "60.000000"]
        lines.append("\t".join(str(v) for v in row))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path) -> tuple[config.Config, Path]:
    (tmp_path / "c2.txt").write_text(f"{C2}\n{OUTSIDER}\n")
    geo = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    geo.insert_network(IPSet(["81.2.69.0/24"]), {"country": {"iso_code": "GB"}})
    geo.to_db_file(str(tmp_path / "country.mmdb"))
    toml = tmp_path / "flowhawk.toml"
    toml.write_text(
        '[network]\ninternal = ["10.0.0.0/8"]\n'
        '[context]\ngeoip = ["country.mmdb"]\nrelay_delay = "1s"\n'
        '[[intel.feeds]]\nsource = "c2.txt"\ncategory = "c2"\n'
    )
    (tmp_path / "in").mkdir()
    _conn_log(tmp_path / "in" / "conn.log")
    _dns_log(tmp_path / "in" / "dns.log")
    return config.load(toml), tmp_path


def _stored(data: Path) -> dict[str, dict]:
    con = duckdb.connect(str(data / "events.duckdb"), read_only=True)
    try:
        rows = con.sql(
            "SELECT id, hops::VARCHAR, relays::VARCHAR FROM events WHERE hops IS NOT NULL "
            "OR json_array_length(relays) > 0"
        ).fetchall()
    finally:
        con.close()
    return {i: {"hops": json.loads(h), "relays": json.loads(r)} for i, h, r in rows}


def _file_run(cfg: config.Config, tmp: Path) -> dict[str, dict]:
    run([tmp / "in"], cfg, tmp / "file", tmp / "file")
    return _stored(tmp / "file")


def _live_run(cfg: config.Config, tmp: Path) -> dict[str, dict]:
    data = tmp / "live"
    PassiveDns().save(data / PDNS_FILE)  # as the collector does: live detection grows it
    dns = pl.from_arrow(pa.concat_tables(read_dns(tmp / "in" / "dns.log", Diagnostics())))
    assert isinstance(dns, pl.DataFrame) and dns.height == len(ANSWERS)
    late = pl.col("ts") >= T0.timestamp() * 1e6 + LATE * 1e6
    early, later = dns.filter(~late.cast(pl.Boolean)), dns.filter(late)
    flows = canonical(FLOWS, cfg).to_arrow()
    ArchiveWriter(data / "flows", "live").write(flows)  # the collector archives first
    live = LiveDetection(cfg, data, "live")
    live.process(flows, early.to_arrow())
    live.process(flows.slice(0, 0), later.to_arrow())
    live.stop()
    return _stored(data)


def test_every_hop_node_and_relay_address_has_its_names_and_geo(site):
    cfg, tmp = site
    stored = _file_run(cfg, tmp)
    (outbound,) = [e for e in stored.values() if e["hops"] and e["hops"]["nodes"][0]["ip"] == C2]
    nodes = {
        n["ip"]: (n["names"], (n["geo"] or {}).get("country")) for n in outbound["hops"]["nodes"]
    }
    assert nodes == EXPECTED_NODES
    assert {n["role"] for n in outbound["hops"]["nodes"]} == {"risky", "host", "hop2", "hop3"}
    (relay,) = [r for e in stored.values() for r in e["relays"]]
    assert (relay["inbound_names"], relay["host_names"], relay["outbound_names"]) == (
        ["visitor.example.net"],
        ["web.corp.example"],
        ["db.corp.example"],
    )
    assert relay["inbound_geo"]["country"] == "GB"
    assert relay["host_geo"] is None and relay["outbound_geo"] is None  # internal


def test_live_and_file_give_the_same_hop_context(site):
    cfg, tmp = site
    file_side, live_side = _file_run(cfg, tmp), _live_run(cfg, tmp)
    assert file_side and live_side == file_side


def test_without_passive_dns_or_geoip_the_fields_are_null(site):
    cfg, tmp = site
    cfg.context.passive_dns = False
    cfg.context.geoip = []
    stored = _file_run(cfg, tmp)
    nodes = [n for e in stored.values() if e["hops"] for n in e["hops"]["nodes"]]
    assert len(nodes) >= 4 and all(n["names"] is None and n["geo"] is None for n in nodes)
    relays = [r for e in stored.values() for r in e["relays"]]
    assert relays and all(r["host_names"] is None and r["inbound_geo"] is None for r in relays)
