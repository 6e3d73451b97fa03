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

import dataclasses
import importlib.util
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from runtime.batch.checks import absolute_scene, check_options, check_outputs
from runtime.batch.cluster import (
    NOISY_LOGGERS,
    WORKER_WAIT_SECONDS,
    connect,
    interrupted_sync_not_logged,
    local_cluster_size,
    quiet_logs,
    stop_cluster,
    usable_cores,
)
from runtime.batch.result import BatchInterrupted, BatchResult
from runtime.batch.scenes import INPUT_KINDS, Scene, check_scenes, read_scenes
from runtime.batch.summary import SceneResult, one_line, write_summary
from runtime.batch.task import BatchSettings, RowHook, run_scene
from runtime.run_options import check_edge_overrides
from runtime.signals import signals_ignored, terminate_as_interrupt
from runtime.tiling import check_tiling
from stars_edge.errors import BackendUnavailableError, OutputError
from stars_edge.io import ensure_writable_dir, sha256_file
from stars_edge.manifest import load_manifest, manifest_file
from stars_edge.modalities import DEFAULT_MIN_VALID

if TYPE_CHECKING:
    from distributed import Client


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


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
    batch: int | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    min_valid: float = DEFAULT_MIN_VALID,
    threads: int | None = None,
    streams: int | None = None,
    readers: int | None = None,
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
    check_options(
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
        streams,
        readers,
    )
    if isinstance(scenes, (str, os.PathLike)):
        listed = read_scenes(scenes, assets)
        source = str(scenes)
    else:
        listed = check_scenes(list(scenes))
        source = "python"
    listed = [absolute_scene(scene) for scene in listed]
    manifest = load_manifest(Path(engines), verify=False)  # a missing or unreadable manifest fails here, once
    check_edge_overrides(context_margin, mask_dilation, manifest.modalities)  # here, not in every scene
    if tile is None and overlap is not None:  # the manifest's tile: check the overlap here, not per scene
        check_tiling(manifest.tile_size, overlap)
    out = ensure_writable_dir(out_dir).resolve()
    check_outputs(out, listed, probabilities, resume, overwrite)
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
        streams=streams,
        readers=readers,
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
    with terminate_as_interrupt(), interrupted_sync_not_logged():
        try:
            client, cluster, dashboard = connect(
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
            noisy_levels = [logging.getLogger(name).level for name in NOISY_LOGGERS]
            quiet_logs()
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
                    with signals_ignored():  # a batch being stopped still writes it (milliseconds)
                        write_summary(out, ordered, seconds, recorded, unfinished=unfinished)
                except OutputError as exc:
                    summary_error = str(exc)
            try:
                stop_cluster(client, cluster, scheduler, quiet=interrupted is not None)
            except KeyboardInterrupt as exc:  # pressed again while the cluster stopped: stop waiting
                interrupted = interrupted or exc
            finally:
                if noisy_levels is not None:
                    for name, level in zip(NOISY_LOGGERS, noisy_levels, strict=True):
                        logging.getLogger(name).setLevel(level)
    result = BatchResult(ordered, seconds, csv_path, json_path, dashboard, unfinished, summary_error)
    if interrupted is not None:
        raise BatchInterrupted(result) from interrupted
    return result


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


__all__ = [
    "INPUT_KINDS",
    "WORKER_WAIT_SECONDS",
    "BatchInterrupted",
    "BatchResult",
    "local_cluster_size",
    "run_batch",
    "usable_cores",
]
