"""``stars-edge demo``: the whole pipeline on the embedded synthetic default."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output directory (created if missing)."),
    seed: int = typer.Option(0, help="Seed for data generation and training; same seed, same prediction."),
    quick: bool = typer.Option(
        False, "--quick", help="A smaller, faster run (tiny model, fewer steps, smaller scene): < 2 minutes."
    ),
    steps: int | None = typer.Option(None, min=1, help="Override the number of training steps."),
    threads: int | None = typer.Option(
        None, min=1, help="CPU threads for training and inference (default: all cores)."
    ),
) -> None:
    """Generate synthetic data, train briefly, export one engine per pattern, run the streaming runtime over a
    scene with a cloud region and a SAR gap, and write prediction.tif, preview.png and report.md."""
    from dataclasses import replace

    from stars_edge.demo import DemoConfig, run_demo

    if quick:
        config = DemoConfig.quick_config(out, seed, threads)
    else:
        config = DemoConfig(out=out, seed=seed, threads=threads)
    if steps is not None:
        config = replace(config, train_steps=steps)
    result = run_demo(config, echo=typer.echo)
    typer.echo(f"scene mIoU {result.miou:.2f} %")
    typer.echo(f"wrote {result.prediction}, {result.preview}, {result.report}")
