"""INT8 by explicit Q/DQ: calibrated per pattern, TensorRT-legal, placed the way TensorRT wants it.

TensorRT-legal means: every QuantizeLinear/DequantizeLinear zero point is 0 (symmetric), activations and
weights are int8, Conv weights are quantised per output channel (axis 0), Conv biases stay float (TensorRT
dequantises no int32). ONNX Runtime's ``quantize_static`` defaults are not legal (asymmetric uint8
activations), so every option is set explicitly here.

*Placement* (which tensors get Q/DQ). The default, ``tensorrt``, follows TensorRT's guidance for explicit
quantization: quantize the *inputs* of weighted layers (Conv, ConvTranspose, Gemm, MatMul) and of residual
Adds (two activations), never their outputs, and leave the head (the classifier and everything after it:
upsampling, ``logits``) and the layers that read the raw network inputs in float. TensorRT then fuses
``DQ -> Conv`` (+ residual add) into INT8 kernels and chooses the output precision itself. OpenVINO, the
fast INT8 path on CPUs, needs exactly the same thing (int8 inputs to its convolutions). The older placements
quantized every Conv *output* too, logits included, to suit ONNX Runtime's ``QLinearConv`` fusion, which
cannot run symmetric INT8 fast on x86 anyway;
``studies/int8_placement.py`` measures them all (numbers in docs/EXPORT.md).

Before quantizing, every Conv that reads a Concat is split into one conv per Concat input plus a float sum
(``export/concat_split.py``): OpenVINO's CPU plugin computes int8 Concat -> Conv wrongly.

Calibration (methods, tile checks, the calibration reader, entropy ranges) is in ``export/calibration.py``,
the placements and graph rewrites in ``export/qdq_placement.py``, the TensorRT legality checks in
``export/qdq_legality.py``; their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export.calibration import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    ENTROPY_HISTOGRAM_BINS,
    ENTROPY_QUANTIZED_BINS,
    MIN_CALIBRATION_TILES,
    CalibrationMethodName,
    TileCalibrationReader,
    entropy_ranges,
    ort_calibration_method,
    validate_calibration_tiles,
)
from export.concat_split import split_concat_convs
from export.qdq_legality import float_head_problems, tensorrt_legality_problems
from export.qdq_placement import (
    DEFAULT_PLACEMENT,
    PLACEMENTS,
    WEIGHTED_OPS,
    Placement,
    head_nodes,
    input_layers,
    named_nodes,
    non_residual_adds,
    read_float_inputs,
    relu_as_leaky_relu,
)
from stars_edge.errors import DataError, ExportError
from stars_edge.io import atomic_path

__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_CALIBRATION_METHOD",
    "DEFAULT_PLACEMENT",
    "ENTROPY_HISTOGRAM_BINS",
    "ENTROPY_QUANTIZED_BINS",
    "MIN_CALIBRATION_TILES",
    "PLACEMENTS",
    "WEIGHTED_OPS",
    "CalibrationMethodName",
    "Placement",
    "TileCalibrationReader",
    "entropy_ranges",
    "float_head_problems",
    "head_nodes",
    "input_layers",
    "non_residual_adds",
    "quantize_int8",
    "read_float_inputs",
    "relu_as_leaky_relu",
    "tensorrt_legality_problems",
    "validate_calibration_tiles",
]


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    tiles: Mapping[str, np.ndarray],
    method: str = DEFAULT_CALIBRATION_METHOD,
    placement: str = DEFAULT_PLACEMENT,
    batch: int = 4,
    float_nodes: Sequence[str] = (),
    ranges_cache: Path | None = None,
) -> Path:
    """Write a TensorRT-legal Q/DQ INT8 copy of a (simplified) FP32 graph, calibrated on ``tiles``.

    ``float_nodes`` stay unquantized on top of the placement's own (``export/accuracy_control.py`` picks
    them). ``ranges_cache``: a file for the calibrated ranges; written when absent, read when present, so
    re-quantizing with other ``float_nodes`` skips calibration. It must belong to this graph and method.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if placement not in PLACEMENTS:
        raise ExportError(f"unknown INT8 placement {placement!r}; choose {', '.join(PLACEMENTS)}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    model, partial_sums = split_concat_convs(named_nodes(onnx.load(str(fp32_path))))
    chosen = PLACEMENTS[placement]
    if chosen.relu_as_leaky:
        model = relu_as_leaky_relu(model)
    excluded = partial_sums + list(float_nodes) + (head_nodes(model) if chosen.float_head else [])
    if chosen.float_inputs:
        excluded += input_layers(model)
    if chosen.residual_adds_only:
        excluded += non_residual_adds(model)
    bands = {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in model.graph.input}
    validate_calibration_tiles(tiles, bands, source=str(fp32_path))
    reader = TileCalibrationReader({name: tiles[name] for name in bands}, batch=batch)
    extra_options: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "CalibTensorRangeSymmetric": True,
    }
    if chosen.inputs_only:
        extra_options["OpTypesToExcludeOutputQuantization"] = list(chosen.op_types or [])
    with (
        atomic_path(out_path) as tmp,
        _quiet(),
        tempfile.TemporaryDirectory(prefix="stars-calib-") as scratch,
    ):
        try:
            if method == "entropy" and not (ranges_cache and ranges_cache.is_file()):
                ranges = entropy_ranges(model, chosen.op_types, reader, Path(scratch))
                ranges_cache = Path(shutil.copyfile(ranges, ranges_cache)) if ranges_cache else ranges
            quantize_static(
                model,
                str(tmp),
                calibration_data_reader=None if ranges_cache and ranges_cache.is_file() else reader,
                calibration_cache_path=ranges_cache,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=False,
                calibrate_method=ort_calibration_method(method),
                op_types_to_quantize=list(chosen.op_types or []) or None,
                nodes_to_exclude=excluded,
                extra_options=extra_options,
            )
        except (DataError, ExportError):
            raise
        except Exception as exc:  # onnxruntime's quantizer raises bare Exceptions/ValueErrors
            raise ExportError(
                f"INT8 quantisation of {fp32_path} failed: {type(exc).__name__}: {exc}"
            ) from exc
        quantized = onnx.load(str(tmp))
        if float_nodes:
            read_float_inputs(quantized, float_nodes)
            onnx.save(quantized, str(tmp))
        problems = tensorrt_legality_problems(quantized)
        if chosen.float_head:
            problems += float_head_problems(quantized)
        if problems:
            raise ExportError(f"INT8 graph for {fp32_path} is not TensorRT-legal: {'; '.join(problems[:3])}")
    return out_path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs every tensor it calibrates; keep progress bars readable."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
