"""Opt-in: freed tile buffers kept for reuse instead of handed back to the OS (glibc only;
``STARS_EDGE_MALLOC=retain``).

A scene allocates and frees the same few buffer sizes thousands of times (a 512 px tile of 7 bands is
7 MiB; logits, masks and GDAL's blocks besides). glibc serves every block above its mmap threshold (128 KiB
at start, raised only as it sees such blocks freed) with a fresh ``mmap`` and returns it with ``munmap``, so
each buffer's pages are faulted in and zeroed by the kernel again: ``perf`` put 12 % of a process's CPU in
the kernel's ``clear_page`` on the 4096 px Sentinel-2-like scene. With blocks up to
``MMAP_THRESHOLD_BYTES`` served from the heap and freed memory kept (``TRIM_THRESHOLD_BYTES``) the buffers
are reused: the first scene of a process 1.085x faster, 0.26 CPU-s less (4 rounds, quiet 2-core machine).

Off by default because the heap then fragments and peak memory grows with the scene: +33 MiB (7 %) at
1024 x 32768 px and +56 MiB (10 %) at 8192 x 8192 px (``benchmarks/runtime_memory.py``; width ratio 1.018
to 1.082, both dimensions 1.099 to 1.163), where the runtime promises memory flat in both dimensions. For a
ground station that runs one scene per process with memory to spare. Process-wide, applied once by the first
``Predictor``; glibc settings of the user's own (any ``MALLOC_*`` variable, a ``glibc.malloc`` tunable in
``GLIBC_TUNABLES``) win. Details: docs/RUNTIME.md, performance.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Mapping

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap and are reused (glibc's largest allowed value on 64-bit:
#: half its 64 MiB heap); a batch of four 512 px tiles of 7 bands (28 MiB) still fits.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Freed memory at the heap's top goes back to the OS only beyond this.
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
#: ``STARS_EDGE_MALLOC=retain`` turns it on; anything else (or unset) leaves glibc's allocator as it is.
SWITCH = "STARS_EDGE_MALLOC"

_lock = threading.Lock()
_state: dict[str, str] = {}


def user_configured(environ: Mapping[str, str] = os.environ) -> str | None:
    """The glibc variable by which the user configured the allocator themselves, if any."""
    for name in environ:
        if name.startswith("MALLOC_") and name.endswith("_"):
            return name
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def retain_freed_buffers(environ: Mapping[str, str] = os.environ) -> str:
    """Keep freed buffers in this process for reuse where ``STARS_EDGE_MALLOC=retain`` asks for it (see the
    module's docstring); decided once per process.

    Returns what was done (kept as ``Predictor.allocator``): ``"retained"``, or why not (``"off"``: not asked
    for, ``"user setting MALLOC_..."``, ``"not glibc"``, ``"refused by glibc"``)."""
    with _lock:
        if "result" not in _state:
            _state["result"] = _apply(environ)
        return _state["result"]


def _apply(environ: Mapping[str, str]) -> str:
    if environ.get(SWITCH, "").lower() != "retain":
        return "off"
    chosen = user_configured(environ)
    if chosen is not None:
        return f"user setting {chosen}"
    if not sys.platform.startswith("linux"):
        return "not glibc"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return "not glibc"
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: their mallopt differs or does nothing
        return "not glibc"
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not all(mallopt(parameter, value) for parameter, value in settings):
        return "refused by glibc"
    return "retained"
