"""``/api/v1/hosts`` (ranked by risk) and ``/api/v1/hosts/{ip}`` (a host's profile)."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import APIRouter, HTTPException, Path, Query

from flowhawk.hosts import rank_hosts
from flowhawk.netaddr import NetworkSet
from flowhawk.serve.deps import Svc, Who
from flowhawk.serve.eventdb import EventFilter, frame
from flowhawk.serve.series import HORIZONS, key_series

router = APIRouter(prefix="/hosts", tags=["hosts"])


def _iso(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        for c, t in df.schema.items()
        if isinstance(t, pl.Datetime)
    )


def ranked(svc: Any, sites: list[str] | None) -> pl.DataFrame:
    """Hosts ranked by decaying risk from the stored alarms of the caller's sites."""
    where, params = EventFilter(sites=sites).sql()
    cur = svc.db.cursor()
    events = frame(cur, f"SELECT id, risk, site FROM events WHERE {where}", params)
    alarms = frame(
        cur,
        "SELECT a.event_id, a.ts, a.method, a.entity, a.src_ip, a.dst_ip, a.contribution "
        f"FROM alarms a JOIN (SELECT id FROM events WHERE {where}) e ON a.event_id = e.id",
        params,
    )
    internal = NetworkSet([*svc.cfg.network.internal, *svc.cfg.network.local_scope])
    return rank_hosts(alarms, events, svc.cfg.events.host_half_life, internal)


@router.get("", summary="Hosts ranked by accumulated, decaying risk")
def list_hosts(
    svc: Svc,
    who: Who,
    site: Annotated[list[str], Query(max_length=100)] = [],  # noqa: B006
    internal: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    hosts = ranked(svc, who.scope(site or None))
    if hosts.height and internal is not None:
        hosts = hosts.filter(pl.col("internal") == internal)
    page = hosts.slice(offset, limit) if hosts.height else hosts
    items = _iso(page.with_row_index("rank", offset=offset + 1)).to_dicts() if page.height else []
    return {"total": hosts.height, "limit": limit, "offset": offset, "items": items}


@router.get(
    "/{ip}",
    summary="A host's risk, events, names and behavior over 1/7/30 days (known=false: "
    "nothing about it in the caller's sites)",
)
def host_profile(
    svc: Svc,
    who: Who,
    ip: Annotated[str, Path(max_length=64)],
    horizon: Literal["1d", "7d", "30d"] = "7d",
) -> dict[str, Any]:
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise HTTPException(422, f"{ip!r} is not an IP address") from None
    sites = who.scope(None)
    flt = EventFilter(sites=sites, host=ip)
    total, top = svc.db.list(flt, "-risk", 20, 0)
    hosts = ranked(svc, sites)
    row = hosts.filter(pl.col("ip") == ip) if hosts.height else hosts
    risk = _iso(row).to_dicts()[0] if row.height else None
    rank = (
        int(hosts.with_row_index("rank", 1).filter(pl.col("ip") == ip)["rank"][0])
        if row.height
        else None
    )
    seen = behavior(svc, ip, sites, horizon)
    known = total > 0 or seen["buckets"] > 0
    end = svc.newest_bucket() or datetime.now(UTC)
    return {
        "ip": ip,
        "known": known,
        "risk": risk,
        "rank": rank,
        "events": total,
        "top_events": top,
        "names": _names(svc, ip) if known else [],
        "behavior": seen,
        "risk_series": risk_series(svc, ip, sites, horizon, end) if total else [],
        "relays": relays_through(svc, ip, sites) if total else [],
    }


def _names(svc: Any, ip: str) -> list[str]:
    pdns = svc.passive_dns()
    if pdns is None:
        return []
    return pdns.names_for(pl.Series([ip]), limit=10).to_list()[0] or []


def behavior(svc: Any, ip: str, sites: list[str] | None, horizon: str) -> dict[str, Any]:
    """The device view of the behavioral log for ``ip``, resampled, with its band."""
    end = svc.newest_bucket() or datetime.now(UTC)
    return key_series(svc.data_dir, "device", {"ip": ip}, end, horizon, sites)


#: Risk over time: horizon -> seconds per bucket.
RISK_STEP = {"1d": 3600, "7d": 6 * 3600, "30d": 86400}


def risk_series(
    svc: Any, ip: str, sites: list[str] | None, horizon: str, end: datetime
) -> list[dict[str, Any]]:
    """The host's events over the horizon: per bucket, how many and the highest risk."""
    span = HORIZONS[horizon][0]
    flt = EventFilter(sites=sites, host=ip, since=end - span)
    where, params = flt.sql()
    df = frame(
        svc.db.cursor(),
        "SELECT time_bucket(to_seconds(?::BIGINT), ts_start) AS t, count(*) AS events, "
        f"max(risk) AS max_risk FROM events WHERE {where} GROUP BY t ORDER BY t",
        [RISK_STEP[horizon], *params],
    )
    return _iso(df).to_dicts() if df.height else []


def relays_through(svc: Any, ip: str, sites: list[str] | None) -> list[dict[str, Any]]:
    """Relays (N9) this host is the middle of, from the context of its scoped events:
    traffic coming in and going on within seconds, with agreeing volume."""
    where, params = EventFilter(sites=sites).sql()
    df = frame(
        svc.db.cursor(),
        f"SELECT id, relays::VARCHAR AS relays FROM events WHERE {where} AND relays IS NOT NULL "
        "AND contains(relays::VARCHAR, ?) ORDER BY risk DESC LIMIT 200",
        [*params, ip],
    )
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for event_id, text in df.iter_rows():
        for relay in json.loads(text) or []:
            if relay.get("host") != ip:
                continue
            key = (relay.get("inbound"), relay.get("outbound"))
            if key not in out:
                out[key] = {**relay, "event_id": event_id}
    return list(out.values())
