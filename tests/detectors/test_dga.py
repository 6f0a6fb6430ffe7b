"""N4: DGA domains per client and window, from DNS transactions: an alarm at the crossing,
another for the whole window when it closes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.dga import DgaDomains, DgaSettings
from flowhawk.dns.dga import score_domains, shipped_model
from flowhawk.dns.schema import DNS_SCHEMA
from flowhawk.events import build_events
from flowhawk.netaddr import NetworkSet

T0 = datetime(2024, 5, 2, 8, 50, tzinfo=UTC)
CLIENT, RESOLVER = "10.10.1.23", "10.10.0.53"


def _ctx() -> DetectorContext:
    return DetectorContext(internal=NetworkSet(["10.0.0.0/8"]), local_scope=NetworkSet([]))


def _det(**settings) -> DgaDomains:
    return DgaDomains(DgaSettings(**settings), _ctx())


def _random_names(k: int, seed: int = 7, tld: str = "com") -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(11, 16))) + "." + tld
        for _ in range(k)
    ]


def _dns(
    queries: list[str],
    seconds: list[float],
    rcode: str = "NXDOMAIN",
    client: str = CLIENT,
    resolver: str = RESOLVER,
) -> pl.DataFrame:
    n = len(queries)
    answers = [[] if rcode == "NXDOMAIN" else ["203.0.113.7"] for _ in range(n)]
    df = pl.DataFrame(
        {
            "ts": [T0 + timedelta(seconds=s) for s in seconds],
            "src_ip": [client] * n,
            "src_port": [40000 + i for i in range(n)],
            "dst_ip": [resolver] * n,
            "dst_port": [53] * n,
            "proto": [17] * n,
            "query": queries,
            "rcode_name": [rcode] * n,
            "answers": answers,
            "input": ["test"] * n,
        }
    )
    schema = pl.from_arrow(DNS_SCHEMA.empty_table()).schema
    return df.with_columns(
        [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in df.columns]
    ).select([pl.col(c).cast(t) for c, t in schema.items()])


def _score(det: DgaDomains, dns: pl.DataFrame) -> pl.DataFrame:
    return det.score(Batch(pl.DataFrame(), dns=dns.sort("ts", maintain_order=True)))


def test_a_burst_of_random_nxdomains_alarms_once_with_readable_numbers():
    names = _random_names(12)
    out = _score(_det(), _dns(names, [i * 5.0 for i in range(12)]))
    assert out.schema == pl.Schema(ALARM_SCHEMA)
    assert out.height == 1
    a = out.row(0, named=True)
    assert a["method"] == "N4" and a["entity"] == CLIENT and a["src_ip"] == CLIENT
    assert a["dst_ip"] == RESOLVER and a["dst_port"] == 53 and a["proto"] == 17
    assert a["direction"] == "east-west"
    assert a["observed_value"] == 5.0 and a["threshold"] == 5.0
    assert a["ts"] == T0 and a["ts_end"] == T0 + timedelta(seconds=20)
    assert 0.7 <= a["score"] <= 1.0
    assert "5 NXDOMAIN" in a["reason"] and "20 s" in a["reason"]
    assert any(n in a["reason"] for n in names[:5])


def test_ordinary_or_internal_names_and_few_failures_do_not_alarm():
    ordinary = ["google.com", "wikipedia.org", "bbc.co.uk", "github.com", "microsoft.com"] * 3
    assert _score(_det(), _dns(ordinary, [float(i) for i in range(15)])).height == 0
    probes = [n.split(".")[0] for n in _random_names(10)]  # a browser's single-label probes
    probes += [n.split(".")[0] + ".corp.lan" for n in _random_names(10, seed=3)]
    assert _score(_det(), _dns(probes, [float(i) for i in range(20)])).height == 0
    few = _random_names(4)
    assert _score(_det(), _dns(few, [0.0, 1.0, 2.0, 3.0])).height == 0
    # the same random domain failing again and again counts once
    same = [f"www{i}.{_random_names(1)[0]}" for i in range(10)]
    assert _score(_det(), _dns(same, [float(i) for i in range(10)])).height == 0


def test_resolved_random_names_weigh_half():
    model = shipped_model()
    names = [n for n in _random_names(30, seed=11) if score_domains([n])[0] >= model.dga]
    nx = _dns(names[:3], [0.0, 1.0, 2.0])
    res = _dns(names[3:7], [3.0, 4.0, 5.0, 6.0], rcode="NOERROR")
    out = _score(_det(), pl.concat([nx, res]))
    assert out.height == 1
    assert out.item(0, "observed_value") == 5.0
    assert "4 resolved" in out.item(0, "reason")
    assert _score(_det(resolved_weight=0.0), pl.concat([nx, res])).height == 0


def test_each_window_alarms_once_and_an_external_resolver_is_north_south():
    names = _random_names(40, seed=5)
    seconds = [i * 15.0 for i in range(40)]  # 10 minutes: two 5-minute windows
    out = _score(_det(), _dns(names, seconds, resolver="8.8.8.8"))
    assert out.height == 2  # at the crossings; both windows are still open
    assert set(out.get_column("direction")) == {"north-south"}
    assert _score(_det(window="10m"), _dns(names, seconds)).height == 1
    closed = _run(_det(), _dns(names, seconds, resolver="8.8.8.8"))
    assert closed.get_column("observed_value").to_list() == [5.0, 5.0, 20.0, 20.0]


def _run(det: DgaDomains, dns: pl.DataFrame) -> pl.DataFrame:
    """Alarms of ``dns`` and of the end of the input (which closes open windows)."""
    out = _score(det, dns)
    return pl.concat([out, det.finish(T0)])


@pytest.mark.parametrize("cuts", [[1], [3, 4], [2, 5, 9, 17, 30]])
def test_batches_and_restarts_give_the_same_alarms(cuts):
    names = _random_names(40, seed=9)
    seconds = [i * 17.0 for i in range(40)]
    dns = _dns(names, seconds)
    whole = _run(_det(), dns)
    det, parts, last = _det(), [], 0
    for cut in [*cuts, dns.height]:
        part = _score(det, dns.slice(last, cut - last))
        parts.append(part)
        restored = _det()
        restored.load_state(det.state())
        det, last = restored, cut
    parts.append(det.finish(T0))
    assert pl.concat(parts).sort(pl.all()).equals(whole.sort(pl.all()))
    assert whole.height == 4  # two windows: each a crossing and a closing alarm


def test_the_closing_alarm_shows_the_whole_burst_and_leads_its_event():
    """The demo's shape: 38 random names fail within five minutes, the 39th resolves."""
    model = shipped_model()
    names = [n for n in _random_names(80, seed=21) if score_domains([n])[0] >= model.dga][:39]
    nx = _dns(names[:38], [i * 7.0 for i in range(38)])
    found = _dns(names[38:], [290.0], rcode="NOERROR")
    later = _dns(["example.com"], [700.0], rcode="NOERROR")  # event time moves on
    det = _det()
    out = _score(det, pl.concat([nx, found, later]))
    assert out.height == 2
    cross, close = out.row(0, named=True), out.row(1, named=True)
    assert cross["observed_value"] == 5.0 and "5 NXDOMAIN" in cross["reason"]
    assert close["observed_value"] == 38.5
    assert (
        close["observed"]
        == "39 random-looking domains (38 NXDOMAIN, 1 resolved) in 290 s, the whole 5m window"
    )
    assert f"{names[38]} " in close["reason"] and "resolved" in close["reason"]
    assert close["reason"].split(f"via resolver {RESOLVER}: ")[1].startswith(f"{names[38]} ")
    assert "threshold 5 crossed at 08:50:28 with 5.0" in close["reason"]
    assert close["score"] > cross["score"]
    for key in ("ts", "site", "src_ip", "dst_ip", "dst_port", "proto", "direction"):
        assert close[key] == cross[key], key  # the same event
    assert close["ts_end"] == T0 + timedelta(seconds=290)
    assert det.finish(T0).height == 0  # reported already
    events, merged = build_events(out, config.load(None))
    assert events.height == 1 and merged.height == 2
    assert events.item(0, "reason") == close["reason"]


