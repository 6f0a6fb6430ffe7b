"""The built-in demo: two simulated days of a small company, ready to analyze.

``make_demo(folder)`` writes ``acme-conn.log`` and ``acme-dns.log`` (Zeek TSV), ``acme.toml`` (its
configuration), ``acme-intel.csv`` (a threat-intelligence feed listing the demo's C2
server and the Tor relay of its incidents, each with its category, configured in
``acme.toml``) and ``INCIDENTS.txt`` (what happened, for checking the results).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import polars as pl
import pyarrow as pa

from flowhawk.demo import dnslog, scenario
from flowhawk.demo.scenario import INCIDENTS, streams
from flowhawk.demo.simulate import generate_frame
from flowhawk.demo.zeekfmt import write_conn_log
from flowhawk.schema import RAW_FLOW_SCHEMA, conform

#: Name of the demo's threat-intelligence feed (a CSV with a category column, in the
#: package data).
DEMO_FEED = "acme-intel.csv"

DEMO_DAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
DEMO_SEED = 20260302


def demo_data() -> tuple[pa.Table, pl.DataFrame]:
    """The demo's two days: raw flows (``RAW_FLOW_SCHEMA``) and the DNS transactions its
    resolver saw (Zeek dns.log columns, see :mod:`flowhawk.demo.dnslog`)."""
    frame = generate_frame(streams(), DEMO_DAY, hours=48, seed=DEMO_SEED)
    dns = dnslog.transactions(
        frame,
        web=scenario.WEB,
        resolver=scenario.DNS,
        dga_host=scenario.PATIENT_ZERO,
        c2=scenario.C2,
        dga_at=DEMO_DAY + timedelta(days=1, hours=8, minutes=55),
        seed=DEMO_SEED,
    )
    return conform(frame.drop("stream").to_arrow(), RAW_FLOW_SCHEMA), dns


def make_demo(folder: Path) -> tuple[list[Path], Path]:
    """Write the demo inputs (conn.log, dns.log) and config into ``folder``; return
    (input paths, config path)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "acme-conn.log"
    flows, dns = demo_data()
    write_conn_log(flows, log, seed=str(DEMO_SEED))
    dns_log = folder / "acme-dns.log"
    dnslog.write_dns_log(dns, dns_log)
    feed = folder / DEMO_FEED
    feed.write_text(demo_feed_text())
    cfg = folder / "acme.toml"
    cfg.write_text(
        resources.files("flowhawk.demo").joinpath("demo.toml").read_text()
        + f"\n[[intel.feeds]]  # what the threat feeds say about the demo's addresses\n"
        f"source = {json.dumps(str(feed.resolve()))}\n"
    )
    day2 = DEMO_DAY + timedelta(days=1)
    lines = [f"{day2:%Y-%m-%d} {t} UTC  {what}" for t, what in INCIDENTS]
    (folder / "INCIDENTS.txt").write_text(
        "Simulated network 'Acme' (sites hq 10.10.0.0/16, plant 10.20.0.0/16); incidents:\n"
        + "\n".join(lines)
        + "\n"
    )
    return [log, dns_log], cfg


def demo_feed_text() -> str:
    """The demo's threat-intelligence feed: the C2 server and the Tor relay of its incidents."""
    return resources.files("flowhawk.demo").joinpath(DEMO_FEED).read_text()
