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
from tests.flowbuild import canonical

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
