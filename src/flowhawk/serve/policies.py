"""Run-time settings an admin changes through the API: routes and webhook subscriptions.

Routes (which events go to which outputs) start as the config's ``[[routes]]``; once
changed through the API they are kept in ``DATA/policies.json`` and win over the
config at the next start. Webhook subscriptions (publish/subscribe: a URL, a secret,
and the sites, minimum risk and methods the subscriber wants) are kept in
``DATA/subscriptions.json``; each one is a ``webhook`` output with its own route.
Both files are replaced atomically.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from flowhawk.config import Route
from flowhawk.errors import StateError


class Subscription(BaseModel):
    """A webhook subscriber: where to post, how to sign, which events."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="Where events are posted (http or https).")
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="HMAC-SHA256 key for X-Flowhawk-Signature; generated when missing.",
    )
    sites: list[str] = Field(default=[], max_length=100, description="Sites; empty: all in scope.")
    min_risk: float = Field(default=0.0, ge=0, le=100)
    methods: list[str] = Field(default=[], max_length=100, description="Any of; empty: all.")


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path} cannot be read: {exc}") from None


class Policies:
    """Routes and subscriptions of one data directory."""

    def __init__(self, data_dir: Path, config_routes: list[Route]):
        self.routes_path = data_dir / "policies.json"
        self.subs_path = data_dir / "subscriptions.json"
        self._lock = threading.Lock()
        stored = _read(self.routes_path)
        try:
            self.routes = (
                [Route.model_validate(r) for r in stored["routes"]]
                if stored
                else list(config_routes)
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{self.routes_path}: not a routes document ({exc})") from None
        self.subscriptions: dict[str, dict[str, Any]] = _read(self.subs_path) or {}

    def set_routes(self, routes: list[Route], user: str) -> None:
        with self._lock:
            self.routes = list(routes)
            _write(
                self.routes_path,
                {
                    "routes": [r.model_dump() for r in routes],
                    "changed_by": user,
                    "changed": datetime.now(UTC).isoformat(),
                },
            )

    def subscribe(self, sub: Subscription, owner: str) -> dict[str, Any]:
        with self._lock:
            sid = "sub-" + secrets.token_hex(4)
            record = {
                "id": sid,
                "owner": owner,
                "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                **sub.model_dump(mode="json"),
                "secret": sub.secret or secrets.token_urlsafe(32),
            }
            self.subscriptions[sid] = record
            _write(self.subs_path, self.subscriptions)
            return record

    def unsubscribe(self, sid: str) -> None:
        with self._lock:
            self.subscriptions.pop(sid, None)
            _write(self.subs_path, self.subscriptions)


def subscription_output(record: dict[str, Any]) -> tuple[dict[str, Any], Route]:
    """The ``webhook`` output settings and the route of a subscription."""
    settings = {"name": record["id"], "type": "webhook", "url": record["url"],
                "secret": record["secret"]}  # fmt: skip
    route = Route(
        name=record["id"],
        outputs=[record["id"]],
        min_risk=record["min_risk"],
        methods=record["methods"],
        sites=record["sites"],
    )
    return settings, route
