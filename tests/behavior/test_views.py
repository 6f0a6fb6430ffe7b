"""The behavioral log's views: keys, perspective and measures of every view, by hand.

A small set of flows over two one-minute buckets, with internal devices A, B, C
(10.0.0.1-3), two internal IPv6 hosts and two external hosts X and Y, is aggregated
and every row of every view is compared with the answer worked out by hand.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from flowhawk.behavior.aggregate import aggregate
from flowhawk.behavior.views import (
    BY_NAME,
    COMM,
    DEVICE_PROTO,
    MEASURE_TYPES,
    MEASURES,
    UTC_US,
    VIEWS,
    empty,
)
from tests.flowbuild import T0, at, canonical

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
V1, V2 = "fd00::1", "fd00::2"
X, Y = "203.0.113.7", "198.51.100.9"
ECHO, ECHO6 = 8 * 256, 128 * 256  # ICMP type 8 / ICMPv6 type 128, as dst_port


def _flow(
    src: str,
    dst: str,
    port: int,
    proto: int,
    t: float,
    sp: int,
    sb: int,
    dp: int,
    db: int,
    dur: float,
    src_port: int,
) -> dict:
    return {
        "src_ip": src,
        "dst_ip": dst,
        "dst_port": port,
        "proto": proto,
        "t": t,
        "src_pkts": sp,
        "src_bytes": sb,
        "dst_pkts": dp,
        "dst_bytes": db,
        "dur": dur,
        "src_port": src_port,
    }


FLOWS = [
    # bucket 0 (00:00:00 - 00:01:00)
    _flow(A, X, 443, 6, 1, 10, 1000, 20, 5000, 2.0, 50000),  # f0 north-south
    _flow(A, X, 443, 6, 5, 5, 500, 6, 600, 3.0, 50001),  # f1 same communication
    _flow(A, Y, 443, 6, 10, 1, 100, 2, 200, 1.0, 50002),  # f2
    _flow(B, A, 22, 6, 20, 7, 700, 8, 800, 4.0, 50003),  # f3 east-west
    _flow(A, Y, 53, 17, 30, 1, 60, 1, 120, 0.5, 50004),  # f4 north-south UDP
    _flow(C, B, ECHO, 1, 40, 2, 168, 2, 168, 1.0, 0),  # f5 east-west ICMP
    _flow(X, B, 80, 6, 50, 3, 300, 4, 4000, 1.0, 50005),  # f6 inbound north-south
    _flow(X, Y, 443, 6, 59.999999, 1, 1, 1, 1, 1.0, 50006),  # f7 external: no device
    # bucket 1 (00:01:00 - 00:02:00)
    _flow(A, X, 443, 6, 60, 2, 200, 2, 200, 1.0, 50007),  # f8 first instant of bucket 1
    _flow(A, X, 443, 6, 119, 4, 400, 4, 400, 2.0, 50007),  # f9 same client port
    _flow(V1, V2, ECHO6, 58, 70, 1, 64, 1, 64, 1.0, 0),  # f10 east-west ICMPv6
    _flow(A, X, ECHO, 1, 90, 1, 84, 1, 84, 0.25, 0),  # f11 north-south ICMP
]

B0, B1 = T0, T0 + timedelta(minutes=1)
D = "default"

# (bucket, *key, pkts_out, pkts_in, bytes_out, bytes_in, flows, peers, ports, duration)
EXPECTED: dict[str, list[tuple]] = {
    "comm": [
        (B0, D, A, X, 443, 6, 15, 26, 1500, 5600, 2, 1, 2, 5.0),
        (B0, D, A, Y, 53, 17, 1, 1, 60, 120, 1, 1, 1, 0.5),
        (B0, D, A, Y, 443, 6, 1, 2, 100, 200, 1, 1, 1, 1.0),
        (B0, D, B, A, 22, 6, 7, 8, 700, 800, 1, 1, 1, 4.0),
        (B0, D, C, B, ECHO, 1, 2, 2, 168, 168, 1, 1, 1, 1.0),
        (B0, D, X, B, 80, 6, 3, 4, 300, 4000, 1, 1, 1, 1.0),
        (B0, D, X, Y, 443, 6, 1, 1, 1, 1, 1, 1, 1, 1.0),
        (B1, D, A, X, 443, 6, 6, 6, 600, 600, 2, 1, 1, 3.0),
        (B1, D, A, X, ECHO, 1, 1, 1, 84, 84, 1, 1, 1, 0.25),
        (B1, D, V1, V2, ECHO6, 58, 1, 1, 64, 64, 1, 1, 1, 1.0),
    ],
    # peers: distinct clients; ports: distinct servers
    "port": [
        (B0, D, 22, 6, 7, 8, 700, 800, 1, 1, 1, 4.0),
        (B0, D, 53, 17, 1, 1, 60, 120, 1, 1, 1, 0.5),
        (B0, D, 80, 6, 3, 4, 300, 4000, 1, 1, 1, 1.0),
        (B0, D, 443, 6, 17, 29, 1601, 5801, 4, 2, 2, 7.0),
        (B0, D, ECHO, 1, 2, 2, 168, 168, 1, 1, 1, 1.0),
        (B1, D, 443, 6, 6, 6, 600, 600, 2, 1, 1, 3.0),
        (B1, D, ECHO, 1, 1, 1, 84, 84, 1, 1, 1, 0.25),
        (B1, D, ECHO6, 58, 1, 1, 64, 64, 1, 1, 1, 1.0),
    ],
    # peers: distinct servers; ports: distinct server ports (always 1)
    "client_port": [
        (B0, D, A, 53, 17, 1, 1, 60, 120, 1, 1, 1, 0.5),
        (B0, D, A, 443, 6, 16, 28, 1600, 5800, 3, 2, 1, 6.0),
        (B0, D, B, 22, 6, 7, 8, 700, 800, 1, 1, 1, 4.0),
        (B0, D, C, ECHO, 1, 2, 2, 168, 168, 1, 1, 1, 1.0),
        (B0, D, X, 80, 6, 3, 4, 300, 4000, 1, 1, 1, 1.0),
        (B0, D, X, 443, 6, 1, 1, 1, 1, 1, 1, 1, 1.0),
        (B1, D, A, 443, 6, 6, 6, 600, 600, 2, 1, 1, 3.0),
        (B1, D, A, ECHO, 1, 1, 1, 84, 84, 1, 1, 1, 0.25),
        (B1, D, V1, ECHO6, 58, 1, 1, 64, 64, 1, 1, 1, 1.0),
    ],
    # the server's point of view: sent = what the server sent; peers: distinct clients;
    # ports: distinct client ports
    "server_port": [
        (B0, D, A, 22, 6, 8, 7, 800, 700, 1, 1, 1, 4.0),
        (B0, D, B, 80, 6, 4, 3, 4000, 300, 1, 1, 1, 1.0),
        (B0, D, B, ECHO, 1, 2, 2, 168, 168, 1, 1, 1, 1.0),
        (B0, D, X, 443, 6, 26, 15, 5600, 1500, 2, 1, 2, 5.0),
        (B0, D, Y, 53, 17, 1, 1, 120, 60, 1, 1, 1, 0.5),
        (B0, D, Y, 443, 6, 3, 2, 201, 101, 2, 2, 2, 2.0),
        (B1, D, X, 443, 6, 6, 6, 600, 600, 2, 1, 1, 3.0),
        (B1, D, X, ECHO, 1, 1, 1, 84, 84, 1, 1, 1, 0.25),
        (B1, D, V2, ECHO6, 58, 1, 1, 64, 64, 1, 1, 1, 1.0),
    ],
    # each internal endpoint as itself, on whichever side it is; peers: distinct other
    # ends; ports: distinct server ports of its flows
    "device": [
        (B0, D, A, 25, 36, 2460, 6620, 5, 3, 3, 10.5),
        (B0, D, B, 13, 13, 4868, 1268, 3, 3, 3, 6.0),
        (B0, D, C, 2, 2, 168, 168, 1, 1, 1, 1.0),
        (B1, D, A, 7, 7, 684, 684, 3, 1, 2, 3.25),
        (B1, D, V1, 1, 1, 64, 64, 1, 1, 1, 1.0),
        (B1, D, V2, 1, 1, 64, 64, 1, 1, 1, 1.0),
    ],
    "ext_tcp": [
        (B0, D, A, 16, 28, 1600, 5800, 3, 2, 1, 6.0),
        (B0, D, B, 4, 3, 4000, 300, 1, 1, 1, 1.0),
        (B1, D, A, 6, 6, 600, 600, 2, 1, 1, 3.0),
    ],
    "ext_udp": [(B0, D, A, 1, 1, 60, 120, 1, 1, 1, 0.5)],
    "ext_icmp": [(B1, D, A, 1, 1, 84, 84, 1, 1, 1, 0.25)],
    "int_tcp": [
        (B0, D, A, 8, 7, 800, 700, 1, 1, 1, 4.0),
        (B0, D, B, 7, 8, 700, 800, 1, 1, 1, 4.0),
    ],
    "int_udp": [],
    "int_icmp": [
        (B0, D, B, 2, 2, 168, 168, 1, 1, 1, 1.0),
        (B0, D, C, 2, 2, 168, 168, 1, 1, 1, 1.0),
        (B1, D, V1, 1, 1, 64, 64, 1, 1, 1, 1.0),
        (B1, D, V2, 1, 1, 64, 64, 1, 1, 1, 1.0),
    ],
}


@pytest.fixture(scope="module")
def flows() -> pl.DataFrame:
    return canonical(FLOWS)


@pytest.fixture(scope="module")
def log(flows) -> dict[str, pl.DataFrame]:
    return aggregate(flows, 60)


def _rows(df: pl.DataFrame) -> list[tuple]:
    return sorted(df.rows(), key=repr)


def test_flows_are_what_the_answers_assume(flows):
    """Internal/external sides and directions come from the normalizer's defaults."""
    by_id = {r["flow_id"]: r for r in flows.iter_rows(named=True)}
    assert by_id["3"]["direction"] == "east-west"
    assert by_id["6"]["direction"] == "north-south" and by_id["6"]["dst_ip"] == B
    assert by_id["7"]["direction"] == "external"
    assert by_id["10"]["direction"] == "east-west"
    assert flows.height == len(FLOWS)


