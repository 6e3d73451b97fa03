"""The one small interface every inference backend implements.

The runtime only ever calls ``run`` with named, normalised ``float32 (N, bands, H, W)`` arrays and gets
``float32 (N, classes, H, W)`` logits back, so ONNX Runtime and native TensorRT are interchangeable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from stars_edge.errors import DataError


@runtime_checkable
class Backend(Protocol):
    """An engine loaded on one backend: named float32 inputs in, ``logits`` out."""

    #: Backend name as spelled in the manifest (``onnxruntime`` or ``tensorrt``).
    name: str
    #: Human description of where it runs (execution providers, GPU), for logs and provenance tags.
    device: str
    #: ``run`` calls that may be in flight at once from different threads (1: one at a time).
    concurrency: int

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run one batch; ``inputs`` maps modality name to ``float32 (N, bands, H, W)``."""
        ...

    def close(self) -> None:
        """Release sessions, device buffers and streams."""
        ...


def rejected_inputs(path: object, feed: Mapping[str, np.ndarray], exc: BaseException) -> DataError:
    """The one-line error for inputs an engine refused: the file, the shapes fed, the backend's reason."""
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feed.items())
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(
        f"{path} rejected inputs {shapes}: {reason}; check that the rasters match the bands the engines "
        "were built for"
    )