def test_no_closing_alarm_when_the_burst_stopped_at_the_threshold():
    names = _random_names(5, seed=2)
    det = _det()
    out = _score(
        det, pl.concat([_dns(names, [0, 1, 2, 3, 4]), _dns(["a.com"], [900.0], "NOERROR")])
    )
    assert out.height == 1 and det.finish(T0).height == 0
    assert det.state()["alarmed"].num_rows == 0  # the closed window is forgotten


def test_the_closing_alarm_keeps_the_crossing_resolver():
    names = _random_names(12, seed=4)
    first = _dns(names[:6], [0, 1, 2, 3, 4, 5])
    other = _dns(names[6:], [10, 11, 12, 13, 14, 15], resolver="10.10.0.54")
    out = _run(_det(), pl.concat([first, other]))
    assert out.height == 2
    assert out.get_column("dst_ip").to_list() == [RESOLVER, RESOLVER]
    assert out.item(1, "observed_value") == 12.0


def test_learn_only_finish_and_old_checkpoints():
    names = _random_names(12, seed=6)
    det = _det()
    _score(det, _dns(names, [float(i) for i in range(12)]))
    assert det.finish(None).height == 0
    old = _det()  # a checkpoint from before closing alarms: windows that alarmed, no more
    alarmed = pl.DataFrame({"src_ip": [CLIENT], "window": [T0]}).to_arrow()
    old.load_state({"rows": det.state()["rows"], "alarmed": alarmed})
    assert old.finish(T0).height == 0
    assert old.state()["alarmed"].num_rows == 1


def test_bad_input_never_crashes():
    dns = _dns(["a..b", "ÿÿ.com", "x" * 80 + ".com", "", "-.-", "ok.com"], [0, 1, 2, 3, 4, 5])
    dns = pl.concat([dns, dns.with_columns(query=pl.lit(None, pl.String), src_ip=pl.lit(None))])
    assert _score(_det(), dns).height == 0
    assert _score(_det(), dns.clear()).height == 0
    det = _det()
    det.load_state({})
    assert det.state()["rows"].num_rows == 0


def test_min_score_drops_alarms():
    names = _random_names(12)
    assert _score(_det(min_score=0.9999), _dns(names, [float(i) for i in range(12)])).height == 0
