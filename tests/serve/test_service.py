"""The service's own logic: what is news for outputs and the stream, retention, exporters."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry

from flowhawk.collect.inventory import Inventory
from flowhawk.serve.publish import Publisher
from flowhawk.serve.stream import Broadcaster


class Recorder:
    def __init__(self) -> None:
        self.docs: list[dict] = []

    def publish(self, docs: list[dict]) -> None:
        self.docs += docs


def _doc(eid: str, risk: float, methods: list[str]) -> dict:
    return {"id": eid, "risk": risk, "methods": methods, "site": "a",
            "ts_end": "2024-01-01T00:10:00.000000Z"}  # fmt: skip


def test_publisher_sends_new_and_escalated_events_only(api):
    out = Recorder()
    pub = Publisher(api.svc.db, Broadcaster(), out, CollectorRegistry())
    eid = api.ids["a"][0]
    first = pub.news([_doc(eid, 40.0, ["M1"])])
    assert [(d["id"], d["revision"], d["status"]) for d in first] == [(eid, 1, "new")]
    assert pub.news([_doc(eid, 40.5, ["M1"])]) == []  # grew a little: not news
    assert pub.news([_doc(eid, 39.0, ["M1"])]) == []  # lower: not news
    assert [d["revision"] for d in pub.news([_doc(eid, 41.0, ["M1"])])] == [2]
    assert [d["revision"] for d in pub.news([_doc(eid, 41.0, ["M1", "N1"])])] == [3]
    api.client.patch(f"/api/v1/events/{eid}", headers=api.auth("admin"), json={"status": "closed"})
    assert pub.news([_doc(eid, 90.0, ["M1", "N1"])])[0]["status"] == "closed"


def test_retention_drops_old_events_with_their_alarms(api):
    newest = api.svc.newest_bucket()
    assert newest is not None
    api.svc.cfg.serve.events_retention = 3 * 3600.0
    done = api.svc.apply_retention(newest)
    assert done["events"] > 0
    left = api.get("/api/v1/events", params={"limit": 100}).json()["items"]
    assert left and all(e["ts_end"] >= (newest - timedelta(hours=3)).isoformat()[:19] for e in left)
    cur = api.svc.db.cursor()
    orphans = cur.execute(
        "SELECT count(*) FROM alarms WHERE event_id NOT IN (SELECT id FROM events)"
    ).fetchall()[0][0]
    assert orphans == 0


def test_exporters_are_scoped_by_site(api):
    inv = Inventory()
    for exporter in ("192.0.2.1", "192.0.2.2", "192.0.2.99"):
        inv.state(exporter).domain("ipfix", 0).flows = 10
    inv.save(api.svc.data_dir)
    assert {e["exporter"] for e in api.get("/api/v1/exporters").json()} == {
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.99",
    }
    assert [e["exporter"] for e in api.get("/api/v1/exporters", "ana").json()] == ["192.0.2.1"]
    assert [e["exporter"] for e in api.get("/api/v1/exporters", "bob").json()] == ["192.0.2.2"]
    assert len(api.get("/api/v1/exporters", "all").json()) == 3


def test_the_documented_service_settings_are_valid():
    """The TOML example of docs/API.md loads (outputs, routes, [serve])."""
    import re
    import tomllib
    from pathlib import Path

    from flowhawk import config

    doc = (Path(__file__).parents[2] / "docs" / "API.md").read_text()
    block = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    cfg = config.from_dict(tomllib.loads(block), "docs/API.md")
    assert {o["type"] for o in cfg.outputs} == {"syslog", "webhook", "email"}
    assert [r.name for r in cfg.routes][:2] == ["mail", "mail high risk"]
    assert "********" in str(config.effective(cfg)["outputs"])
