"""N3: external sources probing one site (targeted) or many (random)."""

from __future__ import annotations

import shutil
from functools import cache

import polars as pl
import pytest

from flowhawk import config
from flowhawk.demo import demo_data
from flowhawk.demo.scenario import PROBER
from flowhawk.detectors import DETECTORS
from flowhawk.diagnostics import Diagnostics
from flowhawk.engine import DetectionEngine
from flowhawk.normalize import Normalizer
from flowhawk.state import StateStore
from tests.flowbuild import at, canonical

SITES = [
    {"name": "hq", "networks": ["10.10.0.0/16"]},
    {"name": "plant", "networks": ["10.20.0.0/16"]},
]


def _cfg(sites: list[dict] = SITES, period: str = "1d") -> config.Config:
    detectors = {m: {"enabled": m == "N3"} for m in DETECTORS.names()}
    return config.from_dict(
        {"learning": {"period": period}, "sites": sites, "detectors": detectors}
    )


@cache
def _demo() -> pl.DataFrame:
    """The demo's two days, normalized with its two sites."""
    raw, _ = demo_data()
    df = pl.from_arrow(Normalizer(_cfg(), Diagnostics()).process(raw))
    assert isinstance(df, pl.DataFrame)
    return df.sort("ts_start", maintain_order=True)


def _run(eng: DetectionEngine, parts: list[pl.DataFrame], finish: bool = True) -> pl.DataFrame:
    out = [eng.process(p) for p in parts] + ([eng.finish()] if finish else [])
    return pl.concat(out).sort(pl.all())


def _hours(df: pl.DataFrame) -> list[pl.DataFrame]:
    h = df.with_columns(_h=pl.col("ts_start").dt.truncate("1h"))
    return [p.drop("_h") for p in h.partition_by("_h", maintain_order=True)]


def test_demo_probe_of_the_plant_is_targeted(tmp_path):
    alarms = _run(DetectionEngine(_cfg(), StateStore(tmp_path)), _hours(_demo()))
    assert alarms.height == 1
    row = alarms.row(0, named=True)
    assert row["method"] == "N3" and row["src_ip"] == PROBER and row["site"] == "plant"
    assert row["score"] >= 0.5 and row["entity"].startswith("10.20.1.")
    assert "targeted" in row["reason"] and "1 of the 2 sites" in row["reason"]


def test_batching_and_restart_give_the_same_alarms(tmp_path):
    demo = _demo()
    hours = _hours(demo)
    whole = _run(DetectionEngine(_cfg(), StateStore(tmp_path / "a")), hours)
    odd = [demo.slice(i, 7919) for i in range(0, demo.height, 7919)]
    batched = _run(DetectionEngine(_cfg(), StateStore(tmp_path / "b")), odd)
    assert batched.drop("expected").equals(whole.drop("expected"))
    first = DetectionEngine(_cfg(), StateStore(tmp_path / "c"))
    before = _run(first, hours[:40], finish=False)
    first.checkpoint()
    shutil.copytree(tmp_path / "c", tmp_path / "d")
    after = _run(DetectionEngine(_cfg(), StateStore(tmp_path / "d")), hours[40:])
    assert pl.concat([before, after]).sort(pl.all()).equals(whole)
    learn = DetectionEngine(_cfg(), StateStore(tmp_path / "e"), learn_only=True)
    assert _run(learn, hours).height == 0


def _probe(src: str, nets: list[str], t0: float = 7200.0) -> list[dict]:
    return [
        {"src_ip": src, "dst_ip": f"{net}.{i}", "dst_port": 22, "t": t0 + 10 * i + 60 * k}
        for k, net in enumerate(nets)
        for i in range(1, 7)
    ]


def _background() -> list[dict]:
    return [
        {"src_ip": f"{net}.1", "dst_ip": "203.0.113.5", "dst_port": 443, "t": float(t)}
        for net in ("10.10.0", "10.20.0")
        for t in range(0, 4 * 3600, 600)
    ]


@pytest.mark.parametrize(
    ("nets", "verdict", "high"),
    [(["10.10.0"], "targeted", True), (["10.10.0", "10.20.0"], "random", False)],
)
def test_targeted_versus_random(tmp_path, nets, verdict, high):
    cfg = _cfg(period="1h")
    flows = canonical(_probe("198.51.100.9", nets) + _background(), cfg)
    alarms = _run(DetectionEngine(cfg, StateStore(tmp_path)), _hours(flows))
    assert alarms.height == 1
    assert verdict in alarms.get_column("reason")[0]
    assert (alarms.get_column("score")[0] >= 0.5) is high


def test_a_single_site_says_nothing(tmp_path):
    cfg = _cfg(sites=[], period="1h")
    flows = canonical(_probe("198.51.100.9", ["10.10.0"]) + _background(), cfg)
    assert _run(DetectionEngine(cfg, StateStore(tmp_path)), _hours(flows)).height == 0


# -- destinations -----------------------------------------------------------------------


def _reach(dst: str, nets: list[str], clients: int, t0: float) -> list[dict]:
    """``clients`` hosts of each network in ``nets`` open a connection to ``dst``."""
    return [
        {"src_ip": f"{net}.{20 + i}", "dst_ip": dst, "dst_port": 443, "t": t0 + 30 * i + 7 * k}
        for k, net in enumerate(nets)
        for i in range(clients)
    ]


