"""CPUs this process may run on (its affinity, not the host's): what thread and stream defaults divide."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPUs this process may run on (its affinity where the OS has one), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
