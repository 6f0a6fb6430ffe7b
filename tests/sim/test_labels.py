"""Labels agree with the data, measured independently: flowhawk's normalizer and
:func:`flowhawk.behavior.views.aggregate` over the generated flows."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from flowhawk.behavior.aggregate import aggregate
from flowhawk.behavior.views import BY_NAME, VIEWS
from flowhawk.sim import KINDS
from flowhawk.sim.labels import CLUSTER_METHODS, KEY_COLUMNS, LABEL_COLUMNS, view_log

VOLUME = {f"M{i}" for i in range(2, 10)}


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rows(canon: pl.DataFrame, label: dict) -> tuple[pl.DataFrame, datetime, datetime]:
    """The behavioral-log rows of the label's key (its view, all time), window bounds."""
    view = BY_NAME[label["view"]]
    if view.name in ("comm", "port", "client_port", "server_port"):
        sub = canon.filter(*(pl.col(k) == label[k] for k in view.key))
    else:
        sub = canon.filter((pl.col("src_ip") == label["ip"]) | (pl.col("dst_ip") == label["ip"]))
    rows = aggregate(sub)[view.name].filter(*(pl.col(k) == label[k] for k in view.key))
    rows = rows.with_columns(pkts=pl.col("pkts_out") + pl.col("pkts_in"))
    return rows, _t(label["start"]), _t(label["end"])


def _split(rows: pl.DataFrame, start: datetime, end: datetime):
    before = rows.filter(pl.col("bucket") < start)
    window = rows.filter(pl.col("bucket").is_between(start, end, closed="left"))
    return before, window


def _methods(label: dict) -> set[str]:
    return set(label["methods"].split(";")) - {""}


def _labels(sim, **eq) -> list[dict]:
    df = sim.labels
    for k, v in eq.items():
        df = df.filter(pl.col(k) == v)
    return df.to_dicts()


def test_label_file_shape(sim):
    lab = sim.labels
    assert tuple(lab.columns) == LABEL_COLUMNS
    assert set(lab.get_column("kind")) == set(KINDS)
    assert sorted(set(lab.get_column("id"))) == sorted(sim.anomalies)
    for row in lab.iter_rows(named=True):
        key = BY_NAME[row["view"]].key
        for col in KEY_COLUMNS:
            assert (row[col] is not None) == (col in key), (row["view"], col)
        methods = set(row["methods"].split(";")) - {""}
        allowed = set(CLUSTER_METHODS[row["view"]])
        if row["view"] == "comm":
            allowed |= VOLUME | {"M1", "M30", "M31"}
        assert methods <= allowed, row
        assert row["start"] < row["end"]
    # Every anomaly has at least one row some method is expected to find.
    found = lab.filter(pl.col("methods") != "").get_column("id").unique()
    assert sorted(found) == sorted(sim.anomalies)


def test_anomalies_are_after_the_clean_days_and_never_overlap(sim):
    learn_until = datetime(2026, 3, 5, tzinfo=sim.anomalies[1].start.tzinfo)
    spans = sorted((i.start, i.end) for i in sim.anomalies.values())
    assert spans[0][0] >= learn_until
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert all(i.start.second == 0 and i.end.second == 0 for i in sim.anomalies.values())


def test_volume_methods_hold_on_the_data(sim, canon):
    """M2-M9 on a comm row mean what they say, recomputed from the flows."""
    for label in _labels(sim, view="comm"):
        methods = _methods(label)
        if not methods & VOLUME:
            continue
        rows, start, end = _rows(canon, label)
        before, window = _split(rows, start, end)
        minutes = (end - start).total_seconds() / 60
        base0 = max(canon["ts_start"].min().replace(hour=0, minute=0, second=0, microsecond=0),
                    start - timedelta(days=7))  # fmt: skip
        base_minutes = (start - base0).total_seconds() / 60
        for m, col in (("M2", "pkts_in"), ("M3", "pkts_out"), ("M4", "pkts")):
            if m in methods:
                assert window[col].median() >= 10 * before[col].median(), (m, label)
        for m, col in (("M6", "pkts_out"), ("M7", "pkts_in"), ("M8", "pkts")):
            if m in methods:
                base = before.filter(pl.col("bucket") >= base0)
                assert window[col].sum() / minutes <= 0.25 * base[col].sum() / base_minutes, label


def test_volume_spikes_are_10x_every_bucket(sim, canon):
    spikes = _labels(sim, kind="volume_spike", view="comm")
    assert spikes
    for label in spikes:
        rows, start, end = _rows(canon, label)
        before, window = _split(rows, start, end)
        col = "pkts" if label["variant"] == "both" else "pkts_out"
        assert window.height >= (end - start).total_seconds() / 60 - 1
        assert window[col].min() >= 10 * before[col].median(), label
        assert {"M3", "M4"} <= _methods(label)
        assert ("M2" in _methods(label)) == (label["variant"] == "both")


