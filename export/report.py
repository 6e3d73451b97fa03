"""``BuildReport``: what a build did, shared by ``export/build.py`` and ``export/from_onnx.py``.

In a module of its own so that neither builder imports the other for it (``build`` -> ``from_onnx`` is the
only direction left: ``build_engines --backend tensorrt`` reuses the TensorRT step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stars_edge.manifest import Manifest


@dataclass
class BuildReport:
    """What a build did, for the CLI to print and tests to check."""

    manifest_path: Path
    manifest: Manifest
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Per pattern name, how its checkpoint was chosen when several were given (the manifest entries'
    #: ``selection``); empty for a one-checkpoint build.
    selections: dict[str, dict[str, Any]] = field(default_factory=dict)
