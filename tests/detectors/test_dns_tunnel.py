"""N5, DNS tunneling: name features, windows in event time (an alarm at the crossing, the
whole window when it closes), state, real tunnel captures."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest

from flowhawk import config
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.dns_tunnel import DnsTunnel, DnsTunnelSettings
from flowhawk.detectors.dns_tunnel_features import NO_TLD, name_features
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import read_dns
from flowhawk.dns.schema import conform
from flowhawk.events import build_events
from flowhawk.netaddr import NetworkSet

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
CLIENT, RESOLVER = "10.0.0.5", "10.0.0.53"


def _ctx() -> DetectorContext:
    return DetectorContext(internal=NetworkSet(["10.0.0.0/8"]), local_scope=NetworkSet([]))


def _det(**settings) -> DnsTunnel:
    return DnsTunnel(DnsTunnelSettings(**settings), _ctx())


def _dns(queries: list[str], seconds: list[float], qtype: int = 16, **cols) -> pl.DataFrame:
    n = len(queries)
    data = {
        "ts": [T0 + timedelta(seconds=s) for s in seconds],
        "src_ip": cols.pop("src_ip", [CLIENT] * n),
        "dst_ip": cols.pop("dst_ip", [RESOLVER] * n),
        "dst_port": [53] * n,
        "proto": [17] * n,
        "query": queries,
        "qtype": cols.pop("qtype_list", [qtype] * n),
        "input": ["test"] * n,
        **cols,
    }
    frame = pl.from_arrow(conform(pa.table(data)))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _b32(rng: random.Random, size: int = 35) -> str:
    raw = bytes(rng.getrandbits(8) for _ in range(size))
    return base64.b32encode(raw).decode().rstrip("=").lower()


def _tunnel(k: int = 20, every: float = 5.0, domain: str = "evil-sync.net", seed: int = 1):
    rng = random.Random(seed)
    names = [f"{_b32(rng)}.{i}.t.{domain}" for i in range(k)]
    return _dns(names, [i * every for i in range(k)])


def _score(det: DnsTunnel, dns: pl.DataFrame) -> pl.DataFrame:
    return det.score(Batch(pl.DataFrame(), dns=dns))


def test_encoded_names_are_told_from_words_addresses_and_idns():
    rng = random.Random(3)
    names = {
        f"{_b32(rng)}.t.evil.net": True,  # base32 data
        "147901b8d3df9cc46c59d600078b3316ce.biillpi.com": True,  # dnscat2 hex
        "aaah+7w/qa=.x.example.com": True,  # characters no host name has
        "photographybysuman-gallery.example.com": False,  # words
        "www.example.com": False,
        "168.132.28.35.zen.spamhaus.org": False,  # reversed address
        "xn--80aejmjbdxvpe2k-xn--p1ai.example.com": False,  # an IDN
        "mail.google.com": False,
    }
    feats = name_features(pl.Series(list(names)))
    got = dict(zip(feats["query"], feats["encoded"], strict=True))
    assert got == names
    row = feats.filter(pl.col("query") == "www.example.com").row(0, named=True)
    assert (row["domain"], row["sub"], row["label"]) == ("example.com", "www", "www")
    # a name without a top-level domain (dnscat2 without a domain) is grouped apart
    odd = name_features(pl.Series(["dnscat.0123456789abcdef0123456789abcdef.ab12cd34ef"]))
    assert odd["domain"][0] == NO_TLD and odd["encoded"][0]


def test_a_tunnel_alarms_once_per_window_with_readable_numbers():
    alarms = _score(_det(), _tunnel(20))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA) and alarms.height == 1
    a = alarms.row(0, named=True)
    assert a["method"] == "N5" and a["entity"] == CLIENT and a["src_ip"] == CLIENT
    assert (a["dst_ip"], a["dst_port"], a["proto"]) == (RESOLVER, 53, 17)
    assert a["direction"] == "east-west"
    assert 0.5 <= a["score"] <= 1.0
    assert a["observed_value"] == 6.0 and a["threshold"] == 6.0  # alarms at the 6th name
    assert a["ts"] == T0 and a["ts_end"] == T0 + timedelta(seconds=25)
    assert "evil-sync.net" in a["reason"] and "6 distinct encoded" in a["reason"]
    assert "100 % data-carrying types" in a["reason"] and "e.g. " in a["reason"]


def test_an_external_resolver_makes_it_north_south():
    dns = _tunnel(10).with_columns(dst_ip=pl.lit("8.8.8.8"))
    assert _score(_det(), dns)["direction"].to_list() == ["north-south"]


def test_each_window_alarms_and_a_slow_tunnel_is_seen_in_the_long_window():
    fast = _tunnel(40, every=30.0)  # 20 minutes: two 10-minute windows
    det = _det()
    alarms = _score(det, fast)  # both crossings, and the first window closed
    assert alarms["observed_value"].to_list() == [6.0, 20.0, 6.0]
    assert det.finish(T0)["observed_value"].to_list() == [20.0]  # the end closes the second
    slow = _tunnel(60, every=600.0, seed=2)  # one query every 10 minutes for 10 hours
    det = _det()
    alarms = _score(det, slow)
    assert alarms.height == 1
    assert "within 1 d" in alarms["reason"][0] and alarms["observed_value"][0] == 50.0
    day = det.finish(T0).row(0, named=True)
    assert (
        day["observed_value"] == 60.0
        and "over its whole 1 d window from 2024-03-01" in (day["reason"])
    )
    assert "alarmed at 2024-03-01 20:10:00 with 50 names" in day["reason"]


def test_benign_shapes_do_not_alarm():
    rng = random.Random(5)
    guid = [f"{rng.getrandbits(128):032x}.telemetry.example.com" for _ in range(12)]
    dnsbl = [f"{i}.{i + 1}.168.192.zen.spamhaus.org" for i in range(50)]
    words = [f"{w}-{i}.cdn.example.org" for i, w in enumerate(["images", "static"] * 20)]
    sophos = [f"{rng.getrandbits(128):032x}.3.sophosxl.net" for _ in range(30)]
    ptr = [f"{i}.0.0.10.in-addr.arpa" for i in range(30)]
    frames = [
        _dns(guid, list(range(12)), qtype=1),  # hash-like names, A records: below threshold
        _dns(dnsbl, list(range(50)), qtype=16),
        _dns(words, list(range(40)), qtype=1),
        _dns(sophos, list(range(30)), qtype=16),  # allowed domain
        _dns(ptr, list(range(30)), qtype=12),
    ]
    det = _det()
    for frame in frames:
        assert _score(det, frame).height == 0


def test_bad_input_never_crashes():
    det = _det()
    assert _score(det, _dns([], [])).height == 0
    rng = random.Random(9)
    good = [f"{_b32(rng)}.t.evil.net" for _ in range(8)]
    queries = [None, "", ".", "a", "\\000\\255.x.net", *good]
    dns = _dns(
        queries,
        list(range(len(queries))),
        src_ip=[None, CLIENT, CLIENT, CLIENT, CLIENT, *[CLIENT] * 8],
        dst_ip=[RESOLVER, None, "not an ip", RESOLVER, RESOLVER, *[RESOLVER] * 8],
        qtype_list=[16, None, 16, 16, 65399, *[None] * 8],
    )
    alarms = _score(det, dns)
    assert alarms.height == 1 and alarms["src_ip"][0] == CLIENT
    # a frame of other columns only
    assert det.score(Batch(pl.DataFrame(), dns=pl.DataFrame({"x": [1]}))).height == 0


def test_min_score_drops_alarms():
    assert _score(_det(min_score=0.99), _tunnel(20)).height == 0


@pytest.mark.parametrize("cuts", [[1], [3, 7], [5, 6, 13, 40]])
def test_batches_and_restarts_give_the_same_alarms(cuts):
    dns = pl.concat([_tunnel(40, every=30.0), _tunnel(30, every=20.0, domain="b.org", seed=4)])
    dns = dns.sort("ts", maintain_order=True)
    det = _det()
    whole = pl.concat([_score(det, dns), det.finish(T0)])
    assert whole.height == 6  # 3 windows alarm: at their crossing, and whole at their end
    det, parts, start = _det(), [], 0
    for cut in [*cuts, dns.height]:
        parts.append(_score(det, dns.slice(start, cut - start)))
        restarted = _det()  # checkpoint and restore after every batch
        restarted.load_state(det.state())
        det, start = restarted, cut
    parts.append(det.finish(T0))
    assert pl.concat(parts).sort(pl.all()).equals(whole.sort(pl.all()))


def test_the_closing_alarm_shows_the_whole_window_and_leads_its_event():
    tunnel = _tunnel(100, every=5.0)  # 100 queries in 8 min 15 s
    other = _dns(["www.example.com"], [700.0], qtype=1)  # event time passes the window's end
    det = _det()
    alarms = _score(det, pl.concat([tunnel, other]))
    assert alarms.height == 2
    cross, close = alarms.row(0, named=True), alarms.row(1, named=True)
    assert cross["observed_value"] == 6.0 and close["observed_value"] == 100.0
    assert "100 distinct encoded subdomains of evil-sync.net in 100 queries" in close["observed"]
    assert close["observed"].endswith(", the whole 10 min window")
    assert "over its whole 10 min window from 12:00" in close["reason"]
    assert "alarmed at 12:00:25 with 6 names" in close["reason"]
    assert close["score"] > cross["score"]
    for key in ("ts", "site", "src_ip", "dst_ip", "dst_port", "proto", "direction"):
        assert close[key] == cross[key], key  # the same event
    assert close["ts_end"] == T0 + timedelta(seconds=495)
    assert det.finish(T0).height == 0  # reported already, and the window is gone
    events, merged = build_events(alarms, config.load(None))
    assert events.height == 1 and merged.height == 2
    assert events.item(0, "reason") == close["reason"]


def test_closing_keeps_the_crossing_resolver_and_needs_more_queries():
    tunnel = _tunnel(12, every=5.0)
    moved = tunnel.with_columns(
        dst_ip=pl.when(pl.int_range(pl.len()) < 8)
        .then(pl.lit(RESOLVER))
        .otherwise(pl.lit("10.0.0.54"))
    )
    det = _det()
    out = pl.concat([_score(det, moved), det.finish(T0)])
    assert out["dst_ip"].to_list() == [RESOLVER, RESOLVER]
    assert out["observed_value"].to_list() == [6.0, 12.0]
    just = _det()  # a burst that stops at the threshold has nothing more to report
    assert _score(just, _tunnel(6)).height == 1 and just.finish(T0).height == 0
    assert _det().finish(None).height == 0  # learn-only runs never alarm


def test_an_old_checkpoint_loads_and_reports_no_closing_alarm():
    det = _det()
    _score(det, _tunnel(10))
    state = det.state()
    old = state["short_groups"].drop_columns(["last_ts", "rep_n", "rep_score", "server"])
    restored = _det()
    restored.load_state(state | {"short_groups": old})
    assert restored.finish(T0).height == 0
    assert _score(restored, _tunnel(20).slice(10)).height == 0  # alarmed already


def test_learning_counts_without_alarming():
    det = _det()
    dns = _tunnel(20)
    det.learn(Batch(pl.DataFrame(), dns=dns.head(5)))
    alarms = _score(det, dns.slice(5))
    assert alarms.height == 1 and alarms["observed_value"][0] == 6.0  # the 5 learned counted


def test_real_dnscat2_capture_alarms_on_its_domain(shared_data):
    path = shared_data / "dns" / "tunnel_pcaps" / "dnscat2.pcap"
    dns = pl.from_arrow(pa.concat_tables(list(read_dns(path, Diagnostics()))))
    assert isinstance(dns, pl.DataFrame)
    alarms = _score(
        DnsTunnel(
            DnsTunnelSettings(),
            DetectorContext(NetworkSet(["192.168.0.0/16"]), NetworkSet([])),
        ),
        dns,
    )
    assert alarms.height == 1
    assert alarms["src_ip"][0] == "192.168.1.17" and "biillpi.com" in alarms["reason"][0]
    assert alarms["score"][0] >= 0.5
