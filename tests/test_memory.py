"""The allocator setting the engine makes once per process."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import numpy as np
import pytest

from flowhawk import memory


class _MallInfo2(ctypes.Structure):
    _FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
    _fields_ = [(n, ctypes.c_size_t) for n in (*_FIELDS, "uordblks", "fordblks", "keepcost")]


def _mapped_bytes() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblkhd)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_large_arrays_come_from_the_heap_and_are_reused():
    assert memory.reuse_freed_memory()
    assert memory.reuse_freed_memory()  # once per process: same answer
    before = _mapped_bytes()
    a = np.ones(100_000_000 // 8)  # 100 MB: not a mapping of its own any more
    assert _mapped_bytes() - before < 10_000_000
    assert a.sum() == len(a)
