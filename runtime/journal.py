"""Resume: the journal of a run and when to checkpoint it.

The journal (``.NAME.journal.json`` beside the class map) records the column chunk being processed, how
many of its raster rows are in the partial files (always whole block bands), the pixel counts of those rows
and a fingerprint of everything that shapes the result. It is rewritten atomically (and fsynced) at every
checkpoint, after the partial files were flushed and fsynced, so a kill -9 or a power cut loses at most the
work since the last checkpoint; ``--resume`` refuses a journal written by another model or other settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.outputs import OutputSpec, partial_path
from stars_edge.errors import ManifestError, OutputError
from stars_edge.io import write_json_atomic

JOURNAL_VERSION = 2
#: Checkpoint at least every this many tile rows, and at least every this many seconds (whichever first,
#: at the next finished block band).
CHECKPOINT_ROWS = 4
CHECKPOINT_SECONDS = 30.0


@dataclass
class Journal:
    """Progress of one run: chunk, rows written in it, the pixel counts so far and the run's fingerprint."""

    path: Path
    fingerprint: dict[str, Any]
    chunk: int = 0
    rows_written: int = 0
    pattern_pixels: dict[str, int] = field(default_factory=dict)

    @property
    def started(self) -> bool:
        return self.chunk > 0 or self.rows_written > 0

    def save(self) -> None:
        """Write the journal atomically (``write_json_atomic`` fsyncs the file and its folder)."""
        write_json_atomic(
            self.path,
            {
                "version": JOURNAL_VERSION,
                "fingerprint": self.fingerprint,
                "chunk": self.chunk,
                "rows_written": self.rows_written,
                "pattern_pixels": self.pattern_pixels,
            },
        )

    @classmethod
    def resume_or_new(cls, path: Path, fingerprint: dict[str, Any], outputs: list[OutputSpec]) -> Journal:
        """The journal to continue from, checked to belong to this very run; new when there is none."""
        if not path.is_file() or not all(partial_path(s.target).is_file() for s in outputs):
            return cls(path, fingerprint)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != JOURNAL_VERSION:
                raise OutputError(f"{path} was written by another stars-edge version; delete it and rerun")
            chunk, rows = int(data["chunk"]), int(data["rows_written"])
            recorded = dict(data["fingerprint"])
            pixels = {str(k): int(v) for k, v in data.get("pattern_pixels", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OutputError(f"{path} is not a valid resume journal ({exc}); delete it and rerun") from exc
        if recorded.get("model") != fingerprint.get("model"):
            old, new = recorded.get("model", {}), fingerprint.get("model", {})
            raise ManifestError(
                f"{path} was written by model {str(old.get('checkpoint_sha256'))[:12]} with "
                f"{old.get('classes')} classes, the engines are model "
                f"{str(new.get('checkpoint_sha256'))[:12]} "
                f"with {new.get('classes')} classes; rerun without --resume or use the original engines"
            )
        changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
        if changed:
            raise OutputError(
                f"{path} belongs to a run with different {', '.join(changed)}; rerun without --resume "
                "or with the original settings"
            )
        return cls(path, fingerprint, chunk, rows, pixels)


class CheckpointPolicy:
    """Decides when a finished block band is worth a checkpoint: every ``rows`` tile rows or ``seconds``."""

    def __init__(self, rows: int = CHECKPOINT_ROWS, seconds: float = CHECKPOINT_SECONDS) -> None:
        if rows < 1 or seconds <= 0:
            raise OutputError(f"checkpoint interval must be >= 1 row and > 0 s, got {rows}, {seconds}")
        self.rows = rows
        self.seconds = seconds
        self._since_rows = 0
        self._since = time.monotonic()

    def tile_row_done(self) -> None:
        self._since_rows += 1

    def due(self) -> bool:
        return self._since_rows >= self.rows or time.monotonic() - self._since >= self.seconds

    def reset(self) -> None:
        self._since_rows = 0
        self._since = time.monotonic()
