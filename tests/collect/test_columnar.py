"""The collector's numeric path gives the flows the table path gives, to the value.

Decoders hand the collector numeric columns (``DecodeResult.records``), normalized
without text (:mod:`flowhawk.normalize.stitchcols`, :mod:`flowhawk.normalize.columnar`);
``DecodeResult.flows`` is the same records as a raw flow table, which the normalizer's
table path (polars) stitches, orients and enriches. Both must give the same canonical
flows, lineage and counts: on every file of the vendor corpus (IPv6, MACs, VLANs, ICMP,
firewall states, biflows), on a real capture exported as NetFlow v5 / v9 and IPFIX, and
on random records made to collide (equal times, shared addresses, ICMP replies,
addresses whose text order differs from their numeric order).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from flowhawk import config
from flowhawk.collect.decode.base import ExporterState
from flowhawk.collect.decode.dispatch import ExportDecoder
from flowhawk.collect.replay import ExportSettings, ExportStream
from flowhawk.diagnostics import Diagnostics
from flowhawk.normalize import Normalizer
from flowhawk.normalize.rawcolumns import NO_MAC, RawColumns
from flowhawk.schema import CANONICAL_ADDRESSES
from tests.collect.test_collector import canonical_flows
from tests.collect.test_vendor_corpus import ALL, CONTEXT, T0, datagrams

SITES = {
    "network": {"internal": ["10.0.0.0/8", "fd00::/8"]},
    "sites": [
        {"name": "hq", "networks": ["10.1.0.0/16"]},
        {"name": "lab", "networks": ["10.2.0.0/16", "fd00::/16"], "exporters": ["192.0.2.9"]},
    ],
}


def both_paths(
    results: list, cfg: config.Config | None = None, release_every: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(flows, lineage) of the table path, then of the numeric path, rows sorted."""
    out = []
    for numeric in (False, True):
        norm = Normalizer(cfg or config.load(None), Diagnostics())
        tables = []
        for i, res in enumerate(results):
            if numeric:
                tables += [norm.process(r) for r in res.records]
            else:
                tables.append(norm.process(res.flows))
            if release_every and i % release_every == release_every - 1:
                tables.append(norm.release())
        lineage = []
        for name in norm.held_inputs():
            flows, lin = norm.end_input(name)
            tables.append(flows)
            lineage.append(lin)
        df = pl.from_arrow(pa.concat_tables(tables))
        lin = pl.concat(lineage) if lineage else pl.DataFrame()
        out += [df.sort(df.columns), lin.sort(lin.columns) if lin.width else lin]
    return out[0], out[1], out[2], out[3]


def assert_same(results: list, **kw: object) -> int:
    flows_t, lineage_t, flows_n, lineage_n = both_paths(results, **kw)  # type: ignore[arg-type]
    assert flows_n.schema == flows_t.schema
    assert flows_n.equals(flows_t)
    assert lineage_n.equals(lineage_t)
    return flows_t.height


def test_vendor_corpus_both_paths_agree() -> None:
    results, flows = [], 0
    for name in ALL:
        decoder, state = ExportDecoder(), ExporterState("192.0.2.1")
        for part in [*CONTEXT.get(name, []), name]:
            dgs = datagrams(part)
            results.append(decoder.decode(dgs, [T0 + i for i in range(len(dgs))], state))
    cfg = config.from_dict(SITES)
    for res in results:
        if res.records:
            assert res.flows.num_rows == res.num_flows
            flows += assert_same([res], cfg=cfg)
        assert res.flows.schema.metadata == {CANONICAL_ADDRESSES: b"1"}
    assert flows > 100


@pytest.mark.parametrize(
    "protocol,biflow", [("v5", False), ("v9", False), ("ipfix", False), ("ipfix", True)]
)
def test_exported_capture_both_paths_agree(shared_data, protocol, biflow) -> None:
    flows = canonical_flows(shared_data)
    dgs = (
        ExportStream(ExportSettings(protocol=protocol, biflow=biflow))
        .encode(flows.to_arrow())
        .datagrams
    )
    decoder, state = ExportDecoder(), ExporterState("192.0.2.9")
    results = [
        decoder.decode(dgs[i : i + 64], [T0] * len(dgs[i : i + 64]), state)
        for i in range(0, len(dgs), 64)
    ]
    n = assert_same(results, cfg=config.from_dict(SITES), release_every=3)
    assert n >= flows.height * 0.9


