"""What the studies share: where their results go and the commit a result was measured at.

Each study runs as ``python studies/<name>.py`` and puts the repository root on ``sys.path`` first, so that
``studies.`` and ``benchmarks.`` import. Paths come from ``benchmarks.common`` (one definition for the
harness and the studies).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.common import PROJECT_ROOT, RESULTS_DIR

__all__ = ["PROJECT_ROOT", "RESULTS_DIR", "short_commit"]


def short_commit(root: Path = PROJECT_ROOT) -> str:
    """The checkout's abbreviated HEAD commit (recorded with every study row), or ``unknown`` without git."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
