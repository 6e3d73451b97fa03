"""The main job end to end on the embedded synthetic default (what ``make demo`` runs).

synthetic training set -> brief STARS training -> one ONNX engine per pattern + manifest -> streaming runtime
over a larger scene with a cloud/nodata region in the optical and a missing SAR swath -> prediction GeoTIFF,
preview PNG and a Markdown report with measured numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stars_edge.errors import OutputError
from stars_edge.io import ensure_writable_dir, write_text_atomic
from stars_edge.metrics import segmentation_scores
from stars_edge.modalities import ALL_PATTERNS


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and budgets of the demo; ``quick()`` is the under-2-minutes variant."""

    out: Path
    seed: int = 0
    variant: str = "edge"
    train_scenes: int = 16
    train_scene_size: int = 256
    train_steps: int = 600
    batch_size: int = 8
    train_tile: int = 128
    scene_size: int = 1024
    tile: int = 256
    overlap: int = 32
    precisions: tuple[str, ...] = ("fp32", "int8")
    calib_tiles: int = 8
    gate_tiles: int = 16
    threads: int | None = None
    latency_runs: int = 5
    quick: bool = False

    @classmethod
    def quick_config(cls, out: Path, seed: int = 0, threads: int | None = None) -> DemoConfig:
        return cls(
            out=out,
            seed=seed,
            variant="tiny",
            train_scenes=4,
            train_scene_size=128,
            train_steps=60,
            batch_size=4,
            train_tile=64,
            scene_size=512,
            tile=256,
            overlap=32,
            precisions=("fp32",),
            calib_tiles=8,
            gate_tiles=8,
            threads=threads,
            latency_runs=3,
            quick=True,
        )


@dataclass
class DemoResult:
    """Where the demo wrote its artifacts and what it measured."""

    out: Path
    prediction: Path
    pattern_map: Path
    preview: Path
    report: Path
    checkpoint: Path
    engines: Path
    miou: float
    per_pattern: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


StepCallback = Callable[[str], None]