def random_records(n: int, seed: int) -> RawColumns:
    """Records crowded on few keys and times: ties everywhere stitching can meet one."""
    rng = np.random.default_rng(seed)
    v4 = np.array([0x0A000002, 0x0A00000A, 0x0A010001, 0x0A020014, 0x08080808, 0x01020304])
    v6 = [(0xFD00 << 48, 1), (0xFD00 << 48, 0x10), (0x20010DB8 << 32, 0xFFFF_0000_0001)]
    pick = rng.integers(0, len(v4) + len(v6), (2, n))
    his, los = np.zeros((2, n), np.uint64), np.zeros((2, n), np.uint64)
    for side in (0, 1):
        for k in range(len(v4) + len(v6)):
            rows = pick[side] == k
            if k < len(v4):
                los[side, rows] = np.uint64(0xFFFF_0000_0000) | np.uint64(v4[k])
            else:
                his[side, rows], los[side, rows] = v6[k - len(v4)]
    proto = rng.choice(np.array([6, 17, 1, 58, 47], np.int16), n)
    ports = rng.choice(np.array([53, 80, 123, 443, 3389, 40000, 50000, 65535]), (2, n))
    icmp = (proto == 1) | (proto == 58)
    types = rng.choice(np.array([0, 8, 3, 128, 129, 13, 14]), n) * 256 + rng.integers(0, 2, n)
    ports[1] = np.where(icmp, types, ports[1])
    ports[0] = np.where(icmp, 0, ports[0])
    start = 1_700_000_000_000_000 + rng.integers(0, 5, n) * 1_000_000
    flags = rng.choice(np.array([-1, 0x02, 0x12, 0x10, 0x11, 0x04]), n)
    return RawColumns(
        "netflow9://192.0.2.1",
        "192.0.2.1",
        {
            "ts_start": start,
            "ts_end": start + rng.integers(-1, 90, n) * 1_000_000,  # some end before start
            "src_hi": his[0],
            "src_lo": los[0],
            "dst_hi": his[1],
            "dst_lo": los[1],
            "src_port": ports[0].astype(np.int32),
            "dst_port": ports[1].astype(np.int32),
            "proto": proto,
            "src_pkts": rng.integers(0, 5, n),
            "src_bytes": rng.integers(0, 5000, n),
            "dst_pkts": np.zeros(n, np.int64),
            "dst_bytes": np.zeros(n, np.int64),
            "src_tcp_flags": np.where(proto == 6, flags, -1).astype(np.int16),
            "dst_tcp_flags": np.full(n, -1, np.int16),
            "vlan": rng.choice(np.array([-1, -1, 10, 20], np.int32), n),
            "src_mac": rng.choice(np.array([NO_MAC, 0x0000_5E00_5301, 0x0200_0000_0001]), n),
            "dst_mac": np.full(n, NO_MAC),
            "state": rng.choice(np.array([-1, -1, 1, 2], np.int8), n),
            "orient": np.zeros(n, bool),
            "uni": rng.random(n) < 0.9,
            "sampling": rng.choice(np.array([1, 1, 100], np.int32), n),
            "fid_domain": np.zeros(n, np.uint64),
            "fid_seq": rng.integers(0, 50, n).astype(np.uint64),
            "fid_off": np.arange(n, dtype=np.uint64),
        },
    )


class _Result:
    """What the normalizer is handed by the collector, both ways."""

    def __init__(self, rc: RawColumns):
        self.records = [rc]
        self.flows = rc.to_table().replace_schema_metadata({CANONICAL_ADDRESSES: b"1"})


@pytest.mark.parametrize("seed", range(4))
def test_colliding_random_records_both_paths_agree(seed: int) -> None:
    rc = random_records(4000, seed)
    parts = [_Result(rc.take(np.arange(i, min(i + 1000, len(rc))))) for i in range(0, 4000, 1000)]
    assert assert_same(parts, cfg=config.from_dict(SITES), release_every=2) > 500


def test_counts_agree() -> None:
    rc = random_records(3000, 7)
    stats = []
    for numeric in (False, True):
        diag = Diagnostics()
        norm = Normalizer(config.load(None), diag)
        norm.process(rc if numeric else _Result(rc).flows)
        assert norm.held() == int(rc.cols["uni"].sum())
        norm.end_input(rc.input)
        stats.append((diag.inputs, [str(i) for i in diag.issues]))
    assert stats[0] == stats[1]
    assert stats[1][0][rc.input].ignored  # the records that end before they start
