"""Generic CSV and Parquet readers: configuration errors, real tables read through a
mapping (checked against the format-specific readers), and damaged copies."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flowhawk.config import TabularInput
from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import ConfigError, InputError
from flowhawk.schema import RAW_FLOW_SCHEMA
from flowhawk.sources import detect_format
from flowhawk.sources.argus import ArgusSource
from flowhawk.sources.base import ReadContext, read_head
from flowhawk.sources.tabular import CsvSource, ParquetSource
from flowhawk.sources.zeek import ZeekJsonSource

DNS = "labeled/slips_dataset/historical_43250dbc/Normal/2015-03-24_capture1-only-dns.binetflow"
TABS = "conformance/flow_text_formats/examples/test5.tabs.binetflow"
ZEEK_JSON = "conformance/flow_text_formats/examples/conn.json.log"

ARGUS_MAPPING = {
    "ts_start": "StartTime",
    "duration": "Dur",
    "src_ip": "SrcAddr",
    "dst_ip": "DstAddr",
    "src_port": "Sport",
    "dst_port": "Dport",
    "proto": "Proto",
    "src_bytes": "SrcBytes",
    "state": "State",
}
ARGUS_OPTIONS = {"mapping": ARGUS_MAPPING, "time_format": "%Y/%m/%d %H:%M:%S%.f"}
ZEEK_MAPPING = {
    "ts_start": "ts",
    "duration": "duration",
    "src_ip": "orig_h",
    "dst_ip": "resp_h",
    "src_port": "orig_p",
    "dst_port": "resp_p",
    "proto": "proto",
    "src_pkts": "orig_pkts",
    "src_bytes": "orig_ip_bytes",
    "dst_pkts": "resp_pkts",
    "dst_bytes": "resp_ip_bytes",
    "flow_id": "uid",
}
COMPARED = ["ts_start", "ts_end", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "src_bytes"]


def read(source, path: Path, options: dict | None = None) -> tuple[pa.Table, Diagnostics]:
    diag = Diagnostics()
    tables = list(source.read(path, ReadContext(diag, options=options or {})))
    for table in tables:
        assert table.schema == RAW_FLOW_SCHEMA
    return (pa.concat_tables(tables) if tables else RAW_FLOW_SCHEMA.empty_table()), diag


def zeek_frame(shared_data: Path) -> pl.DataFrame:
    """Real Zeek records as a plain table (the sort of CSV/Parquet a user exports)."""
    frame = pl.read_ndjson(shared_data / ZEEK_JSON)
    return frame.rename({c: c.removeprefix("id.") for c in frame.columns}).select(
        [c for c in ZEEK_MAPPING.values()]
    )


def without_icmp(table: pa.Table, columns: list[str]) -> pa.Table:
    """Rows other than ICMP: a generic table has no Zeek ICMP conventions (type in orig_p)."""
    return table.filter(pc.invert(pc.is_in(table["proto"], pa.array([1, 58], pa.int16())))).select(
        columns
    )


def test_mapping_is_required(shared_data: Path) -> None:
    path = shared_data / DNS
    with pytest.raises(InputError, match=r'\[input\.csv\.mapping\].*ts_start = "StartTime"'):
        read(CsvSource(), path)
    with pytest.raises(InputError, match="lacks dst_ip"):
        read(
            CsvSource(),
            path,
            {"mapping": {"ts_start": "StartTime", "duration": "Dur", "src_ip": "SrcAddr"}},
        )
    with pytest.raises(InputError, match="lacks ts_end or duration"):
        read(CsvSource(), path, {"mapping": {"ts_start": "a", "src_ip": "b", "dst_ip": "c"}})
    with pytest.raises(InputError, match=r"\[input\.parquet\.mapping\]"):
        read(ParquetSource(), path)
    with pytest.raises(ConfigError, match="unknown keys"):
        read(CsvSource(), path, {**ARGUS_OPTIONS, "mappings": {}})
    with pytest.raises(ConfigError, match="unknown canonical columns"):
        read(CsvSource(), path, {"mapping": {**ARGUS_MAPPING, "bytes": "TotBytes"}})
    with pytest.raises(ConfigError, match="time_unit"):
        read(CsvSource(), path, {**ARGUS_OPTIONS, "time_unit": "minutes"})
    with pytest.raises(
        InputError, match="no column 'Start' \\(for ts_start\\); its columns are: StartTime"
    ):
        read(CsvSource(), path, {"mapping": {**ARGUS_MAPPING, "ts_start": "Start"}})


def test_csv_matches_argus_reader(shared_data: Path) -> None:
    path = shared_data / DNS
    assert CsvSource.sniff(read_head(path), path) == 5
    assert detect_format(path) == "argus"  # the specific format wins
    table, diag = read(CsvSource(), path, ARGUS_OPTIONS)
    argus, _ = read(ArgusSource(), path)
    assert table.num_rows == 2914 and diag.total_skipped == 0
    assert table.select(COMPARED).equals(argus.select(COMPARED))
    first = table.to_pylist()[0]
    assert (first["state"], first["dst_bytes"], first["uni"], first["flow_id"]) == (
        "CON",
        0,
        False,
        "0",
    )


def test_tab_separated_and_unknown_protocols(shared_data: Path) -> None:
    path = shared_data / TABS
    options = {"mapping": {k: v for k, v in ARGUS_MAPPING.items() if "port" not in k}}
    table, diag = read(
        CsvSource(), path, {**options, "delimiter": "\t", "time_format": "%Y/%m/%d %H:%M:%S%.f"}
    )
    st = diag.stats(str(path))
    assert st.skipped == {"unknown protocol": 4}  # man, llc, arp: no IP protocol
    assert table.num_rows + 4 == 6725
    assert "'man' is not an IP protocol name" in diag.issues[0].detail


def test_numeric_times_and_quotes(shared_data: Path, tmp_path: Path) -> None:
    frame = zeek_frame(shared_data)
    expected, _ = read(ZeekJsonSource(), shared_data / ZEEK_JSON)
    seconds = tmp_path / "seconds.csv"
    frame.write_csv(seconds, quote_style="always")
    assert detect_format(seconds) == "csv"
    table, diag = read(CsvSource(), seconds, {"mapping": ZEEK_MAPPING})
    assert diag.total_skipped == 0 and table.num_rows == 1000
    same = [*COMPARED, "dst_bytes", "flow_id"]
    assert without_icmp(table, same).equals(without_icmp(expected, same))
    assert without_icmp(table, same).num_rows == 944
    millis = tmp_path / "millis.csv"
    frame.with_columns((pl.col("ts") * 1000).round(0).cast(pl.Int64)).write_csv(millis)
    table, _ = read(
        CsvSource(), millis, {"mapping": ZEEK_MAPPING, "time_unit": "ms", "duration_unit": "s"}
    )
    first = table.to_pylist()[0]
    assert first["ts_start"] == expected.to_pylist()[0]["ts_start"].replace(microsecond=385000)


def test_options_from_the_configuration(shared_data: Path) -> None:
    """The [input.csv] section as the configuration model dumps it (unset keys are None)."""
    options = TabularInput(mapping=ARGUS_MAPPING, time_format="%Y/%m/%d %H:%M:%S%.f").model_dump()
    table, diag = read(CsvSource(), shared_data / DNS, options)
    assert table.num_rows == 2914 and diag.total_skipped == 0


def test_csv_damaged(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / DNS).read_bytes().split(b"\n")
    lines[3] = b"garbage"  # line 4
    fields = lines[5].split(b",")  # line 6
    fields[0] = b"2015/03/24 25:61:00.0"
    lines[5] = b",".join(fields)
    fields = lines[7].split(b",")  # line 8: SrcBytes
    fields[13] = b"plenty"
    lines[7] = b",".join(fields)
    path = tmp_path / "damaged.csv.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    table, diag = read(CsvSource(), path, ARGUS_OPTIONS)
    st = diag.stats(str(path))
    assert st.skipped == {"wrong field count": 1, "bad timestamp": 1, "bad value": 1}
    assert table.num_rows + st.skipped_total == 2914
    assert {i.location: i.reason for i in diag.issues} == {
        "line 4": "wrong field count",
        "line 6": "bad timestamp",
        "line 8": "bad value",
    }
    header = tmp_path / "header.csv"
    header.write_bytes(lines[0] + b"\n")
    assert read(CsvSource(), header, ARGUS_OPTIONS)[0].num_rows == 0
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read(CsvSource(), empty, ARGUS_OPTIONS)


def test_parquet(shared_data: Path, tmp_path: Path) -> None:
    frame = zeek_frame(shared_data)
    expected, _ = read(ZeekJsonSource(), shared_data / ZEEK_JSON)
    numeric = tmp_path / "numeric.parquet"
    frame.write_parquet(numeric)
    assert [
        ParquetSource.sniff(read_head(numeric), numeric),
        CsvSource.sniff(read_head(numeric), numeric),
    ] == [5, 0]
    assert detect_format(numeric) == "parquet"
    table, diag = read(ParquetSource(), numeric, {"mapping": ZEEK_MAPPING})
    assert diag.total_skipped == 0
    assert without_icmp(table, COMPARED).equals(without_icmp(expected, COMPARED))
    typed = tmp_path / "typed.parquet"
    frame.with_columns(
        pl.from_epoch((pl.col("ts") * 1e6).round(0).cast(pl.Int64), time_unit="us").alias("ts")
    ).write_parquet(typed)  # naive datetimes: taken as UTC
    table, _ = read(ParquetSource(), typed, {"mapping": ZEEK_MAPPING})
    assert without_icmp(table, COMPARED).equals(without_icmp(expected, COMPARED))
    packed = tmp_path / "typed.parquet.gz"
    packed.write_bytes(gzip.compress(typed.read_bytes()))
    table, _ = read(ParquetSource(), packed, {"mapping": ZEEK_MAPPING})
    assert table.num_rows == 1000
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read(ParquetSource(), shared_data / DNS, {"mapping": ZEEK_MAPPING})
