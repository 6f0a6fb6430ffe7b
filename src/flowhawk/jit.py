"""numba, configured for flowhawk: kernels import it from here so its cache lives in
``~/.cache/flowhawk/numba`` (writable even when site-packages is not) unless
``NUMBA_CACHE_DIR`` says otherwise. Imported only by kernel modules, never eagerly."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "flowhawk" / "numba"))

import numba

__all__ = ["numba"]
