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
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from export.concat_split import split_concat_convs
from stars_edge.errors import DataError, ExportError
from stars_edge.io import atomic_path

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


@dataclass(frozen=True)
class Placement:
    """Which ops receive Q/DQ, and whether Relu is rewritten so it has an integer kernel."""

    name: str
    op_types: tuple[str, ...] | None  # None: every op type onnxruntime can quantise
    description: str
    relu_as_leaky: bool = False  # Relu -> LeakyRelu(alpha=0): same function, but an integer kernel exists
    inputs_only: bool = False  # Q/DQ on the inputs of the placed ops, never on their outputs
    float_head: bool = False  # the classifier and everything after it stay float
    residual_adds_only: bool = False  # an Add is quantized only when both its inputs are activations
    float_inputs: bool = False  # the layers that read the network's inputs stay float


#: Candidate placements, measured by studies/int8_placement.py. All are TensorRT-legal.
#: Layers with weights: TensorRT's INT8 kernels are these, fed by DQ on their activation and weight inputs.
WEIGHTED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")

PLACEMENTS: dict[str, Placement] = {
    p.name: p
    for p in (
        Placement(
            "tensorrt",
            (*WEIGHTED_OPS, "Add"),
            "TensorRT's placement: inputs of weighted layers and residual adds; head and logits in float",
            inputs_only=True,
            float_head=True,
            residual_adds_only=True,
            float_inputs=True,
        ),
        Placement("conv", ("Conv",), "Q/DQ around Conv only; everything else runs in float"),
        Placement(
            "conv+eltwise",
            ("Conv", "Add", "Mul", "Concat"),
            "Conv plus the element-wise ops between convs (Add, Mul, Concat) so activations stay int8",
        ),
        Placement("all", None, "every op type onnxruntime can quantise"),
        Placement(
            "all+int8relu",
            None,
            "every op type, with Relu written as LeakyRelu(alpha=0) so it runs as an integer lookup",
            relu_as_leaky=True,
        ),
    )
}
DEFAULT_PLACEMENT = "tensorrt"


def _ort_calibration_method(method: str) -> Any:
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
    model, partial_sums = split_concat_convs(_named_nodes(onnx.load(str(fp32_path))))
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
                calibrate_method=_ort_calibration_method(method),
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


def read_float_inputs(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Make the named nodes read their activations before quantization, in place.

    ``quantize_static`` excludes a node from quantization but still routes every reader of a quantized
    tensor through its Q/DQ pair, so an excluded conv that shares its input with a quantized one would still
    see int8-rounded values. Here each such input is rewired to the float tensor the QuantizeLinear reads;
    Q/DQ nodes that no longer have readers are removed.
    """
    wanted = set(names)
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        for index, name in enumerate(node.input):
            dequantize = producers.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = producers.get(dequantize.input[0])
            if quantize is not None and quantize.op_type == "QuantizeLinear":  # an activation, not a weight
                node.input[index] = quantize.input[0]
    outputs = {out.name for out in model.graph.output}
    for op_type in ("DequantizeLinear", "QuantizeLinear"):
        read = {name for node in model.graph.node for name in node.input} | outputs
        unread = [
            n for n in model.graph.node if n.op_type == op_type and not any(o in read for o in n.output)
        ]
        for node in unread:
            model.graph.node.remove(node)


def _named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name (the quantizer's exclusion list is by name)."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return model


def input_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the weighted layers that read a network input directly.

    They stay float: a raw sensor band (heights, backscatter) has a heavy-tailed range that one int8 scale
    resolves poorly, and with 1-4 input channels these layers gain little from INT8. Measured on the study's
    checkpoint (64 gate tiles): `dsm` INT8 loses 0.34 mIoU instead of 0.72, and every pattern's agreement
    with FP32 rises (docs/EXPORT.md).
    """
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.input[0] in inputs]


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the head: the last weighted layer before each output and every node after it.

    Walks back from the graph outputs through unweighted ops (Resize, Transpose, ...) until it reaches a
    weighted layer; that classifier and the nodes on the way stay float.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    head: list[str] = []
    stack = [output.name for output in model.graph.output]
    visited: set[str] = set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in visited:
            continue
        visited.add(node.name)
        head.append(node.name)
        if node.op_type not in WEIGHTED_OPS:
            stack.extend(node.input)
    return head


