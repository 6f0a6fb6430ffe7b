"""Following Zeek dns.logs while collecting: the follower on real files, and a collector
on 127.0.0.1 that turns a DGA burst appended to its dns.log into an N4 event.

The follower tests write files the way Zeek does (header, then lines appended; rotation
renames the log and opens a new one) and check every transaction arrives exactly once.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flowhawk import config
from flowhawk.collect.collector import Collector
from flowhawk.collect.dnsfollow import DnsFollower, state_path
from flowhawk.demo import DEMO_DAY, demo_data, dnslog, scenario
from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import store
from flowhawk.dns.passive import PassiveDns
from flowhawk.errors import StateError
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(120)

FIELDS = [
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "trans_id",
    "query", "qtype", "qtype_name", "rcode", "rcode_name", "answers", "TTLs",
]  # fmt: skip
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()


def header(opened: str = "2026-03-02-10-00-00") -> str:
    return (
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
        f"#path\tdns\n#open\t{opened}\n#fields\t" + "\t".join(FIELDS) + "\n"
    )


def row(i: int, query: str | None = None, answers: tuple[str, ...] = ("192.0.2.7",)) -> str:
    """One TSV line: transaction ``i`` of client 10.0.0.<i % 200 + 1>."""
    values = [
        f"{T0 + i:.6f}", f"C{i:06d}", f"10.0.0.{i % 200 + 1}", str(40000 + i), "10.0.0.53",
        "53", "udp", str(i % 65536), query or f"host{i}.example.com", "1", "A", "0",
        "NOERROR", ",".join(answers) or "-", ",".join("300" for _ in answers) or "-",
    ]  # fmt: skip
    return "\t".join(values) + "\n"


def json_row(i: int, iso: bool = False) -> str:
    ts: object = datetime.fromtimestamp(T0 + i, UTC).isoformat() if iso else T0 + i
    doc = {
        "ts": ts,
        "uid": f"C{i:06d}",
        "id.orig_h": "10.0.1.5",
        "id.orig_p": 50000 + i,
        "id.resp_h": "10.0.0.53",
        "id.resp_p": 53,
        "proto": "udp",
        "query": f"Api{i}.Example.NET.",
        "qtype": 28,
        "qtype_name": "AAAA",
        "rcode": 0,
        "rcode_name": "NOERROR",
        "answers": [f"2001:db8::{i}"],
        "TTLs": [60.0],
        "RD": True,
    }
    return json.dumps(doc) + "\n"


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def queries(table) -> list[str]:  # type: ignore[no-untyped-def]
    return [] if table is None else table.column("query").to_pylist()


# -- the follower ------------------------------------------------------------------------


def test_tsv_lines_appended_between_polls_arrive_once(tmp_path: Path) -> None:
    log = tmp_path / "dns.log"
    log.write_text(header() + row(0) + row(1))
    follower = DnsFollower([log])
    first = follower.poll()
    assert queries(first) == ["host0.example.com", "host1.example.com"]
    r = first.slice(1, 1).to_pylist()[0]
    assert r["ts"] == datetime.fromtimestamp(T0 + 1, UTC)
    assert (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["proto"]) == (
        "10.0.0.2", 40001, "10.0.0.53", 53, 17,
    )  # fmt: skip
    assert (r["answers"], r["ttls"], r["answer_types"]) == (["192.0.2.7"], [300.0], ["A"])
    assert (r["rcode_name"], r["uid"], r["input"]) == ("NOERROR", "C000001", str(log))
    assert follower.poll() is None
    append(log, row(2) + row(3, answers=()) + row(4))
    second = follower.poll()
    assert queries(second) == [f"host{i}.example.com" for i in (2, 3, 4)]
    assert second.column("answers").to_pylist()[1] is None  # unset: no response
    assert follower.poll() is None
    assert follower.totals.read == 5 and follower.totals.bad == 0


def test_a_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "dns.log"
    line = row(1)
    log.write_text(header() + row(0) + line[:25])
    follower = DnsFollower([log])
    assert queries(follower.poll()) == ["host0.example.com"]
    append(log, line[25:-1])  # all but the newline
    assert follower.poll() is None
    append(log, "\n")
    done = follower.poll()
    assert queries(done) == ["host1.example.com"]
    assert done.column("uid").to_pylist() == ["C000001"]
    assert follower.totals.bad == 0


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "dns.log"
    log.write_text(header() + row(0))
    follower = DnsFollower([log])
    assert queries(follower.poll()) == ["host0.example.com"]
    append(log, row(1))  # written just before the rotation, not read yet
    os.rename(log, tmp_path / "dns.2026-03-02-10-00-00.log")
    with caplog.at_level(logging.WARNING, logger="flowhawk.collect"):
        assert queries(follower.poll()) == ["host1.example.com"]  # the old file's rest
        assert follower.poll() is None  # the new file is not there yet: waited for
        assert follower.poll() is None
    waiting = [r for r in caplog.records if "waiting for" in r.getMessage()]
    assert len(waiting) == 1  # logged once
    log.write_text(header("2026-03-02-11-00-00") + row(2) + row(3)[:-1])  # last line cut
    assert queries(follower.poll()) == ["host2.example.com"]
    append(log, "\n")
    os.rename(log, tmp_path / "dns.2026-03-02-11-00-00.log")
    log.write_text(header("2026-03-02-12-00-00") + row(4))  # replaced between two polls
    assert queries(follower.poll()) == ["host3.example.com", "host4.example.com"]
    assert follower.totals.rotations == 2 and follower.totals.read == 5


def test_truncation_and_rewrite_are_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "dns.log"
    log.write_text(header() + row(0) + row(1) + row(2))
    follower = DnsFollower([log])
    assert len(queries(follower.poll())) == 3
    with open(log, "r+") as fh:  # copytruncate: same file, emptied, written again
        fh.truncate(0)
    append(log, header("2026-03-02-11-00-00") + row(10))
    assert queries(follower.poll()) == ["host10.example.com"]
    assert follower.totals.truncations == 1
    # Emptied and refilled past the old offset before the next poll: the first bytes
    # differ (another '#open' time), so it is still read from the start.
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, header("2026-03-02-12-00-00") + "".join(row(i) for i in range(20, 25)))
    assert queries(follower.poll()) == [f"host{i}.example.com" for i in range(20, 25)]
    assert follower.totals.truncations == 2


def test_restart_continues_from_the_saved_state(tmp_path: Path) -> None:
    log, data = tmp_path / "dns.log", tmp_path / "data"
    log.write_text(header() + row(0) + row(1))
    first = DnsFollower.open([log], data)
    assert len(queries(first.poll())) == 2
    append(log, row(2)[:30])
    assert first.poll() is None
    first.save(data)
    first.close()
    saved = json.loads(state_path(data).read_text())["files"][str(log)]
    assert saved["offset"] == len((header() + row(0) + row(1)).encode())
    assert saved["line"] == 10 and saved["tsv"]["fields"] == FIELDS
    append(log, row(2)[30:] + row(3))
    # A new follower (a restarted collector): the header is not read again, the lines
    # after the saved offset are, once.
    second = DnsFollower.open([log], data)
    table = second.poll()
    assert queries(table) == ["host2.example.com", "host3.example.com"]
    assert table.column("src_port").to_pylist() == [40002, 40003]
    second.save(data)
    second.close()
    # Rotated while stopped: the new file is read from its start.
    os.rename(log, tmp_path / "dns.old.log")
    log.write_text(header("2026-03-02-11-00-00") + row(7))
    third = DnsFollower.open([log], data)
    assert queries(third.poll()) == ["host7.example.com"]
    third.close()
    state_path(data).write_text("{not json")
    with pytest.raises(StateError, match=r"dns_follow\.json is unreadable"):
        DnsFollower.open([log], data)


def test_json_lines_and_bad_lines_counted(tmp_path: Path) -> None:
    log, iso = tmp_path / "dns.json", tmp_path / "iso.json"
    log.write_text(json_row(0) + json_row(1))
    iso.write_text(json_row(0, iso=True))
    diag = Diagnostics()
    follower = DnsFollower([log, iso], diag)
    table = follower.poll()
    assert queries(table) == ["api0.example.net", "api1.example.net", "api0.example.net"]
    assert table.column("input").to_pylist() == [str(log), str(log), str(iso)]
    assert table.column("ts").to_pylist()[2] == datetime.fromtimestamp(T0, UTC)
    assert table.column("answer_types").to_pylist()[0] == ["AAAA"]
    assert table.column("rd").to_pylist() == [True] * 3
    bad = json_row(3).replace('"id.orig_p": 50003', '"id.orig_p": "many"')
    append(log, json_row(2) + "{broken\n" + bad + "\n" + json_row(4))
    append(iso, json_row(1, iso=True)[:40])
    assert queries(follower.poll()) == ["api2.example.net", "api4.example.net"]
    assert follower.totals.bad == 2 and follower.totals.read == 5
    stats = diag.stats(str(log))
    assert stats.skipped == {"bad JSON": 1, "bad value": 1}
    locations = {i.location for i in diag.issues if i.input == str(log)}
    assert locations == {"line 4", "line 5"}


def test_bad_tsv_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    log = tmp_path / "dns.log"
    log.write_text(header() + row(0))
    diag = Diagnostics()
    follower = DnsFollower([log], diag)
    assert len(queries(follower.poll())) == 1
    fields = row(1).split("\t")
    short = "\t".join(fields[:5]) + "\n"
    fields[3] = "port?"
    append(log, short + "\t".join(fields) + row(2) + "\tno-ts\t" + row(3).split("\t", 1)[1])
    assert queries(follower.poll()) == ["host2.example.com"]
    assert follower.totals.bad == 3
    assert diag.stats(str(log)).skipped_total == 3
    assert {i.location for i in diag.issues} == {"line 9", "line 10", "line 12"}


def test_a_missing_file_is_waited_for_and_a_wrong_log_never_raises(tmp_path: Path) -> None:
    log, conn = tmp_path / "later" / "dns.log", tmp_path / "conn.log"
    conn.write_text(header().replace("#path\tdns", "#path\tconn") + row(0))
    follower = DnsFollower([log, conn])
    assert follower.poll() is None
    assert follower.totals.bad == 1  # the conn.log's line
    append(conn, row(1))
    assert follower.poll() is None
    assert follower.totals.bad == 2
    log.parent.mkdir()
    log.write_text(header() + row(5))
    assert queries(follower.poll()) == ["host5.example.com"]
    follower.close()


# -- a collector following a dns.log -----------------------------------------------------


def dns_lines(dns: pl.DataFrame, path: Path) -> tuple[str, str]:
    """(header, data lines) of ``dns`` written as the demo's Zeek dns.log."""
    dnslog.write_dns_log(dns, path)
    lines = path.read_text().splitlines(keepends=True)
    return (
        "".join(x for x in lines if x.startswith("#") and not x.startswith("#close")),
        "".join(x for x in lines if not x.startswith("#")),
    )


