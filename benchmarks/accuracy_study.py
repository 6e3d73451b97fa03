"""One accuracy study: its settings, parts, results log, work folder and the real-data folder.

Its own module so that the runner (``accuracy.py``) and the renderer (``accuracy_report.py``) both use it
without importing each other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from benchmarks.accuracy_runs import PARTS, StudySettings
from benchmarks.accuracy_sen1floods11 import SEN1FLOODS11
from benchmarks.accuracy_store import ROOT, settings_id

RESULTS = ROOT / "benchmarks" / "results"
RESULTS_LOG = RESULTS / "accuracy_study.jsonl"


@dataclasses.dataclass
class Study:
    """One study: its settings, parts, results log, work folder and the real-data folder."""

    settings: StudySettings
    parts: tuple[str, ...] = PARTS
    log: Path = RESULTS_LOG
    work: Path = Path("/tmp/stars_edge_accuracy")
    sen1floods11: Path = SEN1FLOODS11
    only: tuple[str, ...] = ()  # run just these keys, in this order (empty: every pending run)

    @property
    def settings_id(self) -> str:
        return settings_id(self.settings.to_dict())
