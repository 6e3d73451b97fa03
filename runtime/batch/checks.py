"""What the client checks before a cluster starts: the options, the summary files and the journals that
interrupted scenes left, and scene paths made absolute for workers in other directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.backends import BACKEND_CHOICES
from runtime.batch.scenes import Scene
from runtime.batch.task import output_paths
from runtime.output_paths import check_regular_or_new, journal_path
from runtime.run_options import PROBABILITY_DTYPES
from runtime.tiling import check_tiling
from stars_edge.errors import ConfigError, OutputError
from stars_edge.manifest import PRECISIONS


def check_options(
    workers: int | None,
    threads_per_worker: int | None,
    scheduler: Any,
    tile: int | None,
    overlap: int | None,
    batch: int | None,
    backend: str,
    precision: str,
    min_valid: float,
    threads: int | None,
    probabilities_dtype: str,
    resume: bool = False,
    overwrite: bool = False,
    streams: int | None = None,
    readers: int | None = None,
) -> None:
    if resume and overwrite:
        raise ConfigError("--resume continues interrupted scenes and --overwrite discards them; pass one")
    if scheduler is not None and (workers is not None or threads_per_worker is not None):
        raise ConfigError("--workers/--threads-per-worker start a local cluster; drop them with --scheduler")
    for name, value in (
        ("--workers", workers),
        ("--threads-per-worker", threads_per_worker),
        ("--threads", threads),
        ("--streams", streams),
        ("--readers", readers),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if tile is not None:
        check_tiling(tile, overlap or 0)
    elif overlap is not None and overlap < 0:
        raise ConfigError(f"--overlap must be at least 0, got {overlap}")
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    if not 0.0 < min_valid <= 1.0:
        raise ConfigError(f"--min-valid must be in (0, 1], got {min_valid}")
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if probabilities_dtype not in PROBABILITY_DTYPES:
        raise ConfigError(f"--probabilities-dtype must be uint8 or float32, got {probabilities_dtype!r}")


def check_outputs(out: Path, scenes: list[Scene], probabilities: bool, resume: bool, overwrite: bool) -> None:
    """Before any cluster starts: the summary files must be regular files or new, and journals that
    interrupted scenes left are refused unless ``--resume`` continues or ``--overwrite`` discards them."""
    check_regular_or_new(out / "summary.csv")
    check_regular_or_new(out / "summary.json")
    if resume or overwrite:
        return
    journals = [journal_path(output_paths(out, s.id, probabilities)["classes"]) for s in scenes]
    left = [path for path in journals if path.exists()]
    if left:
        more = f" and {len(left) - 1} more" if len(left) > 1 else ""
        raise OutputError(
            f"{left[0]}{more} hold the progress of interrupted scenes; pass --resume to continue them or "
            "--overwrite to start them over"
        )


def absolute_scene(scene: Scene) -> Scene:
    """Local relative paths made absolute: worker processes may run in another directory."""
    fixed = {}
    for kind, value in scene.inputs.items():
        fixed[kind] = value if "://" in value or value.startswith("/vsi") else str(Path(value).absolute())
    return Scene(id=scene.id, **fixed)
