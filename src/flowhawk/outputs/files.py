"""The file output: events appended to a local file, one line each, rotated by size.

Each event document is one line: compact JSON (``format = "json"``, JSON Lines) or a
CEF:0 message (``format = "cef"``, :func:`flowhawk.outputs.cef.cef_message`). A batch
is written with one ``write`` and, with ``fsync = true`` (the default), flushed to disk
before :meth:`FileOutput.send` returns, so a delivered event is on disk.

Rotation follows the scheme of ``logging.handlers.RotatingFileHandler``: before a batch
that would take the file beyond ``rotate_bytes``, ``events.jsonl`` becomes
``events.jsonl.1``, ``.1`` becomes ``.2`` and so on; at most ``keep`` rotated files are
kept (0 keeps none: the file simply starts again). A batch is never split, so a file
can exceed ``rotate_bytes`` by one batch. ``rotate_bytes = 0`` never rotates.

A relative ``path`` is taken relative to the data directory. Delivery is at least
once: a batch interrupted by a failure is written again whole, so readers deduplicate
on the event ``id``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Literal

from pydantic import Field

from flowhawk.outputs.base import Document, Output, OutputSettings
from flowhawk.outputs.cef import cef_message


def line(doc: Document, fmt: str) -> str:
    """One event as one line of the file (without the line break)."""
    if fmt == "cef":
        return cef_message(doc)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


class FileOutput(Output):
    """Events appended to a local file (JSON Lines or CEF), rotated by size."""

    type = "file"
    description = "A local file, one event per line (JSON Lines or CEF), rotated by size."

    class Settings(OutputSettings):
        type: Literal["file"] = Field(default="file", description="Output type: file.")
        path: Path = Field(
            description="The file events are appended to; relative to the data directory."
        )
        format: Literal["json", "cef"] = Field(
            default="json", description="One line per event: compact JSON, or a CEF:0 message."
        )
        rotate_bytes: int = Field(
            default=100 * 1024 * 1024,
            ge=0,
            description="Rotate before the file would grow beyond this size; 0: never.",
        )
        keep: int = Field(
            default=10, ge=0, description="Rotated files kept (path.1 is the newest)."
        )
        fsync: bool = Field(
            default=True, description="Flush every batch to disk before it counts as delivered."
        )

    def __init__(self, settings: OutputSettings, data_dir: Path):
        if not isinstance(settings, FileOutput.Settings):
            settings = FileOutput.Settings.model_validate(settings.model_dump())
        super().__init__(settings, data_dir)
        self.cfg: FileOutput.Settings = settings
        self.path = Path(data_dir) / settings.path  # an absolute path stays as it is
        self._file: IO[str] | None = None

    def open(self) -> None:
        """Open the file for appending (creating its directory) unless it is open."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115

    def send(self, docs: list[Document]) -> None:
        """Append one line per document (rotating first if needed); raises ``OSError``."""
        if not docs:
            return
        data = "".join(line(doc, self.cfg.format) + "\n" for doc in docs)
        self.open()
        assert self._file is not None
        limit = self.cfg.rotate_bytes
        size = os.fstat(self._file.fileno()).st_size
        if limit and size > 0 and size + len(data.encode()) > limit:
            self._rotate()
            assert self._file is not None
        try:
            self._file.write(data)
            self._file.flush()
            if self.cfg.fsync:
                os.fsync(self._file.fileno())
        except OSError:
            self.close()
            raise

    def _rotate(self) -> None:
        self.close()
        keep = self.cfg.keep
        if keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.open()

    def close(self) -> None:
        """Close the file; never raises."""
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
