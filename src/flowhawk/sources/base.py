"""The contract every input reader follows.

A source turns one input (a file, a directory of logs, a live interface) into
raw flow tables (:data:`flowhawk.schema.RAW_FLOW_SCHEMA`). Sources never raise on a
bad record: they count it in :class:`~flowhawk.diagnostics.Diagnostics` with its
location and carry on. They raise :class:`~flowhawk.errors.InputError` only when
the input cannot be read at all.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

import pyarrow as pa

from flowhawk.diagnostics import Diagnostics

#: How many bytes of an input format detection looks at.
SNIFF_BYTES = 64 * 1024

_MAGIC_OPENERS = (
    (b"\x1f\x8b", gzip.open),
    (b"BZh", bz2.open),
    (b"\xfd7zXZ\x00", lzma.open),
)


def open_maybe_compressed(path: Path) -> IO[bytes]:
    """Open ``path`` for binary reading, decompressing gzip, bzip2 or xz transparently."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    for prefix, opener in _MAGIC_OPENERS:
        if magic.startswith(prefix):
            return opener(path, "rb")  # type: ignore[no-any-return]
    return open(path, "rb")


def is_compressed(path: Path) -> bool:
    with open(path, "rb") as fh:
        magic = fh.read(6)
    return any(magic.startswith(prefix) for prefix, _ in _MAGIC_OPENERS)


def read_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first ``size`` bytes of ``path`` after decompression (b"" if unreadable)."""
    try:
        with open_maybe_compressed(path) as fh:
            return fh.read(size)
    except (OSError, EOFError, lzma.LZMAError):
        return b""


@dataclass
class ReadContext:
    """What a source needs besides the input itself."""

    diagnostics: Diagnostics
    options: dict[str, Any] = field(default_factory=dict)  # per-format settings from config
    batch_rows: int = 1_000_000  # target rows per yielded table

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


class Source(Protocol):
    """A reader of one input format."""

    #: Format name used with ``--format`` and in summaries.
    name: ClassVar[str]
    #: One line for ``--help``.
    description: ClassVar[str]

    @staticmethod
    def sniff(head: bytes, path: Path) -> int:
        """Confidence 0-100 that ``head`` (the decompressed start of ``path``) is this format."""
        ...

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.Table]:
        """Yield raw flow tables for ``path``; count bad records in ``ctx.diagnostics``."""
        ...
