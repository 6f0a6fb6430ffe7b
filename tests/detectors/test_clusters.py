"""M10-M25: clustering models of behavior vectors, trained from the log and scored.

The history is one hour of the communication view for 36 communications of three
kinds (web, bulk transfer, DNS-like), each a fixed vector with 15 % noise, so k-means
finds three clusters and every communication keeps to its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from flowhawk.behavior.log import LogStore
from flowhawk.behavior.views import MEASURES
from flowhawk.detectors import clusters_model as cm
from flowhawk.detectors.base import ALARM_SCHEMA, Batch, DetectorContext
from flowhawk.detectors.clusters import (
    CLUSTER_DETECTORS,
    ClusterDetector,
    ClusterSettings,
    CommMagnitude,
    CommMixtureMagnitude,
    CommMixtureVelocity,
    CommVelocity,
)
from flowhawk.detectors.clusters_features import key_hash, prepare
from flowhawk.netaddr import NetworkSet

H0 = datetime(2024, 1, 1, tzinfo=UTC)
MINUTES = 60
NOW = H0 + timedelta(minutes=MINUTES)  # end of the history: scoring starts here
KINDS = {
    # pkts_out, pkts_in, bytes_out, bytes_in, flows, peers, ports, duration
    "web": (20, 30, 2000, 30000, 3, 1, 3, 5.0),
    "bulk": (2000, 1000, 2e6, 5e4, 1, 1, 1, 60.0),
    "dns": (1, 1, 70, 150, 1, 1, 1, 0.05),
}
PER_KIND = 12
WEB, BULK, DNS = "10.0.0.1", "10.0.1.1", "10.0.2.1"  # the first communication of each kind
SHORT = "10.0.9.1"  # a communication with three buckets of history


def _dst(src: str) -> str:
    return f"198.51.100.{int(src.split('.')[2]) + 1}"


def _rows(src: str, buckets: list[datetime], vectors: np.ndarray) -> pl.DataFrame:
    """Comm log rows of ``src`` -> 198.51.100.x:443/tcp."""
    counts = {
        m: np.maximum(np.round(vectors[:, j]), 1).astype(np.int64)
        for j, m in enumerate(MEASURES[:-1])
    }
    return pl.DataFrame(
        {
            "bucket": buckets,
            "site": "default",
            "src_ip": src,
            "dst_ip": _dst(src),
            "dst_port": 443,
            "proto": 6,
            **counts,
            "duration": vectors[:, 7].astype(np.float64),
        },
        schema_overrides={
            "bucket": pl.Datetime("us", "UTC"),
            "dst_port": pl.Int32,
            "proto": pl.Int16,
        },
    )


def _history(minutes: int = MINUTES) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    buckets = [H0 + timedelta(minutes=i) for i in range(minutes)]
    frames = []
    for t, mode in enumerate(KINDS.values()):
        for k in range(PER_KIND):
            noise = rng.lognormal(0, 0.15, size=(minutes, len(MEASURES)))
            frames.append(_rows(f"10.0.{t}.{k + 1}", buckets, np.array(mode) * noise))
    short = np.array([KINDS["web"]] * 3)
    frames.append(_rows(SHORT, buckets[:3], short))
    return pl.concat(frames)


def _one(src: str, kind: str, at: datetime, scale: float = 1.0) -> pl.DataFrame:
    """One bucket of ``src`` behaving like ``kind``, packets and bytes times ``scale``."""
    v = np.array([KINDS[kind]], dtype=np.float64)
    v[0, :4] *= scale
    return _rows(src, [at], v)


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    return _history()


@pytest.fixture(scope="module")
def store(history, tmp_path_factory) -> LogStore:
    root: Path = tmp_path_factory.mktemp("clusters") / "behavior"
    store = LogStore(root, "t")
    store.write({"comm": history})
    return store


def _detector(
    cls: type[ClusterDetector],
    store: LogStore,
    ctx: DetectorContext | None = None,
    **settings: object,
) -> ClusterDetector:
    base: dict[str, object] = {"min_clusters": 2, "max_clusters": 4, "min_threshold": 1.0}
    if cls.mixture:
        base = {"min_clusters": 1, "max_clusters": 4}
    ctx = ctx or DetectorContext(NetworkSet(["10.0.0.0/8"]), NetworkSet([]), history=store)
    return cls(cls.Settings(**{**base, **settings}), ctx)


def _score(det: ClusterDetector, rows: pl.DataFrame) -> pl.DataFrame:
    lo = rows.get_column("bucket").min()
    hi = rows.get_column("bucket").max() + timedelta(minutes=1)
    return det.score(Batch(pl.DataFrame(), {"comm": rows}, lo, hi, 60))  # type: ignore[arg-type]


P = cm.Params(min_clusters=2, max_clusters=4, budget=0.01)
MAG, VEL, MIX = (
    cm.Spec("comm", False, False),
    cm.Spec("comm", True, False),
    cm.Spec("comm", False, True),
)


@pytest.fixture(scope="module")
def magnitude(history) -> dict[str, pl.DataFrame]:
    return cm.train(history, MAG, P, NOW)


# -- training ------------------------------------------------------------------------------


def test_model_tables(magnitude, history):
    assert set(magnitude) == {"info", "scaling", "clusters", "keys"}
    info = magnitude["info"].row(0, named=True)
    assert info["view"] == "comm" and info["kind"] == "magnitude" and info["model"] == "k-means"
    assert info["clusters"] == 3, "three kinds of communication, three clusters"
    assert info["rows"] == history.height and info["keys"] == 3 * PER_KIND + 1
    assert info["trained_until"] == NOW
    assert magnitude["scaling"].get_column("feature").to_list() == list(MEASURES)
    assert (magnitude["scaling"].get_column("scale") >= cm.MIN_SCALE).all()
    clusters = magnitude["clusters"]
    assert clusters.height == 3 and clusters.get_column("size").sum() == history.height
    assert (clusters.get_column("spread") >= cm.MIN_SPREAD[False]).all()


def test_each_communication_keeps_to_its_own_cluster(magnitude, history):
    keys = magnitude["keys"]
    assert keys.height == 3 * PER_KIND + 1
    comms = history.select("site", "src_ip", "dst_ip", "dst_port", "proto").unique()
    joined = comms.with_columns(key_hash("comm")).join(keys, on="_key")
    assert joined.height == keys.height, "the model keys communications by their hash"
    masks = {src: mask for src, mask in joined.select("src_ip", "mask").iter_rows()}
    by_kind = [{masks[f"10.0.{t}.{k + 1}"] for k in range(PER_KIND)} for t in range(3)]
    assert all(len(used) == 1 for used in by_kind), "a kind keeps to one cluster"
    assert sorted(used.pop() for used in by_kind) == [1, 2, 4], "a different one per kind"
    n = dict(joined.select("src_ip", "n").iter_rows())
    assert n[WEB] == MINUTES and n[SHORT] == 3


def test_eligible_rows_follow_min_history(magnitude):
    info = magnitude["info"].row(0, named=True)
    # every key's rows after its first min_history ones; the short key has none
    assert info["eligible_rows"] == 3 * PER_KIND * (MINUTES - P.min_history)
    assert info["jump_alarms"] == 0


@pytest.mark.parametrize("budget", [0.01, 0.05])
def test_threshold_respects_the_false_alarm_budget(history, budget):
    p = cm.Params(
        min_clusters=2, max_clusters=4, budget=budget, min_threshold=0.1, erratic_rows=10**6
    )  # the view's threshold alone
    tables = cm.train(history, MAG, p, NOW)
    info = tables["info"].row(0, named=True)
    assert info["alarm_rate"] <= budget
    assert info["threshold"] > 0.1, "the budget quantile, not the floor"
    # scored again with the final model, the history raises no more than the budget
    model = cm.Model.from_tables(MAG, tables)
    assert model is not None
    prep = prepare(history, "comm")
    s = model.score(prep, np.full(prep.n, -1), np.zeros((1, 8), np.float32))
    rank = np.arange(prep.n) - prep.heads[prep.group]
    eligible = s.known & (rank >= p.min_history)
    rate = float((s.value[eligible] > s.threshold[eligible]).mean())
    assert 0 < rate <= budget
    assert rate >= budget / 3, "the threshold is not needlessly high"


def test_min_threshold_floors_the_tuned_threshold(magnitude):
    assert magnitude["info"].item(0, "threshold") >= P.min_threshold


def _own_threshold_history() -> pl.DataFrame:
    """Two hours of web communications: eleven noisy ones (35 %) and a steady one (3 %)."""
    rng = np.random.default_rng(2)
    buckets = [H0 + timedelta(minutes=i) for i in range(120)]
    frames = [
        _rows(f"10.0.0.{k + 1}", buckets, KINDS["web"] * rng.lognormal(0, s, size=(120, 8)))
        for k, s in enumerate([0.03] + [0.35] * 11)
    ]
    return pl.concat(frames)


def test_a_steady_key_alarms_under_its_own_threshold():
    """A steady key sharing its cluster with noisy ones: 1.5x its packets and bytes stays
    under the view's threshold, which the noisy keys set, and exceeds its own."""
    hist = _own_threshold_history()
    changed = pl.concat([hist, _one(WEB, "web", NOW + timedelta(minutes=60), scale=1.5)])
    view_only = cm.Params(min_clusters=2, max_clusters=4, budget=0.01, min_threshold=0.2,
                          own_min_threshold=0.2, own_rows=10**6, erratic_rows=10**6)  # fmt: skip
    own = cm.Params(**{**view_only.__dict__, "own_rows": 100})
    erratic = cm.Params(**{**view_only.__dict__, "erratic_rows": 100})
    results = {}
    for name, p in (("view", view_only), ("own", own), ("erratic", erratic)):
        tables = cm.train(hist, MAG, p, NOW)
        keys = tables["keys"].join(
            hist.select("site", "src_ip", "dst_ip", "dst_port", "proto").unique()
            .with_columns(key_hash("comm")), on="_key",
        )  # fmt: skip
        thr = dict(keys.select("src_ip", "thr").iter_rows())
        model = cm.Model.from_tables(MAG, tables)
        assert model is not None
        prep = prepare(changed, "comm")
        s = model.score(prep, np.full(prep.n, -1), np.zeros((1, 8), np.float32))
        last = int(np.flatnonzero(prep.order == changed.height - 1)[0])  # the changed row
        results[name] = (tables["info"].item(0, "threshold"), thr, s.value[last], s.threshold[last])
    view_thr, thr, value, used = results["view"]
    assert all(t == 0 for t in thr.values()), "no key has its own threshold"
    assert used == view_thr and value <= view_thr, "the noisy keys set a threshold it stays under"
    view_thr2, thr, value, used = results["own"]
    assert view_thr2 == view_thr
    assert all(t >= 0.2 for t in thr.values()), "every key has its own, at least min_threshold"
    assert thr[WEB] < view_thr < max(thr.values()), "the steady key's lower, noisy ones higher"
    assert used == thr[WEB] and value > used, "its change alarms"
    # with a short history, a key's own scores can only raise its threshold
    view_thr3, thr, value, used = results["erratic"]
    assert view_thr3 == view_thr and min(thr.values()) >= view_thr
    assert thr[WEB] == view_thr < max(thr.values()), "the steady key keeps the view's"
    assert used == view_thr and value <= used


