"""``stars-edge run``: stream GeoTIFF tiles through the per-pattern engines and write a georeferenced map."""

from __future__ import annotations

from pathlib import Path

import typer

from stars_edge.modalities import DEFAULT_MIN_VALID


def run(
    engines: Path = typer.Option(..., "--engines", help="Folder with manifest.json and the engine files."),
    optical: Path | None = typer.Option(None, "--optical", help="Optical GeoTIFF (bands as in manifest)."),
    sar: Path | None = typer.Option(None, "--sar", help="SAR GeoTIFF (e.g. VV/VH in dB)."),
    dsm: Path | None = typer.Option(None, "--dsm", help="DSM GeoTIFF (heights in metres)."),
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
    probabilities_dtype: str = typer.Option(
        "uint8", "--probabilities-dtype", help="uint8 (round(p*255), compact) or float32 (NaN = nodata)."
    ),
    tile: int | None = typer.Option(
        None, "--tile", help="Tile size in pixels (a multiple of 32); default: the manifest's tile size."
    ),
    overlap: int | None = typer.Option(
        None, "--overlap", help="Pixels shared by neighbours (<= tile/2); default: tile/4, at most 64."
    ),
    batch: int = typer.Option(1, "--batch", help="Tiles per engine call (tiles are batched per pattern)."),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="auto (TensorRT if built for this GPU), onnxruntime or tensorrt.",
    ),
    precision: str = typer.Option("fp32", "--precision", help="Engine precision: fp32, fp16 or int8."),
    min_valid: float = typer.Option(
        DEFAULT_MIN_VALID,
        "--min-valid",
        help="A modality is used in a tile from this valid fraction on (pixel by pixel where partly valid).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same command."),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
    overviews: bool = typer.Option(False, "--overviews", help="Add internal overviews to the outputs."),
    cog: bool = typer.Option(
        False, "--cog", help="Write Cloud Optimized GeoTIFFs (with overviews), built from the finished file."
    ),
    allow_flagged: bool = typer.Option(
        False, "--allow-flagged", help="Run engines the accuracy gate flagged at export (refused by default)."
    ),
    allow_out_of_range: bool = typer.Option(
        False,
        "--allow-out-of-range",
        help="Only warn when input values are far outside the engines' normalisation (refused by default).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Predict a scene from any subset of optical / SAR / DSM, picking the engine per tile."""
    from runtime import Predictor

    predictor = Predictor(
        engines,
        backend=backend.lower(),
        precision=precision.lower(),
        threads=threads,
        allow_flagged=allow_flagged,
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
            overviews=overviews,
            progress=progress,
            cog=cog,
            allow_out_of_range=allow_out_of_range,
        )
    finally:
        predictor.close()
    typer.echo(summary.format())
