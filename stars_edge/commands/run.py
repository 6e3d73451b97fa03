"""``stars-edge run``: stream GeoTIFF tiles through the per-pattern engines and write a georeferenced map."""

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
from stars_edge.errors import Interrupted


def run(
    engines: Path = ENGINES,
    optical: Path | None = typer.Option(None, "--optical", help="Optical GeoTIFF (bands as in manifest)."),
    sar: Path | None = typer.Option(None, "--sar", help="SAR GeoTIFF (e.g. VV/VH in dB)."),
    dsm: Path | None = typer.Option(
        None, "--dsm", help="DSM GeoTIFF: height above ground in metres (a normalised DSM), or see --dtm."
    ),
    dtm: Path | None = typer.Option(
        None,
        "--dtm",
        help="Terrain model (DTM) subtracted from --dsm, when the DSM holds altitude above a datum.",
    ),
    cloud_mask: Path | None = typer.Option(
        None,
        "--cloud-mask",
        help="Cloud mask for --optical: values > 0 mark clouded pixels.",
    ),
    out: Path = typer.Option(..., "--out", help="Output class map GeoTIFF (uint8, 255 = no valid modality)."),
    pattern_map: Path | None = typer.Option(
        None,
        "--pattern-map",
        help="Also write the pattern behind each pixel (0 = none, 1..7).",
    ),
    probabilities: Path | None = typer.Option(
        None, "--probabilities", help="Also write per-class probabilities (one band per class)."
    ),
    probabilities_dtype: str = PROBABILITIES_DTYPE,
    tile: int | None = TILE,
    overlap: int | None = OVERLAP,
    batch: int | None = BATCH,
    backend: str = BACKEND,
    precision: str = PRECISION,
    min_valid: float = MIN_VALID,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same command."),
    overwrite: bool = OVERWRITE,
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="Inference threads (ONNX Runtime intra-op; OpenVINO's, shared by its streams).",
    ),
    streams: int | None = STREAMS,
    readers: int | None = READERS,
    overviews: bool = typer.Option(False, "--overviews", help="Add internal overviews to the outputs."),
    cog: bool = COG,
    allow_flagged: bool = ALLOW_FLAGGED,
    allow_out_of_range: bool = ALLOW_OUT_OF_RANGE,
    bands: list[str] | None = BANDS,
    mask_dilation: list[str] | None = MASK_DILATION,
    context_margin: int | None = CONTEXT_MARGIN,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Predict a scene from any subset of optical / SAR / DSM, picking the engine per tile.

    Environment: STARS_EDGE_KERNELS=c|numba|numpy picks the per-pixel kernels (default: C where the install
    compiled them, else numpy; the same maps either way); STARS_EDGE_CACHE_DIR moves OpenVINO's compiled
    model cache (default ~/.cache/stars-edge); GDAL_CACHEMAX overrides the block cache the runtime sizes
    (docs/RUNTIME.md, "Performance").
    """
    from runtime import Predictor
    from runtime.bands import parse_band_selection
    from runtime.journal import describe
    from runtime.outputs import journal_path
    from runtime.predictor import parse_mask_dilation

    predictor = Predictor(
        engines,
        backend=backend.lower(),
        precision=precision.lower(),
        threads=threads,
        streams=streams,
        readers=readers,
        allow_flagged=allow_flagged,
        context_margin=context_margin,
        mask_dilation=parse_mask_dilation(mask_dilation),
    )
    try:
        summary = predictor.predict_scene(
            optical=optical,
            sar=sar,
            dsm=dsm,
            cloud_mask=cloud_mask,
            out=out,
            pattern_map=pattern_map,
            probabilities=probabilities,
            probabilities_dtype=probabilities_dtype.lower(),
            tile=tile,
            overlap=overlap,
            batch=batch,
            min_valid=min_valid,
            resume=resume,
            overwrite=overwrite,
            overviews=overviews,
            progress=progress,
            cog=cog,
            allow_out_of_range=allow_out_of_range,
            bands=parse_band_selection(bands),
            dtm=dtm,
        )
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (handled alike): the journal on disk says where it stopped
        raise Interrupted(describe(journal_path(out))) from None
    finally:
        predictor.close()
    typer.echo(summary.format())
