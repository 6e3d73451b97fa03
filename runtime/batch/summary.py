"""Per-scene results of a batch and the ``summary.csv`` / ``summary.json`` written (atomically) at its end."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.outputs import check_regular_or_new, os_failure
from stars_edge.io import write_text_atomic
from stars_edge.modalities import ALL_PATTERNS

STATUSES: tuple[str, ...] = ("done", "failed", "skipped")
#: Pixel-count columns of the CSV: ``none`` (no valid modality) then every pattern in manifest order.
PATTERN_COLUMNS: tuple[str, ...] = ("none", *(p.name for p in ALL_PATTERNS))
CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    "error",
    "pixels",
    "seconds",
    "mpx_per_s",
    *(f"pixels_{name}" for name in PATTERN_COLUMNS),
    "resumed_from_row",
    "worker",
)


@dataclass
class SceneResult:
    """What happened to one scene: ``done`` (predicted now), ``skipped`` (verified outputs of an earlier
    run) or ``failed`` (with its one-line error; the other scenes went on)."""

    id: str
    status: str
    error: str = ""
    #: Scene size in pixels (height x width); for ``skipped`` scenes as recorded by the run that made them.
    pixels: int = 0
    #: Wall time of the scene on its worker, engine loading included.
    seconds: float = 0.0
    #: Pixels predicted by this run (fewer than ``pixels`` after a resume) per second of ``seconds``.
    mpx_per_s: float | None = None
    processed_pixels: int = 0
    pattern_pixels: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    resumed_from_row: int = 0
    #: ``host:pid`` of the worker process, and whether it loaded the engine set for this scene.
    worker: str = ""
    engines_loaded: bool = False

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneResult:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one line: the project's own messages as they are, anything else with its type."""
    from stars_edge.errors import StarsEdgeError

    text = str(exc) if isinstance(exc, StarsEdgeError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def csv_text(results: list[SceneResult]) -> str:
    """The summary as CSV: one row per scene, fixed columns (``CSV_COLUMNS``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result in results:
        mpx = "" if result.mpx_per_s is None else f"{result.mpx_per_s:.4f}"
        writer.writerow(
            [
                result.id,
                result.status,
                result.error,
                result.pixels,
                f"{result.seconds:.3f}",
                mpx,
                *(result.pattern_pixels.get(name, 0) for name in PATTERN_COLUMNS),
                result.resumed_from_row,
                result.worker,
            ]
        )
    return buffer.getvalue()


def totals(results: list[SceneResult], seconds: float) -> dict[str, Any]:
    """Counts per status, pixels, and the batch's throughput over its wall time."""
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}
    processed = sum(r.processed_pixels for r in results)
    finished = counts["done"]
    return {
        "scenes": len(results),
        **counts,
        "pixels": sum(r.pixels for r in results if r.ok),
        "processed_pixels": processed,
        "seconds": round(seconds, 3),
        "mpx_per_s": round(processed / 1e6 / seconds, 4) if seconds > 0 else None,
        "scenes_per_minute": round(60.0 * finished / seconds, 3) if seconds > 0 else None,
    }


def write_summary(
    out_dir: str | os.PathLike[str],
    results: list[SceneResult],
    seconds: float,
    settings: dict[str, Any],
    unfinished: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.json`` in ``out_dir``, each atomically. ``unfinished``: the scenes
    of an interrupted batch without a result (``summary.json`` lists them; ``interrupted`` is then true).
    A file that cannot be written is an ``OutputError`` naming it and the cause."""
    out_dir = Path(out_dir)
    payload = {
        "totals": totals(results, seconds),
        "settings": settings,
        "interrupted": bool(unfinished),
        "unfinished": list(unfinished),
        "scenes": [r.to_dict() for r in results],
    }
    files = {
        out_dir / "summary.csv": csv_text(results),
        out_dir / "summary.json": json.dumps(payload, indent=2) + "\n",
    }
    for path, text in files.items():
        check_regular_or_new(path)
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            raise os_failure(path, "writing the batch summary", exc) from exc
    return out_dir / "summary.csv", out_dir / "summary.json"
