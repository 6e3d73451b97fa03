"""``stars-edge run-batch``: many scenes on Dask distributed, one engine set per worker, per-scene status."""

from __future__ import annotations

from pathlib import Path

import typer

from stars_edge.commands.run_options import (
    ALLOW_FLAGGED,
    ALLOW_OUT_OF_RANGE,
    BACKEND,
    BANDS,
    BATCH,
    COG,
    CONTEXT_MARGIN,
    ENGINES,
    MASK_DILATION,
    MIN_VALID,
    OVERLAP,
    OVERWRITE,
    PRECISION,
    PROBABILITIES_DTYPE,
    READERS,
    STREAMS,
    TILE,
)
from stars_edge.errors import Interrupted, OutputError


def run_batch(
    engines: Path = ENGINES,
    scenes: Path = typer.Option(
        ...,
        "--scenes",
        help="CSV with header id,optical,sar,dsm,cloud_mask,dtm (empty cell = modality absent, paths "
        "relative to the CSV), or a STAC ItemCollection JSON.",
    ),
    out_dir: Path = typer.Option(
        ..., "--out-dir", help="Writes <id>.tif, <id>.patterns.tif, summary.csv and summary.json here."
    ),
    asset: list[str] = typer.Option(
        [],
        "--asset",
        help="STAC only: KIND=ASSET_KEY (KIND optical, sar, dsm, cloud_mask or dtm); repeatable. Default: "
        "the asset named like the kind.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Local cluster: worker processes (default: one per two cores)."
    ),
    threads_per_worker: int | None = typer.Option(
        None, "--threads-per-worker", help="Local cluster: scenes run at once per worker (default 1)."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="An existing Dask cluster, e.g. tcp://host:8786, instead of a local one."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Skip scenes whose outputs exist and verify; continue interrupted scenes from their journal.",
    ),
    overwrite: bool = OVERWRITE,
    cog: bool = COG,
    allow_flagged: bool = ALLOW_FLAGGED,
    allow_out_of_range: bool = ALLOW_OUT_OF_RANGE,
    bands: list[str] | None = BANDS,
    mask_dilation: list[str] | None = MASK_DILATION,
    context_margin: int | None = CONTEXT_MARGIN,
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Also write <id>.probabilities.tif (one band per class)."
    ),
    probabilities_dtype: str = PROBABILITIES_DTYPE,
    tile: int | None = TILE,
    overlap: int | None = OVERLAP,
    batch: int | None = BATCH,
    backend: str = BACKEND,
    precision: str = PRECISION,
    min_valid: float = MIN_VALID,
    threads: int | None = typer.Option(
        None, "--threads", help="ONNX Runtime threads per scene (default: a host's cores / its task threads)."
    ),
    streams: int | None = STREAMS,
    readers: int | None = READERS,
    dashboard_address: str = typer.Option(
        ":8787", "--dashboard-address", help="Local cluster: where the Dask dashboard listens."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over scenes."),
) -> None:
    """Predict every scene of a list on Dask (a local cluster or --scheduler); exit 1 if any scene failed.

    Workers live across scenes. They use the runtime's C kernels where the install compiled them (every
    process does), else numba's build where it is installed (pip install '.[fast]'; about a second to load
    per process); STARS_EDGE_KERNELS=c|numba|numpy chooses (docs/RUNTIME.md).
    """
    from runtime.bands import parse_band_selection
    from runtime.batch import BatchInterrupted, parse_assets
    from runtime.batch import run_batch as run
    from runtime.predictor import parse_mask_dilation

    try:
        result = run(
            engines,
            scenes,
            out_dir,
            workers=workers,
            threads_per_worker=threads_per_worker,
            scheduler=scheduler,
            resume=resume,
            overwrite=overwrite,
            cog=cog,
            allow_flagged=allow_flagged,
            allow_out_of_range=allow_out_of_range,
            bands=parse_band_selection(bands),
            context_margin=context_margin,
            mask_dilation=parse_mask_dilation(mask_dilation),
            tile=tile,
            overlap=overlap,
            batch=batch,
            backend=backend,
            precision=precision,
            min_valid=min_valid,
            threads=threads,
            streams=streams,
            readers=readers,
            probabilities=probabilities,
            probabilities_dtype=probabilities_dtype.lower(),
            assets=parse_assets(asset),
            progress=progress,
            dashboard_address=dashboard_address,
        )
    except BatchInterrupted as exc:  # Ctrl-C or SIGTERM, after the summary was written
        raise Interrupted(exc.result.stopped()) from None
    except KeyboardInterrupt:  # before the cluster started (once it did, run_batch says where it stopped)
        raise Interrupted("stopped before any scene started; nothing was written") from None
    typer.echo(result.format())
    if result.summary_error is not None:
        raise OutputError(result.summary_error)
    if not result.ok:
        raise typer.Exit(code=1)
