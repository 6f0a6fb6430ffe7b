"""DNS from real captures: tshark as the oracle, a few known transactions field by field,
and every kind of bad message counted rather than raised."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.dns import MDNS_PORTS, read_dns
from flowhawk.dns.pcap import read_pcap
from flowhawk.errors import InputError
from tests.dns.helpers import read_all

NDPI = Path("conformance/ndpi_pcaps/pcap")
TCPDUMP = Path("conformance/tcpdump_sflow_dns")


def _tshark(path: Path) -> list[list[str]]:
    """(response flag, answer count, A addresses) of each DNS message on port 53."""
    assert shutil.which("tshark"), "tshark is needed as the oracle"
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "dns && (udp.port==53 || tcp.port==53)", "-T",
         "fields", "-e", "dns.flags.response", "-e", "dns.count.answers", "-e", "dns.a"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.parametrize(
    "name",
    [
        "dns/tunnel_pcaps/sods.pcap",
        str(NDPI / "dns-google-nsid.pcapng"),
        str(NDPI / "dns_ambiguous_names.pcap"),
        str(NDPI / "dns-tunnel-iodine.pcap"),
    ],
)
def test_messages_and_answers_agree_with_tshark(shared_data: Path, name: str) -> None:
    path = shared_data / name
    diag = Diagnostics()
    df = read_all(path, diag)
    oracle = _tshark(path)
    responses = [m for m in oracle if m[0] == "1"]
    queries = [m for m in oracle if m[0] == "0"]
    assert df.filter(pl.col("response_bytes").is_not_null()).height == len(responses)
    assert df.filter(pl.col("query_bytes").is_not_null()).height == len(queries)
    answered = df.filter(pl.col("response_bytes").is_not_null())
    assert answered.get_column("answers").list.len().sum() == sum(int(m[1]) for m in responses)
    ours = answered.explode("answers", "answer_types").filter(pl.col("answer_types") == "A")
    theirs = [a for m in responses for a in m[2].split(",") if a]
    assert sorted(ours.get_column("answers").to_list()) == sorted(theirs)
    assert diag.total_skipped == 0


def test_known_capture_field_by_field(shared_data: Path) -> None:
    df = read_all(shared_data / NDPI / "dns.pcap")
    assert df.height == 3
    first, second, third = df.to_dicts()
    # A response without its query: the client is its destination, no rtt.
    assert (first["trans_id"], first["query"], first["qtype_name"]) == (
        0xDCA2, "www.l.google.com", "AAAA",
    )  # fmt: skip
    assert first["src_ip"] == "192.168.170.8" and first["dst_port"] == 53
    assert first["query_bytes"] is None and first["rtt"] is None
    assert second["query"] == "www.example.com" and second["rtt"] == pytest.approx(0.233143)
    assert second["rcode_name"] == "NOERROR" and second["answers"] == []
    assert third["query"] == "e7.whatsapp.net" and third["qtype"] == 1
    assert third["answers"][:2] == ["169.45.219.235", "169.47.40.142"]
    assert len(third["answers"]) == 8 and third["ttls"] == [491.0] * 8
    assert third["rd"] and third["ra"] and not third["aa"] and not third["tc"]
    assert third["rtt"] == pytest.approx(0.003477, abs=1e-6)
    assert (third["query_bytes"], third["response_bytes"]) == (33, 161)
    assert df.get_column("input").unique().to_list() == [str(shared_data / NDPI / "dns.pcap")]


def test_dns_over_tcp(shared_data: Path) -> None:
    df = read_all(shared_data / TCPDUMP / "dns_tcp.pcap")
    assert df.height == 1
    row = df.row(0, named=True)
    assert row["proto"] == 6 and row["query"] == "www.tcpdump.org" and row["aa"]
    # Answer section only (the capture's other A records are additional-section glue).
    assert row["answers"] == ["192.139.46.66", "198.199.88.104"]
    assert (row["query_bytes"], row["response_bytes"]) == (56, 224)


@pytest.mark.parametrize(
    ("name", "reason", "count", "rows"),
    [
        (TCPDUMP / "dns-zlip-1.pcap", "truncated DNS message", 1, 0),
        (TCPDUMP / "dns-badlabel.pcap", "malformed DNS message", 1, 0),
        (TCPDUMP / "dns_fwdptr.pcap", "malformed DNS message", 1, 0),
        (NDPI / "dns_fragmented.pcap", "fragmented DNS message", 7, 22),
        (NDPI / "malformed_dns.pcap", "DNS message partly read", 4, 4),
        (Path("conformance/dpkt_pcaps/truncated_dns_2.pcap"), "truncated record", 1, 1),
    ],
)
def test_bad_messages_are_counted(
    shared_data: Path, name: Path, reason: str, count: int, rows: int
) -> None:
    diag = Diagnostics()
    df = read_all(shared_data / name, diag)
    assert diag.inputs[str(shared_data / name)].skipped[reason] == count
    assert df.height == rows


def test_truncated_response_keeps_what_parsed(shared_data: Path) -> None:
    diag = Diagnostics()
    df = read_all(shared_data / "conformance/dpkt_pcaps/truncated_dns.pcap", diag)
    row = df.row(0, named=True)
    assert row["query"] == "api.spd.samsungdm.com"
    assert row["answer_types"] == ["CNAME", "A", "A", "A", "A", "A"]
    assert row["answers"][0] == "api.samsungspd.com"
    assert diag.total_skipped == 1


def test_windows_do_not_change_the_result(shared_data: Path) -> None:
    path = shared_data / "dns/tunnel_pcaps/sods.pcap"
    whole = pl.concat([pl.from_arrow(t) for t in read_pcap(path, Diagnostics())])
    small = pl.concat([pl.from_arrow(t) for t in read_pcap(path, Diagnostics(), window=4096)])
    assert whole.height == 493
    assert whole.equals(small)


def test_mdns_port_is_optional(shared_data: Path) -> None:
    path = shared_data / "labeled/slips_dataset/dataset_HEAD/test7-malicious.pcap"
    plain = read_all(path)
    more = read_all(path, ports=MDNS_PORTS)
    assert set(plain.get_column("dst_port").unique()) == {53}
    assert more.height > plain.height
    assert more.filter(pl.col("dst_port") == 53).height == plain.height


def test_not_a_capture_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not DNS\n")
    with pytest.raises(InputError, match="not a DNS input"):
        read_dns(path, Diagnostics())
    fake = tmp_path / "fake.pcap"
    fake.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not a pcap"):
        list(read_pcap(fake, Diagnostics()))
