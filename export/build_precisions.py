"""The precision steps of a build: FP16 and INT8 from a pattern's FP32 graph, and the gate's measurement.

FP16 casts inside the graph (float32 IO). INT8 is calibrated on that pattern's calibration tiles by the
chosen quantizer (``export/quantizers.py``); with control tiles, accuracy control keeps the costliest layers
float (``export/accuracy_control.py``); a vendor quantizer's graph is checked against TensorRT's Q/DQ rules.
``measure_accuracy`` scores any precision on the gate's held-out tiles against the pattern's FP32 graph
(``export/gate.py``), on ONNX Runtime and, where it runs the file, OpenVINO.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx

from export import gate
from export.accuracy_control import CONTROL_MARGIN, MIN_CONTROL_TILES, ControlTiles, control_int8
from export.build_options import BuildOptions
from export.fp16 import convert_to_fp16
from export.qdq_legality import tensorrt_legality_problems
from export.quantizers import quantize_with, tensorrt_refusal
from export.tiles import TileSet, check_disjoint, load_tiles
from stars_edge.errors import ExportError
from stars_edge.manifest import EngineAccuracy
from stars_edge.modalities import ModalitySpec, Pattern


def load_calibration_tiles(
    options: BuildOptions,
    specs: dict[str, ModalitySpec],
    tile: int,
    gate_tiles: Callable[[], TileSet],
    ignore_index: int,
    notes: list[str],
) -> tuple[TileSet, TileSet | None]:
    """Calibration tiles, then control tiles from the same source (None: accuracy control is off).

    Accuracy control is off when asked (``--control-tiles 0`` or ``--max-float-layers 0``), and off with a
    note in ``notes`` when the source has fewer than ``MIN_CONTROL_TILES`` beyond the calibration tiles or
    they carry no labels. Both sets must be disjoint from the gate's tiles (``gate_tiles``, loaded on demand).
    """
    calibration = options.calib_tiles
    control = options.control_tiles if options.max_float_layers else 0
    tiles = load_tiles(options.calib_data, specs, calibration + control, tile, "calibration", calibration)
    calib_tiles = tiles.subset(slice(0, calibration))
    check_disjoint(calib_tiles, gate_tiles())
    if not control:
        return calib_tiles, None
    rest = tiles.subset(slice(calibration, None))
    if len(rest) < MIN_CONTROL_TILES:
        notes.append(
            f"INT8 accuracy control off: {tiles.source} has {len(rest)} tile(s) beyond the {calibration} "
            f"calibration tiles, {MIN_CONTROL_TILES} needed (lower --calib-tiles or give more data)"
        )
    elif not (rest.labels != ignore_index).any():
        notes.append(f"INT8 accuracy control off: the control tiles of {tiles.source} have no labels")
    else:
        check_disjoint(rest, gate_tiles())
        return calib_tiles, rest
    return calib_tiles, None


def write_fp16(source: Path, target: Path) -> None:
    """The FP16 graph of ``source`` (casts inside, float32 IO) at ``target``."""
    onnx.save(convert_to_fp16(onnx.load(str(source))), str(target))


def quantize_pattern(
    pattern: Pattern,
    source: Path,
    target: Path,
    options: BuildOptions,
    calib_tiles: TileSet,
    control: TileSet | None,
    classes: int,
    ignore_index: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """INT8 graph of ``pattern`` at ``target``; with control tiles, its costliest layers stay float.

    Returns the entry's ``quantization`` record (empty when nothing beyond the options describes it).
    """
    inputs = calib_tiles.select(pattern.modalities)
    with tempfile.TemporaryDirectory(prefix="stars-int8-") as scratch:
        ranges = Path(scratch) / "ranges.json"

        def quantize(float_nodes: Sequence[str], path: Path) -> Path:
            return quantize_with(
                options.quantizer, source, path, inputs, float_nodes, options.calib_method,
                options.placement, ranges_cache=ranges,
            )  # fmt: skip

        if control is None:
            quantize((), target)
            return tensorrt_check(pattern, target, options.quantizer)
        tiles = ControlTiles(control.select(pattern.modalities), control.labels, classes, ignore_index)
        result = control_int8(
            quantize, source, target, tiles, options.gate_budget * CONTROL_MARGIN,
            options.max_float_layers, progress=lambda line: log(f"{pattern} int8: {line}"),
        )  # fmt: skip
    if result.float_layers:
        log(
            f"{pattern} int8: {len(result.float_layers)} layer(s) kept float; control-tile mIoU drop "
            f"{result.drop_before:.2f} -> {result.drop_after:.2f}"
        )
    return {**result.to_dict(), **tensorrt_check(pattern, target, options.quantizer)}


def tensorrt_check(pattern: Pattern, path: Path, quantizer: str) -> dict[str, Any]:
    """Vendor INT8 graphs against TensorRT's Q/DQ rules (ours checks its own while quantizing).

    ModelOpt's must pass (it is TensorRT's quantizer); NNCF's uint8 activations cannot, which is recorded
    in the entry's ``quantization`` (``--backend tensorrt`` refuses ``--quantizer nncf`` up front).
    """
    if quantizer == "ours":
        return {}
    problems = tensorrt_legality_problems(onnx.load(str(path)))
    if not problems:
        return {}
    if tensorrt_refusal(quantizer) is None:
        raise ExportError(
            f"{pattern}: the {quantizer} INT8 graph is not TensorRT-legal: {'; '.join(problems[:3])}"
        )
    return {"tensorrt_legal": False, "tensorrt_problems": [*problems[:3], f"({len(problems)} in all)"]}


def measure_accuracy(
    pattern: Pattern,
    precision: str,
    path: Path,
    fp32_path: Path,
    reference: dict[Pattern, gate.Predictions],
    tiles: TileSet,
    class_names: tuple[str, ...],
    ignore_index: int,
    budget: float,
    log: Callable[[str], None],
) -> EngineAccuracy:
    """``path``'s accuracy on the gate ``tiles`` and the gate's verdict against ``pattern``'s FP32 graph.

    ``reference`` caches each pattern's FP32 predictions (``fp32_path``, or ``path`` itself for FP32).
    """
    inputs = tiles.select(pattern.modalities)
    if pattern not in reference:
        source = path if precision == "fp32" else fp32_path
        reference[pattern] = gate.predict(source, inputs)
    names, ignore = class_names, ignore_index
    fp32_accuracy = gate.measure(
        reference[pattern], reference[pattern], tiles.labels, names, ignore, None, budget
    )
    if precision == "fp32":
        return EngineAccuracy(**{**fp32_accuracy, "miou_drop": 0.0, "gate": "pass"})
    prediction, reason = gate.try_predict(path, inputs)
    if prediction is None:
        log(f"{pattern} {precision}: not measured, ONNX Runtime cannot run it on this CPU ({reason})")
    accuracy = gate.measure(
        prediction,
        reference[pattern],
        tiles.labels,
        names,
        ignore,
        fp32_accuracy["miou"],
        budget,
        reference_per_class=fp32_accuracy["per_class_iou"],
    )
    return gate.with_openvino(  # OpenVINO runs these files on CPUs: gate what will run
        accuracy, path, inputs, reference[pattern], tiles.labels, names, ignore, fp32_accuracy, budget
    )
