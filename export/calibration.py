"""INT8 calibration: the methods, the check of the calibration tiles, the reader that feeds them to ONNX
Runtime's calibrator, and entropy calibration at TensorRT's histogram resolution (``export/quantize.py``
quantizes with them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import onnx

from stars_edge.errors import DataError, ExportError

CalibrationMethodName = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[CalibrationMethodName, ...] = get_args(CalibrationMethodName)
#: Fewer tiles than this give ranges set by a handful of pixels: refuse rather than ship a fragile INT8.
MIN_CALIBRATION_TILES = 4
#: Percentile: on the study's `stars` checkpoint its INT8 graphs are closer to FP32 on the calibration tiles
#: than min-max's for all 7 patterns (benchmarks/results/int8_calibration.md); entropy is far worse.
DEFAULT_CALIBRATION_METHOD: CalibrationMethodName = "percentile"
#: Entropy calibration: histogram bins, and the bins ONNX Runtime's KL search merges a candidate range into
#: (TensorRT uses 2048 and 128; 255, int8's symmetric grid, measured far worse: docs/EXPORT.md).
ENTROPY_HISTOGRAM_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128


def ort_calibration_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in table:
        raise ExportError(f"unknown calibration method {method!r}; choose {', '.join(CALIBRATION_METHODS)}")
    return table[method]


def validate_calibration_tiles(
    tiles: Mapping[str, np.ndarray],
    expected_bands: Mapping[str, int],
    source: str,
    min_tiles: int = MIN_CALIBRATION_TILES,
) -> int:
    """Check names, band counts, shapes and count of calibration tiles; returns the number of tiles."""
    missing = [name for name in expected_bands if name not in tiles]
    if missing:
        raise DataError(f"{source}: calibration tiles lack {', '.join(missing)}; the pattern needs them")
    counts = set()
    for name, bands in expected_bands.items():
        array = tiles[name]
        if array.ndim != 4 or array.shape[1] != bands:
            raise DataError(
                f"{source}: {name} calibration tiles have shape {tuple(array.shape)}, "
                f"expected (N, {bands}, H, W); the data's {name} band count does not match the checkpoint"
            )
        if array.shape[2] % 32 or array.shape[3] % 32:
            raise DataError(f"{source}: tile size {array.shape[2]}x{array.shape[3]} must be a multiple of 32")
        if not np.isfinite(array).all():
            raise DataError(
                f"{source}: {name} calibration tiles contain NaN/inf; fill or drop invalid pixels"
            )
        counts.add(array.shape[0])
    if len(counts) != 1:
        raise DataError(f"{source}: modalities have different tile counts {sorted(counts)}")
    count = counts.pop()
    if count < min_tiles:
        raise DataError(
            f"{source}: {count} calibration tile(s) is too few for INT8 ranges; give at least {min_tiles} "
            "(raise --calib-tiles or use a larger --calib-data)"
        )
    return count


class TileCalibrationReader:
    """Feeds calibration tiles to onnxruntime's calibrator ``batch`` at a time (CalibrationDataReader API)."""

    def __init__(self, tiles: Mapping[str, np.ndarray], batch: int = 4) -> None:
        self._tiles = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in tiles.items()}
        self._count = len(next(iter(self._tiles.values())))
        self._batch = batch
        self._start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._start >= self._count:
            return None
        stop = self._start + self._batch
        batch = {name: array[self._start : stop] for name, array in self._tiles.items()}
        self._start = stop
        return batch

    def rewind(self) -> None:
        self._start = 0

    def __len__(self) -> int:
        return -(-self._count // self._batch)


def entropy_ranges(
    model: onnx.ModelProto, op_types: tuple[str, ...] | None, reader: TileCalibrationReader, scratch: Path
) -> Path:
    """Entropy (KL) calibration at TensorRT's histogram resolution; returns a ranges file for quantize_static.

    ``quantize_static`` builds its entropy calibrator with 128 histogram bins and 128 quantized bins, which
    leaves the KL search a single candidate threshold (the full range): its "entropy" INT8 file was
    byte-identical to min-max. It passes no bin count through, so the calibrator runs here with
    ``ENTROPY_HISTOGRAM_BINS`` and its ranges reach ``quantize_static`` as a calibration cache. ONNX
    Runtime's KL search clips hard on this model (docs/EXPORT.md has the numbers); it is not the default.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    source = scratch / "model.onnx"
    onnx.save(model, str(source))
    calibrator = create_calibrator(
        source,
        list(op_types or set(QLinearOpsRegistry) | set(QDQRegistry)),
        augmented_model_path=str(scratch / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={
            "symmetric": True,
            "num_bins": ENTROPY_HISTOGRAM_BINS,
            "num_quantized_bins": ENTROPY_QUANTIZED_BINS,
        },
    )
    reader.rewind()
    calibrator.collect_data(reader)
    ranges = scratch / "entropy_ranges.json"
    save_tensors_data(calibrator.compute_data(), ranges)
    return ranges
