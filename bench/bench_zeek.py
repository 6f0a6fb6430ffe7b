"""Benchmark: Zeek conn.log (TSV) read and converted to raw flows on ONE core.

What it measures: rows per second of ``ZeekTsvSource.read`` (flowhawk.sources.zeek)
turning a conn.log of >= 2 M records into tables of the raw flow schema, with
pyarrow limited to one thread and polars pinned to one thread
(``POLARS_MAX_THREADS=1``, set before polars is imported). Best of 3 runs, wall
and CPU time, and the ratio to the 1 M rows/s target. For context it also times
two baselines on the same file: pyarrow.csv reading every column as text, and
pyarrow.csv parsing only the columns the reader uses straight to numbers (the
floor of the reader's own parse step).

The input is generated once and cached (never committed): the real labeled conn
logs of the Stratosphere scenarios (../shared/data/labeled/...) replicated with
their timestamps shifted by the span of the data per copy, under
$FLOWHAWK_BENCH_DIR (default /tmp/flowhawk-bench).

Run:  .venv/bin/python bench/bench_zeek.py [--rows 2100000] [--repeat 3]
"""

from __future__ import annotations

import os

os.environ["POLARS_MAX_THREADS"] = "1"  # before polars is imported (by flowhawk too)

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from flowhawk.diagnostics import Diagnostics
from flowhawk.sources.base import ReadContext
from flowhawk.sources.zeek import ZeekTsvSource
from flowhawk.sources.zeek_conn import wanted_types

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FLOWHAWK_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH = Path(os.environ.get("FLOWHAWK_BENCH_DIR", "/tmp/flowhawk-bench"))
SOURCES = [  # real labeled conn logs with the same 23 columns
    "labeled/stratosphere_scenarios/008-zeek-mixed/data/conn.log.labeled",
    "labeled/stratosphere_scenarios/010-zeek-mixed/data/conn.log.labeled",
    "labeled/slips_dataset/dataset_HEAD/test18-malicious-ctu-sme-11-win/zeek-labeled/conn.log.labeled",
]
TARGET = 1_000_000  # rows/s on one core


def generate(rows: int) -> Path:
    """A conn.log of at least ``rows`` records, made once and cached."""
    path = BENCH / f"conn-{rows}.log"
    if path.exists():
        return path
    BENCH.mkdir(parents=True, exist_ok=True)
    first = (DATA / SOURCES[0]).read_bytes().split(b"\n")
    header = [h for h in first if h.startswith(b"#") and not h.startswith(b"#close")]
    records = [
        line
        for relative in SOURCES
        for line in (DATA / relative).read_bytes().split(b"\n")
        if line.strip() and not line.startswith(b"#")
    ]
    ts_text, rest = zip(*(r.split(b"\t", 1) for r in records), strict=True)
    frame = pl.DataFrame({"ts": [float(t) for t in ts_text], "rest": [r.decode() for r in rest]})
    span = frame["ts"].max() - frame["ts"].min() + 1.0  # type: ignore[operator]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        out.write(b"\n".join(header) + b"\n")
        written, copy = 0, 0
        while written < rows:
            shifted = frame.with_columns(pl.col("ts") + copy * span)
            shifted.write_csv(
                out, separator="\t", include_header=False, quote_style="never", float_precision=6
            )
            written += frame.height
            copy += 1
        out.write(b"#close\t2099-01-01-00-00-00\n")
    tmp.rename(path)
    return path


def best_of(repeat: int, run: Callable[[], int]) -> tuple[int, float, float]:
    """(rows, best wall seconds, CPU seconds of that run)."""
    best = (0, float("inf"), 0.0)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        rows = run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best[1]:
            best = (rows, wall, cpu)
    return best


def read_flowhawk(path: Path) -> int:
    diag = Diagnostics()
    rows = sum(t.num_rows for t in ZeekTsvSource().read(path, ReadContext(diag)))
    assert diag.total_skipped == 0, diag.issues[:3]
    return rows


def _header(path: Path) -> tuple[list[str], int]:
    """The #fields names and the number of header lines."""
    fields: list[str] = []
    count = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.startswith(b"#"):
                break
            count += 1
            if line.startswith(b"#fields"):
                fields = line.decode().rstrip("\n").split("\t")[1:]
    return fields, count


def read_pyarrow(path: Path, types: dict[str, pa.DataType] | None) -> int:
    """Baseline: pyarrow.csv alone (``types`` None: every column as text)."""
    names, skip = _header(path)
    column_types = types or {n: pa.string() for n in names}
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip, use_threads=False),
        parse_options=pacsv.ParseOptions(
            delimiter="\t", quote_char=False, invalid_row_handler=lambda row: "skip"
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=column_types, include_columns=list(column_types), null_values=["-"]
        ),
    )
    return table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_100_000, help="records to generate (>= 2 M)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    args = parser.parse_args()
    path = generate(args.rows)
    size = path.stat().st_size
    print(f"input: {path} ({size / 1e6:.0f} MB)")
    typed = wanted_types(_header(path)[0])
    runs = [
        ("flowhawk ZeekTsvSource.read -> raw flows", lambda: read_flowhawk(path)),
        ("baseline pyarrow.csv, all columns as text", lambda: read_pyarrow(path, None)),
        ("baseline pyarrow.csv, used columns typed", lambda: read_pyarrow(path, typed)),
    ]
    columns = ("rows", "wall s", "cpu s", "rows/s", "vs 1M/s")
    print(f"{'measurement':44s} {columns[0]:>9s} " + " ".join(f"{c:>7s}" for c in columns[1:]))
    for name, run in runs:
        rows, wall, cpu = best_of(args.repeat, run)
        rate = rows / wall
        print(f"{name:44s} {rows:9d} {wall:7.2f} {cpu:7.2f} {rate:9,.0f} {rate / TARGET:6.2f}x")


if __name__ == "__main__":
    main()
