"""FLOPs of an ONNX graph at fixed input shapes: the numerator of every "achieved GFLOP/s".

One convention: FLOPs = 2 x MACs of Conv/ConvTranspose/MatMul/Gemm and their quantized forms, counted from
the graph with shape inference at the benchmark's input size; other ops (activations, resizes, adds) are
not counted. Torch-free (onnx, and ONNX Runtime's symbolic shape inference as a fallback).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.errors import BenchmarkError

#: op type -> (index of the data input, index of the weight input) for the ops whose MACs are counted.
_COUNTED_OPS: dict[str, tuple[int, int]] = {
    "Conv": (0, 1),
    "ConvInteger": (0, 1),
    "QLinearConv": (0, 3),
    "ConvTranspose": (0, 1),
    "MatMul": (0, 1),
    "MatMulInteger": (0, 1),
    "QLinearMatMul": (0, 3),
    "Gemm": (0, 1),
}


@dataclass
class FlopCount:
    """Multiply-accumulates of one ONNX graph at fixed input shapes; FLOPs = 2 x MACs.

    ``unresolved`` lists counted-op nodes whose shapes shape inference could not determine; when it is not
    empty the totals are a lower bound and ``complete`` is False.
    """

    macs_by_op: dict[str, int] = field(default_factory=dict)
    nodes_by_op: dict[str, int] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(self.macs_by_op.values())

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def complete(self) -> bool:
        return not self.unresolved

    def as_dict(self) -> dict[str, Any]:
        return {
            "macs": self.macs,
            "flops": self.flops,
            "gflops": self.flops / 1e9,
            "complete": self.complete,
            "macs_by_op": dict(self.macs_by_op),
            "nodes_by_op": dict(self.nodes_by_op),
            "unresolved": list(self.unresolved),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
        }


def _fix_input_shapes(model: Any, input_shapes: Mapping[str, Sequence[int]]) -> Any:
    """A copy of ``model`` whose graph inputs have the given concrete shapes (dynamic dims resolved)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializer_names = {init.name for init in fixed.graph.initializer}
    graph_inputs = {inp.name: inp for inp in fixed.graph.input if inp.name not in initializer_names}
    unknown = sorted(set(input_shapes) - set(graph_inputs))
    if unknown:
        raise BenchmarkError(
            f"the ONNX graph has no input named {unknown[0]!r}; its inputs are {sorted(graph_inputs)}"
        )
    for name, shape in input_shapes.items():
        tensor_type = graph_inputs[name].type.tensor_type
        declared = len(tensor_type.shape.dim)
        if declared and declared != len(shape):
            raise BenchmarkError(
                f"input {name!r} has rank {declared}, a shape of rank {len(shape)} was given"
            )
        del tensor_type.shape.dim[:]
        for size in shape:
            tensor_type.shape.dim.add().dim_value = int(size)
    return fixed


def _known_shapes(model: Any) -> dict[str, list[int]]:
    """Every tensor name whose shape is fully known, from inputs, value_info, outputs and initializers."""
    shapes: dict[str, list[int]] = {}
    graph = model.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            continue
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [int(d.dim_value) for d in dims]
    for init in graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    shapes[node.output[0]] = [int(d) for d in attribute.t.dims]
    return shapes


def _node_macs(node: Any, shapes: Mapping[str, list[int]]) -> int | None:
    """MACs of one counted node, or None when a needed shape is unknown."""
    data_index, weight_index = _COUNTED_OPS[node.op_type]
    if len(node.input) <= max(data_index, weight_index):
        return None
    data = shapes.get(node.input[data_index])
    weight = shapes.get(node.input[weight_index])
    output = shapes.get(node.output[0])
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        # Each output element: (Cin / group) * prod(kernel) MACs, and W is (Cout, Cin/group, k...).
        if output is None or weight is None:
            return None
        return math.prod(output) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        # Each input element feeds (Cout / group) * prod(kernel) outputs; W is (Cin, Cout/group, k...).
        if data is None or weight is None:
            return None
        return math.prod(data) * math.prod(weight[1:])
    if node.op_type == "Gemm":
        if output is None or data is None:
            return None
        trans_a = next((int(a.i) for a in node.attribute if a.name == "transA"), 0)
        inner = data[0] if trans_a else data[-1]
        return math.prod(output) * inner
    # MatMul family: numpy matmul semantics; the contracted dimension is A's last axis.
    if output is None or data is None or not data:
        return None
    return math.prod(output) * data[-1]


def _infer(model: Any, symbolic: bool) -> Any:
    import onnx

    if not symbolic:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)


def count_flops(model_or_path: Any, input_shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """Count MACs of Conv/ConvTranspose/MatMul/Gemm (and quantized forms) at the given input shapes.

    Shapes come from ONNX shape inference with data propagation; nodes it leaves unknown (e.g. a Resize
    whose size is computed at run time) are retried with ONNX Runtime's symbolic shape inference. A Q/DQ
    graph counts the same MACs as its float source: the Conv nodes are still there.
    """
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, str | os.PathLike) else model_or_path
    fixed = _fix_input_shapes(model, input_shapes)
    result = FlopCount(input_shapes={k: [int(v) for v in s] for k, s in input_shapes.items()})
    counted = [node for node in fixed.graph.node if node.op_type in _COUNTED_OPS]
    if any(node.op_type in ("If", "Loop", "Scan") for node in fixed.graph.node):
        result.unresolved.append("graph has control-flow subgraphs whose MACs are not counted")
    pending = counted
    for symbolic in (False, True):
        try:
            shapes = _known_shapes(_infer(fixed, symbolic))
        except Exception as exc:  # shape inference implementations raise a variety of errors
            if symbolic:
                break
            raise BenchmarkError(
                f"ONNX shape inference failed ({exc}); is the model a valid ONNX file?"
            ) from exc
        still_pending = []
        for node in pending:
            macs = _node_macs(node, shapes)
            if macs is None:
                still_pending.append(node)
                continue
            result.macs_by_op[node.op_type] = result.macs_by_op.get(node.op_type, 0) + macs
            result.nodes_by_op[node.op_type] = result.nodes_by_op.get(node.op_type, 0) + 1
        pending = still_pending
        if not pending:
            break
    result.unresolved.extend(f"{node.op_type} {node.name or node.output[0]}" for node in pending)
    return result
