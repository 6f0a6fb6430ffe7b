"""The web UI in a real browser against a real service: signing in, every view
rendering the service's data, triage that persists, roles, and how the files are served.

The demo keeps producing events while these run, so assertions compare what the page
shows with what the API answers, never with fixed counts.
"""

from __future__ import annotations

import re

import httpx

from flowhawk.serve.app import UI_DIR
from tests.serve.process import wait_until
from tests.ui.conftest import Demo, Ui


def _rows(ui: Ui) -> list[str]:
    ui.testid("event-row").first.wait_for()
    return ui.page.locator("[data-testid=event-row]").evaluate_all(
        "rows => rows.map(r => r.dataset.id)"
    )


def _risks(ui: Ui) -> list[int]:
    return [int(t) for t in ui.page.locator("[data-testid=event-row] .risk").all_inner_texts()]


def _total(ui: Ui) -> int:
    return int(ui.testid("total").inner_text().replace(",", ""))


def test_admin_walks_every_view(ui: Ui, demo: Demo) -> None:
    api = demo.api()
    ui.open()
    ui.testid("view-signin").wait_for()
    ui.shot("signin")
    ui.sign_in_token(demo.tokens["admin"])

    # dashboard: who, counts, charts, hosts, the newest high-risk events, health
    assert ui.testid("who-user").inner_text() == "admin"
    assert ui.testid("who-role").inner_text() == "admin"
    assert ui.testid("who-sites").inner_text() == "all sites"
    ui.page.locator("[data-testid=chart-methods-plot] canvas").first.wait_for()
    ui.page.locator("[data-testid=chart-bands-plot] canvas").first.wait_for()
    events = int(ui.page.locator("[data-testid=kpi-events] .kpi-value").inner_text())
    assert events >= 1
    top = ui.page.locator("[data-testid=top-hosts-table] tbody tr")
    top.first.wait_for()
    shown_hosts = top.locator("a.ip").all_inner_texts()
    ranked = {h["ip"] for h in api.get("/hosts", params={"limit": 1000}).json()["items"]}
    assert shown_hosts and set(shown_hosts) <= ranked
    ui.page.locator("[data-testid=live-events-table] tr").first.wait_for()
    wait_until(lambda: ui.testid("live-state").inner_text() == "live", 10, "the live stream")
    ui.page.locator("[data-testid=status-tiles] .tile").first.wait_for()
    ui.shot("dashboard")

    # events: a page of rows, the total, sorting by a header, a filter
    ui.testid("nav-events").click()
    ids = _rows(ui)
    assert 1 <= len(ids) <= 50
    assert _total(ui) >= len(ids)
    risks = _risks(ui)
    assert risks == sorted(risks, reverse=True)  # -risk by default
    for event_id in ids[:3]:
        assert api.get(f"/events/{event_id}").status_code == 200
    ui.testid("sort-ts_start").click()
    ui.page.wait_for_url(re.compile(r"sort=-ts_start"))

    def by_start() -> bool:  # (with few events, by risk and by start can be one order)
        starts = ui.page.locator("[data-testid=event-row] td.time").all_inner_texts()
        return bool(starts) and starts == sorted(starts, reverse=True)

    wait_until(by_start, 10, "rows sorted by start")
    floor = int(api.get("/events", params={"limit": 1}).json()["items"][0]["risk"])
    ui.testid("filter-min-risk").fill(str(floor))
    ui.page.wait_for_url(re.compile(rf"min_risk={floor}"))
    wait_until(lambda: all(r >= floor for r in _risks(ui)), 10, f"rows at risk {floor} or more")
    high = api.get("/events", params={"min_risk": floor, "limit": 1}).json()["total"]
    assert 1 <= _total(ui) <= high
    ui.shot("events")

    # one event: alarms with explanations, the behavior chart, the graph, intel, flows
    event = demo.event_with_behavior()
    ui.go(f"events/{event['id']}")
    ui.testid("view-event").wait_for()
    alarms = ui.page.locator("[data-testid=alarm]")
    alarms.first.wait_for()
    shown = set(alarms.evaluate_all("els => els.map(e => e.dataset.method)"))
    detail = api.get(f"/events/{event['id']}").json()
    assert shown and shown <= set(detail["methods"])
    assert "observed" in alarms.first.inner_text()
    head = ui.testid("event-head").inner_text()
    assert event["src_ip"] in head and event["dst_ip"] in head and event["id"] in head
    assert ui.testid("event-reason").inner_text().strip()
    assert ui.page.locator("[data-testid=event-graph] canvas").first.is_visible()
    ui.page.locator("[data-testid=behavior-chart] canvas").first.wait_for()
    ui.testid("behavior-horizon").locator("[data-value='7d']").click()
    ui.page.locator("[data-testid=behavior-chart] canvas").first.wait_for()
    ui.page.locator("[data-testid=flows-table] tbody tr").first.wait_for()
    ui.shot("event")

    # a verdict, a status and a comment, each persisted (the API says so) with history
    ui.testid("verdict-malicious").click()
    wait_until(lambda: ui.testid("current-verdict").inner_text() == "malicious", 10, "verdict")
    ui.testid("status-select").select_option("investigating")
    wait_until(lambda: ui.testid("current-status").inner_text() == "investigating", 10, "status")
    ui.testid("comment").fill("C2 confirmed by the SOC")
    ui.testid("comment-save").click()
    ui.page.locator("[data-testid=history] li", has_text="C2 confirmed").wait_for()
    after = api.get(f"/events/{event['id']}").json()
    assert after["verdict"] == "malicious"
    assert after["status"] == "investigating"
    assert after["comment"] == "C2 confirmed by the SOC"
    changes = {(h["user"], h["field"], h["new_value"]) for h in after["history"]}
    assert ("admin", "verdict", "malicious") in changes
    assert ("admin", "status", "investigating") in changes
    assert len(ui.page.locator("[data-testid=history] li").all()) == len(after["history"])

    # the host profile of its source
    ui.page.locator("[data-testid=event-head] a.ip").first.click()
    ui.testid("view-host").wait_for()
    assert ui.testid("view-host").get_attribute("data-ip") == event["src_ip"]
    ui.page.locator("[data-testid=host-chart] canvas").first.wait_for()
    ui.page.locator("[data-testid=host-graph] canvas").first.wait_for()
    ui.page.locator("[data-testid=host-events-table] tr").first.wait_for()
    ui.page.locator("[data-testid=host-risk-plot] canvas").first.wait_for()
    ui.page.locator("#host-relays").wait_for()
    ui.shot("host")

    # hosts, intel (a lookup), operations
    ui.testid("nav-hosts").click()
    ui.page.locator("[data-testid=hosts-table] tbody tr").first.wait_for()
    ui.shot("hosts")
    ui.testid("nav-intel").click()
    ui.testid("intel-value").fill("203.0.113.66")
    ui.testid("intel-submit").click()
    result = ui.testid("intel-result")
    result.wait_for()
    assert "listed" in result.inner_text()
    lookup = api.get("/intel/lookup", params={"value": "203.0.113.66"}).json()
    assert f"reputation {lookup['reputation']} / 100" in result.inner_text()
    ui.shot("intel")
    ui.testid("nav-operations").click()
    ui.testid("sites-table").locator("tbody tr", has_text="plant").wait_for()
    ui.page.locator("[data-testid=exporters-table] tbody tr").first.wait_for()
    ui.shot("operations")

    # administration: a token made in the UI works, shown once; revoking it ends it
    ui.testid("nav-admin").click()
    ui.testid("routes-table").wait_for()
    ui.testid("route-add").click()
    route = ui.testid("route-row").first
    route.locator("input").nth(0).fill("high risk of hq")
    route.locator("input").nth(2).fill("70")
    route.locator("input").nth(4).fill("hq")
    route.locator("input").nth(4).blur()
    ui.testid("routes-save").click()
    ui.testid("routes-saved").wait_for()
    assert api.get("/policies").json()["routes"] == [
        {"name": "high risk of hq", "outputs": [], "min_risk": 70.0, "methods": [], "sites": ["hq"]}
    ]
    ui.testid("token-user").select_option("vic")
    ui.testid("token-label").fill("made in the browser")
    ui.testid("token-create").click()
    token = ui.testid("token-value").inner_text()
    assert demo.api(token=token).get("/me").json()["user"] == "vic"
    ui.shot("admin")
    row = ui.page.locator("[data-testid=tokens-table] tr", has_text="made in the browser")
    row.get_by_test_id("token-revoke").click()
    row.get_by_test_id("token-revoke-confirm").click()
    row.locator(".chip", has_text="revoked").wait_for()
    assert demo.api(token=token).get("/me").status_code == 401
    ui.assert_clean()