def test_mixture_keys_get_their_own_threshold_sooner():
    """A DNS client's answers grow 25x (a downloading tunnel: three packets per answer,
    one query as before). Other keys' large answers make that an ordinary vector of the
    view, so only the client's own history shows it. With its 1200 buckets the mixture
    (own thresholds from 1000) alarms; at the k-means models' 2400 it does not."""
    rng = np.random.default_rng(3)
    n = 1200
    buckets = [H0 + timedelta(minutes=i) for i in range(n)]
    big = (1, 3, 70, 3750, 1, 1, 1, 0.05)  # resolvers fetching TXT/DNSSEC-sized answers
    frames = [_rows(DNS, buckets, np.array(KINDS["dns"]) * rng.lognormal(0, 0.1, (n, 8)))]
    frames += [
        _rows(f"10.0.5.{k + 1}", buckets, np.array(mode) * rng.lognormal(0, 0.35, (n, 8)))
        for k, mode in enumerate([KINDS["dns"], big, KINDS["web"]] * 4)
    ]
    hist = pl.concat(frames)
    end = H0 + timedelta(minutes=n)
    tunnel = _rows(DNS, [end], np.array([big], dtype=np.float64))
    assert CommMixtureMagnitude.Settings().own_threshold_rows == 1000
    assert CommMagnitude.Settings().own_threshold_rows == 2400
    found = {}
    for rows in (1000, 2400):
        settings = CommMixtureMagnitude.Settings(
            min_clusters=1, max_clusters=4, own_threshold_rows=rows
        )
        model = cm.Model.from_tables(MIX, cm.train(hist, MIX, settings.params(), end))
        assert model is not None
        prep = prepare(tunnel, "comm")
        s = model.score(prep, np.full(1, -1), np.zeros((1, 8), np.float32))
        found[rows] = (float(s.value[0]), float(s.threshold[0]), model.threshold)
    value, thr, view_thr = found[1000]
    assert thr < view_thr and value > thr, found
    value, thr, view_thr = found[2400]
    assert thr == view_thr and value <= thr, found


