"""The REST API over a data directory of two sites: reading, curating, isolation."""

from __future__ import annotations

import json

import pytest

from flowhawk.serve.eventdb import frame
from flowhawk.sinks.store import EventStore

PROTECTED = [
    "/api/v1/events",
    "/api/v1/events/stats",
    "/api/v1/events/export",
    "/api/v1/hosts",
    "/api/v1/sites",
    "/api/v1/status",
    "/api/v1/metrics",
    "/api/v1/intel",
    "/api/v1/exporters",
    "/api/v1/me",
    "/api/v1/subscriptions",
    "/api/v1/flows?since=2024-01-01T00:00:00Z&until=2024-01-02T00:00:00Z",
]


def test_health_is_open_and_openapi_is_published(api):
    assert api.client.get("/api/v1/health").json() == {"status": "ok"}
    spec = api.get("/api/v1/openapi.json").json()
    assert spec["info"]["title"] == "flowhawk"
    assert "/api/v1/events/{event_id}" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


@pytest.mark.parametrize("path", PROTECTED)
def test_everything_else_needs_a_valid_token(api, path):
    assert api.client.get(path).status_code == 401
    bad = {"Authorization": "Bearer fh_00000000_nope"}
    r = api.client.get(path, headers=bad)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert api.get(path).status_code == 200


def test_event_list_filters_sorts_and_pages(api):
    body = api.get("/api/v1/events", params={"limit": 5}).json()
    assert body["total"] == 12 and len(body["items"]) == 5
    risks = [e["risk"] for e in body["items"]]
    assert risks == sorted(risks, reverse=True)
    page2 = api.get("/api/v1/events", params={"limit": 5, "offset": 5}).json()["items"]
    assert not {e["id"] for e in page2} & {e["id"] for e in body["items"]}
    beacons = api.get("/api/v1/events", params={"method": "N1"}).json()
    assert beacons["total"] == 1 and "N1" in beacons["items"][0]["methods"]
    by_host = api.get("/api/v1/events", params={"host": "203.0.113.2"}).json()
    assert by_host["total"] == 1 and by_host["items"][0]["site"] == "b"
    since = api.get("/api/v1/events", params={"since": "2024-01-01T03:00:00Z", "sort": "ts_start"})
    starts = [e["ts_start"] for e in since.json()["items"]]
    assert starts == sorted(starts) and all(s >= "2024-01-01T03" for s in starts)
    high = api.get("/api/v1/events", params={"min_risk": 40}).json()["items"]
    assert high and all(e["risk"] >= 40 for e in high)
    assert api.get("/api/v1/events", params={"sort": "reason"}).status_code == 422
    assert api.get("/api/v1/events", params={"limit": 0}).status_code == 422


def test_event_detail_explains_every_alarm(api):
    beacon = api.get("/api/v1/events", params={"method": "N1"}).json()["items"][0]
    ev = api.get(f"/api/v1/events/{beacon['id']}").json()
    assert {a["method"] for a in ev["alarms"]} == {"M1", "N1"}
    for alarm in ev["alarms"]:
        assert alarm["reason"] and alarm["observed"] and alarm["expected"]
    flows = api.get(f"/api/v1/events/{beacon['id']}/flows").json()
    assert flows["count"] == 2  # the M1 and the N1 row were each one flow of this pair
    assert {f["dst_ip"] for f in flows["items"]} == {beacon["dst_ip"]}
    assert api.get("/api/v1/events/0123456789abcdef").status_code == 404


def test_verdict_and_status_persist_with_history_and_survive_redetection(api):
    eid = api.ids["a"][0]
    r = api.client.patch(
        f"/api/v1/events/{eid}",
        headers=api.auth("ana"),
        json={"status": "closed", "verdict": "benign", "comment": "backup job"},
    )
    assert r.status_code == 200, r.text
    ev = api.get(f"/api/v1/events/{eid}").json()
    assert (ev["status"], ev["verdict"], ev["comment"]) == ("closed", "benign", "backup job")
    assert {(h["user"], h["field"], h["new_value"]) for h in ev["history"]} == {
        ("ana", "status", "closed"),
        ("ana", "verdict", "benign"),
        ("ana", "comment", "backup job"),
    }
    # detection writes the (grown) event again: the analyst's work stays
    cur = api.svc.db.cursor()
    events = frame(cur, "SELECT * FROM events WHERE id = ?", [eid])
    alarms = frame(cur, "SELECT * FROM alarms WHERE event_id = ?", [eid])
    sink = EventStore.__new__(EventStore)
    sink.con = cur
    sink.write(events.drop("status", "verdict", "comment"), alarms)
    assert api.get(f"/api/v1/events/{eid}").json()["verdict"] == "benign"
    same = api.client.patch(f"/api/v1/events/{eid}", headers=api.auth("ana"), json={})
    assert same.status_code == 200 and same.json()["verdict"] == "benign"
    bad = api.client.patch(f"/api/v1/events/{eid}", headers=api.auth("ana"), json={"verdict": "x"})
    assert bad.status_code == 422
    bulk = api.client.post(
        "/api/v1/events/bulk",
        headers=api.auth("ana"),
        json={"ids": api.ids["a"], "status": "investigating"},
    )
    assert bulk.json() == {"changed": len(api.ids["a"])}


