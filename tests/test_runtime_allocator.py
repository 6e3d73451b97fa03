"""``runtime/allocator.py`` (opt-in, ``STARS_EDGE_MALLOC=retain``): freed tile buffers are reused instead of
faulted in again; off unless asked for, and the user's own glibc settings win."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.allocator import retain_freed_buffers, user_configured

ROOT = Path(__file__).resolve().parents[1]

#: In a fresh process: allocate, free and allocate again a 7 MiB buffer (a 512 px tile of 7 bands) and
#: print the page faults of the second allocation. glibc alone serves the first from mmap, unmaps it on
#: free, and serves the second from fresh heap pages; with the buffers retained the second reuses the first.
PROBE = """
import resource, sys
import numpy as np
from runtime.allocator import retain_freed_buffers
print(retain_freed_buffers())
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
first = np.ones(7 * 2**20 // 4, dtype=np.float32)
del first
before = faults()
second = np.ones(7 * 2**20 // 4, dtype=np.float32)
print(faults() - before)
"""


def _second_allocation_faults(switch: str | None) -> tuple[str, int]:
    """What ``retain_freed_buffers`` did in a fresh process and the faults of the second allocation."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if switch is not None:
        env["STARS_EDGE_MALLOC"] = switch
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    result, faults = done.stdout.split()
    return result, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_a_freed_tile_buffer_is_reused_without_page_faults_when_asked() -> None:
    (off, system), (on, retained) = _second_allocation_faults(None), _second_allocation_faults("retain")
    assert off == "off" and on == "retained"
    assert system > 100  # 7 MiB of fresh pages (4 KiB each, or a few huge pages and their neighbours)
    assert retained < system / 10
    assert _second_allocation_faults("system")[0] == "off"


@pytest.mark.parametrize(
    ("environ", "chosen"),
    [
        ({}, None),
        ({"PATH": "/usr/bin"}, None),
        ({"MALLOC_ARENA_MAX_": "2"}, "MALLOC_ARENA_MAX_"),
        ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "MALLOC_MMAP_THRESHOLD_"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "GLIBC_TUNABLES"),
        ({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, None),
    ],
)
def test_the_users_own_glibc_settings_are_recognised(environ: dict[str, str], chosen: str | None) -> None:
    assert user_configured(environ) == chosen


def test_the_users_own_glibc_settings_win_over_the_switch() -> None:
    from runtime.allocator import _apply

    asked = {"STARS_EDGE_MALLOC": "retain", "MALLOC_ARENA_MAX_": "2"}
    assert _apply(asked) == "user setting MALLOC_ARENA_MAX_"
    assert _apply({"MALLOC_ARENA_MAX_": "2"}) == "off"


def test_the_predictor_reports_what_it_did_once_per_process() -> None:
    first = retain_freed_buffers()
    assert first == retain_freed_buffers()
    assert first in ("off", "retained", "not glibc") or first.startswith("user setting ")
