"""Keeping freed memory for reuse: large arrays without a page fault per page.

glibc serves every allocation above its mmap threshold (at most 32 MiB by default)
with a fresh mapping and unmaps it when freed. The engine makes and drops arrays of
tens to hundreds of MiB for every batch (a column of five million flows is 40 MiB),
so each one is faulted in page by page again: a fifth of the aggregation's time.
Raising the threshold and the heap's trim threshold keeps freed blocks in the heap
for the next batch. The process's resident memory then stays near its peak instead
of returning between batches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("flowhawk.memory")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # allocations below 1 GiB come from the heap
TRIM_THRESHOLD = 2 << 30  # up to 2 GiB of free heap is kept for reuse
_done: bool | None = None


def reuse_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed blocks (once per process); False where the
    C library is not glibc."""
    global _done
    if _done is None:
        _done = False
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            mallopt = getattr(libc, "mallopt", None)
        except OSError:
            mallopt = None
        if mallopt is not None:
            _done = bool(
                mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
        log.debug("freed memory kept for reuse: %s", _done)
    return _done