def test_collector_follows_a_dns_log_into_dga_events(tmp_path: Path) -> None:
    _, dns = demo_data()
    day2 = DEMO_DAY + timedelta(days=1)
    learning = dns.filter(pl.col("ts") < DEMO_DAY + timedelta(hours=3))
    burst = dns.filter(  # the DGA: 40 names that do not exist, then the C2 server's
        (pl.col("id.orig_h") == scenario.PATIENT_ZERO)
        & ((pl.col("rcode") == 3) | pl.col("answers").list.contains(scenario.C2))
    )
    assert burst.height == 41 and learning.height > 100
    head, first_lines = dns_lines(learning, tmp_path / "scratch1.log")
    _, burst_lines = dns_lines(burst, tmp_path / "scratch2.log")

    log, data = tmp_path / "zeek" / "dns.log", tmp_path / "data"
    log.parent.mkdir()
    log.write_text(head + first_lines + "1772000000.0\tbroken line\n")
    cfg = config.from_dict(
        {
            "learning": {"period": "1h"},
            "sites": [{"name": "hq", "networks": ["10.10.0.0/16"]}],
            "collect": {
                "listen": ["127.0.0.1:0"],
                "metrics": "",
                "rollover": 0.2,
                "checkpoint": 0.5,
                "batch_interval": 0.02,
                "dns_logs": [str(log)],
            },
        }
    )
    col = Collector(cfg, data)
    col.start()
    col.run_in_thread()
    try:
        assert col.detection is not None
        wait_for(lambda: col.detection.totals.dns == learning.height, 60)
        assert col.detection.totals.alarms == 0
        append(log, burst_lines[:-7])  # the burst, its last line still being written
        wait_for(lambda: col.detection.totals.dns == learning.height + burst.height - 1, 60)
        append(log, burst_lines[-7:])
        wait_for(lambda: col.detection.totals.dns == learning.height + burst.height, 60)
        wait_for(lambda: col.detection.totals.events_published > 0, 60)
    finally:
        col.stop()
    total = learning.height + burst.height
    assert col.totals.dns_records == total and col.totals.dns_bad == 1
    assert col.totals.flows_archived == 0 and col.detection.totals.errors == 0
    metrics = col.metrics.text().decode()
    assert f'flowhawk_collector_dns_records_total{{outcome="read"}} {total}.0' in metrics
    assert 'flowhawk_collector_dns_records_total{outcome="bad"} 1.0' in metrics

    con = duckdb.connect(str(data / "events.duckdb"), read_only=True)
    try:
        events = con.sql("SELECT src_ip, dst_ip, methods, ts_start FROM events").pl()
        alarms = con.sql("SELECT method, src_ip, observed, reason FROM alarms").pl()
    finally:
        con.close()
    n4 = events.filter(pl.col("methods").list.contains("N4"))
    assert n4.height == 1
    assert n4.row(0, named=True)["src_ip"] == scenario.PATIENT_ZERO
    assert n4.row(0, named=True)["dst_ip"] == scenario.DNS
    assert n4.row(0, named=True)["ts_start"] >= day2 + timedelta(hours=8, minutes=55)
    alarm = alarms.filter(pl.col("method") == "N4").row(0, named=True)
    assert alarm["src_ip"] == scenario.PATIENT_ZERO and "NXDOMAIN" in alarm["observed"]

    archived = store.read_range(store.dns_root(data))
    assert archived.height == total
    assert archived.filter(pl.col("rcode_name") == "NXDOMAIN").height >= 40
    assert sorted(archived.get_column("query").to_list()) == sorted(
        [q.lower() for q in dns.filter(pl.col("ts") < DEMO_DAY + timedelta(hours=3))["query"]]
        + burst.get_column("query").to_list()
    )
    resolved = burst.filter(pl.col("rcode") == 0).get_column("query").item()
    pdns = PassiveDns.in_data_dir(data)
    assert pdns.names_for(pl.Series([scenario.C2])).to_list() == [[resolved]]
    web_ip = next(iter(dnslog.site_names(scenario.WEB)))
    assert pdns.names_for(pl.Series([web_ip])).item().len() == 1
    live = col.detection.context.passive_dns()
    assert live is not None and live.names_for(pl.Series([scenario.C2])).to_list() == [[resolved]]
    saved = json.loads(state_path(data).read_text())["files"][str(log)]
    assert saved["offset"] == log.stat().st_size