@pytest.mark.parametrize("floor", [0.75, 1.0])
def test_own_thresholds_are_floored_at_own_min_threshold(floor):
    """The steady key's own tail is about 0.24; its own threshold is the floor. A change
    inside its cluster's spread (1.6x its packets and bytes: ratio 0.87) alarms only
    under the default floor (0.75), not under the view's floor (1.0)."""
    hist = _own_threshold_history()
    p = cm.Params(min_clusters=2, max_clusters=4, budget=0.01, min_threshold=0.2,
                  own_min_threshold=floor, own_rows=100, erratic_rows=10**6)  # fmt: skip
    assert ClusterSettings().own_min_threshold == 0.75
    tables = cm.train(hist, MAG, p, NOW)
    model = cm.Model.from_tables(MAG, tables)
    assert model is not None
    own = model.thr[model.thr > 0]
    assert len(own) == len(model.thr) and own.min() == pytest.approx(floor)
    prep = prepare(_one(WEB, "web", NOW + timedelta(minutes=60), scale=1.6), "comm")
    s = model.score(prep, np.full(1, -1), np.zeros((1, 8), np.float32))
    assert s.threshold[0] == pytest.approx(floor) and 0.75 < s.value[0] < 1.0
    assert (s.value[0] > s.threshold[0]) == (floor < 1.0)