def non_residual_adds(model: onnx.ModelProto) -> list[str]:
    """Adds with a constant operand (a bias, a normalisation offset): not residual joins, left float."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Add" and any(name in constants for name in node.input)
    ]


def float_head_problems(model: onnx.ModelProto) -> list[str]:
    """Where the head is quantized: a graph output or the classifier's activation input comes from a DQ."""
    producers = {out: node for node in model.graph.node for out in node.output}
    problems = []
    for output in model.graph.output:
        node = producers.get(output.name)
        while node is not None and node.op_type not in WEIGHTED_OPS:
            if node.op_type == "DequantizeLinear":
                problems.append(f"output {output.name} is dequantized (the head must stay float)")
                break
            node = producers.get(node.input[0]) if node.input else None
        if node is not None and node.op_type in WEIGHTED_OPS:
            source = producers.get(node.input[0])
            if source is not None and source.op_type == "DequantizeLinear":
                problems.append(f"classifier {node.name} reads a quantized activation")
    return problems


def relu_as_leaky_relu(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every Relu replaced by LeakyRelu(alpha=0), the same function.

    With symmetric int8 activations onnxruntime cannot fold a Relu into the preceding Q (it can only when the
    zero point is the type minimum, i.e. asymmetric), so a Relu stays a float island between DQ and Q. It
    has an integer kernel for LeakyRelu (QLinearLeakyRelu) and TensorRT fuses LeakyRelu into Conv as well.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        if node.op_type == "Relu" and node.domain in ("", "ai.onnx"):
            node.op_type = "LeakyRelu"
            node.attribute.append(onnx.helper.make_attribute("alpha", 0.0))
    return model


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


def tensorrt_legality_problems(model: onnx.ModelProto) -> list[str]:
    """Everything that would stop TensorRT consuming this Q/DQ graph as-is (empty list: legal).

    Checks: zero points are int8 zeros; no int32 (bias) dequantisation; Conv weights dequantised per
    output channel (axis 0) with one scale per channel, stored as int8 (ours, NNCF) or quantized from a
    float constant by a QuantizeLinear (ModelOpt; TensorRT folds it).
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    problems: list[str] = []
    dequantized_weights: dict[str, tuple[onnx.NodeProto, str]] = {}  # DQ output -> (DQ, weight)
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            problems.append(f"{node.name}: no zero point (TensorRT needs an explicit int8 zero point 0)")
            continue
        zero_point = initializers.get(node.input[2])
        if zero_point is None:
            problems.append(f"{node.name}: zero point {node.input[2]} is not an initializer")
            continue
        if zero_point.data_type != TensorProto.INT8:
            problems.append(
                f"{node.name}: zero point type {TensorProto.DataType.Name(zero_point.data_type)}, not INT8"
            )
        elif np.any(numpy_helper.to_array(zero_point) != 0):
            problems.append(f"{node.name}: non-zero zero point (asymmetric quantisation)")
        if node.op_type == "DequantizeLinear":
            source = producers.get(node.input[0])
            if node.input[0] in initializers:
                dequantized_weights[node.output[0]] = (node, node.input[0])
            elif source and source.op_type == "QuantizeLinear" and source.input[0] in initializers:
                # Q -> DQ of a float constant (ModelOpt's form): TensorRT folds the Q into the weights
                dequantized_weights[node.output[0]] = (node, source.input[0])
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        found = dequantized_weights.get(node.input[1])
        if found is None:
            if node.input[1] in producers and producers[node.input[1]].op_type == "DequantizeLinear":
                problems.append(f"{node.name}: weight dequantised from a non-constant tensor")
            continue
        dq, weight_name = found
        weight = initializers[weight_name]
        scale = numpy_helper.to_array(initializers[dq.input[1]])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if scale.size != weight.dims[0] or (scale.size > 1 and axis != 0):
            problems.append(f"{node.name}: weight not quantised per output channel on axis 0")
    return problems
