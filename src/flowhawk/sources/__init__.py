"""Input sources: the registry of readers and format detection.

Each entry names the module and class of a reader; modules are imported only when
a format is used or sniffed, so the numba-compiled packet path costs nothing to a
user who reads logs.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from flowhawk.errors import InputError, RegistryError
from flowhawk.registry import Registry
from flowhawk.sources.base import Source, read_head

#: format name -> "module:Class". Order breaks ties in detection.
_ENTRIES: list[tuple[str, str]] = [
    ("pcap", "flowhawk.sources.pcap.source:PcapSource"),
    ("pcapng", "flowhawk.sources.pcap.source:PcapngSource"),
    ("zeek", "flowhawk.sources.zeek:ZeekTsvSource"),
    ("zeek-json", "flowhawk.sources.zeek:ZeekJsonSource"),
    ("nfdump", "flowhawk.sources.nfdump:NfdumpBinarySource"),
    ("nfdump-csv", "flowhawk.sources.nfdump:NfdumpCsvSource"),
    ("nfdump-text", "flowhawk.sources.nfdump:NfdumpTextSource"),
    ("argus", "flowhawk.sources.argus:ArgusSource"),
    ("suricata", "flowhawk.sources.suricata:SuricataEveSource"),
    ("csv", "flowhawk.sources.tabular:CsvSource"),
    ("parquet", "flowhawk.sources.tabular:ParquetSource"),
]

SOURCES: Registry[str] = Registry("input format", _ENTRIES)


def load_source(name: str) -> type[Source]:
    """The reader class registered as ``name``."""
    target = SOURCES.get(name)
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Source] = getattr(module, class_name)
    if cls.name != name:
        raise RegistryError(f"input format {name!r} maps to {target} whose name is {cls.name!r}")
    return cls


def format_names() -> list[str]:
    return SOURCES.names()


def detect_format(path: Path) -> str:
    """Guess the format of ``path`` from its content; raise :class:`InputError` if unsure."""
    head = read_head(path)
    if not head:
        raise InputError(str(path), "is empty or unreadable")
    best_name, best_score = "", 0
    for name, _ in SOURCES:
        score = load_source(name).sniff(head, path)
        if score > best_score:
            best_name, best_score = name, score
    if best_score <= 0:
        raise InputError(
            str(path),
            "format not recognised (expected one of: "
            + ", ".join(format_names())
            + "); name it with --format",
        )
    return best_name


def expand_inputs(paths: list[Path]) -> list[tuple[Path, Path | None]]:
    """Files to read, each with the folder it was found in (None when named directly).

    Folders are walked recursively in name order.
    """
    files: list[tuple[Path, Path | None]] = []
    for p in paths:
        if p.is_dir():
            files.extend((q, p) for q in sorted(p.rglob("*")) if q.is_file())
        else:
            files.append((p, None))
    return files