NIGHTLY = "10.0.8.1"  # a communication active in a few buckets, far from every cluster


def _nightly(at: list[datetime]) -> pl.DataFrame:
    """``NIGHTLY`` moving a hundred times a bulk transfer's packets and bytes."""
    v = np.array([KINDS["bulk"]] * len(at), dtype=np.float64)
    v[:, :4] *= 100 * np.random.default_rng(5).lognormal(0, 0.1, size=(len(at), 1))
    return _rows(NIGHTLY, at, v)


def test_a_rare_key_far_from_every_cluster_gets_its_threshold_raised(history):
    """A key seen in six buckets (a nightly backup) that no cluster describes: its own
    scores from its second bucket on show it beyond the view's threshold, so its usual
    bucket does not alarm, while a bucket far beyond its usual still does. Counting only
    the rows after its first ``min_history`` (one), it kept the view's threshold."""
    seen = [H0 + timedelta(minutes=10 * i) for i in range(6)]
    hist = pl.concat([history, _nightly(seen)])
    usual = _nightly([NOW])
    beyond = usual.with_columns(
        pl.col(m) * 1000 for m in ("pkts_out", "pkts_in", "bytes_out", "bytes_in")
    )
    values = {}
    for name, rows in (("view", 10**6), ("erratic", 3)):
        p = cm.Params(**{**P.__dict__, "erratic_rows": rows})
        tables = cm.train(hist, MAG, p, NOW)
        model = cm.Model.from_tables(MAG, tables)
        assert model is not None
        for what, row in (("usual", usual), ("beyond", beyond)):
            prep = prepare(pl.concat([hist, row]), "comm")
            s = model.score(prep, np.full(prep.n, -1), np.zeros((1, 8), np.float32))
            last = int(np.flatnonzero(prep.order == hist.height)[0])  # the new row
            assert s.history[last] == 6
            values[name, what] = (float(s.value[last]), float(s.threshold[last]))
        values[name] = tables["info"].item(0, "threshold")
    value, thr = values["view", "usual"]
    assert thr == values["view"] and value > thr, "under the view's threshold it alarms"
    value, thr = values["erratic", "usual"]
    assert values["erratic"] == values["view"], "the view's threshold is unchanged"
    assert thr > values["view"] and value <= thr, "its own scores raised its threshold"
    value, thr = values["erratic", "beyond"]
    assert value > thr, "a bucket far beyond its usual still alarms"