def test_every_view_is_produced(log):
    assert set(log) == set(BY_NAME)
    assert [v.name for v in VIEWS] == [
        "comm",
        "port",
        "client_port",
        "server_port",
        "device",
        "ext_tcp",
        "ext_udp",
        "ext_icmp",
        "int_tcp",
        "int_udp",
        "int_icmp",
    ]


@pytest.mark.parametrize("view", sorted(EXPECTED))
def test_rows_of_each_view(log, view):
    got = log[view]
    assert got.columns == ["bucket", *BY_NAME[view].key, *MEASURES]
    assert _rows(got) == _rows(pl.DataFrame(EXPECTED[view], schema=got.schema, orient="row"))


@pytest.mark.parametrize("view", [v.name for v in VIEWS])
def test_column_types_and_order(log, view):
    df = log[view]
    assert df.schema["bucket"] == UTC_US
    for m, t in MEASURE_TYPES.items():
        assert df.schema[m] == t
    assert df.equals(df.sort("bucket", *BY_NAME[view].key)), "rows sorted by bucket then key"


def test_server_port_mirrors_the_communication(log):
    """What clients sent is what servers received, and the other way round."""
    comm, srv = log["comm"], log["server_port"]
    for a, b in (("pkts_out", "pkts_in"), ("bytes_out", "bytes_in"), ("pkts_in", "pkts_out")):
        assert comm.get_column(a).sum() == srv.get_column(b).sum()
    assert comm.get_column("flows").sum() == srv.get_column("flows").sum() == len(FLOWS)


