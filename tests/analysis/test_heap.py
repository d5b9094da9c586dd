"""trim_heap finds glibc's malloc_trim on Linux and returns freed heap pages to the system."""

import ctypes
import platform
import sys

import pytest

from tinyinterp.analysis.heap import _malloc_trim, trim_heap

glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))


@pytest.mark.skipif(not glibc, reason="malloc_trim is glibc-only; elsewhere trim_heap is a no-op")
def test_trim_heap_releases_freed_blocks():
    assert _malloc_trim() is not None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 KB blocks stay below glibc's mmap threshold: they live in the heap, and freeing all but
    # the last leaves a 60 MB hole that plain free() cannot hand back (the top block pins it)
    blocks = [libc.malloc(64 * 1024) for _ in range(960)]
    for b in blocks:
        ctypes.memset(b, 1, 64 * 1024)
    for b in blocks[:-1]:
        libc.free(b)
    before = rss_kb()
    assert trim_heap() is True
    assert before - rss_kb() > 30_000  # at least 30 MB of the 60 MB went back
    libc.free(blocks[-1])