def _destinations(**n3) -> tuple[config.Config, pl.DataFrame]:
    cfg = _cfg(period="1h")
    if n3:
        cfg = config.from_dict(
            {
                "learning": {"period": "1h"},
                "sites": SITES,
                "detectors": {m: {"enabled": m == "N3"} | (n3 if m == "N3" else {})
                              for m in DETECTORS.names()},
            }
        )  # fmt: skip
    rows = _background()  # one host of each site reaches the internet all along
    rows += _reach("198.51.100.40", ["10.10.0"], 4, 7200)  # hq only: targeted
    rows += _reach("198.51.100.40", ["10.10.0"], 4, 3 * 3600)  # again: judged already
    rows += _reach("198.51.100.41", ["10.10.0", "10.20.0"], 3, 7300)  # both sites: random
    rows += _reach("198.51.100.42", ["10.20.0"], 2, 7400)  # two clients: not judged
    rows += _reach("198.51.100.43", ["10.20.0"], 5, 600)  # busy while learning: known
    rows += _reach("198.51.100.43", ["10.20.0"], 5, 7500)
    return cfg, canonical(rows, cfg)


def test_destinations_reached_from_one_site_are_targeted(tmp_path):
    cfg, flows = _destinations()
    alarms = _run(DetectionEngine(cfg, StateStore(tmp_path)), _hours(flows)).sort("dst_ip")
    assert alarms.get_column("dst_ip").to_list() == ["198.51.100.40", "198.51.100.41"]
    targeted, random = alarms.row(0, named=True), alarms.row(1, named=True)
    assert targeted["site"] == "hq" and targeted["src_ip"] == "10.10.0.20"
    assert targeted["score"] >= 0.5 and targeted["observed"].startswith("targeted destination")
    assert targeted["reason"] == (
        "198.51.100.40 was reached by 4 internal hosts at site hq (10.10.0.20, 10.10.0.21, "
        "10.10.0.22, 10.10.0.23; ports 443) and, within the horizon, from 1 of the 2 sites "
        "that reach the internet: targeted, only this site's hosts go there"
    )
    assert random["score"] < 0.5 and "random, other sites reach it too" in random["reason"]
    assert "6 internal hosts at site hq, plant" in random["reason"]
    assert "from 2 of the 2 sites" in random["reason"]


def test_destinations_need_two_sites_on_the_internet_and_can_be_off(tmp_path):
    _, flows = _destinations()
    one_site = _cfg(sites=[], period="1h")
    flat = canonical(_reach("198.51.100.40", ["10.10.0"], 4, 7200) + _background(), one_site)
    assert _run(DetectionEngine(one_site, StateStore(tmp_path / "a")), _hours(flat)).height == 0
    cfg, flows = _destinations(destinations=False)
    assert _run(DetectionEngine(cfg, StateStore(tmp_path / "b")), _hours(flows)).height == 0
    hq_only = _cfg(period="1h")
    rows = [r for r in _background() if r["src_ip"].startswith("10.10.")]
    rows += _reach("198.51.100.40", ["10.10.0"], 4, 7200)  # the plant never goes outside
    flows = canonical(rows, hq_only)
    assert _run(DetectionEngine(hq_only, StateStore(tmp_path / "c")), _hours(flows)).height == 0


def test_destination_memory_survives_batching_and_restart(tmp_path):
    cfg, flows = _destinations()
    hours = _hours(flows)
    whole = _run(DetectionEngine(cfg, StateStore(tmp_path / "a")), hours)
    odd = [flows.slice(i, 13) for i in range(0, flows.height, 13)]
    assert _run(DetectionEngine(cfg, StateStore(tmp_path / "b")), odd).equals(whole)
    first = DetectionEngine(cfg, StateStore(tmp_path / "c"))
    before = _run(first, hours[:2], finish=False)
    first.checkpoint()
    after = _run(DetectionEngine(cfg, StateStore(tmp_path / "c")), hours[2:])
    assert pl.concat([before, after]).sort(pl.all()).equals(whole) and whole.height == 2


def test_demo_destinations_once_the_plant_reaches_the_internet(tmp_path):
    """The demo's plant never goes outside, so its destinations say nothing (above). With
    a plant host polling a vendor all along and four plant hosts following a lure on day
    two, day two judges two destinations: the lure, and one of hq's web sites that three
    hq hosts visited within an hour for the first time (a site-specific habit, scored as
    targeted too: the classification cannot tell them apart)."""
    demo = _demo()
    day = demo.get_column("ts_start").min().replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [{"src_ip": "10.20.0.5", "dst_ip": "192.0.2.80", "dst_port": 443, "t": float(t)}
            for t in range(0, 2 * 86400, 600)]  # fmt: skip
    rows += _reach("192.0.2.99", ["10.20.2"], 4, 86400 + 10 * 3600)
    extra = canonical(rows, _cfg())
    extra = extra.with_columns(pl.col("ts_start", "ts_end") + (day - at(0)))
    flows = pl.concat([demo, extra.select(demo.columns)]).sort("ts_start", maintain_order=True)
    alarms = _run(DetectionEngine(_cfg(), StateStore(tmp_path)), _hours(flows)).sort("ts")
    assert alarms.height == 3 and alarms.get_column("src_ip")[2] == PROBER
    assert alarms.get_column("dst_ip").head(2).to_list() == ["192.0.2.99", "198.51.100.123"]
    lure = alarms.row(0, named=True)
    assert lure["site"] == "plant" and lure["score"] >= 0.5
    assert "4 internal hosts at site plant" in lure["reason"] and "targeted" in lure["reason"]