def test_too_little_history_gives_no_model(history):
    assert cm.train(history.head(cm.MIN_ROWS - 1), MAG, P, NOW) == {}
    assert cm.train(history.clear(), MAG, P, NOW) == {}
    # velocity needs rows with a previous bucket of the same key: first buckets have none
    firsts = history.group_by("src_ip", maintain_order=True).first()
    assert firsts.height >= cm.MIN_ROWS
    assert cm.train(firsts, VEL, P, NOW) == {}
    assert cm.train(firsts, MAG, P, NOW) != {}


def test_velocity_and_mixture_models(history):
    vel = cm.train(history, VEL, P, NOW)
    assert vel["info"].item(0, "kind") == "velocity"
    assert vel["info"].item(0, "sample_rows") == history.height - (3 * PER_KIND + 1)
    mix = cm.train(history, MIX, cm.Params(min_clusters=1, max_clusters=4), NOW)
    assert set(mix) == {"info", "scaling", "clusters", "keys", "precision"}
    assert mix["info"].item(0, "model") == "gaussian-mixture"
    assert mix["scaling"].height == len(MEASURES) + len(cm.RICH)
    d = len(MEASURES) + len(cm.RICH)
    assert mix["precision"].height == mix["clusters"].height * d * (d + 1) // 2


def test_training_is_deterministic(history, magnitude):
    again = cm.train(history, MAG, P, NOW)
    for name, table in magnitude.items():
        assert again[name].equals(table), name


def test_jump_rule():
    p = cm.Params(budget=0.02, min_threshold=1.0)
    jumped = np.array([True, True, True, False, True])
    used = np.array([1, 1, 2, 1, 1])
    before = np.array([60, 40, 60, 60, 60])
    value = np.array([3.0, 3.0, 3.0, 3.0, 0.5])
    # 1 cluster in 60 buckets: rare enough; in 40: not; 2 in 60: not; no jump; too close
    assert cm.jumps(jumped, used, before, value, p).tolist() == [True, False, False, False, False]


# -- scoring (magnitude) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def m11(store) -> ClusterDetector:
    det = _detector(CommMagnitude, store)
    assert _score(det, _one(WEB, "web", NOW)).height == 0  # trains on first use
    return det


def test_detector_trains_from_the_log_history(m11, history):
    assert m11.version == 1 and m11.trained_until == NOW
    assert m11.model["info"].item(0, "rows") == history.height


@pytest.mark.parametrize("src,kind", [(WEB, "web"), (BULK, "bulk"), (DNS, "dns")])
def test_a_normal_vector_does_not_alarm(m11, src, kind):
    assert _score(m11, _one(src, kind, NOW + timedelta(minutes=1))).height == 0


def test_an_outlier_alarms_and_explains_itself(m11):
    at = NOW + timedelta(minutes=2)
    alarms = _score(m11, _one(WEB, "web", at, scale=300.0))
    assert alarms.schema == pl.Schema(ALARM_SCHEMA) and alarms.height == 1
    a = alarms.row(0, named=True)
    assert (a["method"], a["name"]) == ("M11", "clustering: communication magnitude")
    key = (a["site"], a["src_ip"], a["dst_ip"], a["dst_port"], a["proto"])
    assert key == ("default", WEB, _dst(WEB), 443, 6)
    assert a["ts"] == at and a["ts_end"] == at + timedelta(minutes=1)
    assert a["direction"] == "north-south"
    ratio, thr = a["observed_value"], a["threshold"]
    assert ratio > thr >= 1.0 and a["expected_value"] == thr
    assert a["score"] == pytest.approx(ratio / (1 + ratio))
    assert a["reason"] == (
        f"{WEB} -> {_dst(WEB)}:443/tcp: behavior {ratio:.1f}x farther than usual from its "
        f"normal clusters (threshold {thr:.1f})"
    )
    assert a["observed"] == (
        "sent 600.0 kB in 6000 pkts, received 9.0 MB in 9000 pkts, 3 flows, 3 client ports, "
        "5.0 s of flow time in 1 min"
    )
    assert a["expected"].startswith("usual cluster ") and " of 3: about sent " in a["expected"]
    assert a["expected"].endswith("(30-day k-means model v1, 1.0 h of history)")


