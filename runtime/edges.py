"""Cloud edges by accuracy: the context margin and the optical mask dilation chosen by measured mIoU.

Why: the context margin measured at export (``export/context_margin.py``) is a sensitivity bound: the
distance at which a fill value still moves a probability by 1e-3. It is not an accuracy choice: a 64 px
margin throws away a lot of good optical data around every cloud, and real cloud masks miss the thin
edges of clouds, which a dilation of the mask handles better (measured on the demo's scene: docs/RUNTIME.md).
This module runs the runtime itself (``Predictor.predict_arrays``) over validation scenes with holes (clouds
whose thin edges lie outside their mask, SAR swath gaps) for each candidate (margin, optical dilation) and
keeps the best by mIoU; ties go to the larger margin and the smaller dilation (closer to the safe bound).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.predictor import Predictor
from stars_edge.metrics import confusion_matrix, scores_from_confusion

#: Candidate margins (px) besides the measured one, and optical dilations (px).
MARGINS: tuple[int, ...] = (0, 8, 16, 32)
DILATIONS: tuple[int, ...] = (0, 8, 16)
#: mIoU differences below this (points) are ties.
TIE = 0.05


@dataclass(frozen=True)
class HoleScene:
    """A validation scene as a product delivers it: physical arrays (NaN = nodata), a cloud mask, labels."""

    inputs: dict[str, np.ndarray]
    cloud_mask: np.ndarray | None
    label: np.ndarray


@dataclass
class EdgeChoice:
    """The chosen margin and dilation, and every candidate's score (for the manifest and the report)."""

    context_margin: int
    mask_dilation: dict[str, int]
    measured_margin: int
    scores: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": {"context_margin": self.context_margin, "mask_dilation": dict(self.mask_dilation)},
            "measured_margin": self.measured_margin,
            "metric": "mIoU over the validation scenes' pixels",
            "source": self.source,
            "candidates": self.scores,
        }


def choose_edges(
    engines: str | Path,
    scenes: Sequence[HoleScene],
    measured_margin: int,
    source: str,
    tile: int | None = None,
    margins: Sequence[int] = MARGINS,
    dilations: Sequence[int] = DILATIONS,
    log: Callable[[str], None] | None = None,
) -> EdgeChoice:
    """Score every (margin, optical dilation) on ``scenes`` with the FP32 engines in ``engines``."""
    candidates_margins = sorted({*margins, measured_margin})
    results: list[dict[str, Any]] = []
    for margin, dilation in itertools.product(candidates_margins, dilations):
        predictor = Predictor(
            engines,
            backend="onnxruntime",
            precision="fp32",
            threads=1,
            context_margin=margin,
            mask_dilation={"optical": dilation},
        )
        classes = predictor.classes
        confusion = np.zeros((classes, classes), dtype=np.int64)
        try:
            for scene in scenes:
                predicted, _ = predictor.predict_arrays(
                    scene.inputs, cloud_mask=scene.cloud_mask, tile=tile, allow_out_of_range=True
                )
                confusion += confusion_matrix(predicted, scene.label, classes)
        finally:
            predictor.close()
        results.append(
            {
                "context_margin": margin,
                "optical_dilation": dilation,
                "miou": scores_from_confusion(confusion).miou,
            }
        )
    best = max(r["miou"] for r in results)
    tied = [r for r in results if r["miou"] >= best - TIE]
    chosen = max(tied, key=lambda r: (r["context_margin"], -r["optical_dilation"]))
    if log is not None:
        table = ", ".join(f"{r['context_margin']}/{r['optical_dilation']}: {r['miou']:.2f}" for r in results)
        log(
            f"cloud edges (margin/optical dilation: mIoU on {source}): {table}; chosen margin "
            f"{chosen['context_margin']} px, optical dilation {chosen['optical_dilation']} px"
        )
    return EdgeChoice(
        context_margin=int(chosen["context_margin"]),
        mask_dilation={"optical": int(chosen["optical_dilation"])} if chosen["optical_dilation"] else {},
        measured_margin=measured_margin,
        scores=[{**r, "miou": round(r["miou"], 3)} for r in results],
        source=source,
    )