def test_client_views_total_every_flow(log, flows):
    totals = flows.select(
        pl.col("src_pkts").sum(), pl.col("dst_pkts").sum(), pl.col("src_bytes").sum()
    ).row(0)
    for view in ("comm", "port", "client_port"):
        df = log[view]
        got = (
            df.get_column("pkts_out").sum(),
            df.get_column("pkts_in").sum(),
            df.get_column("bytes_out").sum(),
        )
        assert got == totals, view


def test_device_views_split_by_scope_and_protocol(log):
    """The six device-protocol views partition the device view (every flow here is TCP,
    UDP or ICMP), and no external host is ever a device."""
    parts = pl.concat([log[v.name] for v in DEVICE_PROTO.values()])
    keys = ["bucket", "site", "ip"]
    summed = parts.group_by(keys).agg(
        pl.col("pkts_out", "pkts_in", "bytes_out", "bytes_in", "flows", "duration").sum()
    )
    dev = log["device"].select(*keys, "pkts_out", "pkts_in", "bytes_out", "bytes_in", "flows")
    joined = dev.join(summed, on=keys, how="full", coalesce=True, suffix="_parts")
    for m in ("pkts_out", "pkts_in", "bytes_out", "bytes_in", "flows"):
        assert joined.get_column(m).equals(joined.get_column(f"{m}_parts"), check_names=False), m
    for v in ("device", *(v.name for v in DEVICE_PROTO.values())):
        assert not log[v].get_column("ip").is_in([X, Y]).any(), v


def test_ext_views_take_north_south_int_views_east_west(log):
    assert set(log["ext_tcp"].get_column("ip")) == {A, B}  # A as client, B as server
    assert set(log["int_tcp"].get_column("ip")) == {A, B}  # both ends of f3
    assert log["int_udp"].height == 0 and log["ext_icmp"].height == 1
    assert set(log["int_icmp"].get_column("ip")) == {B, C, V1, V2}  # ICMP and ICMPv6


