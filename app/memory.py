"""How the process's C allocator hands memory back to the system.

By default glibc returns freed memory at the top of its heap to the system as soon as more
than 128 KiB are free there, and serves allocations above 128 KiB with fresh mappings that are
unmapped again on free. An upload passes through the API as thousands of 64 KiB chunks, so
every request grew the heap by its whole size and gave it back: 11 MB per 12 MB upload,
measured with strace. On a virtual machine, memory handed back is memory the host may take
away, and touching it again costs a fault in the host: the same POST took 25 ms instead of
19 ms (#3).

Keeping up to ``RETAIN_BYTES`` of freed memory for reuse removes those faults. glibc applies
the limit to each of its arenas, not to the process: the event loop's, where uploads arrive,
and one for each thread that allocates (an S3 part buffer is filled in a worker thread). Hence
a modest figure; the upload's chunks are written and freed batch by batch, so a few megabytes
at the top of the event loop's heap are what matters.
"""

from __future__ import annotations

import ctypes

from app.logs import get_logger

log = get_logger("quire.memory")

# glibc's mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Allocations up to this size come from the heap, whose freed memory is reused.
MMAP_THRESHOLD = 4 * 1024 * 1024
# Freed memory at the top of the heap is kept up to this much before it is returned.
RETAIN_BYTES = 16 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Ask glibc to keep recently freed memory for reuse; False where that is not possible
    (another C library), which changes nothing but speed."""
    try:
        # The library's own name: find_library would run ldconfig in a subprocess at start-up.
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, RETAIN_BYTES)
    )
    if not applied:
        log.debug("memory.mallopt_refused")
    return applied
