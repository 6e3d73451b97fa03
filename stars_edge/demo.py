"""The main job end to end on the embedded synthetic default (what ``make demo`` runs).

synthetic training set -> brief STARS training -> one ONNX engine per pattern + manifest -> streaming runtime
over a larger scene with a cloud/nodata region in the optical and a missing SAR swath -> prediction GeoTIFF,
preview PNG and a Markdown report with measured numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stars_edge.demo_config import DemoConfig, DemoResult
from stars_edge.demo_preview import render_preview
from stars_edge.demo_report import decoder_kind, edge_lines, engine_lines, render_report
from stars_edge.errors import OutputError, StarsEdgeError
from stars_edge.io import ensure_writable_dir, write_text_atomic
from stars_edge.manifest import Manifest, load_manifest
from stars_edge.metrics import segmentation_scores
from stars_edge.modalities import ALL_PATTERNS

__all__ = [
    "TRAINING_CHECK_KEYS",
    "DemoConfig",
    "DemoResult",
    "checkpoint_decoders",
    "last_training_checks",
    "render_preview",
    "render_report",
    "run_demo",
]


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

    # FP32: the runtime's default precision; the report times INT8 (NNCF's, a CPU build's default) beside it.
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
    manifest = load_manifest(engines_dir)
    write_text_atomic(
        report,
        render_report(
            config,
            result,
            overall.as_dict(scene.class_names),
            summary,
            precision,
            training_checks,
            edges=edge_lines(manifest),
            engines=engine_lines(manifest, checkpoint.name, checkpoint_decoders(manifest, checkpoint)),
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


def checkpoint_decoders(manifest: Manifest, default: Path) -> dict[str, str]:
    """sha256 -> decoder kind of each checkpoint the manifest's engines came from (``decoder_kind`` of
    its saved config): those a multi-checkpoint manifest lists, else ``default``; unreadable ones left out."""
    from stars_edge.checkpoint import CheckpointMeta, read_checkpoint

    listed = [(Path(str(c["path"])), str(c["sha256"])) for c in manifest.model.checkpoints]
    decoders: dict[str, str] = {}
    for path, sha256 in listed or [(default, manifest.model.checkpoint_sha256)]:
        try:
            meta = CheckpointMeta.from_dict(read_checkpoint(path)["meta"])
        except (StarsEdgeError, KeyError, TypeError, ValueError):
            continue
        decoders[sha256] = decoder_kind(meta.config, meta.model_kwargs)
    return decoders
