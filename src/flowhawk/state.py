"""Checkpointed state in the data directory: detectors' memory and run metadata.

Layout: ``<data>/state/meta.json`` and ``<data>/state/<METHOD>/<table>.parquet``.
A checkpoint is written to a sibling directory and swapped in with renames, so an
interrupted save leaves the previous checkpoint intact (or, cut between the renames, a
complete one that the next start puts back in place).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flowhawk.errors import StateError

STATE_VERSION = 1


@dataclass
class Meta:
    """What a data directory remembers about its history, in event time."""

    version: int = STATE_VERSION
    learning_until: str | None = None  # ISO time; alarms only for flows at or after it
    learning_complete: bool = False  # a `flowhawk learn` run ended the learning period
    first_event: str | None = None
    last_event: str | None = None
    runs: list[dict] = field(default_factory=list)

    def learning_end(self) -> datetime | None:
        return datetime.fromisoformat(self.learning_until) if self.learning_until else None


class StateStore:
    """Loads and saves the state under ``<data>/state``."""

    def __init__(self, data_dir: Path):
        self.dir = data_dir / "state"
        self._recover()

    def _recover(self) -> None:
        """Finish a save a crash cut between its two renames: ``state`` is missing, the
        new checkpoint is complete in ``state.new`` (its meta.json is written last) or
        the previous one is in ``state.old``."""
        if self.dir.exists():
            return
        new, old = self.dir.with_name("state.new"), self.dir.with_name("state.old")
        for candidate in (new, old):
            if (candidate / "meta.json").is_file():
                candidate.rename(self.dir)
                return

    def load_meta(self) -> Meta:
        path = self.dir / "meta.json"
        if not path.exists():
            return Meta()
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StateError(
                f"{path} is unreadable ({exc}); move it away to start afresh"
            ) from None
        if raw.get("version") != STATE_VERSION:
            raise StateError(
                f"{path} has state version {raw.get('version')}, this flowhawk reads "
                f"{STATE_VERSION}; use a new data directory"
            )
        known = set(Meta.__dataclass_fields__)
        return Meta(**{k: v for k, v in raw.items() if k in known})

    def load_tables(self, component: str) -> dict[str, pa.Table]:
        folder = self.dir / component
        if not folder.is_dir():
            return {}
        out = {}
        for path in sorted(folder.glob("*.parquet")):
            try:
                out[path.stem] = pq.read_table(path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise StateError(f"state file {path} is unreadable: {exc}") from None
        return out

    def save(self, meta: Meta, components: dict[str, dict[str, pa.Table]]) -> None:
        tmp = self.dir.with_name("state.new")
        old = self.dir.with_name("state.old")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for component, tables in components.items():
            (tmp / component).mkdir()
            for name, table in tables.items():
                pq.write_table(table, tmp / component / f"{name}.parquet")
        (tmp / "meta.json").write_text(json.dumps(asdict(meta), indent=2))
        shutil.rmtree(old, ignore_errors=True)
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)
        shutil.rmtree(old, ignore_errors=True)
