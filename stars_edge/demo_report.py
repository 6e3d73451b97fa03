"""The demo's Markdown report (``render_report``), from what ``run_demo`` measured and the engine manifest.

Torch-free and file-free: every input is passed in, so the report renders without running the demo.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stars_edge.demo_config import DemoConfig, DemoResult
from stars_edge.manifest import Manifest


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


def decoder_kind(config: Mapping[str, Any], model_kwargs: Mapping[str, Any]) -> str:
    """The decoder a checkpoint was trained with: ``decoder`` in its saved training config, else in its
    model config (``shared`` or ``per_pattern``; ``?`` when neither records it)."""
    return str(config.get("decoder") or model_kwargs.get("decoder") or "?")


def engine_lines(
    manifest: Manifest, checkpoint: str | None = None, decoders: Mapping[str, str] | None = None
) -> list[str]:
    """Where each pattern's engines came from: precisions (INT8 with its quantizer), checkpoint (file name,
    first 12 hex of its sha256), method and decoder kind, one table row per pattern and checkpoint.

    A build from several checkpoints records each entry's ``checkpoint``; a one-checkpoint manifest records
    only the model's sha256 and method, so ``checkpoint`` names its file. ``decoders`` maps a checkpoint's
    sha256 to its decoder kind (``decoder_kind``).
    """
    decoders = decoders or {}
    rows: dict[tuple[str, str], tuple[str, str, list[str]]] = {}
    for entry in manifest.engines:
        if entry.checkpoint:
            sha256 = str(entry.checkpoint.get("sha256", ""))
            name = Path(str(entry.checkpoint.get("path", "?"))).name
            method = str(entry.checkpoint.get("method", "?"))
        else:
            sha256, name, method = manifest.model.checkpoint_sha256, checkpoint or "?", manifest.model.method
        _, _, precisions = rows.setdefault((entry.pattern.name, sha256), (name, method, []))
        quantizer = entry.int8_quantizer if entry.options.get("quantizer") else None
        label = f"{entry.precision} ({quantizer})" if quantizer else entry.precision
        if label not in precisions:
            precisions.append(label)
    lines = [
        "| pattern | precisions | checkpoint (sha256) | method | decoder |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (pattern, sha256), (name, method, precisions) in rows.items():
        lines.append(
            f"| `{pattern}` | {', '.join(precisions)} | `{name}` (`{sha256[:12]}`) | {method} | "
            f"{decoders.get(sha256, '?')} |"
        )
    if manifest.logits_stride != 1:
        lines += [
            "",
            f"The engines return logits at stride {manifest.logits_stride} (`build-engines "
            "--logits-stride`, the default): the runtime blends them at that stride and upsamples once per "
            "output pixel.",
        ]
    return lines


def render_report(
    config: DemoConfig,
    result: DemoResult,
    overall: dict[str, Any],
    summary: Any,
    precision: str,
    training_checks: dict[str, float] | None = None,
    edges: list[str] | None = None,
    engines: list[str] | None = None,
) -> str:
    """The demo's Markdown report: configuration, per-pattern numbers, where the engines came from
    (``engines``: ``engine_lines``), stage timings."""
    lines = [
        "# stars-edge demo report",
        "",
        f"Synthetic scene {config.scene_size}x{config.scene_size} px (seed {config.seed + 10_000}), "
        f"model variant `{config.variant}` trained {config.train_steps} steps on {config.train_scenes} "
        f"scenes of {config.train_scene_size} px (seed {config.seed}); engines: ONNX Runtime CPU, "
        f"`{precision}`; "
        f"tile {config.tile}, overlap {config.overlap}. Latency: median of {config.latency_runs} single-tile "
        "engine calls per precision on this machine, with as many in flight at once as the runtime keeps "
        "(two on a CPU backend), each counted at its share of the time (`Predictor.measure_latency`).",
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
    if engines:
        lines += ["", "## Engines", "", *engines]
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
