"""Compiled per-pixel kernels (numba) for the runtime's hottest passes over tiles (issue 21).

The runtime's own work is many numpy passes over each tile (cut, finite check, subtract, divide, ...): each
reads and writes the whole tile, so on two cores they cost about as much CPU as the INT8 engines. A kernel
here does the same float32 operations in the same order, element by element in one pass, so its results
are the same bits as the numpy path's (``tests/test_runtime_kernels.py`` checks that on every kernel).

They are opt-in (``STARS_EDGE_KERNELS=numba``, with numba from the ``fast`` extra), because a process pays
for them before they pay back: importing numba and loading the kernels' machine code from its disk cache
cost about a second of CPU per process (the first run on a machine also compiles them, ~2.5 s), and they
save about a tenth of a warm run's wall time on a clean scene (docs/RUNTIME.md, "Compiled kernels"). So
they suit long-lived processes (``run-batch`` workers, a sensor's stream, ``Predictor`` reused over many
scenes), not one 4096 px scene per process: ``run-batch`` workers turn them on for themselves
(``prefer_compiled``) where numba is installed, and ``STARS_EDGE_KERNELS`` still decides where it is set.
Without them the runtime takes its numpy path. They load on a background thread (``compiled`` starts it);
tiles prepared before they are ready take the numpy path, which gives the same bits.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
import warnings
from functools import cache
from types import ModuleType

from stars_edge.errors import ConfigError

__all__ = ["KERNELS_ENV", "compiled", "kernels_choice", "load", "numba_installed", "prefer_compiled"]

#: Environment variable that picks the kernels: ``numpy`` (the default) or ``numba``.
KERNELS_ENV = "STARS_EDGE_KERNELS"
CHOICES = ("numba", "numpy")
#: The choice where ``STARS_EDGE_KERNELS`` is unset: ``numpy``, or ``numba`` once ``prefer_compiled`` ran.
_default = "numpy"


def kernels_choice() -> str:
    """``STARS_EDGE_KERNELS``: ``"numpy"`` or ``"numba"``; unset or empty, the process's default (``numpy``
    unless ``prefer_compiled`` ran). Asking for ``numba`` where it is not installed is an error, not a silent
    fallback."""
    asked = os.environ.get(KERNELS_ENV, "").strip().lower() or _default
    if asked not in CHOICES:
        raise ConfigError(f"{KERNELS_ENV}={asked!r}: choose one of {', '.join(CHOICES)}")
    if asked == "numba" and not numba_installed():
        raise ConfigError(
            f"{KERNELS_ENV}=numba but numba is not installed; install stars-edge[fast] or unset {KERNELS_ENV}"
        )
    return asked


def prefer_compiled() -> str:
    """Make the compiled kernels this process's default where numba is installed (a long-lived process:
    ``run-batch`` workers, whose later scenes repay the second it takes to load them); returns the choice
    now in force (``STARS_EDGE_KERNELS``, where set, still decides)."""
    global _default
    if numba_installed():
        _default = "numba"
    return kernels_choice()


@cache
def numba_installed() -> bool:
    """Whether numba can be imported (looked up once: the runtime asks per tile)."""
    return importlib.util.find_spec("numba") is not None


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
    """The compiled kernels (``runtime.kernels_numba``) once loaded, or None: while they load in the
    background (the first call starts that), or where the runtime takes its numpy path
    (``kernels_choice``). Never blocks. Kernels that fail to load raise where ``STARS_EDGE_KERNELS=numba``
    asked for them; where only ``prefer_compiled`` made them the default, the process warns once and goes
    back to the numpy path (the same bits), so a broken numba install does not fail a batch's scenes."""
    global _default
    if kernels_choice() != "numba":
        return None
    try:
        return _LOADER.ready()
    except ConfigError as exc:
        if os.environ.get(KERNELS_ENV, "").strip():
            raise
        _default = "numpy"
        warnings.warn(f"{exc}; running the numpy path instead", RuntimeWarning, stacklevel=2)
        return None


def load() -> ModuleType | None:
    """``compiled``, waiting for the kernels to load (tests, benchmarks that time warm runs)."""
    if kernels_choice() != "numba":
        return None
    return _LOADER.wait()
