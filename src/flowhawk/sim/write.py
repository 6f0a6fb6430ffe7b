"""Writing a simulation: flows (Zeek conn.log, Parquet or CSV), labels, live export.

The flows file's extension picks the format:

- ``.log``: Zeek conn.log (TSV), the default: ``flowhawk analyze FILE.log`` reads it
  with no configuration;
- ``.parquet`` / ``.csv``: raw flows, one column per :data:`~flowhawk.schema.RAW_FLOW_SCHEMA`
  field (CSV times in ISO 8601 UTC).

Next to the flows, ``<stem>.toml`` is a configuration for analyzing them: the learning
period covers the clean days, and for Parquet/CSV the column mapping their readers
need (``flowhawk analyze FILE -c <stem>.toml``).

Labels are CSV (:data:`flowhawk.sim.labels.LABEL_COLUMNS`). Every output is a pure
function of the simulation, so the same settings give byte-identical files.

:func:`export` sends the flows to a collector through the built-in exporter
(:mod:`flowhawk.collect.replay`), each flow once it has ended, as an exporter would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from flowhawk.collect.replay import (
    ExportSettings,
    ExportStream,
    Replayer,
    ReplayStats,
    UdpSender,
    shift_times,
)
from flowhawk.demo.zeekfmt import write_conn_log
from flowhawk.sim import Simulation

FORMATS = {".log": "zeek", ".parquet": "parquet", ".csv": "csv"}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"


def format_of(path: Path) -> str:
    """``zeek``, ``parquet`` or ``csv`` from the extension; ValueError otherwise."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path.name}: the extension picks the format: .log, .parquet or .csv")
    return fmt


def labels_path(out: Path) -> Path:
    """The default labels file of flows file ``out``: ``week.log`` -> ``week.labels.csv``."""
    return out.with_name(out.stem + ".labels.csv")


def config_path(out: Path) -> Path:
    """The configuration written next to flows file ``out``: ``week.log`` -> ``week.toml``."""
    return out.with_name(out.stem + ".toml")


def write_flows(sim: Simulation, path: Path) -> list[Path]:
    """Write the flows to ``path`` in the format its extension names; returns the files."""
    fmt = format_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = config_path(path)
    learning = [
        "# Configuration for analyzing flows written by `flowhawk simulate`.",
        "[learning]",
        f'period = "{max(sim.settings.clean_days, 1)}d"  # the clean days (no anomalies)',
    ]
    if fmt == "zeek":
        write_conn_log(sim.raw(), path, seed=f"flowhawk-sim-{sim.settings.seed}")
        config.write_text("\n".join(learning) + "\n")
        return [path, config]
    df = pl.from_arrow(sim.raw())
    assert isinstance(df, pl.DataFrame)
    df = df.select(
        c
        for c in df.columns
        if c not in ("input", "uni") and df.get_column(c).null_count() < df.height
    )
    if fmt == "parquet":
        df.write_parquet(path, compression="zstd", statistics=False)
    else:
        df.write_csv(path, datetime_format=_TIME_FORMAT)
    # "uni" is the reader's option, not a column (the CSV reader cannot cast text to bool).
    mapping = [f"[input.{fmt}]", "uni = false", f"[input.{fmt}.mapping]"]
    mapping += [f'{c} = "{c}"' for c in df.columns]
    config.write_text("\n".join(learning + mapping) + "\n")
    return [path, config]


def write_labels(sim: Simulation, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sim.labels.write_csv(path)
    return path


def export(
    sim: Simulation,
    target: str,
    settings: ExportSettings,
    rate: float | None = None,
    now: bool = False,
    chunk_rows: int = 8192,
    sender: Callable[[bytes], object] | None = None,
    on_chunk: Callable[[ReplayStats], None] | None = None,
) -> ReplayStats:
    """Send the flows to ``target`` (HOST:PORT) as ``settings.protocol``, in order of
    their end, paced at ``rate`` flows per second; ``now`` moves all times so the first
    flow starts now. ``sender`` replaces the UDP socket (tests)."""
    table = sim.raw()
    table = table.take(pc.sort_indices(table, [("ts_end", "ascending"), ("ts_start", "ascending")]))
    stream = ExportStream(settings)
    udp = None if sender is not None else UdpSender(target).start()
    send = sender if sender is not None else udp.send  # type: ignore[union-attr]
    replayer = Replayer(stream, send, rate)
    offset = 0
    if now and table.num_rows:
        first = pc.min(table.column("ts_start")).cast(pa.timestamp("us")).cast(pa.int64()).as_py()
        offset = int(time.time() * 1_000_000) - first
    began = time.perf_counter()
    try:
        for lo in range(0, table.num_rows, chunk_rows):
            replayer.send(shift_times(table.slice(lo, chunk_rows), offset))
            if on_chunk is not None:
                on_chunk(replayer.stats)
        replayer.stats.rounds = 1
    finally:
        if udp is not None:
            udp.stop()
    replayer.stats.wall = time.perf_counter() - began
    return replayer.stats
