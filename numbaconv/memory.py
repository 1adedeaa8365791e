"""Keeping freed memory in the process, so that per-call buffers do not page-fault.

Every layer of a network call allocates its output and often a padded input copy: megabytes per layer.
glibc serves large blocks with fresh ``mmap`` calls and gives freed memory back to the OS (blocks above
``M_MMAP_THRESHOLD``, and the heap top above ``M_TRIM_THRESHOLD``), so the next call touches pages the
kernel must fault in and zero again.  On this project's 2-core VM that doubled MobileNetV2's batch-1
latency (24.7 ms -> 13.2 ms once freed memory is kept; perf/NOTES.md).  Raising both thresholds keeps
freed blocks in the heap for reuse; the process's memory then stays at its peak.

The setting is process-wide, so it is never an import side effect: ``Network`` applies it when built
(``retain_memory=False`` opts out), and anyone else can call ``retain_freed_memory()``.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 1 << 30

_APPLIED: list[bool] = []


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed blocks up to 32 MiB in the heap instead of returning them to the OS.

    Returns True when applied (Linux with glibc), False elsewhere (a no-op: other allocators differ).
    """
    if not _APPLIED:
        applied = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
                    bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
            except (OSError, AttributeError):  # musl or another libc: no mallopt
                applied = False
        _APPLIED.append(applied)
    return _APPLIED[0]
