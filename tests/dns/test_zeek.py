"""Zeek dns.log readers on real logs (TSV with and without label columns, JSON lines)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from tests.dns.helpers import read_all

SLIPS = Path("labeled/slips_dataset/dataset_HEAD")
TSV = SLIPS / "test10-mixed-zeek-dir/dns.log"
JSON = SLIPS / "test9-mixed-zeek-dir/dns.log"
LABELED = Path("labeled/stratosphere_scenarios/010-zeek-mixed/data/dns.log.labeled")


def _data_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line and not line.startswith("#"))


def test_tsv_log(shared_data: Path) -> None:
    diag = Diagnostics()
    df = read_all(shared_data / TSV, diag)
    assert df.height == _data_lines(shared_data / TSV) == 93
    assert diag.total_skipped == 0
    row = df.row(0, named=True)
    assert row["ts"].timestamp() == pytest.approx(1601998366.786397)
    assert row["src_ip"] == "2001:718:2:1663:dc58:6d9:ef13:51a5"
    assert (row["dst_ip"], row["dst_port"], row["proto"]) == ("2001:718:2:1611:0:1:0:90", 53, 17)
    assert (row["trans_id"], row["query"], row["qtype"], row["qtype_name"]) == (
        3478, "clients6.google.com", 28, "AAAA",
    )  # fmt: skip
    assert (row["rcode"], row["rcode_name"], row["rd"], row["ra"], row["aa"]) == (
        0, "NOERROR", True, True, False,
    )  # fmt: skip
    assert row["answers"] == ["clients.l.google.com", "2a00:1450:4014:80c::200e"]
    assert row["ttls"] == [15.0, 105.0]
    assert row["answer_types"] == [None, "AAAA"]
    assert row["rtt"] == pytest.approx(0.00697)
    assert row["uid"] == "CYwXsR3yfDq6hooIU2"
    assert row["query_bytes"] is None


def test_labeled_tsv_without_rtt(shared_data: Path) -> None:
    df = read_all(shared_data / LABELED)
    assert df.height == _data_lines(shared_data / LABELED) == 8
    assert df.get_column("rtt").is_null().all()
    answered = df.filter(pl.col("answers").is_not_null())
    assert answered.get_column("answers").to_list() == [["147.32.83.234"]] * 2
    assert df.filter(pl.col("answers").is_null()).height == 6  # unset: no response
    chaos = df.filter(pl.col("query") == "version.bind")
    assert chaos.height == 2 and chaos.get_column("qclass").to_list() == [3, 3]


def test_json_log(shared_data: Path) -> None:
    diag = Diagnostics()
    df = read_all(shared_data / JSON, diag)
    assert df.height == _data_lines(shared_data / JSON) == 239
    assert diag.total_skipped == 0
    wpad = df.filter(pl.col("trans_id") == 62862).row(0, named=True)
    assert wpad["query"] == "wpad.felk.cvut.cz" and wpad["aa"]
    assert wpad["answers"] == ["relay.felk.cvut.cz", "147.32.80.7"]
    assert wpad["answer_types"] == [None, "A"]
    assert wpad["rtt"] == pytest.approx(0.000875)
    nx = df.row(0, named=True)
    assert (nx["query"], nx["rcode_name"], nx["answers"]) == (
        "isatap.felk.cvut.cz",
        "NXDOMAIN",
        None,
    )


def test_bad_lines_are_counted(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / TSV).read_text().splitlines(keepends=True)
    first_data = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    lines.insert(first_data + 1, "garbage\tline\n")
    fields = lines[first_data + 3].split("\t")
    fields[3] = "port?"  # id.orig_p
    lines[first_data + 3] = "\t".join(fields)
    path = tmp_path / "dns.log"
    path.write_text("".join(lines))
    diag = Diagnostics()
    df = read_all(path, diag)
    assert df.height == 93 - 1
    skipped = diag.inputs[str(path)].skipped
    assert skipped == {"wrong field count": 1, "bad value": 1}


def test_iso_times_in_json(tmp_path: Path) -> None:
    path = tmp_path / "dns.json"
    path.write_text(
        '{"ts":"2024-05-01T10:00:00.500000Z","id.orig_h":"10.0.0.1","id.orig_p":5000,'
        '"id.resp_h":"10.0.0.53","id.resp_p":53,"proto":"udp","query":"Example.COM.",'
        '"qtype":1,"answers":["192.0.2.7"],"TTLs":[30.0]}\n'
        '{"_path":"conn","ts":1.0,"id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2"}\n'
    )
    diag = Diagnostics()
    row = read_all(path, diag).row(0, named=True)
    assert row["ts"].isoformat() == "2024-05-01T10:00:00.500000+00:00"
    assert row["query"] == "example.com" and row["answer_types"] == ["A"]
    assert diag.inputs[str(path)].ignored == {"Zeek conn records": 1}


def test_other_logs_raise(shared_data: Path, tmp_path: Path) -> None:
    conn = shared_data / SLIPS / "test10-mixed-zeek-dir/conn.log"
    with pytest.raises(InputError, match="'conn' log, not a dns log"):
        read_all(conn)
    path = tmp_path / "x.json"
    path.write_text('{"ts": 1.0, "id.orig_h": "10.0.0.1", "conn_state": "S0"}\n')
    with pytest.raises(InputError, match="not a Zeek dns log"):
        read_all(path)
    empty = tmp_path / "empty.log"
    empty.write_text("#separator \\x09\n")
    with pytest.raises(InputError, match="no Zeek '#fields' header"):
        read_all(empty)
