"""The benchmarks' one error type, in a module of its own so that every helper module can raise it."""

from __future__ import annotations

from stars_edge.errors import StarsEdgeError


class BenchmarkError(StarsEdgeError):
    """A benchmark cannot run as asked (bad option, missing input, a measurement that failed)."""
