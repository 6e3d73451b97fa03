"""``stars-edge build-engines``: checkpoint -> one engine per pattern and precision, gated, plus manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from stars_edge.manifest import parse_precisions


def build_engines(
    checkpoint: list[Path] | None = typer.Option(
        None,
        "--checkpoint",
        help="Checkpoint (.pt) written by training (not with --from-onnx). Repeat it to mix checkpoints: "
        "per pattern, the one whose FP32 engine scores the best validation mIoU on the gate tiles is "
        "built (ties within --tie-tolerance go to fewer GFLOPs); the first is the default.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the engines and manifest.json (created if needed)."
    ),
    from_onnx: Path | None = typer.Option(
        None,
        "--from-onnx",
        help="An exported engine folder: build TensorRT engines here from its ONNX files (no checkpoint, "
        "no PyTorch); use with --backend tensorrt.",
    ),
    patterns: str = typer.Option(
        "all", "--patterns", help="'all' or a comma-separated list of patterns, e.g. 'optical+sar,sar'."
    ),
    precision: str = typer.Option(
        "fp32,fp16,int8",
        "--precision",
        help="Comma-separated precisions: fp32, fp16, int8 (fp32 is always built).",
    ),
    calib_data: str = typer.Option(
        "synthetic",
        "--calib-data",
        help="INT8 calibration tiles: 'synthetic' or a `stars-edge data synth` folder.",
    ),
    calib_tiles: int = typer.Option(
        32, "--calib-tiles", min=1, help="Number of calibration tiles per pattern."
    ),
    calib_method: str = typer.Option(
        "",
        "--calib-method",
        help="INT8 range calibration of --quantizer ours: percentile (99.999th of |x|), minmax or entropy "
        "(KL, 2048 bins).  [default: percentile]",
    ),
    control_tiles: int = typer.Option(
        32,
        "--control-tiles",
        min=0,
        help="INT8 accuracy control: tiles after the calibration tiles (same source, not the gate's) "
        "on which the layers that cost the most accuracy are found and kept float; 0 turns it off.",
    ),
    max_float_layers: int = typer.Option(
        8,
        "--max-float-layers",
        min=0,
        help="Most layers INT8 accuracy control may keep float per pattern (it stops at the fewest that "
        "keep the control-tile mIoU loss within half the --gate-budget).",
    ),
    gate_data: str = typer.Option(
        "synthetic",
        "--gate-data",
        help="Held-out tiles for the accuracy gate: 'synthetic' or a dataset folder.",
    ),
    gate_tiles: int = typer.Option(
        16, "--gate-tiles", min=1, help="Number of held-out tiles for the accuracy gate."
    ),
    gate_budget: float = typer.Option(
        1.0, "--gate-budget", min=0.0, help="Flag a precision losing more than this many mIoU points vs FP32."
    ),
    strict: bool = typer.Option(False, "--strict", help="Refuse to write an engine the accuracy gate flags."),
    edge_selection: bool = typer.Option(
        True,
        "--edge-selection/--no-edge-selection",
        help="Choose the context margin and the optical mask dilation by measured mIoU on synthetic "
        "validation scenes with clouds and SAR gaps (recorded in the manifest; overridable at run time); "
        "--no-edge-selection keeps the measured margin (a sensitivity bound) and no dilation.",
    ),
    backend: str = typer.Option(
        "onnxruntime",
        "--backend",
        help="onnxruntime (ONNX files) or tensorrt (also build TensorRT engines here).",
    ),
    opset: int = typer.Option(17, "--opset", min=17, max=20, help="ONNX opset (17-20)."),
    tile: int | None = typer.Option(
        None,
        "--tile",
        help="Tile size in pixels (multiple of 32) for the engines; default: the checkpoint's.",
    ),
    placement: str = typer.Option(
        "",
        "--int8-placement",
        help="Which ops get Q/DQ with --quantizer ours (see docs/EXPORT.md); default: the measured fastest.",
    ),
    quantizer: str = typer.Option(
        "",
        "--quantizer",
        help="Who writes the INT8 Q/DQ graph: nncf (OpenVINO's NNCF, the default for CPU builds: the fastest "
        "INT8 on OpenVINO and ONNX Runtime; uint8 activations, not for TensorRT), ours (TensorRT-legal, the "
        "default with --backend tensorrt; calibrated by --calib-method, placed by --int8-placement) or "
        "modelopt (NVIDIA ModelOpt, run from its own venv: make modelopt-venv). Every one goes through the "
        "same gate; left to its default, a pattern whose NNCF INT8 the gate flags gets ours instead when "
        "ours passes. See docs/EXPORT.md.  [default: nncf; ours with --backend tensorrt]",
    ),
    tie_tolerance: float = typer.Option(
        0.5,
        "--tie-tolerance",
        min=0.0,
        help="With several --checkpoint: candidates within this many validation mIoU points of the best "
        "tie, and a tie goes to the one with fewer GFLOPs for the pattern.",
    ),
    logits_stride: int = typer.Option(
        4,
        "--logits-stride",
        help="4 (default): engines return stride-4 logits, without the decoder's final x4 bilinear "
        "upsampling; the runtime blends at stride 4 and upsamples once per output pixel (1.2-1.5x faster "
        "scenes, the same mIoU within 0.1; --tile and --overlap must then be multiples of 4). 1: engines "
        "end with the upsampling (older runtimes, or tiles not a multiple of 4). See docs/RUNTIME.md.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Export ONNX per pattern (FP32/FP16/INT8), gate accuracy, build TensorRT engines where asked."""
    if from_onnx is not None:
        if checkpoint:
            raise typer.BadParameter("give --checkpoint or --from-onnx, not both", param_hint="--from-onnx")
        from export.from_onnx import build_engines_from_onnx

        _print_report(build_engines_from_onnx(from_onnx, backend.lower(), strict=strict), gate_budget)
        return
    if not checkpoint or out is None:
        raise typer.BadParameter(
            "needs --checkpoint and --out (or --from-onnx DIR)", param_hint="--checkpoint"
        )
    from export.build import BuildOptions
    from export.build import build_engines as run_build

    options = BuildOptions(
        checkpoint=checkpoint[0],
        other_checkpoints=tuple(checkpoint[1:]),
        tie_tolerance=tie_tolerance,
        logits_stride=logits_stride,
        out=out,
        patterns=patterns,
        precisions=parse_precisions(precision),
        calib_data=calib_data,
        calib_tiles=calib_tiles,
        calib_method=calib_method.lower(),
        control_tiles=control_tiles,
        max_float_layers=max_float_layers,
        placement=placement.lower(),
        quantizer=quantizer.lower(),
        gate_data=gate_data,
        gate_tiles=gate_tiles,
        gate_budget=gate_budget,
        backend=backend.lower(),  # type: ignore[arg-type]
        strict=strict,
        edge_selection=edge_selection,
        opset=opset,
        tile=tile,
        progress=progress,
    )
    _print_report(run_build(options), gate_budget)


