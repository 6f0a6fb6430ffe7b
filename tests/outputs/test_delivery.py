"""Delivery against real webhook receivers: a down output, bounded backlogs, restarts,
routing, run-time outputs, metrics and status."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flowhawk.config import Route
from flowhawk.errors import ConfigError
from flowhawk.outputs.base import Output, OutputSettings
from flowhawk.outputs.delivery import Delivery, backoff
from tests.outputs.receivers import (
    HOST,
    build,
    docs,
    event_doc,
    free_port,
    ids_of,
    wait_for,
    webhook_receiver,
)

FAST = {"timeout": 2.0, "retry_min": 0.05, "retry_max": 0.2}


def hook(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": url, **FAST, **kw}


def nowhere(port: int) -> str:
    return f"http://{HOST}:{port}/hook"


@contextmanager
def running(outputs: list[Output], routes: list[Route], data_dir: Path) -> Iterator[Delivery]:
    delivery = Delivery(outputs, routes, data_dir)
    delivery.start()
    try:
        yield delivery
    finally:
        delivery.stop(timeout=2.0)


def status(delivery: Delivery, name: str) -> dict[str, Any]:
    return next(s for s in delivery.status() if s["name"] == name)


def sample(delivery: Delivery, metric: str, **labels: str) -> float | None:
    return delivery.registry.get_sample_value(metric, labels)


def test_backoff_bounds():
    rng = random.Random(7)
    assert all(0.5 <= backoff(1, 1.0, 300.0, rng) <= 1.0 for _ in range(50))
    assert all(2.0 <= backoff(3, 1.0, 300.0, rng) <= 4.0 for _ in range(50))
    assert all(150.0 <= backoff(40, 1.0, 300.0, rng) <= 300.0 for _ in range(50))
    assert backoff(10**6, 1.0, 300.0, rng) <= 300.0


def test_a_down_output_blocks_nothing_and_drains_when_up(tmp_path):
    down_port = free_port()
    with webhook_receiver() as good:
        outputs = [
            build(hook("good", good.url), tmp_path),
            build(hook("late", nowhere(down_port), batch=7), tmp_path),
        ]
        with running(outputs, [], tmp_path) as d:
            t0 = time.monotonic()
            d.publish(docs(30))
            assert time.monotonic() - t0 < 1.0, "publish waited for a receiver"
            wait_for(lambda: len(good.ids()) == 30, what="the good receiver")
            assert good.ids() == ids_of(docs(30))  # no failures: each once, in order
            wait_for(lambda: status(d, "late")["failures"] >= 2, what="retries of the down one")

            late = status(d, "late")
            assert late["backlog"] == 30 and late["delivered"] == 0
            assert "webhook output 'late'" in late["last_error"]
            assert late["last_success"] is None
            ok = status(d, "good")
            assert ok["backlog"] == 0 and ok["delivered"] == 30 and ok["failures"] == 0
            assert ok["last_success"].endswith("Z") and ok["type"] == "webhook"
            assert sample(d, "flowhawk_output_delivered_events_total", output="good") == 30
            assert sample(d, "flowhawk_output_failures_total", output="late") >= 2
            assert sample(d, "flowhawk_output_backlog_events", output="late") == 30
            assert sample(d, "flowhawk_output_backlog_events", output="good") == 0
            assert sample(d, "flowhawk_output_failures_total", output="good") == 0
            assert (
                sample(d, "flowhawk_output_dropped_events_total", output="good", reason="backlog")
                == 0
            )

            # more events while it is down still reach the good one at once
            d.publish(docs(5, start=30))
            wait_for(lambda: len(good.ids()) == 35, what="the good receiver again")

            with webhook_receiver(down_port) as revived:
                wait_for(lambda: status(d, "late")["backlog"] == 0, what="the backlog to drain")
                assert revived.ids() == ids_of(docs(35))  # oldest first, each once
                assert all(len(r.json()["events"]) <= 7 for r in revived.requests)
                assert status(d, "late")["delivered"] == 35
                assert sample(d, "flowhawk_output_delivered_events_total", output="late") == 35
                assert sample(d, "flowhawk_output_backlog_events", output="late") == 0


def test_publish_never_waits_for_a_slow_receiver(tmp_path):
    with webhook_receiver() as slow:
        slow.delay = 1.0
        with running([build(hook("slow", slow.url, timeout=3.0), tmp_path)], [], tmp_path) as d:
            d.publish(docs(1))
            wait_for(lambda: slow.arrived == 1 and not slow.requests, what="a send in progress")
            t0 = time.monotonic()
            for i in range(1, 11):  # the thread is inside a send meanwhile
                d.publish(docs(1, start=i))
            assert time.monotonic() - t0 < 0.9, "publish waited for the receiver"
            wait_for(lambda: status(d, "slow")["backlog"] == 0, what="the slow receiver")
            assert slow.ids() == ids_of(docs(11))


def test_bounded_backlog_drops_the_oldest(tmp_path):
    port = free_port()
    output = build(hook("w", nowhere(port), max_backlog=5), tmp_path)
    with running([output], [], tmp_path) as d:
        for doc in docs(12):
            d.publish([doc])
        # a batch taken before the publishing ended may still be in flight (it would be
        # delivered and counted as dropped): wait until a batch taken after it failed
        seen = status(d, "w")["failures"]
        wait_for(lambda: status(d, "w")["failures"] >= seen + 2, what="two more attempts")
        assert sample(d, "flowhawk_output_dropped_events_total", output="w", reason="backlog") == 7
        assert status(d, "w")["dropped"] == 7
        assert status(d, "w")["backlog"] == 5
        with webhook_receiver(port) as r:
            wait_for(lambda: status(d, "w")["backlog"] == 0, what="the backlog to drain")
            assert sorted(set(r.ids())) == ids_of(docs(5, start=7))


def test_restart_delivers_what_the_outbox_kept(tmp_path, caplog):
    port = free_port()
    settings = hook("w", nowhere(port))
    first = Delivery([build(settings, tmp_path)], [], tmp_path)
    first.start()
    first.publish(docs(4))
    wait_for(lambda: status(first, "w")["failures"] >= 1, what="a failed attempt")
    t0 = time.monotonic()
    first.stop(timeout=0.3)
    assert time.monotonic() - t0 < 3.0
    assert first.status()[0]["backlog"] is None  # the outbox is closed now

    # a run where the output is not configured keeps its events (and says so)
    with caplog.at_level(logging.WARNING, logger="flowhawk.outputs.delivery"):
        other = Delivery([], [], tmp_path)
        other.start()
        other.stop()
    assert "4 events for output w" in caplog.text

    with webhook_receiver(port) as r:
        second = Delivery([build(settings, tmp_path)], [], tmp_path)
        second.start()
        try:
            wait_for(lambda: len(r.ids()) == 4, what="the kept events")
            assert r.ids() == ids_of(docs(4))
            second.publish(docs(2, start=4))
            wait_for(lambda: len(r.ids()) == 6, what="new events after the kept ones")
            assert r.ids() == ids_of(docs(6))
        finally:
            second.stop()


def test_stop_flushes_what_it_can(tmp_path):
    with webhook_receiver() as r:
        r.delay = 0.05
        d = Delivery([build(hook("w", r.url, batch=10), tmp_path)], [], tmp_path)
        d.start()
        d.publish(docs(50))
        d.stop(timeout=5.0)
        assert r.ids() == ids_of(docs(50))


def test_routing_subscriptions_and_removal(tmp_path):
    low = event_doc(1, risk=20, methods=("M1",), site="hq")
    high = event_doc(2, risk=95, methods=("N1",), site="branch")
    scan = event_doc(3, risk=60, methods=("N6",), site="hq")
    with webhook_receiver() as pager, webhook_receiver() as siem, webhook_receiver() as sub:
        routes = [
            Route(name="urgent", outputs=["pager"], min_risk=90),
            Route(name="hq", outputs=["siem"], sites=["hq"]),
            Route(name="scans", methods=["N6"]),  # every output
        ]
        outputs = [
            build(hook("pager", pager.url), tmp_path),
            build(hook("siem", siem.url), tmp_path),
        ]
        with running(outputs, routes, tmp_path) as d:
            d.add_output(build(hook("sub", sub.url), tmp_path), routes=[Route(min_risk=90)])
            with pytest.raises(ConfigError, match="'sub' exists already"):
                d.add_output(build(hook("sub", sub.url), tmp_path))
            d.publish([low, high, scan])
            wait_for(lambda: len(pager.ids()) == 2 and len(siem.ids()) == 2 and sub.ids())
            assert pager.ids() == [high["id"], scan["id"]]
            assert siem.ids() == [low["id"], scan["id"]]  # scan matched twice, sent once
            assert sub.ids() == [high["id"]]  # its own routes only

            d.set_routes([Route(outputs=["siem"], min_risk=90)])
            d.publish([event_doc(4, risk=99), event_doc(5, risk=10)])
            wait_for(lambda: len(siem.ids()) == 3 and len(sub.ids()) == 2)
            assert siem.ids()[-1] == "ev0004" and sub.ids()[-1] == "ev0004"
            assert len(pager.ids()) == 2  # no route names it now

            d.add_output(build(hook("gone", nowhere(free_port())), tmp_path), routes=[])
            d.publish(docs(3, start=10))
            wait_for(lambda: status(d, "gone")["failures"] >= 1)
            assert d.outbox.backlog("gone") == 3
            d.remove_output("gone")
            assert "gone" not in d.names() and d.outbox.backlog("gone") == 0
            assert sample(d, "flowhawk_output_backlog_events", output="gone") is None
            assert sample(d, "flowhawk_output_failures_total", output="gone") is None
            with pytest.raises(KeyError, match="gone"):
                d.remove_output("gone")


class _Flaky(Output):
    """An in-process output failing with unexpected errors before it works."""

    type = "flaky"
    description = "test output"

    def __init__(self, data_dir: Path, failures: int):
        settings = OutputSettings(name="flaky", type="flaky", **FAST)
        super().__init__(settings, data_dir)
        self.left = failures
        self.got: list[str] = []
        self.opens = self.closes = 0

    def open(self) -> None:
        self.opens += 1

    def send(self, documents: list[dict[str, Any]]) -> None:
        if self.left:
            self.left -= 1
            raise ValueError("unexpected")
        self.got.extend(ids_of(documents))

    def close(self) -> None:
        self.closes += 1


def test_any_exception_is_retried_and_the_output_reopened(tmp_path):
    flaky = _Flaky(tmp_path, failures=3)
    with running([flaky], [], tmp_path) as d:
        d.publish(docs(3))
        wait_for(lambda: flaky.got, what="delivery after unexpected errors")
        assert flaky.got == ids_of(docs(3))
        st = status(d, "flaky")
        assert st["failures"] == 3 and st["last_error"] == "ValueError: unexpected"
        assert flaky.opens == 4 and flaky.closes >= 3
    assert flaky.closes >= 4  # closed at stop too


def test_duplicate_output_names_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="used twice"):
        Delivery([_Flaky(tmp_path, 0), _Flaky(tmp_path, 0)], [], tmp_path)