def test_analyst_signs_in_with_password_sees_its_site_and_triages_in_bulk(
    ui: Ui, demo: Demo
) -> None:
    ui.sign_in_password("ana", demo.passwords["ana"])
    assert ui.testid("who-user").inner_text() == "ana"
    assert ui.testid("who-sites").inner_text() == "hq"
    assert ui.testid("nav-admin").count() == 0
    ui.go("events?sort=-ts_start")
    _rows(ui)
    sites = ui.page.locator("[data-testid=event-row] td:nth-child(4)").all_inner_texts()
    assert set(sites) == {"hq"}

    # two events set to closed / benign at once
    boxes = ui.page.locator("[data-testid=event-row] td.check input")
    picked = _rows(ui)[:2]
    boxes.nth(0).check()
    boxes.nth(1).check()
    ui.testid("bulk-bar").wait_for()
    ui.testid("bulk-status-closed").click()
    ui.testid("bulk-bar").wait_for(state="detached")
    api = demo.api("ana")
    assert [api.get(f"/events/{i}").json()["status"] for i in picked] == ["closed", "closed"]
    boxes.nth(0).check()
    ui.testid("bulk-verdict-benign").click()
    ui.testid("bulk-bar").wait_for(state="detached")
    assert api.get(f"/events/{picked[0]}").json()["verdict"] == "benign"

    # signing out ends the session token on the server too
    token = ui.page.evaluate("sessionStorage.getItem('flowhawk.token')")
    assert api.get("/me").json()["user"] == "ana"
    ui.testid("sign-out").click()
    ui.testid("view-signin").wait_for()
    assert demo.api(token=token).get("/me").status_code == 401
    ui.assert_clean()


