"""The exporter inventory: every exporter's state (templates, options, per-domain stats).

Saved as JSON in ``<data>/collector/exporters.json`` (written atomically), so templates
survive a restart and ``flowhawk exporters`` can show what a running collector last
checkpointed.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from flowhawk.collect.decode.base import ExporterState
from flowhawk.errors import StateError


def inventory_path(data_dir: Path) -> Path:
    return data_dir / "collector" / "exporters.json"


class Inventory:
    """Exporter states by exporter address."""

    def __init__(self, states: dict[str, ExporterState] | None = None):
        self.states: dict[str, ExporterState] = states or {}

    def state(self, exporter: str) -> ExporterState:
        if exporter not in self.states:
            self.states[exporter] = ExporterState(exporter)
        return self.states[exporter]

    @classmethod
    def load(cls, data_dir: Path) -> Inventory:
        path = inventory_path(data_dir)
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls({k: ExporterState.from_json(v) for k, v in raw["exporters"].items()})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{path} is unreadable ({exc}); move it away to start afresh"
            ) from None

    def save(self, data_dir: Path) -> None:
        path = inventory_path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        doc = {
            "saved": datetime.now(UTC).isoformat(),
            "exporters": {k: v.to_json() for k, v in sorted(self.states.items())},
        }
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def table(self) -> pl.DataFrame:
        """One row per exporter and observation domain, for display."""
        rows = []
        for exporter, st in sorted(self.states.items()):
            for key, d in sorted(st.domains.items()):
                protocol, _, domain = key.partition("/")
                templates = sum(1 for t in st.templates if t.startswith(f"{protocol}/{domain}/"))
                last = (
                    datetime.fromtimestamp(d.last_seen_us / 1e6, UTC).isoformat(timespec="seconds")
                    if d.last_seen_us
                    else ""
                )
                rows.append(
                    {
                        "exporter": exporter,
                        "domain": int(domain) if domain.isdigit() else domain,
                        "protocol": protocol,
                        "templates": templates,
                        "flows": d.flows,
                        "packets": d.packets,
                        "sequence_gaps": d.sequence_gaps,
                        "lost": d.lost,
                        "errors": d.errors,
                        "sampling": d.sampling,
                        "last_seen": last,
                    }
                )
        schema = {
            "exporter": pl.String,
            "domain": pl.Int64,
            "protocol": pl.String,
            "templates": pl.Int64,
            "flows": pl.Int64,
            "packets": pl.Int64,
            "sequence_gaps": pl.Int64,
            "lost": pl.Int64,
            "errors": pl.Int64,
            "sampling": pl.Int64,
            "last_seen": pl.String,
        }
        return pl.DataFrame(rows, schema=schema)
