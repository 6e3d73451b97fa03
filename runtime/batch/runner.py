"""``run_batch``: spread scenes over Dask distributed (a local cluster, or an existing one by address).

The client checks everything it can before a cluster starts (options, the engine manifest, the
scene list), submits one task per scene, follows them with a progress bar and writes the summary. A
scene's own failure comes back as a ``failed`` result; a worker process that dies is replaced (by its
nanny) and Dask runs its scene again elsewhere, so only a scene that kills its worker repeatedly (Dask's
``allowed-failures``, 3 by default) is failed for that.

Every exit after the cluster is up writes the summary, Ctrl-C and SIGTERM included: the client stops
following the scenes, writes the summary of those that finished, stops the cluster and raises
``BatchInterrupted`` (a ``KeyboardInterrupt`` carrying the result). Local worker processes never see a
terminal's Ctrl-C (SIGINT stays blocked in them), so only the client unwinds, without their tracebacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from runtime.backends import BACKEND_CHOICES
from runtime.batch.scenes import INPUT_KINDS, Scene, check_scenes, read_scenes
from runtime.batch.summary import SceneResult, one_line, write_summary
from runtime.batch.task import BatchSettings, RowHook, output_paths, run_scene
from runtime.outputs import check_regular_or_new, journal_path
from runtime.predictor import check_edge_overrides, terminate_as_interrupt
from runtime.tiling import check_tiling
from stars_edge.errors import BackendUnavailableError, ConfigError, OutputError
from stars_edge.io import ensure_writable_dir, sha256_file
from stars_edge.manifest import PRECISIONS, load_manifest, manifest_file
from stars_edge.modalities import DEFAULT_MIN_VALID

if TYPE_CHECKING:
    from distributed import Client

#: Seconds to wait for a first worker on an existing scheduler before giving up.
WORKER_WAIT_SECONDS = 60.0


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


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_cluster_size(workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    """Worker processes x task threads for a local cluster: by default one task thread per process and a
    process per two cores, since each scene keeps two busy (its reader thread decodes and warps while the
    engine runs); ONNX Runtime then gets the cores left per task (``onnx_threads``)."""
    threads_per_worker = threads_per_worker or 1
    if workers is None:
        workers = max(1, usable_cores() // (2 * threads_per_worker))
    return workers, threads_per_worker


def _check_options(
    workers: int | None,
    threads_per_worker: int | None,
    scheduler: Any,
    tile: int | None,
    overlap: int | None,
    batch: int,
    backend: str,
    precision: str,
    min_valid: float,
    threads: int | None,
    probabilities_dtype: str,
    resume: bool = False,
    overwrite: bool = False,
) -> None:
    if resume and overwrite:
        raise ConfigError("--resume continues interrupted scenes and --overwrite discards them; pass one")
    if scheduler is not None and (workers is not None or threads_per_worker is not None):
        raise ConfigError("--workers/--threads-per-worker start a local cluster; drop them with --scheduler")
    for name, value in (
        ("--workers", workers),
        ("--threads-per-worker", threads_per_worker),
        ("--threads", threads),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if tile is not None:
        check_tiling(tile, overlap or 0)
    elif overlap is not None and overlap < 0:
        raise ConfigError(f"--overlap must be at least 0, got {overlap}")
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    if not 0.0 < min_valid <= 1.0:
        raise ConfigError(f"--min-valid must be in (0, 1], got {min_valid}")
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if probabilities_dtype not in ("uint8", "float32"):
        raise ConfigError(f"--probabilities-dtype must be uint8 or float32, got {probabilities_dtype!r}")


def _check_outputs(
    out: Path, scenes: list[Scene], probabilities: bool, resume: bool, overwrite: bool
) -> None:
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


def _absolute(scene: Scene) -> Scene:
    """Local relative paths made absolute: worker processes may run in another directory."""
    fixed = {}
    for kind, value in scene.inputs.items():
        fixed[kind] = value if "://" in value or value.startswith("/vsi") else str(Path(value).absolute())
    return Scene(id=scene.id, **fixed)


def run_batch(
    engines: str | os.PathLike[str],
    scenes: str | os.PathLike[str] | Sequence[Scene],
    out_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    scheduler: str | Client | None = None,
    resume: bool = False,
    overwrite: bool = False,
    cog: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 1,
    backend: str = "auto",
    precision: str = "fp32",
    min_valid: float = DEFAULT_MIN_VALID,
    threads: int | None = None,
    probabilities: bool = False,
    probabilities_dtype: str = "uint8",
    assets: dict[str, str] | None = None,
    progress: bool = True,
    dashboard_address: str | None = ":8787",
    allow_flagged: bool = False,
    allow_out_of_range: bool = False,
    bands: Mapping[str, Sequence[str]] | None = None,
    context_margin: int | None = None,
    mask_dilation: Mapping[str, int] | None = None,
    on_row_done: RowHook | None = None,
    log: Callable[[str], None] | None = _stderr,
) -> BatchResult:
    """Predict every scene of a list on Dask and write ``OUT/<id>.tif``, ``<id>.patterns.tif`` and the
    summary; returns the per-scene results. Never raises for a scene's own failure.

    ``scenes``: a CSV / STAC ItemCollection path or ``Scene`` objects. ``scheduler``: an address
    (``tcp://host:8786``) or a ``distributed.Client``; without it a ``LocalCluster`` of ``workers``
    processes x ``threads_per_worker`` starts (``local_cluster_size``) and its dashboard is logged (with
    ``dashboard_address=None`` it listens on a free port and is not logged).
    ``on_row_done(scene_id, tile_row)`` runs on the worker after each tile row (it must be picklable).
    """
    began = time.perf_counter()
    backend, precision = backend.lower(), precision.lower()
    _check_options(
        workers,
        threads_per_worker,
        scheduler,
        tile,
        overlap,
        batch,
        backend,
        precision,
        min_valid,
        threads,
        probabilities_dtype,
        resume,
        overwrite,
    )
    if isinstance(scenes, (str, os.PathLike)):
        listed = read_scenes(scenes, assets)
        source = str(scenes)
    else:
        listed = check_scenes(list(scenes))
        source = "python"
    listed = [_absolute(scene) for scene in listed]
    manifest = load_manifest(Path(engines), verify=False)  # a missing or unreadable manifest fails here, once
    check_edge_overrides(context_margin, mask_dilation, manifest.modalities)  # here, not in every scene
    if tile is None and overlap is not None:  # the manifest's tile: check the overlap here, not per scene
        check_tiling(manifest.tile_size, overlap)
    out = ensure_writable_dir(out_dir).resolve()
    _check_outputs(out, listed, probabilities, resume, overwrite)
    try:
        import distributed
    except ImportError as exc:
        raise BackendUnavailableError(
            "run-batch needs Dask distributed; install it with `pip install 'stars-edge[batch]'`"
        ) from exc

    log = log or (lambda message: None)
    settings = BatchSettings(
        engines=str(Path(engines).resolve()),
        manifest_sha256=sha256_file(manifest_file(Path(engines))),
        out_dir=str(out),
        backend=backend,
        precision=precision,
        threads=threads,
        tile=tile,
        overlap=overlap,
        batch=batch,
        min_valid=min_valid,
        probabilities=probabilities,
        probabilities_dtype=probabilities_dtype,
        cog=cog,
        resume=resume,
        overwrite=overwrite,
        allow_flagged=allow_flagged,
        allow_out_of_range=allow_out_of_range,
        bands=tuple((m, tuple(b)) for m, b in (bands or {}).items()),
        context_margin=context_margin,
        mask_dilation=None if mask_dilation is None else tuple(sorted(mask_dilation.items())),
    )
    results: dict[str, SceneResult] = {}
    nthreads: dict[str, int] = {}
    client = cluster = dashboard = None
    address = "local"
    interrupted: KeyboardInterrupt | None = None
    noisy_levels: list[int] | None = None
    with terminate_as_interrupt(), _interrupted_sync_not_logged():
        try:
            client, cluster, dashboard = _connect(
                distributed, scheduler, workers, threads_per_worker, dashboard_address
            )
            address = "local" if cluster is not None else str(client.scheduler.address)
            nthreads = client.nthreads()
            host_threads: dict[str, int] = {}
            for worker_address, count in nthreads.items():
                host = worker_address.split("://")[-1].rsplit(":", 1)[0]
                host_threads[host] = host_threads.get(host, 0) + count
            if dashboard:
                hint = "" if importlib.util.find_spec("bokeh") else " (install bokeh>=3.1 for its plots)"
                log(f"Dask dashboard: {dashboard}{hint}")
            log(f"{len(listed)} scenes on {len(nthreads)} workers, {sum(nthreads.values())} task threads")
            settings = dataclasses.replace(settings, host_threads=host_threads)
            # Journals left before this batch were refused above (or the user chose): any journal a task
            # finds without --resume is its own, from an attempt on a worker that died, so it starts over.
            tasks = dataclasses.replace(settings, overwrite=not resume)
            _schedule(distributed, client, listed, tasks, on_row_done, progress, log, results)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (handled alike): summarise, then stop
            interrupted = exc
            noisy_levels = [logging.getLogger(name).level for name in _NOISY_LOGGERS]
            _quiet_logs()
        finally:
            seconds = time.perf_counter() - began
            ordered = [results[scene.id] for scene in listed if scene.id in results]
            unfinished = [scene.id for scene in listed if scene.id not in results]
            csv_path, json_path = out / "summary.csv", out / "summary.json"
            summary_error = None
            if client is not None or interrupted is not None:
                recorded = {
                    **settings.public(),
                    "scene_list": source,
                    "scheduler": address,
                    "workers": len(nthreads),
                    "task_threads": sum(nthreads.values()),
                }
                try:
                    with _signals_ignored():  # a batch being stopped still writes it (milliseconds)
                        write_summary(out, ordered, seconds, recorded, unfinished=unfinished)
                except OutputError as exc:
                    summary_error = str(exc)
            try:
                _stop(client, cluster, scheduler, quiet=interrupted is not None)
            except KeyboardInterrupt as exc:  # pressed again while the cluster stopped: stop waiting
                interrupted = interrupted or exc
            finally:
                if noisy_levels is not None:
                    for name, level in zip(_NOISY_LOGGERS, noisy_levels, strict=True):
                        logging.getLogger(name).setLevel(level)
    result = BatchResult(ordered, seconds, csv_path, json_path, dashboard, unfinished, summary_error)
    if interrupted is not None:
        raise BatchInterrupted(result) from interrupted
    return result


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored in the block (in the main thread, where handlers live)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: not installed from Python, cannot be restored from it
                signal.signal(sig, handler)


def _stop(client: Any, cluster: Any, scheduler: Any, quiet: bool) -> None:
    """Close our client and local cluster. ``quiet``: the batch was interrupted with scenes still running, so
    the local workers' complaints while the cluster goes away under them (lost heartbeats, closed comms)
    are silenced: the summary and the one-line report say what happened."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    if quiet and cluster is not None and client is not None:
        with contextlib.suppress(Exception):
            client.run(_quiet_logs)
    if quiet:
        _quiet_logs()
    try:
        if client is not None and client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _InterruptedSync(logging.Filter):
    """Drops tornado's report of the cancel callback that Dask's ``sync`` leaves when Ctrl-C interrupts
    the main thread: the loop thread logs it, racing the main thread's handling of the interrupt."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "sync.<locals>.cancel" not in record.getMessage()


@contextlib.contextmanager
def _interrupted_sync_not_logged() -> Iterator[None]:
    logger = logging.getLogger("tornado.application")
    quiet = _InterruptedSync()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


#: Loggers that complain while a cluster is stopped under running work: Dask's, and tornado's event loop
#: (an interrupted ``client.sync`` leaves a cancelled callback it logs as an error).
_NOISY_LOGGERS = ("distributed", "tornado")


def _quiet_logs() -> None:
    """Only critical messages from Dask and tornado in this process (a worker of a stopping cluster)."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _connect(
    distributed: Any,
    scheduler: Any,
    workers: int | None,
    threads_per_worker: int | None,
    dashboard_address: str | None,
) -> tuple[Any, Any, str | None]:
    """``(client, local cluster or None, dashboard link or None)``."""
    if isinstance(scheduler, distributed.Client):
        return scheduler, None, None
    if scheduler is not None:
        try:
            client = distributed.Client(str(scheduler), set_as_default=False, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler} ({one_line(exc)}); start it with "
                "`dask scheduler` or drop --scheduler for a local cluster"
            ) from exc
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError as exc:
            client.close()
            raise ConfigError(
                f"no Dask worker joined {scheduler} within {WORKER_WAIT_SECONDS:.0f} s; start some with "
                f"`dask worker {scheduler}`"
            ) from exc
        return client, None, None
    count, per_worker = local_cluster_size(workers, threads_per_worker)
    cluster = None
    try:
        with _sigint_blocked():
            cluster = distributed.LocalCluster(
                n_workers=count,
                threads_per_worker=per_worker,
                processes=True,
                # None would still bind the scheduler's HTTP server to the default :8787; a free port
                # never clashes
                dashboard_address=":0" if dashboard_address is None else dashboard_address,
                silence_logs=logging.ERROR,
            )
        dashboard = cluster.dashboard_link if dashboard_address is not None else None
        return distributed.Client(cluster, set_as_default=False), cluster, dashboard
    except BaseException:  # e.g. a Ctrl-C pressed while the cluster started, delivered on unblocking
        if cluster is not None:
            cluster.close()
        raise


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while a local cluster starts. The cluster's threads inherit the mask, and
    so do the worker processes they start, now or later to replace one that died: a terminal's Ctrl-C
    (sent to the whole process group) then reaches only this process, which stops the batch and the
    cluster, instead of every worker printing its own traceback. A Ctrl-C pressed meanwhile is delivered
    when the mask is restored."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # multiprocessing's resource tracker unblocks SIGINT in the thread that first starts it (the
    # cluster's loop thread, undoing the inherited mask): start it here first
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _schedule(
    distributed: Any,
    client: Any,
    scenes: list[Scene],
    settings: BatchSettings,
    on_row_done: RowHook | None,
    progress: bool,
    log: Callable[[str], None],
    results: dict[str, SceneResult],
) -> None:
    """One task per scene; results (into ``results``) as they complete, under a progress bar over scenes
    with Mpx/s."""
    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            run_scene, scene, settings, on_row_done, key=f"stars-edge-{scene.id}-{token}", pure=False
        ): scene
        for scene in scenes
    }
    processed = 0
    started = time.perf_counter()
    with tqdm(total=len(scenes), unit="scene", disable=not progress, dynamic_ncols=True) as bar:
        try:
            for future in distributed.as_completed(futures, loop=client.loop):
                scene = futures[future]
                try:
                    result = future.result()
                except distributed.KilledWorker as exc:
                    result = SceneResult(
                        id=scene.id,
                        status="failed",
                        error=f"its worker process died each time it ran this scene ({one_line(exc)}); "
                        "check the scene's files and the workers' memory",
                    )
                except Exception as exc:
                    result = SceneResult(id=scene.id, status="failed", error=one_line(exc))
                results[scene.id] = result
                processed += result.processed_pixels
                if result.status == "failed":
                    log(f"{scene.id}: failed: {result.error}")
                failed = sum(r.status == "failed" for r in results.values())
                rate = processed / 1e6 / max(1e-9, time.perf_counter() - started)
                bar.set_postfix_str(f"{rate:.2f} Mpx/s, {failed} failed", refresh=False)
                bar.update(1)
        finally:
            client.cancel([f for f in futures if not f.done()])


__all__ = ["INPUT_KINDS", "BatchResult", "local_cluster_size", "run_batch", "usable_cores"]
