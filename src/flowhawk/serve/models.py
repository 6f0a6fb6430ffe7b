"""Request and response shapes of the API (they make the published OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowhawk.serve.eventdb import Status, Verdict

Sort = Literal[
    "risk", "-risk", "ts_start", "-ts_start", "ts_end", "-ts_end", "flows", "-flows",
    "site", "-site", "src_ip", "-src_ip", "dst_ip", "-dst_ip", "status", "-status",
]  # fmt: skip
Direction = Literal["north-south", "east-west", "external"]


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class EventSummary(Open):
    id: str
    ts_start: str
    ts_end: str
    site: str | None = None
    src_ip: str | None = None
    dst_ip: str | None = None
    dst_port: int | None = None
    proto: int | None = None
    direction: str | None = None
    risk: float
    methods: list[str] = []
    reason: str | None = None
    status: str | None = None
    verdict: str | None = None


class EventPage(BaseModel):
    total: int = Field(description="Events matching the filter (in the caller's scope).")
    limit: int
    offset: int
    items: list[EventSummary]


class EventDetail(EventSummary):
    alarms: list[dict[str, Any]]
    history: list[dict[str, Any]]
    hops: Any = None
    relays: Any = None


class EventChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Status | None = None
    verdict: Verdict | None = None
    comment: str | None = Field(default=None, max_length=4000)


class BulkChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str] = Field(min_length=1, max_length=1000)
    status: Status | None = None
    verdict: Verdict | None = None


class BulkResult(BaseModel):
    changed: int


class FlowPage(BaseModel):
    count: int
    limit: int
    truncated: bool
    items: list[dict[str, Any]]


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Session(BaseModel):
    token: str
    expires: str
    user: str
    role: str


class Me(BaseModel):
    user: str
    role: str
    sites: list[str] | None
    token_id: str


class Health(BaseModel):
    status: Literal["ok"]
