"""``stars-edge eval``: score a checkpoint on a dataset split for every modality-availability pattern."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="checkpoint.pt written by python -m training.train."
    ),
    data: Path = typer.Option(
        ..., "--data", help="Dataset folder (e.g. written by `stars-edge data synth`)."
    ),
    split: str = typer.Option("test", "--split", help="Dataset split to score (train, val or test)."),
    patterns: str = typer.Option(
        "all", "--patterns", help="Patterns to score: 'all' or a list such as 'optical+sar,sar'."
    ),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Tiles per inference batch."),
    dataset_format: str = typer.Option("auto", "--format", help="Dataset layout (auto detects)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the scores as JSON to this file."),
) -> None:
    """Print mIoU, mF1 and per-class IoU (percent) of the checkpoint for every requested pattern."""
    from stars_edge.io import write_json_atomic
    from training.evaluation import evaluate_checkpoint

    report = evaluate_checkpoint(checkpoint, data, split, patterns, batch_size, dataset_format)
    typer.echo(report.format())
    if json_out is not None:
        write_json_atomic(
            json_out,
            {"checkpoint": str(checkpoint), "data": str(data), "split": split, "rows": report.rows()},
        )
        typer.echo(f"wrote {json_out}")