def test_short_and_unknown_keys_do_not_alarm(m11):
    at = NOW + timedelta(minutes=3)
    assert _score(m11, _one(SHORT, "web", at, scale=300.0)).height == 0, "3 < min_history"
    assert _score(m11, _one("10.0.7.7", "web", at, scale=300.0)).height == 0, "never seen"


def test_fixed_and_site_thresholds_override_the_tuned_one(store):
    outlier = _one(WEB, "web", NOW, scale=300.0)
    assert _score(_detector(CommMagnitude, store, threshold=1e6), outlier).height == 0
    low = _score(_detector(CommMagnitude, store, threshold=1.5), outlier)
    assert low.height == 1 and low.item(0, "threshold") == 1.5
    high_here = _detector(CommMagnitude, store, threshold=1.5, site_thresholds={"default": 1e6})
    assert _score(high_here, outlier).height == 0, "the site's threshold wins"
    high_elsewhere = _detector(CommMagnitude, store, threshold=1.5, site_thresholds={"lab": 1e6})
    assert _score(high_elsewhere, outlier).item(0, "threshold") == 1.5


def test_a_jump_to_a_cluster_never_used_alarms(store):
    """A DNS-like communication moving exactly onto the bulk cluster: a normal vector,
    but not for it. The fixed threshold keeps plain distance from alarming here."""
    jump = _one(DNS, "bulk", NOW)
    det = _detector(CommMagnitude, store, false_alarm_budget=0.02, threshold=1e6)
    alarms = _score(det, jump)
    assert alarms.height == 1
    reason = alarms.item(0, "reason")
    assert reason.startswith(f"{DNS} -> {_dst(DNS)}:443/tcp: behavior ")
    assert reason.endswith(
        f"(threshold 1000000.0), jumped to a cluster it never used in {MINUTES} active "
        "buckets (it used 1)"
    )
    no_jumps = _detector(CommMagnitude, store, false_alarm_budget=0.02, threshold=1e6, jumps=False)
    assert _score(no_jumps, jump).height == 0
    # with the default budget, 60 buckets are too few to call one cluster change rare
    default = _detector(CommMagnitude, store, threshold=1e6)
    assert _score(default, jump).height == 0


def test_the_mixture_model_alarms_on_an_outlier(store):
    det = _detector(CommMixtureMagnitude, store)
    assert _score(det, _one(WEB, "web", NOW)).height == 0
    alarms = _score(det, _one(WEB, "web", NOW + timedelta(minutes=1), scale=300.0))
    assert alarms.get_column("method").to_list() == ["M19"]
    assert "Gaussian-mixture model v1" in alarms.item(0, "expected")


# -- velocity and its live state --------------------------------------------------------------


def _steps() -> tuple[pl.DataFrame, pl.DataFrame]:
    """WEB as usual, then 300 times busier in the next bucket."""
    return _one(WEB, "web", NOW), _one(WEB, "web", NOW + timedelta(minutes=1), scale=300.0)


def test_velocity_compares_with_the_last_vector_of_an_earlier_batch(store):
    first, second = _steps()
    det = _detector(CommVelocity, store)
    assert _score(det, first).height == 0, "no previous vector yet: no velocity"
    alarms = _score(det, second)
    assert alarms.height == 1
    a = alarms.row(0, named=True)
    assert a["method"] == "M10" and a["ts"] == NOW + timedelta(minutes=1)
    assert a["reason"].startswith(
        f"{WEB} -> {_dst(WEB)}:443/tcp: change since its previous active bucket "
        f"{a['observed_value']:.1f}x farther than usual"
    )
    assert "; previous active bucket 2024-01-01 01:00: sent 2.0 kB in 20 pkts" in a["observed"]
    assert a["expected"].startswith("the usual change (cluster ")