def test_bucket_boundaries(flows):
    """Buckets are epoch-aligned and closed on the left, by flow start."""
    one = aggregate(flows, 60)["comm"]
    first = one.filter((pl.col("src_ip") == X) & (pl.col("dst_ip") == Y))
    assert first.get_column("bucket").to_list() == [B0]  # 59.999999 s: still bucket 0
    ax = one.filter((pl.col("src_ip") == A) & (pl.col("dst_ip") == X) & (pl.col("proto") == 6))
    assert ax.get_column("bucket").to_list() == [B0, B1]  # 60 s: bucket 1
    # a flow lasting past its bucket still counts whole in the bucket of its start
    long = canonical([{"src_ip": A, "dst_ip": X, "dst_port": 443, "t": 50, "dur": 600}])
    row = aggregate(long, 60)["comm"].row(0, named=True)
    assert row["bucket"] == B0 and row["duration"] == 600.0


def test_larger_buckets_merge_and_align_to_the_epoch(flows):
    five = aggregate(flows, 300)
    assert five["comm"].get_column("bucket").unique().to_list() == [B0]
    ax = five["comm"].filter(
        (pl.col("src_ip") == A) & (pl.col("dst_ip") == X) & (pl.col("dst_port") == 443)
    )
    got = ax.select("pkts_out", "pkts_in", "flows", "ports", "duration").row(0)
    assert got == (21, 32, 4, 3, 8.0)  # f0, f1, f8 and f9; client ports 50000, 50001, 50007
    late = canonical([{"src_ip": A, "dst_ip": X, "dst_port": 443, "t": 7 * 60 + 3}])
    assert aggregate(late, 300)["comm"].get_column("bucket").to_list() == [at(300)]
    assert aggregate(late, 3600)["comm"].get_column("bucket").to_list() == [T0]


def test_empty_input_gives_empty_typed_frames(flows):
    log = aggregate(flows.clear(), 60)
    assert set(log) == set(BY_NAME)
    for name, df in log.items():
        assert df.height == 0, name
        assert df.columns == ["bucket", *BY_NAME[name].key, *MEASURES]
        assert df.schema["bucket"] == UTC_US
        assert all(df.schema[m] == t for m, t in MEASURE_TYPES.items())


def test_empty_frame_of_a_view():
    keys = {"site": pl.String, "src_ip": pl.String, "dst_ip": pl.String}
    df = empty(COMM, {**keys, "dst_port": pl.Int32, "proto": pl.Int16})
    assert df.height == 0
    assert df.schema == pl.Schema(
        {
            "bucket": UTC_US,
            "site": pl.String,
            "src_ip": pl.String,
            "dst_ip": pl.String,
            "dst_port": pl.Int32,
            "proto": pl.Int16,
            **MEASURE_TYPES,
        }
    )


# -- simulated traffic ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_log(sim_flows) -> dict[str, pl.DataFrame]:
    return aggregate(sim_flows, 60)


def test_simulated_traffic_totals_are_kept_by_every_view(sim_flows, sim_log):
    n = sim_flows.height
    assert n > 10_000
    sums = sim_flows.select(pl.col("src_pkts", "dst_pkts", "src_bytes", "dst_bytes").sum()).row(0)
    for view in ("comm", "port", "client_port"):
        df = sim_log[view]
        got = df.select(pl.col("pkts_out", "pkts_in", "bytes_out", "bytes_in").sum()).row(0)
        assert got == sums, view
        assert df.get_column("flows").sum() == n, view
    srv = sim_log["server_port"].select(pl.col("pkts_in", "pkts_out", "bytes_in", "bytes_out"))
    assert srv.sum().row(0) == sums
    ends = sim_flows.select(pl.col("src_internal").sum() + pl.col("dst_internal").sum()).item()
    assert sim_log["device"].get_column("flows").sum() == ends


def test_simulated_rows_are_one_per_bucket_and_key(sim_flows, sim_log):
    keyed = sim_flows.with_columns(bucket=pl.col("ts_start").dt.truncate("1m"))
    for view in ("comm", "port", "client_port", "server_port"):
        key = BY_NAME[view].key
        assert sim_log[view].height == keyed.select("bucket", *key).n_unique(), view
        assert sim_log[view].select("bucket", *key).is_unique().all(), view
    for name in ("device", *(v.name for v in DEVICE_PROTO.values())):
        assert sim_log[name].select("bucket", "site", "ip").is_unique().all(), name


def test_simulated_device_views_add_up(sim_log):
    """Every simulated flow is TCP, UDP or ICMP and north-south or east-west."""
    parts = pl.concat([sim_log[v.name] for v in DEVICE_PROTO.values()])
    measures = ["pkts_out", "pkts_in", "bytes_out", "bytes_in", "flows"]
    assert parts.select(pl.col(measures).sum()).equals(
        sim_log["device"].select(pl.col(measures).sum())
    )
    assert sim_log["ext_tcp"].height > 0 and sim_log["int_udp"].height > 0
    assert (sim_log["device"].get_column("peers") <= sim_log["device"].get_column("flows")).all()
