"""The one small interface every inference backend implements.

The runtime only ever calls ``run`` with named, normalised ``float32 (N, bands, H, W)`` arrays and gets
``float32 (N, classes, H, W)`` logits back, so ONNX Runtime and native TensorRT are interchangeable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """An engine loaded on one backend: named float32 inputs in, ``logits`` out."""

    #: Backend name as spelled in the manifest (``onnxruntime`` or ``tensorrt``).
    name: str
    #: Human description of where it runs (execution providers, GPU), for logs and provenance tags.
    device: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run one batch; ``inputs`` maps modality name to ``float32 (N, bands, H, W)``."""
        ...

    def close(self) -> None:
        """Release sessions, device buffers and streams."""
        ...
