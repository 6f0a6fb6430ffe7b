"""Contract tests run over every registered input format, on real files."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.schema import RAW_FLOW_SCHEMA
from flowhawk.sources import SOURCES, detect_format, load_source
from flowhawk.sources.base import ReadContext, read_head

EX = "conformance/flow_text_formats/examples"
SAMPLES = {
    "pcap": "labeled/slips_dataset/dataset_HEAD/test-cc/test-cc-capture-2.pcap",
    "pcapng": "conformance/ndpi_pcaps/pcap/anydesk.pcapng",
    "zeek": f"{EX}/conn.tab.log",
    "zeek-json": f"{EX}/conn.json.small.log",
    "nfdump": "labeled/slips_dataset/dataset_HEAD/test1-malicious.nfdump",
    "nfdump-text": f"{EX}/nfcapd.sample2",
    "argus": f"{EX}/test.binetflow",
    "suricata": "labeled/slips_dataset/dataset_HEAD/test6-malicious.suricata.json",
}
MAPPING = {
    "ts_start": "start",
    "duration": "dur",
    "src_ip": "sa",
    "dst_ip": "da",
    "dst_port": "dp",
    "proto": "pr",
}


def _generated(name: str, tmp_path: Path) -> tuple[Path, dict]:
    df = pl.DataFrame(
        {
            "start": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:05Z"],
            "dur": [1.5, 2.0],
            "sa": ["10.0.0.1", "10.0.0.2"],
            "da": ["8.8.8.8", "1.1.1.1"],
            "dp": [53, 443],
            "pr": ["udp", "tcp"],
        }
    )
    opts = {"mapping": MAPPING}
    if name == "parquet":
        path = tmp_path / "flows.parquet"
        df.write_parquet(path)
    elif name == "csv":
        path = tmp_path / "flows.csv"
        df.write_csv(path)
    else:  # nfdump-csv: what `nfdump -o csv` prints
        path = tmp_path / "nfdump.csv"
        path.write_text(
            "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt\n"
            "2024-01-01 00:00:00,2024-01-01 00:00:01,1.000,10.0.0.1,8.8.8.8,5000,53,UDP,"
            "......,0,0,1,60,0,0\nSummary\n"
        )
        opts = {}
    return path, opts


def _sample(name: str, shared_data: Path, tmp_path: Path) -> tuple[Path, dict]:
    if name in SAMPLES:
        return shared_data / SAMPLES[name], {}
    return _generated(name, tmp_path)


@pytest.mark.parametrize("name", SOURCES.names())
def test_reader_contract(name, shared_data, tmp_path):
    cls = load_source(name)
    assert cls.name == name and cls.description
    path, opts = _sample(name, shared_data, tmp_path)
    if name not in ("csv", "parquet"):
        assert detect_format(path) == name
    assert cls.sniff(read_head(path), path) > 0
    diag = Diagnostics()
    tables = list(cls().read(path, ReadContext(diag, options=opts)))
    assert tables, f"{name} read nothing from {path}"
    table = pa.concat_tables(tables)
    assert table.schema.equals(RAW_FLOW_SCHEMA)
    assert table.num_rows > 0
    df = pl.from_arrow(table)
    assert df.get_column("flow_id").null_count() == 0
    assert (df.get_column("ts_end") >= df.get_column("ts_start")).all()
    assert df.select(pl.col("^(src|dst)_(pkts|bytes)$").min()).row(0) >= (0, 0, 0, 0)
    assert (df.get_column("input") == str(path)).all()


@pytest.mark.parametrize("name", SOURCES.names())
def test_reader_rejects_or_counts_garbage(name, tmp_path):
    """Random bytes are never a crash: a clear InputError, or records counted as skipped."""
    path = tmp_path / "garbage.bin"
    path.write_bytes(bytes(range(256)) * 40 + b"\nnot,a,flow\n\x00\x01")
    cls = load_source(name)
    diag = Diagnostics()
    opts = {"mapping": MAPPING} if name in ("csv", "parquet") else {}
    try:
        rows = sum(t.num_rows for t in cls().read(path, ReadContext(diag, options=opts)))
    except InputError as exc:
        assert str(path) in str(exc)
    else:
        assert rows == 0


def test_unknown_format_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n")
    with pytest.raises(InputError, match=r"notes\.txt: format not recognised"):
        detect_format(path)
