"""Whether TensorRT can consume a Q/DQ graph as-is (``tensorrt_legality_problems``), and whether a placement
that keeps the head float did (``float_head_problems``). Ours checks both while quantizing; the build checks
vendor quantizers' graphs with the first.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from export.qdq_placement import WEIGHTED_OPS


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
