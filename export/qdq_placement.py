"""Where Q/DQ goes in an INT8 graph: the candidate placements and the graph queries and rewrites they need.

``PLACEMENTS`` are the candidates ``studies/int8_placement.py`` measured (all TensorRT-legal); ``tensorrt``,
the default, quantizes the inputs of weighted layers and residual adds, never their outputs, and keeps the
head and the layers that read the network's inputs float. The helpers name the nodes a placement leaves
float (``head_nodes``, ``input_layers``, ``non_residual_adds``) and rewrite graphs (``relu_as_leaky_relu``,
``read_float_inputs``, ``named_nodes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx


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


#: Layers with weights: TensorRT's INT8 kernels are these, fed by DQ on their activation and weight inputs.
WEIGHTED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")

#: Candidate placements, measured by studies/int8_placement.py. All are TensorRT-legal.
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


def named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
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