def run_demo(config: DemoConfig, echo: StepCallback = print) -> DemoResult:
    """Run every stage of the pipeline into ``config.out`` and return what was written and measured."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a directory (it is created if missing)")
    ensure_writable_dir(out)
    timings: dict[str, float] = {}

    from stars_edge.data.synthetic import SyntheticConfig, generate_dataset, generate_scene, write_scene

    echo(f"[1/5] synthetic training set: {config.train_scenes} scenes of {config.train_scene_size} px")
    start = time.perf_counter()
    data_dir = out / "data"
    generate_dataset(data_dir, scenes=config.train_scenes, size=config.train_scene_size, seed=config.seed)
    scene = generate_scene(
        SyntheticConfig(size=config.scene_size, seed=config.seed + 10_000, cloud_cover=0.12, sar_gap=0.2)
    )
    scene_paths = write_scene(scene, out / "scene")
    timings["data"] = time.perf_counter() - start

    echo(f"[2/5] training a '{config.variant}' STARS model for {config.train_steps} steps")
    start = time.perf_counter()
    from training.config import TrainConfig
    from training.train import train

    train_result = train(
        TrainConfig(
            data=str(data_dir),
            variant=config.variant,
            method="stars",
            steps=config.train_steps,
            batch_size=config.batch_size,
            tile_size=config.train_tile,
            seed=config.seed,
            output_dir=out / "train",
            threads=config.threads or 0,
            val_every=config.train_steps,
            checkpoint_every=config.train_steps,
        )
    )
    checkpoint = Path(train_result.checkpoint)
    timings["train"] = time.perf_counter() - start

    precisions = ", ".join(config.precisions)
    echo(f"[3/5] exporting one engine per pattern ({len(ALL_PATTERNS)} patterns, {precisions})")
    start = time.perf_counter()
    from export.build import build_engines

    engines_dir = out / "engines"
    build_engines(
        checkpoint=checkpoint,
        out=engines_dir,
        patterns="all",
        precisions=config.precisions,
        calib_data=str(data_dir),
        calib_tiles=config.calib_tiles,
        gate_tiles=config.gate_tiles,
        tile=config.tile,
    )
    timings["export"] = time.perf_counter() - start

    echo(f"[4/5] streaming inference over a {config.scene_size} px scene with a cloud region and a SAR gap")
    start = time.perf_counter()
    from runtime import Predictor

    # FP32: on a CPU, TensorRT-legal (symmetric) INT8 runs slower than FP32 in ONNX Runtime (docs/EXPORT.md).
    precision = "fp32"
    predictor = Predictor(engines_dir, backend="onnxruntime", precision=precision, threads=config.threads)
    prediction_path = out / "prediction.tif"
    pattern_map_path = out / "pattern_map.tif"
    probabilities_path = out / "probabilities.tif"
    summary = predictor.predict_scene(
        optical=scene_paths.optical,
        sar=scene_paths.sar,
        dsm=scene_paths.dsm,
        cloud_mask=scene_paths.cloud_mask,
        out=prediction_path,
        pattern_map=pattern_map_path,
        probabilities=probabilities_path,
        tile=config.tile,
        overlap=config.overlap,
        overwrite=True,  # the demo remakes everything: an interrupted earlier demo's journal is discarded
    )
    timings["inference"] = time.perf_counter() - start

    echo("[5/5] scoring, preview and report")
    prediction, pattern_map = _read_band(prediction_path), _read_band(pattern_map_path)
    classes = len(scene.class_names)
    covered = pattern_map > 0
    overall = segmentation_scores(prediction, scene.label, classes, valid=covered)
    per_pattern: dict[str, dict[str, Any]] = {}
    # timing only: engines the gate flagged are timed too (their verdict is reported, never silently run)
    latencies = {
        p: Predictor(
            engines_dir, backend="onnxruntime", precision=p, threads=config.threads, allow_flagged=True
        ).measure_latency(tile=config.tile, runs=config.latency_runs)
        for p in config.precisions
    }
    from stars_edge.manifest import load_manifest

    gates: dict[tuple[str, str], str] = {
        (e.pattern.name, str(e.precision)): e.gate for e in load_manifest(engines_dir).engines
    }
    for pattern in ALL_PATTERNS:
        where = pattern_map == pattern.index
        row: dict[str, Any] = {
            "pixels": int(where.sum()),
            "latency_ms": {p: values.get(pattern.name) for p, values in latencies.items()},
            "gate": {p: gates.get((pattern.name, p), "not_built") for p in config.precisions},
        }
        if where.any():
            row["miou"] = segmentation_scores(prediction, scene.label, classes, valid=where).miou
        per_pattern[pattern.name] = row
    preview = out / "preview.png"
    if scene.optical is None:
        raise OutputError("the synthetic demo scene has no optical image to preview")
    confidence = _confidence(probabilities_path)
    render_preview(
        scene.optical,
        scene.valid["optical"],
        prediction,
        pattern_map,
        scene.class_names,
        preview,
        label=scene.label,
        confidence=confidence,
    )
    training_checks = last_training_checks(Path(train_result.log_path))
    report = out / "report.md"
    result = DemoResult(
        out=out,
        prediction=prediction_path,
        pattern_map=pattern_map_path,
        preview=preview,
        report=report,
        checkpoint=checkpoint,
        engines=engines_dir,
        miou=overall.miou,
        per_pattern=per_pattern,
        timings=timings,
    )
    write_text_atomic(
        report,
        render_report(
            config,
            result,
            overall.as_dict(scene.class_names),
            summary,
            precision,
            training_checks,
            edges=edge_lines(load_manifest(engines_dir)),
        ),
    )
    return result


def _read_band(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as dataset:
        return dataset.read(1)


def _confidence(path: Path) -> np.ndarray:
    """Max class probability per pixel (0..1) from the runtime's probability raster (NaN where nodata)."""
    import rasterio

    with rasterio.open(path) as dataset:
        probabilities = dataset.read().astype(np.float32)
        scale = 255.0 if dataset.dtypes[0] == "uint8" else 1.0
    confidence = probabilities.max(axis=0) / scale
    confidence[probabilities.sum(axis=0) == 0] = np.nan
    return confidence


#: Keys of the training log's last line that show the mechanisms are not inert (docs/MODEL.md).
TRAINING_CHECK_KEYS: tuple[str, ...] = ("psa", "psa_trivial", "translation_gain_min", "psa_gap_min")


