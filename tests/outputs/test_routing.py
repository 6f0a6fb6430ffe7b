"""Routing rules: risk, methods, sites, outputs named or all, one copy per output."""

from __future__ import annotations

from flowhawk.config import Route
from flowhawk.outputs.routing import matches, route
from tests.outputs.receivers import event_doc, ids_of

LOW = event_doc(1, risk=20, methods=("M1",), site="hq")
HIGH = event_doc(2, risk=80, methods=("N1", "M27"), site="branch")
MID = event_doc(3, risk=50, methods=("N6",), site="hq")
ALL = [LOW, HIGH, MID]


def test_matches_each_condition():
    assert matches(HIGH, Route(min_risk=80))
    assert not matches(MID, Route(min_risk=50.5))
    assert matches(HIGH, Route(methods=["M27"]))  # any of the event's methods
    assert not matches(LOW, Route(methods=["N1", "N6"]))
    assert matches(LOW, Route(sites=["hq"]))
    assert not matches(HIGH, Route(sites=["hq"]))
    assert matches(MID, Route(min_risk=40, methods=["N6"], sites=["hq", "x"]))
    assert not matches(MID, Route(min_risk=40, methods=["N6"], sites=["x"]))
    assert matches({"id": "bare"}, Route())  # missing fields: risk 0, no methods
    assert not matches({"id": "bare"}, Route(min_risk=1))


def test_no_routes_send_everything_everywhere():
    out = route(ALL, [], ["a", "b"])
    assert {k: ids_of(v) for k, v in out.items()} == {"a": ids_of(ALL), "b": ids_of(ALL)}


def test_routes_per_output_any_match_once():
    routes = [
        Route(name="high", outputs=["pager"], min_risk=70),
        Route(name="scans", outputs=["pager", "siem"], methods=["N6"]),
        Route(name="hq", outputs=["siem"], sites=["hq"]),
        Route(name="everything-branch", sites=["branch"]),  # all outputs
    ]
    out = route(ALL, routes, ["pager", "siem", "archive"])
    assert ids_of(out["pager"]) == ids_of([HIGH, MID])
    # MID matches "scans" and "hq": still once; order as published
    assert ids_of(out["siem"]) == ids_of([LOW, HIGH, MID])
    assert ids_of(out["archive"]) == ids_of([HIGH])


def test_output_no_route_names_gets_nothing():
    out = route(ALL, [Route(outputs=["a"])], ["a", "b"])
    assert ids_of(out["a"]) == ids_of(ALL) and out["b"] == []
    assert route([], [Route()], ["a"]) == {"a": []}
