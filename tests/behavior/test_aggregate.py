"""The aggregation against the views' plain definition, on random and real flows.

The reference below states every view as a polars GROUP BY of the flows on the
view's key values (no codes, no roll-ups); the aggregation must give the same rows
in the same order. Flow time is summed in whole microseconds, so the sum does not
depend on the order of the flows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from flowhawk import config
from flowhawk.behavior.aggregate import aggregate
from flowhawk.behavior.dictionary import Dictionary
from flowhawk.behavior.grouping import Grouping, pack
from flowhawk.behavior.views import (
    CLIENT_PORT,
    COMM,
    DEVICE,
    DEVICE_PROTO,
    PORT,
    PROTOCOLS,
    SERVER_PORT,
    VIEWS,
    bucket_of,
    typed,
)
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer
from flowhawk.schema import EAST_WEST, NORTH_SOUTH
from flowhawk.sources import detect_format, load_source
from flowhawk.sources.base import ReadContext
from tests.flowbuild import canonical


def _sums(out_p: str, in_p: str, out_b: str, in_b: str) -> list[pl.Expr]:
    return [
        pl.col(out_p).sum().alias("pkts_out"),
        pl.col(in_p).sum().alias("pkts_in"),
        pl.col(out_b).sum().alias("bytes_out"),
        pl.col(in_b).sum().alias("bytes_in"),
        pl.len().alias("flows"),
    ]


def reference(flows: pl.DataFrame, bucket_seconds: int) -> dict[str, pl.DataFrame]:
    f = flows.with_columns(
        bucket=bucket_of(pl.col("ts_start"), bucket_seconds),
        _dur=(pl.col("ts_end") - pl.col("ts_start")).dt.total_microseconds(),
    )
    client = _sums("src_pkts", "dst_pkts", "src_bytes", "dst_bytes")
    server = _sums("dst_pkts", "src_pkts", "dst_bytes", "src_bytes")
    dur = (pl.col("_dur").sum() / 1e6).alias("duration")  # summed exactly, in microseconds

    def n(c: str, name: str) -> pl.Expr:
        return pl.col(c).n_unique().alias(name)

    out = {
        "comm": (COMM, client, [pl.lit(1).alias("peers"), n("src_port", "ports")]),
        "port": (PORT, client, [n("src_ip", "peers"), n("dst_ip", "ports")]),
        "client_port": (CLIENT_PORT, client, [n("dst_ip", "peers"), n("dst_port", "ports")]),
        "server_port": (SERVER_PORT, server, [n("src_ip", "peers"), n("src_port", "ports")]),
    }
    views = {
        name: f.group_by("bucket", *view.key).agg(*sums, *distinct, dur)
        for name, (view, sums, distinct) in out.items()
    }

    def end(me: str, other: str) -> pl.DataFrame:
        return f.filter(pl.col(f"{me}_internal")).select(
            "bucket", "site", "proto", "direction", "_dur", "dst_port",
            ip=pl.col(f"{me}_ip"), peer=pl.col(f"{other}_ip"),
            p_out=pl.col(f"{me}_pkts"), p_in=pl.col(f"{other}_pkts"),
            b_out=pl.col(f"{me}_bytes"), b_in=pl.col(f"{other}_bytes"),
        )  # fmt: skip

    ends = pl.concat([end("src", "dst"), end("dst", "src")])
    dev = [*_sums("p_out", "p_in", "b_out", "b_in"), n("peer", "peers"), n("dst_port", "ports")]
    dev.append(dur)
    views["device"] = ends.group_by("bucket", *DEVICE.key).agg(*dev)
    for (scope, proto), view in DEVICE_PROTO.items():
        rule = pl.col("proto").is_in(list(PROTOCOLS[proto])) & (
            pl.col("direction") == (NORTH_SOUTH if scope == "ext" else EAST_WEST)
        )
        views[view.name] = ends.filter(rule).group_by("bucket", *view.key).agg(*dev)
    return {v.name: typed(views[v.name], v).sort("bucket", *v.key, nulls_last=False) for v in VIEWS}


def same(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    assert set(got) == set(want)
    for name in want:
        g, w = got[name], want[name]
        assert g.schema == w.schema, name
        assert g.equals(w), name


def random_flows(n: int, seed: int) -> pl.DataFrame:
    """Flows over few addresses (v4 and v6, internal and not), ports and protocols,
    so that every view has groups of many rows and of one."""
    rng = np.random.default_rng(seed)
    hosts = [f"10.0.{i // 256}.{i % 256}" for i in range(40)]
    hosts += [f"203.0.113.{i}" for i in range(30)] + [f"fd00::{i:x}" for i in range(10)]
    hosts += [f"2001:db8::{i:x}" for i in range(10)]
    services = [(443, 6), (53, 17), (22, 6), (8 * 256, 1), (128 * 256, 58), (0, 47), (123, 17)]
    pick = rng.integers(0, len(services), n)
    rows = [
        {
            "src_ip": hosts[rng.integers(0, len(hosts))],
            "dst_ip": hosts[rng.integers(0, len(hosts))],
            "dst_port": services[p][0],
            "proto": services[p][1],
            "src_port": int(rng.integers(1024, 1040)) if services[p][1] in (6, 17) else 0,
            "t": float(rng.uniform(0, 600)),
            "dur": float(rng.exponential(3.0)),
            "src_pkts": int(rng.integers(1, 50)),
            "src_bytes": int(rng.integers(40, 1 << 20)),
            "dst_pkts": int(rng.integers(0, 50)),
            "dst_bytes": int(rng.integers(0, 1 << 20)),
        }
        for p in pick
    ]
    return canonical(rows)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("bucket", [60, 300])
def test_random_flows_match_the_definition(seed, bucket):
    flows = random_flows(3000, seed)
    same(aggregate(flows, bucket), reference(flows, bucket))


def test_flows_without_internal_ends_have_no_device_rows():
    flows = random_flows(300, 6).filter(pl.col("direction") == "external")
    assert flows.height
    log = aggregate(flows, 60)
    same(log, reference(flows, 60))
    assert log["comm"].height
    assert all(log[v.name].is_empty() for v in (DEVICE, *DEVICE_PROTO.values()))


def test_row_order_of_the_flows_does_not_matter():
    flows = random_flows(2000, 3)
    shuffled = flows.sample(fraction=1.0, shuffle=True, seed=4)
    same(aggregate(shuffled, 60), aggregate(flows, 60))


def test_a_communication_whose_sides_change_internal_flags_is_still_one_row():
    """Internal flags come from the addresses; should two flows of one communication
    disagree (networks reconfigured between them), the communication is still one
    row, and each device view counts each flow by its own flags."""
    flows = random_flows(500, 5)
    one = flows.filter(pl.col("src_internal") & ~pl.col("dst_internal")).head(1)
    flipped = one.with_columns(dst_internal=pl.lit(True), direction=pl.lit(EAST_WEST))
    mixed = pl.concat([flows, flipped])
    same(aggregate(mixed, 60), reference(mixed, 60))


def test_real_flows_match_the_definition(shared_data: Path):
    """Zeek conn.logs of real networks (Stratosphere scenarios 002 and 008), normalized."""
    folder = shared_data / "labeled/stratosphere_scenarios"
    paths = [
        folder / "002-zeek-scenario-port-scanning/conn.log",
        folder / "008-zeek-mixed/data/conn.log.labeled",
    ]
    diag = Diagnostics()
    cfg = config.load(None)
    raw = pa.concat_tables(
        pa.concat_tables(source.read(p, ReadContext(diag)))
        for p, source in ((p, load_source(detect_format(p))()) for p in paths)
    )
    flows = pl.from_arrow(Normalizer(cfg, diag).process(raw))
    assert isinstance(flows, pl.DataFrame) and flows.height > 1000
    same(aggregate(flows, 60), reference(flows, 60))


def test_pack_orders_like_the_columns_and_compacts_wide_keys():
    rng = np.random.default_rng(7)
    cols = [rng.integers(0, m, 5000) for m in (3, 1 << 40, 1 << 30, 7)]
    keys = pack(cols, [3, 1 << 40, 1 << 30, 7])  # 2**73 > 2**63: compacted on the way
    order = np.lexsort(cols[::-1])
    assert (np.diff(keys[order].astype(np.float64)) >= 0).all()
    g = Grouping(keys)
    want = pl.DataFrame({f"c{i}": c for i, c in enumerate(cols)}).unique().height
    assert g.n == want


def test_grouping_counts_distinct_values_per_group():
    rng = np.random.default_rng(8)
    keys = rng.integers(0, 300, 20_000).astype(np.uint64) * np.uint64(1 << 40)
    x = rng.integers(0, 50, 20_000)
    g = Grouping(keys)
    want = (
        pl.DataFrame({"k": keys, "x": x})
        .group_by("k")
        .agg(pl.col("x").n_unique(), pl.len())
        .sort("k")
    )
    assert (g.distinct(x) == want["x"].to_numpy()).all()
    assert (g.sizes() == want["len"].to_numpy()).all()
    assert (np.sort(keys)[np.cumsum(g.sizes()) - 1] == want["k"].to_numpy()).all()


def test_dictionary_codes_follow_the_values_order_with_nulls_first():
    a = pl.Series(["b", None, "a", "c", "a"])
    b = pl.Series(["z", "a", None])
    d = Dictionary([a, b])
    assert d.values.to_list() == [None, "a", "b", "c", "z"]
    assert [c.tolist() for c in d.codes] == [[2, 0, 1, 3, 1], [4, 1, 0]]
    wide = Dictionary([pl.Series([5, None, -(1 << 60), 5])])  # no lookup table: ranked
    assert wide.values.to_list() == [None, -(1 << 60), 5]
    assert wide.codes[0].tolist() == [2, 0, 1, 2]
    small = Dictionary([pl.Series([7, 3, 7], dtype=pl.Int16)])
    assert small.values.dtype == pl.Int16 and small.values.to_list() == [3, 7]


def test_a_hash_collision_falls_back_to_exact_codes(monkeypatch):
    """Strings are told apart by a 64-bit hash checked with a second one; when the
    check disagrees (two values share the first hash), the codes come from the
    values themselves."""
    from flowhawk.behavior import dictionary

    *_, ok = dictionary._first_seen(np.array([7, 7, 9], np.uint64), np.array([1, 2, 3], np.uint64))
    assert not ok
    real = dictionary._first_seen

    def colliding(keys, check):  # type: ignore[no-untyped-def]
        gid, first, _ = real(keys, check)
        return gid, first, False

    monkeypatch.setattr(dictionary, "_first_seen", colliding)
    d = Dictionary([pl.Series(["b", "a", "b"]), pl.Series(["c", "a"])])
    assert d.values.to_list() == ["a", "b", "c"]
    assert [c.tolist() for c in d.codes] == [[1, 0, 1], [2, 0]]
