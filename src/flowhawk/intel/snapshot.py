"""A loaded :class:`~flowhawk.intel.intelset.IntelSet` written to a folder and read back.

The folder holds what the set is made of, never the feeds themselves, so opening it
parses nothing: ``indicators.parquet`` (values with their reputations),
``evidence.parquet`` (which feed version said what) and ``feeds.json`` (the set's
version, the time reputations were computed at, each feed's name, origin, format,
content version, load time, weight, category and entry count). The lookup tables are
rebuilt from the indicators when the set is opened.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from flowhawk.errors import InputError

if TYPE_CHECKING:
    from flowhawk.intel.intelset import IntelSet

FILES = ("indicators.parquet", "evidence.parquet", "feeds.json")
FORMAT = 1


def save(intel: IntelSet, folder: Path) -> Path:
    """Write ``intel`` into ``folder`` (created if needed); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    intel.indicators.write_parquet(folder / "indicators.parquet")
    intel.evidence.write_parquet(folder / "evidence.parquet")
    feeds = [asdict(f) | {"loaded_at": f.loaded_at.isoformat()} for f in intel.feeds]
    meta = {
        "format": FORMAT,
        "version": intel.version,
        "as_of": intel.as_of.isoformat(),
        "feeds": feeds,
    }
    (folder / "feeds.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def open_set(folder: Path) -> IntelSet:
    """The set saved in ``folder``; :class:`InputError` naming it when it is not one."""
    from flowhawk.intel.intelset import FeedInfo, IntelSet

    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise InputError(str(folder), f"is not a saved intel set (no {', '.join(missing)})")
    try:
        meta = json.loads((folder / "feeds.json").read_text())
        indicators = pl.read_parquet(folder / "indicators.parquet")
        evidence = pl.read_parquet(folder / "evidence.parquet")
        feeds = [
            FeedInfo(**(f | {"loaded_at": datetime.fromisoformat(f["loaded_at"])}))
            for f in meta["feeds"]
        ]
        version, as_of = meta["version"], datetime.fromisoformat(meta["as_of"])
    except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError) as exc:
        raise InputError(str(folder), f"saved intel set cannot be read: {exc}") from None
    return IntelSet(feeds, indicators, evidence, version, as_of)
