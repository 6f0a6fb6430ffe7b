"""Routing: which event documents go to which outputs.

A route (``[[routes]]``, :class:`flowhawk.config.Route`) matches an event when its risk
is at least ``min_risk``, and (``methods`` is empty or one of the event's methods is
listed), and (``sites`` is empty or the event's site is listed). It applies to the
outputs it names, or to every output when it names none.

An event goes to an output when any route applying to that output matches it; an
output that no route applies to receives nothing. With no routes at all, every event
goes to every output. An event is given to an output once, however many routes match.
Outputs that bring their own routes (subscriptions added at run time) are routed by
calling :func:`route` with only those routes and only that output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowhawk.config import Route


def matches(doc: dict[str, Any], route: Route) -> bool:
    """Whether one event document satisfies a route's conditions."""
    if float(doc.get("risk") or 0.0) < route.min_risk:
        return False
    if route.methods and not set(doc.get("methods") or ()) & set(route.methods):
        return False
    return not route.sites or doc.get("site") in route.sites


def route(
    docs: Sequence[dict[str, Any]], routes: Sequence[Route], output_names: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """The documents each output receives, in their original order.

    Every name of ``output_names`` is a key (with an empty list when nothing matches);
    routes naming outputs outside ``output_names`` are ignored for those names."""
    names = list(output_names)
    if not routes:
        return {name: list(docs) for name in names}
    applying = {name: [r for r in routes if not r.outputs or name in r.outputs] for name in names}
    result: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for doc in docs:
        hits = {id(r) for r in routes if matches(doc, r)}
        if not hits:
            continue
        for name in names:
            if any(id(r) in hits for r in applying[name]):
                result[name].append(doc)
    return result
