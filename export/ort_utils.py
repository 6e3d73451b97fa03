"""ONNX Runtime sessions for checks, calibration, the accuracy gate and benchmarks (CPU, deterministic)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.upsampling import input_resolution
from stars_edge.errors import ExportError
from stars_edge.manifest import OUTPUT_NAME


def make_session(
    path: str | Path,
    threads: int | None = None,
    optimized_model_path: str | Path | None = None,
    spin: bool = True,
) -> ort.InferenceSession:
    """A CPU session with full graph optimisation (QDQ -> QLinear fusions happen here).

    ``threads`` fixes intra-op threads (benchmarks compare like with like); ``optimized_model_path`` saves
    the graph ONNX Runtime actually runs, to inspect which kernels a placement produced. ``spin=False``
    stops idle worker threads busy-waiting, which would otherwise steal cores from whatever runs next
    (benchmarks that alternate engines on shared cores need that).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
        raise ExportError(f"ONNX Runtime cannot load {path}: {exc}") from exc


def run_logits(session: ort.InferenceSession, inputs: Mapping[str, np.ndarray], batch: int = 4) -> np.ndarray:
    """Logits for ``inputs`` (``{name: (N, C, H, W)}``) at the inputs' resolution (a stride-4 engine's
    upsampled as the runtime does: ``runtime.upsampling``), run ``batch`` tiles at a time to bound memory."""
    first = next(iter(inputs.values()))
    count, size = len(first), first.shape[-2:]
    outputs = []
    for start in range(0, count, batch):
        feed = {name: array[start : start + batch] for name, array in inputs.items()}
        outputs.append(input_resolution(session.run([OUTPUT_NAME], feed)[0], size))
    return np.concatenate(outputs, axis=0)
