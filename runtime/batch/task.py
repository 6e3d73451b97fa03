"""What runs on a worker for one scene: borrow the process's engine set, predict, record a checksum sidecar.

Each worker process keeps its ``Predictor`` (each engine verified and loaded on first use) in a small
per-process pool keyed by the engine set and settings, so a worker loads and verifies the engines once and
reuses them for every scene it gets (one per concurrently running task thread). The sidecar
``<id>.run.json`` written after the outputs records their sizes, grids and sha256, the inputs and the
settings; ``--resume`` skips a scene only when all of that still holds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import rasterio
import rasterio.errors

from runtime import Predictor
from runtime.batch.scenes import MODALITIES, Scene
from runtime.batch.summary import SceneResult, one_line
from runtime.cpus import usable_cores
from runtime.kernels import prefer_compiled
from runtime.outputs import check_regular_or_new, os_failure
from stars_edge.errors import ManifestError
from stars_edge.io import sha256_file, write_json_atomic
from stars_edge.manifest import manifest_file
from stars_edge.modalities import DEFAULT_MIN_VALID

RECORD_VERSION = 1
#: Per-scene callback on the worker after each tile row: ``hook(scene_id, tile_row)``.
RowHook = Callable[[str, int], None]


@dataclass(frozen=True)
class BatchSettings:
    """Everything a worker needs to run a scene; picklable, sent with every task."""

    engines: str
    #: sha256 of ``manifest.json`` as the client saw it: workers refuse an engine folder that differs.
    manifest_sha256: str
    out_dir: str
    backend: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    #: Engine calls in flight per scene (``--streams``); None: the runtime's default for the backend and the
    #: scene's threads (``runtime.run_options.default_streams``).
    streams: int | None = None
    #: Reader threads per scene (``--readers``); None: ``runtime.run_options.DEFAULT_READERS``.
    readers: int | None = None
    #: None: the manifest's tile size, and the runtime's default overlap for it.
    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    min_valid: float = DEFAULT_MIN_VALID
    probabilities: bool = False
    probabilities_dtype: str = "uint8"
    cog: bool = False
    resume: bool = False
    #: Start over scenes whose interrupted runs left a journal (``run_batch`` sends it to the tasks when not
    #: resuming: journals left before the batch were refused or the user passed ``--overwrite``).
    overwrite: bool = False
    allow_flagged: bool = False
    allow_out_of_range: bool = False
    #: ``--bands`` of every scene: ``(("optical", ("2", "3", "4", "8")),)`` (a tuple, so settings hash).
    bands: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: ``--context-margin`` / ``--mask-dilation`` overrides (None / empty: the manifest's).
    context_margin: int | None = None
    mask_dilation: tuple[tuple[str, int], ...] | None = None
    #: Worker threads per host when the batch started, to size ONNX Runtime's threads when ``threads`` is
    #: None (cores of the host / task threads on it).
    host_threads: dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change the outputs' bytes: a scene made with others is not skipped."""
        return {
            "manifest_sha256": self.manifest_sha256,
            "backend": self.backend,
            "precision": self.precision,
            "tile": self.tile,
            "overlap": self.overlap,
            "batch": self.batch,
            "min_valid": self.min_valid,
            "probabilities": self.probabilities_dtype if self.probabilities else None,
            "cog": self.cog,
            **({"bands": [[m, list(b)] for m, b in self.bands]} if self.bands else {}),
            **({"context_margin": self.context_margin} if self.context_margin is not None else {}),
            **({"mask_dilation": dict(self.mask_dilation)} if self.mask_dilation is not None else {}),
        }

    def public(self) -> dict[str, Any]:
        """The settings as recorded in ``summary.json``."""
        data = asdict(self)
        data.pop("host_threads")
        return data


def output_paths(out_dir: str | os.PathLike[str], scene_id: str, probabilities: bool) -> dict[str, Path]:
    """``OUT/<id>.tif``, ``OUT/<id>.patterns.tif`` and, when asked, ``OUT/<id>.probabilities.tif``."""
    out = Path(out_dir)
    paths = {"classes": out / f"{scene_id}.tif", "patterns": out / f"{scene_id}.patterns.tif"}
    if probabilities:
        paths["probabilities"] = out / f"{scene_id}.probabilities.tif"
    return paths