def last_training_checks(log_path: Path) -> dict[str, float]:
    """``psa``, ``psa_trivial``, ``translation_gain_min``, ``psa_gap_min`` from a training log's last
    loss line (absent keys are left out)."""
    import json

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    losses = [row for row in rows if "total" in row]
    if not losses:
        return {}
    return {k: float(losses[-1][k]) for k in TRAINING_CHECK_KEYS if k in losses[-1]}


CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (190, 170, 130),  # background / bare soil
    (150, 210, 90),  # low vegetation
    (30, 110, 40),  # tree
    (40, 90, 200),  # water
    (120, 120, 120),  # road
    (220, 60, 50),  # building
    (250, 220, 0),  # car
)


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return (colour[0] / 255, colour[1] / 255, colour[2] / 255)


def render_preview(
    optical: np.ndarray,
    optical_valid: np.ndarray,
    prediction: np.ndarray,
    pattern_map: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    path: Path,
    label: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> Path:
    """Scene RGB (missing optical grey) | ground truth | prediction | confidence | pattern map, with legends.

    The confidence panel (max class probability) shows where a missing modality costs certainty; the
    ground-truth panel beside the prediction shows where it costs accuracy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    rgb = np.stack([optical[2], optical[1], optical[0]], axis=-1).astype(np.float32)
    finite = np.isfinite(rgb).all(axis=-1) & optical_valid
    low, high = np.percentile(rgb[finite], (2, 98)) if finite.any() else (0.0, 1.0)
    rgb = np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)
    rgb[~finite] = 0.5
    colours = [_rgb(CLASS_COLOURS[i % len(CLASS_COLOURS)]) for i in range(len(class_names))]
    pattern_colours = ["#000000", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]

    figure, grid = plt.subplots(2, 3, figsize=(18, 13), constrained_layout=True)
    axes = grid.ravel()
    axes[0].imshow(rgb)
    axes[0].set_title("scene (optical RGB; grey = optical missing)")
    class_map = ListedColormap(colours)
    legend = [Patch(color=c, label=n) for c, n in zip(colours, class_names, strict=True)]
    if label is not None:
        truth = np.ma.masked_where(label >= len(class_names), label)
        axes[1].imshow(truth, cmap=class_map, vmin=0, vmax=len(class_names) - 1, interpolation="nearest")
    axes[1].set_title("ground truth" if label is not None else "ground truth (not available)")
    shown = np.ma.masked_where(pattern_map == 0, prediction)
    axes[2].imshow(shown, cmap=class_map, vmin=0, vmax=len(class_names) - 1, interpolation="nearest")
    axes[2].set_title("STARS prediction")
    for axis in (axes[1], axes[2]):
        axis.legend(
            handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4, fontsize=8, frameon=False
        )
    if label is not None:
        wrong = (prediction != label) & (label < len(class_names)) & (pattern_map > 0)
        axes[3].imshow(np.where(wrong, 1.0, 0.0), cmap="Reds", vmin=0, vmax=1.5, interpolation="nearest")
        axes[3].set_title(f"errors (red: prediction differs from ground truth, {wrong.mean() * 100:.1f} %)")
    else:
        axes[3].set_title("errors (no ground truth)")
    if confidence is not None:
        image = axes[4].imshow(confidence, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        figure.colorbar(image, ax=axes[4], orientation="horizontal", fraction=0.05, pad=0.02)
    axes[4].set_title("confidence (max class probability)")
    axes[5].imshow(pattern_map, cmap=ListedColormap(pattern_colours), vmin=0, vmax=7, interpolation="nearest")
    axes[5].set_title("engine (modality pattern) used per pixel")
    present = sorted(int(v) for v in np.unique(pattern_map))
    names = ["none", *[p.name for p in ALL_PATTERNS]]
    axes[5].legend(
        handles=[Patch(color=pattern_colours[v], label=names[v]) for v in present],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    from stars_edge.io import atomic_path

    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    plt.close(figure)
    return path


def _number(value: float | None, digits: int) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def edge_lines(manifest: Any) -> list[str]:
    """How the engines' context margin and mask dilation were chosen (``build-engines --edge-selection``)."""
    margin = manifest.context_margin
    dilation = ", ".join(f"{m} {d} px" for m, d in manifest.mask_dilation.items()) or "none"
    choice = manifest.edge_choice
    if not choice:
        return [f"Context margin {margin} px (measured sensitivity bound), mask dilation {dilation}."]
    lines = [
        f"Context margin **{margin} px**, mask dilation **{dilation}**, chosen on "
        f"{choice.get('source', '?')} (the measured sensitivity bound was "
        f"{choice.get('measured_margin')} px).",
        "",
        "| margin (px) | optical dilation (px) | validation mIoU (%) |",
        "| ---: | ---: | ---: |",
    ]
    for row in choice.get("candidates", []):
        lines.append(f"| {row['context_margin']} | {row['optical_dilation']} | {row['miou']:.2f} |")
    return lines


def render_report(
    config: DemoConfig,
    result: DemoResult,
    overall: dict[str, Any],
    summary: Any,
    precision: str,
    training_checks: dict[str, float] | None = None,
    edges: list[str] | None = None,
) -> str:
    """The demo's Markdown report: configuration, per-pattern numbers, stage timings."""
    lines = [
        "# stars-edge demo report",
        "",
        f"Synthetic scene {config.scene_size}x{config.scene_size} px (seed {config.seed + 10_000}), "
        f"model variant `{config.variant}` trained {config.train_steps} steps on {config.train_scenes} "
        f"scenes of {config.train_scene_size} px (seed {config.seed}); engines: ONNX Runtime CPU, "
        f"`{precision}`; "
        f"tile {config.tile}, overlap {config.overlap}. Latency: median of {config.latency_runs} single-tile "
        "engine calls per precision on this machine.",
        "",
        "The scene is held out (its seed is disjoint from the training scenes). The model is trained only",
        "briefly, so the absolute mIoU is that of a demo, not of the method: see `benchmarks/`.",
        "",
        f"**Scene mIoU: {overall['miou']:.2f} %** (mF1 {overall['mf1']:.2f} %, pixel accuracy "
        f"{overall['pixel_accuracy']:.2f} %)",
        "",
        "## Per pattern",
        "",
        "| pattern | "
        + " | ".join(f"{p} latency (ms / tile)" for p in config.precisions)
        + " | pixels where it ran | mIoU there (%) |",
        "| --- | " + " | ".join("---:" for _ in config.precisions) + " | ---: | ---: |",
    ]
    for name, row in result.per_pattern.items():
        latency_cells = [
            _number(row["latency_ms"].get(p), 1)
            + (" (gate: flagged)" if row.get("gate", {}).get(p) == "flagged" else "")
            for p in config.precisions
        ]
        lines.append(
            f"| `{name}` | {' | '.join(latency_cells)} | {row['pixels']:,} | {_number(row.get('miou'), 2)} |"
        )
    lines += ["", "## Per class IoU (whole scene)", "", "| class | IoU (%) |", "| --- | ---: |"]
    for name, value in overall["per_class_iou"].items():
        lines.append(f"| {name} | {_number(value, 2) or 'n/a'} |")
    if training_checks:
        lines += ["", "## Mechanism checks (last training log line)", ""]
        if "psa" in training_checks and "psa_trivial" in training_checks:
            ratio = training_checks["psa"] / max(training_checks["psa_trivial"], 1e-9)
            lines.append(
                f"- PSA loss {training_checks['psa']:.3f} against its trivial value "
                f"{training_checks['psa_trivial']:.3f} (ratio {ratio:.2f}; below 0.85 means PSA learned)"
            )
        if "translation_gain_min" in training_checks:
            lines.append(
                f"- smallest translation gain over pairs and translated scales: "
                f"{training_checks['translation_gain_min']:.2f} (1 - error / error of the per-channel mean)"
            )
        if "psa_gap_min" in training_checks:
            lines.append(
                f"- smallest same-class minus other-class cosine gap of the PSA embedding: "
                f"{training_checks['psa_gap_min']:.2f}"
            )
    if edges:
        lines += ["", "## Cloud edges (chosen at export by measured mIoU)", "", *edges]
    lines += ["", "## Stage times", "", "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in result.timings.items()]
    lines += ["", "## Runtime summary", "", "```", summary.format(), "```"]
    lines += [
        "",
        "Files: `prediction.tif` (class map, scene CRS/transform), `pattern_map.tif` (pattern index per "
        "pixel, names in tags), `probabilities.tif` (per-class probability), `preview.png`, "
        "`engines/manifest.json`, `train/` (checkpoint and log), `scene/` and `data/`.",
        "",
    ]
    return "\n".join(lines)
