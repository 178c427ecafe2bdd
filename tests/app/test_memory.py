"""The API keeps freed memory for reuse instead of handing it back after every upload (#3)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Run in a fresh interpreter: the allocator's settings are per process and stay once set.
# It allocates what an upload allocates (200 chunks of 64 KiB, as uvicorn hands a body over)
# and a 3 MiB buffer, frees them, and reports what glibc's mallinfo2 saw.
PROBE = textwrap.dedent(
    """
    import ctypes, json, sys
    from app.memory import keep_freed_memory

    class MallInfo(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo
    kept = keep_freed_memory() if sys.argv[1] == "keep" else None
    mapped_before = libc.mallinfo2().hblkhd
    buffer = bytes(3 * 1024 * 1024)
    mapped = libc.mallinfo2().hblkhd - mapped_before
    del buffer
    chunks = [bytes(65536) for _ in range(200)]
    heap_in_use = libc.mallinfo2().arena
    del chunks
    heap_after = libc.mallinfo2().arena
    print(json.dumps({"kept": kept, "mapped": mapped, "heap": heap_in_use, "after": heap_after}))
    """
)


def _probe(mode: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out))


def test_freed_upload_memory_is_kept_for_the_next_request() -> None:
    kept = _probe("keep")
    assert kept["kept"] is True
    assert kept["mapped"] == 0  # a 3 MiB buffer comes from the reusable heap, not a mapping
    assert kept["heap"] > 10_000_000  # the chunks (13 MB) were on the heap
    assert kept["after"] > 0.9 * kept["heap"]  # and their memory stays for the next request


def test_the_default_allocator_hands_the_same_memory_back() -> None:
    # What the setting changes: without it, the same allocations go back to the system.
    default = _probe("default")
    assert default["mapped"] >= 3 * 1024 * 1024
    assert default["after"] < 0.5 * default["heap"]
