"""``/api/v1``: health, sign-in, sites, policies, intel, exporters, outputs, subscriptions,
users and tokens, flows and metrics."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from flowhawk.config import Route
from flowhawk.serve.deps import Admin, Svc, Who, not_found
from flowhawk.serve.flowquery import query_flows
from flowhawk.serve.models import FlowPage, Health, Login, Me, Session
from flowhawk.serve.policies import Subscription

router = APIRouter()


@router.get("/health", response_model=Health, tags=["operations"], summary="Liveness (no auth)")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/status", tags=["operations"], summary="Components, counters and backlogs")
def service_status(svc: Svc, who: Who) -> dict[str, Any]:
    out = svc.status(admin=who.is_admin())
    if who.scope(None) is None:
        return out
    # the counters add up every site's traffic: a site-scoped caller gets the version,
    # uptime and event clock (its own exporters' counters are in /exporters)
    kept = {k: out[k] for k in ("version", "started", "uptime_s") if k in out}
    if "detection" in out:
        kept["detection"] = {"newest_flow": out["detection"].get("newest_flow")}
    return {**kept, "scoped": True}


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics (text format; all sites: admins and all-sites users only)",
)
def metrics(svc: Svc, who: Who) -> Response:
    if who.scope(None) is not None:  # counters span every site and exporter
        raise HTTPException(403, "metrics cover every site: an all-sites user is needed")
    return Response(svc.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/methods", tags=["operations"], summary="Detection methods: id, name, weight")
def methods(svc: Svc, who: Who) -> list[dict[str, Any]]:
    from flowhawk.detectors import DETECTORS
    from flowhawk.events import method_weights

    weights = method_weights(svc.cfg)
    return [
        {"method": m, "name": cls.title, "weight": weights.get(m), "learns": cls.learns,
         "enabled": cls.Settings.model_validate(svc.cfg.detector_settings(m)).enabled}
        for m, cls in DETECTORS
    ]  # fmt: skip


# -- sign-in -----------------------------------------------------------------------------


@router.post("/login", response_model=Session, tags=["auth"], summary="Sign in: a session token")
def login(svc: Svc, body: Login) -> dict[str, str]:
    ttl = svc.cfg.serve.session_ttl
    token = svc.auth.login(body.user, body.password, ttl)
    if token is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user or password")
    who = svc.auth.authenticate(token)
    assert who is not None
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    return {"token": token, "expires": expires.isoformat().replace("+00:00", "Z"),
            "user": who.user, "role": who.role}  # fmt: skip


@router.post("/logout", status_code=204, tags=["auth"], summary="End this session")
def logout(svc: Svc, who: Who, response: Response) -> None:
    svc.auth.revoke_token(who.token_id)


@router.get("/me", response_model=Me, tags=["auth"], summary="Who the token belongs to")
def me(who: Who) -> dict[str, Any]:
    sites = sorted(who.sites) if who.sites is not None else None
    return {"user": who.user, "role": who.role, "sites": sites, "token_id": who.token_id}


# -- sites and policies ------------------------------------------------------------------


@router.get("/sites", tags=["sites"], summary="Sites in the caller's scope")
def sites(svc: Svc, who: Who) -> list[dict[str, Any]]:
    cfg = svc.cfg
    all_sites = [{"name": s.name, "networks": s.networks, "exporters": s.exporters}
                 for s in cfg.sites]  # fmt: skip
    if cfg.default_site not in {s["name"] for s in all_sites}:
        all_sites.append({"name": cfg.default_site, "networks": [], "exporters": [],
                          "default": True})  # fmt: skip
    return [s for s in all_sites if who.sees(s["name"])]


class Routes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    routes: list[Route] = Field(max_length=1000)


@router.get("/policies", response_model=Routes, tags=["policies"], summary="Event routing")
def get_policies(svc: Svc, who: Admin) -> dict[str, Any]:
    return {"routes": svc.policies.routes}


@router.put("/policies", response_model=Routes, tags=["policies"], summary="Replace routing")
def put_policies(svc: Svc, who: Admin, body: Routes) -> dict[str, Any]:
    known = set(svc.output_names())
    for route in body.routes:
        unknown = [o for o in route.outputs if o not in known]
        if unknown:
            raise HTTPException(422, f"route {route.name!r}: unknown outputs {unknown}")
    svc.set_routes(body.routes, who.user)
    return {"routes": svc.policies.routes}


# -- outputs and subscriptions -----------------------------------------------------------


@router.get("/outputs", tags=["outputs"], summary="Each output's delivery state")
def outputs(svc: Svc, who: Admin) -> list[dict[str, Any]]:
    return svc.delivery.status() if svc.delivery is not None else []


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "secret"}


@router.get("/subscriptions", tags=["outputs"], summary="Webhook subscriptions (yours)")
def list_subscriptions(svc: Svc, who: Who) -> list[dict[str, Any]]:
    subs = svc.policies.subscriptions.values()
    return [_public(s) for s in subs if who.is_admin() or s["owner"] == who.user]


@router.post("/subscriptions", status_code=201, tags=["outputs"], summary="Subscribe a webhook")
def subscribe(svc: Svc, who: Who, body: Subscription) -> dict[str, Any]:
    scope = who.scope(body.sites or None)
    if body.sites and scope is not None and set(body.sites) - set(scope):
        raise HTTPException(403, "a subscription can only cover sites in your scope")
    if scope is not None and not scope:
        raise HTTPException(403, "no sites in your scope")
    body = body.model_copy(update={"sites": scope or []})
    record = svc.subscribe(body, who.user)
    return record  # the secret is shown once, here


@router.delete("/subscriptions/{sid}", status_code=204, tags=["outputs"])
def unsubscribe(
    svc: Svc, who: Who, sid: Annotated[str, Path(pattern=r"^sub-[0-9a-f]{8}$")]
) -> None:
    record = svc.policies.subscriptions.get(sid)
    if record is None or not (who.is_admin() or record["owner"] == who.user):
        raise not_found(f"subscription {sid}")
    svc.unsubscribe(sid)


# -- intel and exporters -----------------------------------------------------------------


@router.get("/intel", tags=["intel"], summary="The loaded intelligence: version and feeds")
def intel_status(svc: Svc, who: Who) -> dict[str, Any]:
    intel = svc.intel()
    if intel is None:
        return {"loaded": False, "feeds": []}
    return {
        "loaded": True,
        "version": intel.version,
        "as_of": intel.as_of.isoformat(),
        "indicators": len(intel),
        "feeds": [
            {
                "name": f.name,
                "format": f.format,
                "indicators": f.indicators,
                "version": f.version,
                "loaded_at": f.loaded_at.isoformat(),
            }
            for f in intel.feeds
        ],
    }


@router.get("/intel/lookup", tags=["intel"], summary="Reputation and evidence of a value")
def intel_lookup(
    svc: Svc, who: Who, value: Annotated[str, Query(min_length=1, max_length=2048)]
) -> dict[str, Any]:
    intel = svc.intel()
    if intel is None:
        raise HTTPException(404, "no intelligence loaded")
    if "://" in value:
        kind, hit = "url", intel.lookup_urls(pl.Series([value]))
    else:
        try:
            ipaddress.ip_address(value)
            kind, hit = "ip", intel.lookup_ips(pl.Series([value]))
        except ValueError:
            kind, hit = "domain", intel.lookup_domains(pl.Series([value.lower()]))
    row = hit.row(0, named=True)
    if row["indicator"] is None:
        return {"value": value, "kind": kind, "listed": False}
    evidence = intel.explain(row["indicator"]).with_columns(
        pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    return {"value": value, "kind": kind, "listed": True, "reputation": row["reputation"],
            "evidence": evidence.to_dicts()}  # fmt: skip


@router.get("/exporters", tags=["operations"], summary="Exporters heard from, in scope")
def exporters(svc: Svc, who: Who) -> list[dict[str, Any]]:
    table = svc.exporters()
    if table.height == 0:
        return []
    if who.scope(None) is not None:  # site-scoped: the exporters of its sites
        mine = {e for s in svc.cfg.sites if who.sees(s.name) for e in s.exporters}
        table = table.filter(pl.col("exporter").is_in(sorted(mine)))
    return table.with_columns(pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()


# -- flows -------------------------------------------------------------------------------


@router.get("/flows", response_model=FlowPage, tags=["flows"], summary="Archived flows")
def flows(
    svc: Svc,
    who: Who,
    since: datetime,
    until: datetime,
    site: Annotated[list[str], Query(max_length=100)] = [],  # noqa: B006
    host: Annotated[str | None, Query(max_length=64)] = None,
    port: Annotated[int | None, Query(ge=0, le=65535)] = None,
    proto: Annotated[int | None, Query(ge=0, le=255)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    if until <= since:
        raise HTTPException(422, "until must be after since")
    try:
        return query_flows(svc.data_dir, since, until, who.scope(site or None),
                           host=host, port=port, proto=proto, limit=limit)  # fmt: skip
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


# -- users and tokens (admin) ------------------------------------------------------------


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=64)
    label: str = Field(default="", max_length=200)
    expires_days: float | None = Field(default=None, gt=0, le=3650)


@router.get("/users", tags=["auth"], summary="Users (admin)")
def users(svc: Svc, who: Admin) -> list[dict[str, Any]]:
    return svc.auth.list_users()


@router.get("/tokens", tags=["auth"], summary="Tokens, without secrets (admin)")
def tokens(svc: Svc, who: Admin) -> list[dict[str, Any]]:
    return svc.auth.list_tokens()


@router.post("/tokens", status_code=201, tags=["auth"], summary="Create a token (admin)")
def new_token(svc: Svc, who: Admin, body: NewToken) -> dict[str, Any]:
    from flowhawk.serve.auth import AuthError

    expires = datetime.now(UTC) + timedelta(days=body.expires_days) if body.expires_days else None
    try:
        token = svc.auth.add_token(body.user, body.label, expires)
    except AuthError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"token": token, "user": body.user, "label": body.label}


@router.delete("/tokens/{token_id}", status_code=204, tags=["auth"], summary="Revoke (admin)")
def revoke(svc: Svc, who: Admin, token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{8}$")]) -> None:
    from flowhawk.serve.auth import AuthError

    try:
        svc.auth.revoke_token(token_id)
    except AuthError:
        raise not_found(f"token {token_id}") from None