def test_silences_are_silent(sim, canon):
    rows = _labels(sim, kind="silence", view="comm")
    assert rows
    for label in rows:
        flows = canon.filter(
            pl.col("ts_start").is_between(_t(label["start"]), _t(label["end"]), closed="left"),
            pl.col("src_ip") == label["src_ip"],
            pl.col("dst_ip") == label["dst_ip"],
        )
        if label["variant"] == "stops_reporting":
            assert flows.height == 0
            gone = canon.filter(
                pl.col("ts_start").is_between(_t(label["start"]), _t(label["end"]), closed="left"),
                (pl.col("src_ip") == label["src_ip"]) | (pl.col("dst_ip") == label["src_ip"]),
            )
            assert gone.height == 0  # the device sends nothing at all
        else:
            assert flows.height > 0 and flows["dst_pkts"].sum() == 0
        assert {"M6", "M7", "M8", "M9"} <= _methods(label)


def test_underflows_keep_their_schedule(sim, canon):
    rows = _labels(sim, kind="underflow", view="comm")
    assert rows
    for label in rows:
        data, start, end = _rows(canon, label)
        before, window = _split(data, start, end)
        minutes = (end - start).total_seconds() / 60
        assert window.height >= 0.8 * minutes  # still there, every minute or so
        assert window["pkts"].median() <= 0.25 * before["pkts"].median()
        assert window["bytes_out"].median() <= 0.25 * before["bytes_out"].median()


def test_new_communications_never_happened_before(sim, canon):
    rows = [r for r in _labels(sim, view="comm") if "M1" in _methods(r)]
    kinds = {r["kind"] for r in rows}
    assert {"new_communication", "port_shift"} <= kinds
    key = ["src_ip", "dst_ip", "dst_port", "proto"]
    new = pl.DataFrame(rows).select(*key, start=pl.col("start").str.to_datetime(time_zone="UTC"))
    new = new.with_columns(pl.col("dst_port").cast(pl.Int32), pl.col("proto").cast(pl.Int16))
    seen = canon.join(new, on=key).filter(pl.col("ts_start") < pl.col("start"))
    assert seen.height == 0, seen.select(*key).unique()
    during = canon.join(new, on=key, how="semi").select(*key).unique()
    assert during.height == new.height  # each one happens
    for label in rows:
        if "M31" in _methods(label):
            ext = label["dst_ip"] if label["dst_ip"].startswith(("192.", "203.", "198.")) else None
            ext = ext or label["src_ip"]
            seen = canon.filter(
                pl.col("ts_start") < _t(label["start"]),
                (pl.col("src_ip") == ext) | (pl.col("dst_ip") == ext),
            )
            assert seen.height == 0


def test_exfiltration_uploads_far_more_than_usual(sim, canon):
    rows = _labels(sim, kind="exfiltration")
    assert rows
    for label in (r for r in rows if r["view"] in ("comm", "ext_tcp")):
        data, start, end = _rows(canon, label)
        before, window = _split(data, start, end)
        assert window["bytes_out"].sum() > 100e6
        assert window["bytes_out"].sum() > 20 * window["bytes_in"].sum()  # an upload
        if before.height:
            assert window["bytes_out"].median() >= 10 * before["bytes_out"].median()


def test_behavior_shifts_and_bursts_change_the_vector(sim, canon):
    rows = _labels(sim, kind="behavior_shift") + _labels(sim, kind="icmp_burst")
    rows += _labels(sim, kind="port_shift")
    strong = [r for r in rows if r["view"] != "comm" and r["methods"]]
    assert strong
    for label in strong:
        data, start, end = _rows(canon, label)
        before, window = _split(data, start, end)
        ratios = [
            (window[m].median() or 0) / max(before[m].median() or 0, 1)
            for m in ("pkts", "bytes_out", "bytes_in", "flows", "peers", "ports")
        ]
        assert max(ratios) >= 5, label


def test_dns_size_shift_is_not_a_volume_anomaly(sim, canon):
    rows = [r for r in _labels(sim, kind="dns_tunnel", view="comm") if r["variant"] == "download"]
    for label in rows:
        data, start, end = _rows(canon, label)
        before, window = _split(data, start, end)
        assert window["bytes_in"].median() >= 10 * before["bytes_in"].median()
        assert window["pkts_in"].median() < 10 * before["pkts_in"].median()
        assert not _methods(label) & VOLUME


@pytest.mark.parametrize("view", [v.name for v in VIEWS])
def test_view_log_is_the_behavioral_log(sim, canon, view):
    """The labeler's one-view aggregation equals flowhawk's behavioral log."""
    first = canon["ts_start"].min()
    spans = [(first, first + timedelta(hours=1))]
    spans += [(i.start, i.end) for i in list(sim.anomalies.values())[::3]]
    some = pl.concat(
        [canon.filter(pl.col("ts_start").is_between(a, b, closed="left")) for a, b in spans]
    )
    want = aggregate(some)[view]
    got = view_log(some, BY_NAME[view]).sort("bucket", *BY_NAME[view].key)
    assert got.equals(want)
    assert want.height > 0 or view.startswith("ext_icmp")
    assert np.isfinite(want["duration"].sum())
