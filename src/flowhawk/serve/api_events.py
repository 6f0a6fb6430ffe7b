"""``/api/v1/events``: list, stats, export, live stream, one event, its flows, verdicts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse

from flowhawk.serve.deps import Svc, Who, Writer, not_found
from flowhawk.serve.eventdb import EventFilter, Status, Verdict
from flowhawk.serve.flowquery import event_flows
from flowhawk.serve.models import (
    BulkChange,
    BulkResult,
    Direction,
    EventChange,
    EventDetail,
    EventPage,
    FlowPage,
    Sort,
)
from flowhawk.serve.series import key_series, view_of_event

router = APIRouter(prefix="/events", tags=["events"])

EventId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="Event id.")]
Text = Annotated[str | None, Query(max_length=256)]


def event_filter(
    who: Who,
    since: Annotated[datetime | None, Query(description="Events ending at or after.")] = None,
    until: Annotated[datetime | None, Query(description="Events starting before.")] = None,
    site: Annotated[list[str], Query(max_length=100, description="Sites (repeatable).")] = [],  # noqa: B006
    min_risk: Annotated[float | None, Query(ge=0, le=100)] = None,
    max_risk: Annotated[float | None, Query(ge=0, le=100)] = None,
    method: Annotated[list[str], Query(max_length=100, description="Methods (any of).")] = [],  # noqa: B006
    host: Annotated[str | None, Query(max_length=64, description="Either end's address.")] = None,
    status: Annotated[list[Status], Query(max_length=3)] = [],  # noqa: B006
    verdict: Annotated[list[Verdict], Query(max_length=3)] = [],  # noqa: B006
    direction: Direction | None = None,
) -> EventFilter:
    """The filter of a request, narrowed to the caller's sites."""
    return EventFilter(
        sites=who.scope(site or None),
        since=since,
        until=until,
        min_risk=min_risk,
        max_risk=max_risk,
        methods=method,
        host=host,
        status=list(status),
        verdict=list(verdict),
        direction=direction,
    )


Filter = Annotated[EventFilter, Depends(event_filter)]


@router.get("", response_model=EventPage, summary="Events matching a filter, one page")
def list_events(
    svc: Svc,
    flt: Filter,
    sort: Sort = "-risk",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    total, items = svc.db.list(flt, sort, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/stats", summary="Events over time by method and risk band, by direction")
def stats(
    svc: Svc,
    flt: Filter,
    bucket: Annotated[int, Query(ge=60, le=30 * 86400, description="Seconds per bucket.")] = 3600,
) -> dict[str, Any]:
    return svc.db.stats(flt, bucket)


@router.get("/export", summary="Every matching event as JSON lines or CSV (streamed)")
def export(
    svc: Svc,
    flt: Filter,
    format: Literal["jsonl", "csv"] = "jsonl",
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 100_000,
) -> StreamingResponse:
    def pages() -> Iterator[list[dict[str, Any]]]:
        done = 0
        while done < limit:
            _, items = svc.db.list(flt, "ts_start", min(1000, limit - done), done)
            if not items:
                return
            yield items
            done += len(items)

    def jsonl() -> Iterator[str]:
        for page in pages():
            yield "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in page)

    def as_csv() -> Iterator[str]:
        header = True
        for page in pages():
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(page[0]))
            if header:
                w.writeheader()
                header = False
            for e in page:
                w.writerow({**e, "methods": ";".join(e.get("methods") or ())})
            yield buf.getvalue()

    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    return StreamingResponse(
        jsonl() if format == "jsonl" else as_csv(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="events.{format}"'},
    )


@router.get(
    "/stream",
    summary="New and escalated events as they are detected (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(svc: Svc, flt: Filter) -> StreamingResponse:
    return StreamingResponse(
        svc.stream.events(flt),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/bulk", response_model=BulkResult, summary="Change status/verdict of many events")
def bulk(svc: Svc, who: Writer, change: BulkChange) -> dict[str, int]:
    changes = change.model_dump(exclude_unset=True, exclude={"ids"})
    if not changes:
        return {"changed": 0}
    return {"changed": svc.db.update_many(change.ids, who.scope(None), who.user, changes)}


@router.get("/{event_id}", response_model=EventDetail, summary="One event, fully explained")
def get_event(svc: Svc, who: Who, event_id: EventId) -> dict[str, Any]:
    event = svc.db.get(event_id, who.scope(None))
    if event is None:
        raise not_found(f"event {event_id}")
    return event


@router.patch("/{event_id}", response_model=EventDetail, summary="Set status, verdict, comment")
def change_event(svc: Svc, who: Writer, event_id: EventId, change: EventChange) -> dict[str, Any]:
    changes = change.model_dump(exclude_unset=True)
    event = svc.db.update(event_id, who.scope(None), who.user, changes)
    if event is None:
        raise not_found(f"event {event_id}")
    return event


@router.get("/{event_id}/flows", response_model=FlowPage, summary="The event's flows")
def flows_of_event(
    svc: Svc,
    who: Who,
    event_id: EventId,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> dict[str, Any]:
    event = svc.db.get(event_id, who.scope(None))
    if event is None:
        raise not_found(f"event {event_id}")
    start = datetime.fromisoformat(event["window_start"].replace("Z", "+00:00"))
    window = timedelta(seconds=svc.cfg.events.window)
    return event_flows(svc.data_dir, event, start, start + window, limit)


@router.get("/{event_id}/behavior", summary="The alarmed key's behavior and its usual band")
def behavior_of_event(
    svc: Svc,
    who: Who,
    event_id: EventId,
    horizon: Literal["1d", "7d", "30d"] = "1d",
) -> dict[str, Any]:
    """The behavioral-log series of the event's communication (or port view when a side
    is any host) over the horizon ending at the event's window end, with the band."""
    event = svc.db.get(event_id, who.scope(None))
    if event is None:
        raise not_found(f"event {event_id}")
    view, key = view_of_event(event)
    start = datetime.fromisoformat(event["window_start"].replace("Z", "+00:00"))
    end = start + timedelta(seconds=svc.cfg.events.window)
    return key_series(svc.data_dir, view, key, end, horizon, who.scope(None))