def test_viewer_reads_without_triage_and_a_refused_token_signs_out(ui: Ui, demo: Demo) -> None:
    ui.sign_in_token(demo.tokens["vic"])
    assert ui.testid("who-role").inner_text() == "viewer"
    assert ui.testid("nav-admin").count() == 0
    ui.go("events")
    ui.testid("view-events").wait_for()
    mine = demo.api("vic").get("/events", params={"limit": 1}).json()["items"][0]
    _rows(ui)
    assert ui.page.locator("[data-testid=event-row] td.check").count() == 0
    ui.go(f"events/{mine['id']}")
    ui.testid("event-triage").wait_for()
    assert ui.testid("verdict-malicious").count() == 0
    assert ui.testid("status-select").count() == 0
    assert "Viewers read only" in ui.testid("event-triage").inner_text()
    ui.shot("viewer")

    # the admin view is not offered, and a token revoked meanwhile brings sign-in back
    ui.go("admin")
    assert "Only administrators" in ui.page.locator("main").inner_text()
    with demo.api() as admin:
        temp = admin.post("/tokens", json={"user": "vic", "label": "short-lived"}).json()
    ui.page.evaluate("t => sessionStorage.setItem('flowhawk.token', t)", temp["token"])
    token_id = temp["token"].split("_")[1]
    assert demo.api().delete(f"/tokens/{token_id}").status_code == 204
    ui.go("hosts")
    ui.testid("view-signin").wait_for()
    errors = [e for e in ui.errors if "401" not in e]  # the refused call itself is logged
    assert not errors, errors


def test_served_files_headers_and_api_untouched(demo: Demo) -> None:
    index = (UI_DIR / "index.html").read_text()
    assets = re.findall(r'(?:href|src)="/(assets/[^"]+)"', index)
    assert len(assets) == 2
    assert (UI_DIR / "THIRD-PARTY-LICENSES.txt").read_text().count("uplot") >= 1
    with httpx.Client(base_url=demo.root, timeout=10) as web:
        page = web.get("/")
        assert page.status_code == 200
        assert page.text == index
        assert page.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in assets:
            got = web.get(f"/{asset}")
            assert got.status_code == 200
            assert got.content == (UI_DIR / asset).read_bytes()
            assert "immutable" in got.headers["cache-control"]
        assert web.get("/no-such-page").status_code == 404
        missing = web.get("/api/v1/no-such-route")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Not Found"}
        assert web.get("/api/v1/login").status_code == 405  # the API's own answer
        assert web.get("/api/v1/health").json() == {"status": "ok"}
        assert web.get("/api/v1/events").status_code == 401