def test_viewer_reads_but_cannot_change(api):
    eid = api.ids["a"][0]
    assert api.get(f"/api/v1/events/{eid}", "vic").status_code == 200
    r = api.client.patch(
        f"/api/v1/events/{eid}", headers=api.auth("vic"), json={"status": "closed"}
    )
    assert r.status_code == 403
    assert api.get("/api/v1/policies", "ana").status_code == 403
    assert api.get("/api/v1/tokens", "ana").status_code == 403


def test_site_scope_isolates_everything(api):
    """An analyst of site a sees and changes nothing of site b, whatever the route."""
    mine, theirs = api.ids["a"], api.ids["b"]
    listed = api.get("/api/v1/events", "ana", params={"limit": 100}).json()
    assert listed["total"] == len(mine) and {e["site"] for e in listed["items"]} == {"a"}
    asked_b = api.get("/api/v1/events", "ana", params={"site": "b"}).json()
    assert asked_b["total"] == 0 and asked_b["items"] == []
    both = api.get("/api/v1/events", "ana", params={"site": ["a", "b"]}).json()
    assert both["total"] == len(mine)
    host_b = api.get("/api/v1/events", "ana", params={"host": "10.2.0.9"}).json()
    assert host_b["total"] == 0
    for eid in theirs:  # guessed ids of site b look missing, not forbidden
        assert api.get(f"/api/v1/events/{eid}", "ana").status_code == 404
        assert api.get(f"/api/v1/events/{eid}/flows", "ana").status_code == 404
        r = api.client.patch(
            f"/api/v1/events/{eid}", headers=api.auth("ana"), json={"status": "closed"}
        )
        assert r.status_code == 404
    bulk = api.client.post(
        "/api/v1/events/bulk", headers=api.auth("ana"), json={"ids": theirs, "verdict": "benign"}
    )
    assert bulk.json() == {"changed": 0}
    assert all(api.get(f"/api/v1/events/{e}").json()["verdict"] is None for e in theirs)
    export = api.get("/api/v1/events/export", "ana").text
    assert {json.loads(line)["site"] for line in export.splitlines()} == {"a"}
    csv_export = api.get("/api/v1/events/export", "ana", params={"format": "csv"}).text
    assert "10.2.0.9" not in csv_export and "10.1.0.5" in csv_export
    stats = api.get("/api/v1/events/stats", "ana").json()
    assert stats["totals"]["events"] == len(mine)
    assert sum(b["events"] for b in stats["bands"]) == len(mine)
    hosts = {
        h["ip"] for h in api.get("/api/v1/hosts", "ana", params={"limit": 100}).json()["items"]
    }
    assert "10.1.0.5" in hosts and not any(h.startswith(("10.2.", "203.0.113.")) for h in hosts)
    other = api.get("/api/v1/hosts/10.2.0.9", "ana").json()  # as unknown as a random address
    assert other["known"] is False and other["events"] == 0 and other["top_events"] == []
    assert other["risk"] is None and other["behavior"]["series"] == []
    mine = api.get("/api/v1/hosts/10.1.0.5", "ana", params={"horizon": "30d"}).json()
    assert mine["known"] and sum(r["events"] for r in mine["risk_series"]) == mine["events"]
    assert mine["relays"] == []
    flows = api.get(
        "/api/v1/flows",
        "ana",
        params={"since": "2024-01-01T00:00:00Z", "until": "2024-01-02T00:00:00Z"},
    ).json()
    assert flows["count"] > 0 and {f["site"] for f in flows["items"]} == {"a"}
    assert [s["name"] for s in api.get("/api/v1/sites", "ana").json()] == ["a"]
    # bob (site b) sees b only, "all" (no site list) sees both
    assert {e["site"] for e in api.get("/api/v1/events", "bob").json()["items"]} == {"b"}
    assert api.get("/api/v1/events", "all").json()["total"] == 12


def test_live_stream_is_filtered_by_scope(api):
    """The stream carries published events of the caller's sites only (and its filter)."""
    import threading
    import time

    docs = [
        {"id": f"{i:016x}", "site": site, "risk": 50.0, "methods": ["M1"], "src_ip": "10.0.0.1",
         "dst_ip": "192.0.2.9", "ts_end": "2024-01-01T00:00:00Z"}
        for i, site in enumerate(["b", "a", "b", "a"])
    ]  # fmt: skip

    def publish() -> None:
        while api.svc.stream.clients < 1:
            time.sleep(0.02)
        api.svc.stream.publish(docs)
        time.sleep(0.2)
        api.svc.stream.close_all()

    threading.Thread(target=publish, daemon=True).start()
    got = []
    with api.client.stream("GET", "/api/v1/events/stream", headers=api.auth("ana")) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
    assert [d["site"] for d in got] == ["a", "a"]
    assert [d["id"] for d in got] == [docs[1]["id"], docs[3]["id"]]