def test_velocity_without_the_last_vector_cannot_alarm(store):
    _, second = _steps()
    assert _score(_detector(CommVelocity, store), second).height == 0


def test_velocity_within_one_batch(store):
    both = pl.concat(_steps())
    alarms = _score(_detector(CommVelocity, store), both)
    assert alarms.get_column("ts").to_list() == [NOW + timedelta(minutes=1)]


def test_velocity_live_state_round_trips(store):
    first, second = _steps()
    det = _detector(CommVelocity, store)
    _score(det, first)
    state = det.state()
    assert {"model_meta", "live_last", "live_probe"} <= set(state)
    last = state["live_last"]
    assert last.num_rows == 1
    assert last.column("bucket")[0].as_py() == int(NOW.timestamp())
    restored = _detector(CommVelocity, store)
    restored.load_state(state)
    assert restored.version == det.version and restored.trained_until == det.trained_until
    for name, table in restored.live_state().items():
        assert table.equals(state[name]), name
    want = _score(det, second)
    got = _score(restored, second)
    assert want.height == 1 and got.equals(want)
    assert restored.version == 1, "the restored model is used, not retrained"


def test_live_state_from_another_hash_is_discarded(store):
    first, second = _steps()
    det = _detector(CommVelocity, store)
    _score(det, first)
    state = dict(det.state())
    probe = state["live_probe"].column("hash_probe")[0].as_py()
    state["live_probe"] = pa.table({"hash_probe": pa.array([probe ^ 1], pa.uint64())})
    restored = _detector(CommVelocity, store)
    restored.load_state(state)
    assert restored.live_state()["live_last"].num_rows == 0
    assert _score(restored, second).height == 0


def test_magnitude_detectors_keep_no_live_state(m11):
    assert m11.live_state() == {}
    assert {c.method for c in CLUSTER_DETECTORS if c.velocity} == {
        f"M{i}" for i in (10, 12, 14, 16, 18, 20, 22, 24)
    }


@pytest.mark.parametrize("first_method", ["M10", "M18"])
def test_the_velocity_methods_of_a_view_share_its_last_vectors(store, first_method):
    """M10 and M18 keep one copy of the communications' last vectors and see it as it
    was before each batch, whichever of them the engine calls first."""
    first, second = _steps()
    ctx = DetectorContext(NetworkSet(["10.0.0.0/8"]), NetworkSet([]), history=store)
    pair = [_detector(CommVelocity, store, ctx), _detector(CommMixtureVelocity, store, ctx)]
    if first_method == "M18":
        pair.reverse()
    assert pair[0].last is not None and pair[0].last is pair[1].last
    for det in pair:
        _score(det, first)
    got = {det.method: _score(det, second) for det in pair}
    for cls in (CommVelocity, CommMixtureVelocity):
        alone = _detector(cls, store)
        _score(alone, first)
        assert got[cls.method].equals(_score(alone, second)), cls.method
    assert got["M10"].height == 1
    states = [det.live_state()["live_last"] for det in pair]
    assert states[0] is states[1] and states[0].num_rows == 1


def test_data_resuming_exactly_on_a_training_time_does_not_stall(store):
    """A detector with nothing new since training whose next rows start exactly on a grid
    point of its schedule trains on and scores them (it used to loop forever)."""
    import threading

    det = _detector(CommMagnitude, store)
    grid = H0 + timedelta(seconds=det.settings.retrain_every)  # a point of its grid
    rows = _one(WEB, "web", grid)
    batch = Batch(pl.DataFrame(), {"comm": rows}, grid - timedelta(minutes=30),
                  grid + timedelta(minutes=1), 60)  # type: ignore[arg-type]  # fmt: skip
    done: list[pl.DataFrame] = []
    worker = threading.Thread(target=lambda: done.append(det.score(batch)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert done, "scoring did not finish"
    assert det.quiet_until is not None and det.quiet_until >= grid
