"""``stars-edge data ...``: make the synthetic benchmark, compute normalisation stats, probe modalities."""

from __future__ import annotations

from pathlib import Path

import typer

from stars_edge.errors import ConfigError

app = typer.Typer(
    help="Datasets: synthesise the benchmark, list formats, compute normalisation stats, probe modalities.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _cloud_region(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ConfigError(f"--cloud-region needs four numbers row0,col0,row1,col1 (fractions), got {text!r}")
    return values[0], values[1], values[2], values[3]


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder: index.json plus one folder per scene."),
    scenes: int = typer.Option(
        8, "--scenes", min=1, help="Number of scenes (split 70/15/15 train/val/test)."
    ),
    size: int = typer.Option(256, "--size", min=8, help="Scene side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Base seed; scene i uses a seed derived from (seed, i)."),
    clouds: float = typer.Option(
        0.0, "--clouds", min=0.0, max=1.0, help="Cloud cover fraction of the optical."
    ),
    cloud_region: str | None = typer.Option(
        None, "--cloud-region", help="Keep clouds inside row0,col0,row1,col1 (fractions of the scene)."
    ),
    sar_gap: float = typer.Option(
        0.0, "--sar-gap", min=0.0, max=0.95, help="Fraction of width lost as a SAR swath."
    ),
    dsm_voids: float = typer.Option(
        0.0, "--dsm-voids", min=0.0, max=0.95, help="Fraction of DSM pixels void."
    ),
    optical_bands: int = typer.Option(
        4, "--optical-bands", min=1, max=8, help="Optical bands (B,G,R,NIR,...)."
    ),
    pixel_size: float = typer.Option(1.0, "--pixel-size", help="Ground sampling distance in metres."),
    sar_looks: float = typer.Option(
        4.0, "--sar-looks", min=1.0, help="Equivalent number of looks (speckle)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write a synthetic optical/SAR/DSM benchmark as GeoTIFFs with an index.json of scenes and splits."""
    from stars_edge.data.synthetic import generate_dataset

    index = generate_dataset(
        out,
        scenes=scenes,
        size=size,
        seed=seed,
        progress=progress,
        cloud_cover=clouds,
        cloud_region=_cloud_region(cloud_region),
        sar_gap=sar_gap,
        dsm_voids=dsm_voids,
        optical_bands=optical_bands,
        pixel_size=pixel_size,
        sar_looks=sar_looks,
    )
    typer.echo(f"wrote {scenes} scenes of {size} px and {index}")


@app.command("mosaic")
def mosaic(
    out: Path = typer.Option(
        ..., "--out", help="Output folder for optical.tif, sar.tif, dsm.tif, label.tif."
    ),
    size: int = typer.Option(8192, "--size", min=32, help="Mosaic side in pixels."),
    block: int = typer.Option(1024, "--block", min=32, help="Block side: memory stays bounded by one block."),
    seed: int = typer.Option(0, "--seed", help="Base seed of the blocks."),
    clouds: float = typer.Option(0.0, "--clouds", min=0.0, max=1.0, help="Cloud cover fraction per block."),
    sar_gap: float = typer.Option(
        0.0, "--sar-gap", min=0.0, max=0.95, help="Fraction of width lost as a SAR swath."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write one very large scene block by block (independent blocks; for streaming benchmarks)."""
    from stars_edge.data.synthetic import write_mosaic_scene

    paths = write_mosaic_scene(
        out, size=size, block=block, seed=seed, progress=progress, cloud_cover=clouds, sar_gap=sar_gap
    )
    typer.echo(f"wrote a {size} x {size} px scene to {paths.directory}")


@app.command("formats")
def formats() -> None:
    """List the dataset layouts --format accepts."""
    from stars_edge.data.loaders import DATASET_FORMATS

    for name, fmt in DATASET_FORMATS.items():
        typer.echo(f"{name:14s} {fmt.description}")


@app.command("stats")
def stats(
    data: Path = typer.Option(..., "--data", help="Dataset root folder."),
    out: Path = typer.Option(Path("stats.json"), "--out", help="Where to write the statistics JSON."),
    format: str = typer.Option("auto", "--format", help="Dataset layout (see `stars-edge data formats`)."),
    split: str = typer.Option("train", "--split", help="Split to compute statistics on (train by default)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Per-band mean/std over valid pixels and class frequencies of one split, for normalisation."""
    from stars_edge.data.stats import write_dataset_stats

    path = write_dataset_stats(data, out, split=split, format=format, progress=progress)
    typer.echo(f"wrote {path}")


@app.command("probe")
def probe(
    data: Path = typer.Option(..., "--data", help="Dataset root folder."),
    out: Path | None = typer.Option(None, "--out", help="Also write the report as JSON here."),
    format: str = typer.Option("auto", "--format", help="Dataset layout (see `stars-edge data formats`)."),
    train_split: str = typer.Option(
        "train", "--train-split", help="Split the pixel classifier is fitted on."
    ),
    test_split: str = typer.Option("test", "--test-split", help="Split it is scored on (disjoint scenes)."),
    patterns: str = typer.Option(
        "all", "--patterns", help="Patterns to score, e.g. 'optical sar dsm' or all."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the training-pixel subsample."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score a per-pixel Gaussian classifier per modality pattern: how informative is each modality?"""
    from stars_edge.data.stats import format_study_table, run_modality_study

    report = run_modality_study(
        data,
        out,
        format=format,
        train_split=train_split,
        test_split=test_split,
        patterns=patterns,
        seed=seed,
        progress=progress,
    )
    typer.echo(format_study_table(report))
