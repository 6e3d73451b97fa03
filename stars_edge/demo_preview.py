"""The demo's preview PNG: scene, ground truth, prediction, errors, confidence and the pattern map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stars_edge.modalities import ALL_PATTERNS

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
