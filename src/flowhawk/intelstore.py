"""Threat intelligence in a data directory, and the set a run detects with.

``flowhawk intel update`` loads the feeds once and keeps the result as a snapshot,
so runs and lookups open it without parsing any feed::

    DATA/intel/<version>/indicators.parquet, evidence.parquet, feeds.json
    DATA/intel/current            the version in use (replaced atomically)

A snapshot is written into a temporary folder and renamed into place before
``current`` names it, so a reader sees the old snapshot or the new one, never half
of one. Older snapshots are kept (a version is a content hash: updating with the
same feeds writes nothing new).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from flowhawk.config import Config
from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import StateError
from flowhawk.intel import IntelSet, load
from flowhawk.intel.allow import AllowList


def intel_dir(data_dir: Path) -> Path:
    return data_dir / "intel"


def save_current(intel: IntelSet, data_dir: Path) -> Path:
    """Store ``intel`` as the data directory's current snapshot; returns its folder."""
    root = intel_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / intel.version
    if not folder.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{intel.version}-", dir=root))
        try:
            intel.save(tmp)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    pointer = root / ".current.tmp"
    pointer.write_text(intel.version + "\n")
    os.replace(pointer, root / "current")
    return folder


def current_folder(data_dir: Path) -> Path | None:
    """The folder of the current snapshot, or None when intel was never updated."""
    pointer = intel_dir(data_dir) / "current"
    if not pointer.is_file():
        return None
    folder = intel_dir(data_dir) / pointer.read_text().strip()
    if not folder.is_dir():
        raise StateError(f"{pointer} names snapshot {folder.name}, which is missing")
    return folder


def open_current(data_dir: Path) -> IntelSet | None:
    """The current snapshot of ``data_dir``, or None when there is none."""
    folder = current_folder(data_dir)
    return IntelSet.open(folder) if folder is not None else None


def load_configured(
    cfg: Config, extra: Sequence[str | Path] = (), diagnostics: Diagnostics | None = None
) -> IntelSet:
    """The configured feeds and ``extra`` ones (files, folders, URLs), freshly loaded."""
    return load([*cfg.intel.feeds, *extra], cfg.intel, diagnostics=diagnostics)


def for_run(cfg: Config, data_dir: Path, extra: Sequence[str | Path] = ()) -> IntelSet | None:
    """The set a run detects with: the configured feeds and ``extra`` when there are
    any, else the data directory's current snapshot, else None (no intel)."""
    found = load_configured(cfg, extra) if cfg.intel.feeds or extra else open_current(data_dir)
    if found is not None and cfg.intel.allow:
        found.allowed = AllowList(cfg.intel.allow)
    return found
