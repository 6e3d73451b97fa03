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

from runtime.outputs import OutputSpec, check_regular_or_new, committed, discard, os_failure, partial_path
from stars_edge.errors import ConfigError, ManifestError, OutputError
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
    #: Every row is on disk: only the finalisation (overviews, COG, validation, renames) is left.
    finished: bool = False
    #: The scene's size and column chunks, to say where a run stopped.
    height: int = 0
    width: int = 0
    chunks: int = 1

    @property
    def started(self) -> bool:
        return self.chunk > 0 or self.rows_written > 0 or self.finished

    def save(self) -> None:
        """Write the journal atomically (``write_json_atomic`` fsyncs the file and its folder)."""
        try:
            write_json_atomic(
                self.path,
                {
                    "version": JOURNAL_VERSION,
                    "fingerprint": self.fingerprint,
                    "chunk": self.chunk,
                    "rows_written": self.rows_written,
                    "pattern_pixels": self.pattern_pixels,
                    "finished": self.finished,
                    "height": self.height,
                    "width": self.width,
                    "chunks": self.chunks,
                },
            )
        except OSError as exc:
            raise os_failure(self.path, "writing the resume journal", exc) from exc

    def restart(self) -> None:
        """Forget the progress (its partial files were discarded): the run starts from the top."""
        self.chunk, self.rows_written, self.pattern_pixels, self.finished = 0, 0, {}, False

    def remove(self) -> None:
        """Delete the journal once the outputs are committed."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise os_failure(self.path, "removing the resume journal", exc) from exc

    @classmethod
    def open(
        cls,
        path: Path,
        fingerprint: dict[str, Any],
        outputs: list[OutputSpec],
        *,
        resume: bool,
        overwrite: bool,
    ) -> Journal:
        """The journal of this run. ``resume`` continues an interrupted run's journal (a new one when there is
        none); ``overwrite`` discards it. With neither, an existing journal is refused: silently starting
        over would throw an interrupted run's progress away."""
        if resume and overwrite:
            raise ConfigError(
                "--resume continues an interrupted run and --overwrite discards it; pass one of them"
            )
        check_regular_or_new(path)
        if overwrite:
            discard(outputs, path)
            return cls(path, fingerprint)
        if not resume:
            if path.exists():
                target = next((s.target for s in outputs if s.kind == "classes"), outputs[0].target)
                raise OutputError(
                    f"{path} holds the progress of an interrupted run writing {target}; pass --resume to "
                    "continue it or --overwrite to start over"
                )
            discard(outputs)  # partials of a run killed before its first checkpoint: nothing to keep
            return cls(path, fingerprint)
        return cls.resume_or_new(path, fingerprint, outputs)

    @classmethod
    def resume_or_new(cls, path: Path, fingerprint: dict[str, Any], outputs: list[OutputSpec]) -> Journal:
        """The journal to continue from, checked to belong to this very run; new when there is none, or when
        the files it describes are gone (the run then starts over).

        A finished journal (every row on disk, the run stopped while finishing its outputs) needs, for each
        output, its partial or, if the interrupted finalisation already renamed it, its target.
        """
        if not path.is_file():
            return cls(path, fingerprint)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != JOURNAL_VERSION:
                raise OutputError(
                    f"{path} was written by another stars-edge version; pass --overwrite to start over"
                )
            chunk, rows = int(data["chunk"]), int(data["rows_written"])
            recorded = dict(data["fingerprint"])
            pixels = {str(k): int(v) for k, v in data.get("pattern_pixels", {}).items()}
            finished = bool(data.get("finished", False))
            shape = int(data.get("height", 0)), int(data.get("width", 0)), int(data.get("chunks", 1))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OutputError(
                f"{path} is not a valid resume journal ({exc}); pass --overwrite to start over"
            ) from exc
        if recorded.get("model") != fingerprint.get("model"):
            old, new = recorded.get("model", {}), fingerprint.get("model", {})
            raise ManifestError(
                f"{path} was written by model {str(old.get('checkpoint_sha256'))[:12]} with "
                f"{old.get('classes')} classes, the engines are model "
                f"{str(new.get('checkpoint_sha256'))[:12]} "
                f"with {new.get('classes')} classes; pass --overwrite to start over or use the original "
                "engines"
            )
        changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
        if changed:
            raise OutputError(
                f"{path} belongs to a run with different {', '.join(changed)}; pass --overwrite to start "
                "over or rerun with the original settings"
            )
        if finished:
            if all(partial_path(s.target).is_file() or committed(s) for s in outputs):
                return cls(path, fingerprint, chunk, rows, pixels, True, *shape)
            return cls(path, fingerprint)
        if not all(partial_path(s.target).is_file() for s in outputs):
            return cls(path, fingerprint)
        return cls(path, fingerprint, chunk, rows, pixels, False, *shape)


def describe(path: Path) -> str:
    """Where an interrupted run stopped, from its journal on disk (what ``--resume`` continues from)."""
    if not path.is_file():
        return "stopped before its first checkpoint, nothing was kept (a rerun starts from the top)"
    try:
        data = json.loads(path.read_text())
        rows, chunk = int(data["rows_written"]), int(data["chunk"])
        height, width = int(data.get("height", 0)), int(data.get("width", 0))
        chunks = int(data.get("chunks", 1))
        done = sum(int(v) for v in data.get("pattern_pixels", {}).values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"stopped; its resume journal {path} cannot be read"
    if data.get("finished"):
        return f"stopped while finishing the outputs, every row on disk; progress saved in {path}"
    where = f"stopped at row {rows} of {height or '?'}"
    if chunks > 1:
        where += f" of column chunk {chunk + 1} of {chunks}"
    if height and width:
        where += f" ({100.0 * done / (height * width):.0f} % of the scene on disk)"
    return f"{where}; progress saved in {path}"


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