def record_path(out_dir: str | os.PathLike[str], scene_id: str) -> Path:
    """The checksum sidecar of a finished scene."""
    return Path(out_dir) / f"{scene_id}.run.json"


# --- the per-process engine-set pool -------------------------------------------------------------------

_POOL_LOCK = threading.Lock()
_IDLE: dict[tuple[Any, ...], list[Predictor]] = {}


@contextlib.contextmanager
def borrow_predictor(settings: BatchSettings, threads: int | None) -> Iterator[tuple[Predictor, bool]]:
    """This process's predictor for the settings' engine set (created, i.e. verified and loaded, only when
    none is idle); yields ``(predictor, loaded_now)``. Idle predictors of other engine sets are closed."""
    actual = sha256_file(manifest_file(Path(settings.engines)))
    if actual != settings.manifest_sha256:
        raise ManifestError(
            f"{settings.engines} on {socket.gethostname()} holds another manifest than the client's "
            f"({actual[:12]}... vs {settings.manifest_sha256[:12]}...); give every worker the same engines"
        )
    key = (
        str(Path(settings.engines).resolve()),
        actual,
        settings.backend,
        settings.precision,
        threads,
        settings.streams,
        settings.readers,
        settings.allow_flagged,
        settings.context_margin,
        settings.mask_dilation,
    )
    stale: list[Predictor] = []
    with _POOL_LOCK:
        for other in [k for k in _IDLE if k != key]:
            stale.extend(_IDLE.pop(other))
        idle = _IDLE.setdefault(key, [])
        predictor = idle.pop() if idle else None
    for old in stale:
        old.close()
    loaded = predictor is None
    if predictor is None:
        prefer_compiled()  # a worker runs many scenes: the kernels' load pays back (runtime/kernels.py)
        predictor = Predictor(
            settings.engines,
            backend=settings.backend,
            precision=settings.precision,
            threads=threads,
            streams=settings.streams,
            readers=settings.readers,
            allow_flagged=settings.allow_flagged,
            context_margin=settings.context_margin,
            mask_dilation=None if settings.mask_dilation is None else dict(settings.mask_dilation),
        )
    try:
        yield predictor, loaded
    finally:
        with _POOL_LOCK:
            _IDLE.setdefault(key, []).append(predictor)