def _print_report(report: Any, gate_budget: float) -> None:
    """The build's summary: one line per engine, then flagged/refused engines and notes on stderr."""
    typer.echo(
        f"{len(report.built)} built, {len(report.skipped)} up to date; manifest: {report.manifest_path}"
    )
    for entry in report.manifest.engines:
        miou = entry.accuracy["miou"] if entry.accuracy else None
        agreement = entry.accuracy["agreement_with_fp32"] if entry.accuracy else None
        typer.echo(
            f"  {entry.describe():<32} gate={entry.gate:<12} "
            f"mIoU={'n/a' if miou is None else f'{miou:.2f}'} "
            f"agreement={'n/a' if agreement is None else f'{agreement:.2f}%'}  {entry.path}"
            + (f"  from {_checkpoint_label(entry.checkpoint)}" if entry.checkpoint else "")
        )
    _print_selection(report.manifest)
    for label in report.flagged:
        typer.secho(
            f"FLAGGED: {label} loses more than {gate_budget} mIoU points vs FP32 (or a class more than "
            "its budget; see flagged_classes in manifest.json)",
            fg="yellow",
            err=True,
        )
    for label in report.refused:
        typer.secho(f"REFUSED (--strict): {label} was not written", fg="red", err=True)
    for note in report.notes:
        typer.secho(note, fg="yellow", err=True)


def _checkpoint_label(record: Any) -> str:
    """``name [method, sha256 12] val mIoU 71.23, 0.812 GFLOPs`` for an entry's ``checkpoint`` record."""
    return (
        f"{Path(str(record['path'])).name} [{record['method']}, {str(record['sha256'])[:12]}] "
        f"val mIoU {float(record['validation_miou']):.2f}, {float(record['gflops']):.4g} GFLOPs"
    )


def _print_selection(manifest: Any) -> None:
    """Per pattern of a several-checkpoint build: every candidate's score and why the chosen one won."""
    records = [(e.pattern, e.selection) for e in manifest.engines if e.selection and e.precision == "fp32"]
    seen = set()
    for pattern, record in records:
        if pattern in seen:
            continue
        seen.add(pattern)
        if not seen - {pattern}:
            typer.echo(
                "checkpoint per pattern (validation mIoU on the gate tiles; ties within "
                f"{record['tie_tolerance']} go to fewer GFLOPs):"
            )
        typer.echo(f"  {pattern}: {record['reason']}")
        for item in record["candidates"]:
            mark = "*" if item["sha256"] == record["chosen"] else " "
            typer.echo(f"    {mark} {_checkpoint_label(item)}  {item['path']}")
