"""What a batch hands back: per-scene results, the summary files and the one-line reports, and the
``BatchInterrupted`` a stopped batch raises with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runtime.batch.summary import SceneResult


@dataclass
class BatchResult:
    """Per-scene results (in scene-list order), where the summary went and how long the batch took."""

    scenes: list[SceneResult]
    seconds: float
    summary_csv: Path
    summary_json: Path
    dashboard: str | None = None
    #: Scenes of the list without a result: what an interrupted batch left (in the list's order).
    unfinished: list[str] = field(default_factory=list)
    #: Why the summary could not be written (one line), or None when it was.
    summary_error: str | None = None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.scenes)

    @property
    def ok(self) -> bool:
        """Every scene done or skipped (the CLI's exit code 0)."""
        return all(r.ok for r in self.scenes) and not self.unfinished

    def stopped(self) -> str:
        """One line for an interrupted batch: how far it got and where its summary is."""
        total = len(self.scenes) + len(self.unfinished)
        line = (
            f"stopped after {len(self.scenes)} of {total} scenes ({self.count('done')} done, "
            f"{self.count('skipped')} skipped, {self.count('failed')} failed); "
        )
        if self.summary_error is None:
            line += f"summary: {self.summary_csv}"
        else:
            line += f"no summary ({self.summary_error})"
        return line + "; scenes that were running continue from their journals"

    def format(self) -> str:
        """A short report for the end of ``stars-edge run-batch``."""
        processed = sum(r.processed_pixels for r in self.scenes)
        rate = processed / 1e6 / self.seconds if self.seconds > 0 else float("nan")
        lines = [
            f"{len(self.scenes)} scenes: {self.count('done')} done, {self.count('skipped')} skipped, "
            f"{self.count('failed')} failed in {self.seconds:.1f} s ({rate:.2f} Mpx/s)"
        ]
        lines += [f"  failed {r.id}: {r.error}" for r in self.scenes if r.status == "failed"]
        if self.summary_error is None:
            lines.append(f"summary: {self.summary_csv} and {self.summary_json.name}")
        return "\n".join(lines)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a batch after its summary was written; ``result`` holds the scenes that
    finished and those that did not (``stopped()`` says it in one line)."""

    def __init__(self, result: BatchResult) -> None:
        super().__init__(result.stopped())
        self.result = result
