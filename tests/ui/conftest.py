"""Browser tests of the web UI: a real ``flowhawk serve --demo`` and Debian's chromium
driven by Playwright (the system browser: nothing is downloaded).

Fixtures, for any test of the UI:

- ``demo`` (session): the service feeding itself the simulated Acme network (sites hq
  and plant), with users made before it starts: ``admin`` (token), ``ana`` (analyst of
  hq, password and token) and ``vic`` (viewer of hq, token). It is handed out once
  high-risk events (of hq, the first ones) with behavior exist; the demo goes on
  producing events of both sites afterwards.
- ``browser`` (session): chromium.
- ``ui``: a fresh browser context and page (:class:`Ui`): sign-in helpers, screenshots
  (kept in the test's tmp dir and in ``out/ui-screenshots/``) and every console error
  and page error the page logged.
- ``make_ui``: the same for a service of the test's own (``make_ui(root)``), as many
  pages as a test needs.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from flowhawk.serve.auth_store import AuthStore
from tests.serve.process import Served, wait_until

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "out" / "ui-screenshots"
PASSWORD = "correct horse battery staple"


@dataclass
class Demo:
    served: Served
    root: str  # http://127.0.0.1:PORT (the UI); the API is under /api/v1
    tokens: dict[str, str]
    passwords: dict[str, str]

    def api(self, who: str = "admin", token: str | None = None) -> httpx.Client:
        """An API client (paths relative to /api/v1) with a user's token."""
        return httpx.Client(
            base_url=f"{self.root}/api/v1/",
            headers={"Authorization": f"Bearer {token or self.tokens[who]}"},
            timeout=10,
        )

    def event_with_behavior(self, min_risk: float = 60) -> dict[str, Any]:
        """The riskiest event whose key has a behavior series (for the chart)."""
        with self.api() as api:
            page = api.get("/events", params={"min_risk": min_risk, "limit": 50}).json()
            for item in page["items"]:
                got = api.get(f"/events/{item['id']}/behavior", params={"horizon": "1d"})
                if got.status_code == 200 and got.json()["series"]:
                    return item
        raise AssertionError("no event with a behavior series")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    base = tmp_path_factory.mktemp("ui")
    data = base / "data"
    data.mkdir()
    auth = AuthStore(data)
    tokens = {"admin": auth.bootstrap_admin() or ""}
    auth.add_user("ana", "analyst", ["hq"], password=PASSWORD)
    auth.add_user("vic", "viewer", ["hq"])
    tokens["ana"] = auth.add_token("ana", "ui tests")
    tokens["vic"] = auth.add_token("vic", "ui tests")
    served = Served(None, data, extra=["--demo", "--listen", "127.0.0.1:0"])
    served.token = tokens["admin"]
    served.start()
    demo = Demo(served, served.url, tokens, {"ana": PASSWORD})
    try:
        with demo.api() as api:

            def ready() -> bool:
                page = api.get("/events", params={"min_risk": 60, "limit": 1}).json()
                if not page["total"]:
                    return False
                got = api.get(f"/events/{page['items'][0]['id']}/behavior").json()
                return bool(got["series"])

            wait_until(ready, 120, "high-risk demo events with behavior", every=0.5)
        yield demo
    finally:
        served.kill()  # a graceful stop mid-replay takes long and is tested elsewhere


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class Ui:
    """One page of the UI in its own browser context (its own sessionStorage)."""

    page: Page
    root: str
    out: Path
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console error: {msg.text} ({msg.location.get('url', '')})")

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.root}/#/{route}")

    def go(self, route: str) -> None:
        """Another view of the running app (no reload: the session stays)."""
        self.page.evaluate("r => { location.hash = '#/' + r }", route)

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)

    def sign_in_token(self, token: str) -> None:
        self.open()
        self.testid("signin-mode-token").click()
        self.testid("signin-token").fill(token)
        self.testid("signin-submit").click()
        self.testid("view-dashboard").wait_for()

    def sign_in_password(self, user: str, password: str) -> None:
        self.open()
        self.testid("signin-mode-password").click()
        self.testid("signin-user").fill(user)
        self.testid("signin-password").fill(password)
        self.testid("signin-submit").click()
        self.testid("view-dashboard").wait_for()

    def shot(self, name: str) -> Path:
        """A full-page screenshot into the test's tmp dir, copied to out/ui-screenshots/."""
        name = re.sub(r"[^a-z0-9_-]+", "-", name.lower())
        path = self.out / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SHOTS / path.name)
        return path

    def assert_clean(self) -> None:
        assert not self.errors, "the browser logged errors:\n" + "\n".join(self.errors)


@pytest.fixture
def ui(browser: Browser, demo: Demo, tmp_path: Path) -> Iterator[Ui]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield Ui(page, demo.root, tmp_path)
    finally:
        context.close()


@pytest.fixture
def make_ui(browser: Browser, tmp_path: Path) -> Iterator[Callable[..., Ui]]:
    """Pages of any service: ``make_ui(root)`` opens a fresh browser context and page
    (a :class:`Ui`); ``init_script`` runs in every document before the app's own code.
    Every context is closed at the end of the test."""
    contexts: list[BrowserContext] = []

    def make(root: str, init_script: str | None = None) -> Ui:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return Ui(page, root, tmp_path)

    try:
        yield make
    finally:
        for context in contexts:
            context.close()