def test_policies_are_admin_only_and_validated(api):
    assert api.get("/api/v1/policies").json() == {"routes": []}
    r = api.client.put(
        "/api/v1/policies", headers=api.auth("admin"), json={"routes": [{"outputs": ["nope"]}]}
    )
    assert r.status_code == 422 and "nope" in r.text
    r = api.client.put(
        "/api/v1/policies", headers=api.auth("ana"), json={"routes": [{"min_risk": 50}]}
    )
    assert r.status_code == 403
    r = api.client.put(
        "/api/v1/policies",
        headers=api.auth("admin"),
        json={"routes": [{"name": "high", "min_risk": 80}]},
    )
    assert r.status_code == 200 and r.json()["routes"][0]["min_risk"] == 80
    assert (api.svc.data_dir / "policies.json").exists()


def test_subscriptions_stay_in_scope(api):
    body = {"url": "http://127.0.0.1:9/hook", "min_risk": 10}
    r = api.client.post("/api/v1/subscriptions", headers=api.auth("ana"), json=body)
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["sites"] == ["a"] and len(sub["secret"]) >= 16
    r = api.client.post(
        "/api/v1/subscriptions", headers=api.auth("ana"), json={**body, "sites": ["b"]}
    )
    assert r.status_code == 403
    listed = api.get("/api/v1/subscriptions", "ana").json()
    assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
    assert api.get("/api/v1/subscriptions", "bob").json() == []
    assert (
        api.client.delete(f"/api/v1/subscriptions/{sub['id']}", headers=api.auth("bob")).status_code
        == 404
    )
    assert sub["id"] in api.svc.output_names()
    assert (
        api.client.delete(f"/api/v1/subscriptions/{sub['id']}", headers=api.auth("ana")).status_code
        == 204
    )
    assert sub["id"] not in api.svc.output_names()


def test_login_session_and_logout(api):
    api.svc.auth.set_password("ana", "correct horse battery")
    assert (
        api.client.post(
            "/api/v1/login", json={"user": "ana", "password": "wrong password!"}
        ).status_code
        == 401
    )
    r = api.client.post("/api/v1/login", json={"user": "ana", "password": "correct horse battery"})
    assert r.status_code == 200
    session = {"Authorization": f"Bearer {r.json()['token']}"}
    assert api.client.get("/api/v1/me", headers=session).json()["sites"] == ["a"]
    assert api.client.post("/api/v1/logout", headers=session).status_code == 204
    assert api.client.get("/api/v1/me", headers=session).status_code == 401


def test_metrics_and_status(api):
    text = api.get("/api/v1/metrics").text
    assert "flowhawk_state_bytes" in text and "flowhawk_stream_clients" in text
    status = api.get("/api/v1/status").json()
    assert status["version"] and "outputs" in status
    assert "outputs" not in api.get("/api/v1/status", "ana").json()
    assert api.get("/api/v1/metrics", "ana").status_code == 403  # spans every site
    assert api.get("/api/v1/metrics", "all").status_code == 200


def test_event_behavior_series_and_band(api):
    """The alarmed communication's log rows, resampled, with a usual band per measure."""
    from datetime import timedelta

    import polars as pl

    from flowhawk.behavior.log import LogStore
    from tests.flowbuild import at

    ev = api.get("/api/v1/events", params={"method": "N1"}).json()["items"][0]
    n = 288  # one day of 5-minute buckets before the event, then a spike
    rows = pl.DataFrame(
        {
            "bucket": [at(3 * 3600) - timedelta(minutes=5 * i) for i in range(n)],
            "site": "a",
            "src_ip": ev["src_ip"],
            "dst_ip": ev["dst_ip"],
            "dst_port": 443,
            "proto": 6,
            "pkts_out": 10,
            "pkts_in": 10,
            "bytes_out": [100_000 if i == 0 else 1000 for i in range(n)],
            "bytes_in": 500,
            "flows": 1,
            "peers": 1,
            "ports": 1,
            "duration": 1.0,
        }
    ).with_columns(pl.col("bucket").dt.cast_time_unit("us"))
    LogStore(api.svc.data_dir / "behavior", "test").write({"comm": rows})
    got = api.get(f"/api/v1/events/{ev['id']}/behavior", params={"horizon": "1d"}).json()
    assert got["view"] == "comm" and got["key"]["dst_ip"] == ev["dst_ip"]
    assert got["resolution_s"] == 300 and len(got["series"]) > 100
    assert max(p["bytes_out"] for p in got["series"]) == 100_000
    band = [b for b in got["band"] if b["measure"] == "bytes_out"]
    assert band and band[0]["median"] == 1000 and band[0]["high"] < 100_000
    assert api.get(f"/api/v1/events/{api.ids['b'][0]}/behavior", "ana").status_code == 404


def test_methods_list_names_and_weights(api):
    methods = {m["method"]: m for m in api.get("/api/v1/methods", "vic").json()}
    assert methods["M1"]["name"] == "new communication" and methods["N1"]["name"] == "beaconing"
    assert all(0 <= m["weight"] <= 100 for m in methods.values())