def _worker_identity() -> str:
    """``host:pid`` of this process (a Dask worker's, or the caller's outside Dask)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _host_of(address: str) -> str:
    return address.split("://")[-1].rsplit(":", 1)[0]


def onnx_threads(settings: BatchSettings) -> int | None:
    """``--threads`` if given, else this host's cores shared among the task threads running on it."""
    if settings.threads is not None:
        return settings.threads
    cores = usable_cores()
    try:
        from distributed import get_worker

        worker = get_worker()
        on_host = settings.host_threads.get(_host_of(worker.address), worker.state.nthreads)
    except (ImportError, ValueError, AttributeError):
        on_host = 1
    return max(1, cores // max(1, on_host))


# --- one scene -----------------------------------------------------------------------------------------


def run_scene(scene: Scene, settings: BatchSettings, on_row_done: RowHook | None = None) -> SceneResult:
    """Predict one scene (or skip it when ``resume`` and its outputs verify); never raises for the scene's
    own problems: they become a ``failed`` result with a one-line error."""
    began = time.perf_counter()
    worker = _worker_identity()
    loaded = False
    try:
        if settings.resume:
            record = verify_scene(scene, settings)
            if record is not None:
                previous = SceneResult.from_dict(record["result"])
                return SceneResult(
                    id=scene.id,
                    status="skipped",
                    pixels=previous.pixels,
                    seconds=time.perf_counter() - began,
                    pattern_pixels=previous.pattern_pixels,
                    outputs=previous.outputs,
                    worker=worker,
                )
        targets = output_paths(settings.out_dir, scene.id, settings.probabilities)
        hook = functools.partial(on_row_done, scene.id) if on_row_done is not None else None
        with borrow_predictor(settings, onnx_threads(settings)) as (predictor, loaded):
            summary = predictor.predict_scene(
                optical=scene.optical,
                sar=scene.sar,
                dsm=scene.dsm,
                cloud_mask=scene.cloud_mask,
                dtm=scene.dtm,
                bands={m: b for m, b in settings.bands if m in scene.modalities} or None,
                out=targets["classes"],
                pattern_map=targets["patterns"],
                probabilities=targets.get("probabilities"),
                probabilities_dtype=settings.probabilities_dtype,
                tile=settings.tile,
                overlap=settings.overlap,
                batch=settings.batch,
                min_valid=settings.min_valid,
                resume=settings.resume,
                overwrite=settings.overwrite,
                progress=False,
                on_row_done=hook,
                cog=settings.cog,
                allow_out_of_range=settings.allow_out_of_range,
            )
        seconds = time.perf_counter() - began
        pixels = summary.height * summary.width
        processed = pixels if summary.processed_pixels is None else summary.processed_pixels
        result = SceneResult(
            id=scene.id,
            status="done",
            pixels=pixels,
            seconds=seconds,
            mpx_per_s=processed / 1e6 / seconds if seconds > 0 else None,
            processed_pixels=processed,
            pattern_pixels=dict(summary.pattern_pixels),
            outputs={kind: str(path) for kind, path in targets.items()},
            resumed_from_row=summary.resumed_from_row,
            worker=worker,
            engines_loaded=loaded,
        )
        write_record(scene, settings, targets, result)
        return result
    except Exception as exc:  # the scene's failure, recorded; the batch goes on
        return SceneResult(
            id=scene.id,
            status="failed",
            error=one_line(exc),
            seconds=time.perf_counter() - began,
            worker=worker,
            engines_loaded=loaded,
        )


# --- the checksum sidecar and --resume verification ---------------------------------------------------


def _grid(path: str | os.PathLike[str]) -> dict[str, Any]:
    with rasterio.open(path) as dataset:
        return {
            "width": dataset.width,
            "height": dataset.height,
            "crs": dataset.crs.to_wkt() if dataset.crs else None,
            "transform": list(dataset.transform)[:6],
        }


def input_fingerprint(scene: Scene) -> dict[str, Any]:
    """Inputs as recorded in the sidecar: local files with size and mtime, URLs as given."""
    inputs: dict[str, Any] = {}
    for kind, value in scene.inputs.items():
        path = Path(value)
        if path.is_file():
            stat = path.stat()
            inputs[kind] = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        else:
            inputs[kind] = {"path": value}
    return inputs


def write_record(
    scene: Scene, settings: BatchSettings, targets: dict[str, Path], result: SceneResult
) -> Path:
    """Write ``<id>.run.json`` after the outputs: their size, grid and sha256, the inputs and settings."""
    outputs = {}
    for kind, path in targets.items():
        outputs[kind] = {
            "file": path.name,
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
            **_grid(path),
        }
    record = {
        "version": RECORD_VERSION,
        "scene": asdict(scene),
        "settings": settings.fingerprint(),
        "inputs": input_fingerprint(scene),
        "outputs": outputs,
        "result": result.to_dict(),
    }
    path = check_regular_or_new(record_path(settings.out_dir, scene.id))
    try:
        return write_json_atomic(path, record)
    except OSError as exc:
        raise os_failure(path, "writing the checksum sidecar", exc) from exc


def verify_scene(scene: Scene, settings: BatchSettings) -> dict[str, Any] | None:
    """The sidecar of a scene whose outputs are complete and unchanged, or None (then it runs again).

    Checks: same settings and inputs; every output present with its recorded size and sha256; its grid
    (size, CRS, transform) the recorded one and the grid of the scene's reference input.
    """
    path = record_path(settings.out_dir, scene.id)
    if not path.is_file():  # missing, or not a regular file (a FIFO would block the read)
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        return None
    if record.get("settings") != settings.fingerprint() or record.get("inputs") != input_fingerprint(scene):
        return None
    expected = output_paths(settings.out_dir, scene.id, settings.probabilities)
    outputs = record.get("outputs", {})
    if set(outputs) != set(expected):
        return None
    try:
        reference = _grid(scene.inputs[next(m for m in MODALITIES if m in scene.inputs)])
        for kind, target in expected.items():
            info = outputs[kind]
            if not target.is_file() or target.stat().st_size != info["size"]:
                return None
            grid = _grid(target)
            if any(grid[k] != info[k] for k in grid) or grid != reference:
                return None
            if sha256_file(target) != info["sha256"]:
                return None
    except (OSError, KeyError, TypeError, rasterio.errors.RasterioError):
        return None
    return record
