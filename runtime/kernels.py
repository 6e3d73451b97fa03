"""Compiled per-pixel kernels for the runtime's hottest passes over tiles (issue 21): C or numba.

The runtime's own work is many numpy passes over each tile (cut, finite check, subtract, divide, ...): each
reads and writes the whole tile, so on two cores they cost about as much CPU as the INT8 engines. A kernel
here does the same float32 operations in the same order, element by element in one pass, so its results
are the same bits as the numpy path's (``tests/test_runtime_kernels.py`` checks that on every kernel).

Two builds of the same kernels: ``c`` (``runtime/_kernels_c.c``, compiled when the package is installed,
called through ``runtime/kernels_c.py``) and ``numba`` (``runtime/kernels_numba.py``, the ``fast`` extra).
The C library loads in about a millisecond, so it is the default wherever the install built it; numba costs
about a second of CPU per process to import and load its cached machine code (2.5 s the first time on a
machine), which only a long-lived process repays, so it is the default only for ``run-batch`` workers
(``prefer_compiled``) where the C library is missing. Without either the runtime takes its numpy path.
``STARS_EDGE_KERNELS`` (``c``, ``numba``, ``numpy``) decides where it is set; asking for a build that is not
there is an error. numba's kernels load on a background thread; tiles prepared before they are ready take
the numpy path, which gives the same bits.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
import warnings
from functools import cache
from types import ModuleType

import numpy as np

from stars_edge.errors import ConfigError

__all__ = [
    "KERNELS_ENV",
    "c_built",
    "compiled",
    "kernels_choice",
    "load",
    "numba_installed",
    "prefer_compiled",
    "rows_contiguous",
]

#: Environment variable that picks the kernels: ``c``, ``numba`` or ``numpy``.
KERNELS_ENV = "STARS_EDGE_KERNELS"
CHOICES = ("c", "numba", "numpy")
#: The choice where ``STARS_EDGE_KERNELS`` is unset, once decided: None means ``c`` where the library was
#: built, else ``numpy``; ``prefer_compiled`` may make it ``numba``, a failed load ``numpy``.
_default: str | None = None


def kernels_choice() -> str:
    """``STARS_EDGE_KERNELS``: ``"c"``, ``"numba"`` or ``"numpy"``; unset or empty, the process's default
    (``c`` where the install built it, else ``numpy``; see ``prefer_compiled``). Asking for a build that is
    not there is an error, not a silent fallback."""
    asked = os.environ.get(KERNELS_ENV, "").strip().lower() or _default or ("c" if c_built() else "numpy")
    if asked not in CHOICES:
        raise ConfigError(f"{KERNELS_ENV}={asked!r}: choose one of {', '.join(CHOICES)}")
    if asked == "numba" and not numba_installed():
        raise ConfigError(
            f"{KERNELS_ENV}=numba but numba is not installed; install stars-edge[fast] or unset {KERNELS_ENV}"
        )
    if asked == "c" and not c_built():
        raise ConfigError(
            f"{KERNELS_ENV}=c but the C kernels were not built (runtime/_kernels_c.c compiles when "
            f"stars-edge is installed with a C compiler present); reinstall with gcc or clang, or unset "
            f"{KERNELS_ENV}"
        )
    return asked


def rows_contiguous(array: np.ndarray) -> bool:
    """Whether the compiled loops read ``array`` as numpy does: its last axis contiguous, its strides whole
    elements, aligned and in this machine's byte order (a big-endian ``>u2`` array is also named
    ``uint16``: read natively it would give other values). Others take the numpy path."""
    item = array.itemsize
    layout = array.strides[-1] == item and all(s % item == 0 for s in array.strides)
    return layout and array.flags.aligned and array.dtype.isnative


def prefer_compiled() -> str:
    """Make compiled kernels this process's default (a long-lived process: ``run-batch`` workers): the C
    library where it was built (the default already), else numba where installed, whose load (about a
    second) later scenes repay; returns the choice now in force (``STARS_EDGE_KERNELS``, where set, still
    decides)."""
    global _default
    if not c_built() and numba_installed():
        _default = "numba"
    return kernels_choice()


@cache
def numba_installed() -> bool:
    """Whether numba can be imported (looked up once: the runtime asks per tile)."""
    return importlib.util.find_spec("numba") is not None


@cache
def c_built() -> bool:
    """Whether the install built the C kernels' library (looked up once)."""
    return importlib.util.find_spec("runtime._kernels_c") is not None


@cache
def _c_kernels() -> ModuleType:
    """``runtime.kernels_c``, loaded on the caller's thread (about a millisecond); a library that fails to
    load (built from other sources, broken) is a ConfigError that names the fix."""
    try:
        return importlib.import_module("runtime.kernels_c")
    except (ImportError, OSError, AttributeError) as exc:
        raise ConfigError(
            f"the C kernels failed to load ({type(exc).__name__}: {exc}); reinstall stars-edge or set "
            f"{KERNELS_ENV}=numpy"
        ) from exc


class _Loader:
    """Imports ``runtime.kernels_numba`` and loads its machine code (``warm``) once, on a background thread:
    numba's import and its cache cost about a second of CPU per process, which the first tiles would
    otherwise wait for. Until the kernels are ready the runtime takes its numpy path (the same bits), so a
    run's outputs do not depend on when they become ready."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._module: ModuleType | None = None
        self._error: BaseException | None = None

    def ready(self) -> ModuleType | None:
        """The kernels when loaded, else None; starts loading on the first call. A failed load (a broken
        numba install) is raised here, on the caller's thread, not swallowed."""
        if self._module is not None:
            return self._module
        with self._lock:
            if self._error is not None:
                raise ConfigError(
                    f"the compiled kernels failed to load ({type(self._error).__name__}: {self._error}); "
                    f"repair numba or set {KERNELS_ENV}=numpy"
                ) from self._error
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="stars-edge-kernels", daemon=True)
                self._thread.start()
        return self._module

    def wait(self) -> ModuleType:
        """The kernels, loading them on this thread if need be (tests, benchmarks)."""
        self.ready()
        assert self._thread is not None
        self._thread.join()
        module = self.ready()
        assert module is not None
        return module

    def _load(self) -> None:
        try:
            module = importlib.import_module("runtime.kernels_numba")
            module.warm()
        except BaseException as exc:  # handed to the next caller of ``ready``
            with self._lock:
                self._error = exc
            return
        self._module = module


_LOADER = _Loader()


def compiled() -> ModuleType | None:
    """The compiled kernels (``runtime.kernels_c``, or ``runtime.kernels_numba`` once loaded), or None:
    while numba's load in the background (the first call starts that), or where the runtime takes its numpy
    path (``kernels_choice``). Never blocks on numba. Kernels that fail to load raise where
    ``STARS_EDGE_KERNELS`` asked for them; where they were only the default, the process warns once and goes
    back to the numpy path (the same bits), so a broken build does not fail a batch's scenes."""
    global _default
    choice = kernels_choice()
    if choice == "numpy":
        return None
    try:
        return _c_kernels() if choice == "c" else _LOADER.ready()
    except ConfigError as exc:
        if os.environ.get(KERNELS_ENV, "").strip():
            raise
        _default = "numpy"
        warnings.warn(f"{exc}; running the numpy path instead", RuntimeWarning, stacklevel=2)
        return None


def load() -> ModuleType | None:
    """``compiled``, waiting for numba's kernels to load (tests, benchmarks that time warm runs)."""
    if kernels_choice() != "numba":
        return compiled()
    return _LOADER.wait()
