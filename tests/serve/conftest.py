"""A service over a data directory with events and flows of two sites, and its tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from flowhawk import config
from flowhawk.archive import ArchiveWriter
from flowhawk.detectors.base import conform_alarms
from flowhawk.events import build_events
from flowhawk.serve.app import create_app
from flowhawk.serve.service import Service
from flowhawk.sinks.base import SinkPaths
from flowhawk.sinks.store import EventStore
from tests.flowbuild import at, canonical

SITES_TOML = {
    "sites": [
        {"name": "a", "networks": ["10.1.0.0/16"], "exporters": ["192.0.2.1"]},
        {"name": "b", "networks": ["10.2.0.0/16"], "exporters": ["192.0.2.2"]},
    ]
}


def two_site_config(**extra: object) -> config.Config:
    return config.from_dict({**SITES_TOML, **extra})


def _alarm(i: int, site: str, src: str, dst: str, method: str, score: float) -> dict:
    return {
        "method": method,
        "name": {"M1": "new communication", "N1": "beaconing"}[method],
        "ts": at(i * 3600 + 60),
        "ts_end": at(i * 3600 + 120),
        "site": site,
        "src_ip": src,
        "dst_ip": dst,
        "dst_port": 443,
        "proto": 6,
        "direction": "north-south",
        "score": score,
        "observed": f"{src} -> {dst}",
        "expected": "not seen before",
        "reason": f"{src} talked to {dst}:443/tcp for the first time",
    }


def fill(data: Path, cfg: config.Config) -> dict[str, list[str]]:
    """Events of sites a and b (stored as analyze stores them) and their flows archived."""
    rows = []
    for i in range(6):
        rows.append(_alarm(i, "a", "10.1.0.5", f"198.51.100.{i + 1}", "M1", 0.5 + i / 20))
        rows.append(_alarm(i, "b", "10.2.0.9", f"203.0.113.{i + 1}", "M1", 0.4 + i / 20))
    rows.append(_alarm(2, "a", "10.1.0.5", "198.51.100.3", "N1", 0.9))
    events, alarms = build_events(conform_alarms(pl.DataFrame(rows)), cfg)
    sink = EventStore(SinkPaths(out=data, data=data))
    sink.start()
    sink.write(events, alarms)
    sink.stop()
    flows = canonical(
        [
            {
                "src_ip": r["src_ip"],
                "dst_ip": r["dst_ip"],
                "dst_port": 443,
                "t": (r["ts"] - at(0)).total_seconds(),
                "exporter": "192.0.2.1",
            }
            for r in rows
        ],
        cfg,
    )
    writer = ArchiveWriter(data / "flows", "test", "lz4")
    writer.write(flows.to_arrow())
    return {
        site: events.filter(pl.col("site") == site).get_column("id").to_list()
        for site in ("a", "b")
    }


@dataclass
class Api:
    client: TestClient
    svc: Service
    ids: dict[str, list[str]]
    tokens: dict[str, str]

    def get(self, path: str, who: str = "admin", **kw):  # type: ignore[no-untyped-def]
        return self.client.get(path, headers=self.auth(who), **kw)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def api(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = two_site_config()
    data = tmp_path / "data"
    data.mkdir()
    ids = fill(data, cfg)
    svc = Service(cfg, data, collect=False)
    tokens = {"admin": svc.auth.bootstrap_admin() or ""}
    for name, role, sites in (
        ("ana", "analyst", ["a"]),
        ("vic", "viewer", ["a"]),
        ("bob", "analyst", ["b"]),
        ("all", "analyst", []),
    ):
        svc.auth.add_user(name, role, sites)
        tokens[name] = svc.auth.add_token(name, "test")
    with TestClient(create_app(svc)) as client:
        yield Api(client, svc, ids, tokens)
