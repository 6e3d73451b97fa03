"""FP32 -> FP16 graph conversion with float32 IO (the engine contract), written with ``onnx`` alone.

Every node computes in float16 except a small keep-list (casts, shape arithmetic, random ops, reductions that
overflow in half precision); float32 <-> float16 ``Cast`` nodes are inserted wherever a tensor crosses that
boundary, so the graph inputs and the ``logits`` output stay float32. Resize's ``roi``/``scales`` inputs stay
float32 as the operator requires. ``onnxconverter-common`` does the same job but is not a dependency here.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stars_edge.errors import ExportError

#: Ops that keep computing in float32: their semantics depend on it or half precision overflows.
KEEP_FP32_OPS: frozenset[str] = frozenset(
    {
        "Cast",
        "CastLike",
        "Range",
        "ConstantOfShape",
        "EyeLike",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "ReduceSumSquare",
        "Pow",
        "LayerNormalization",
        "GroupNormalization",
        "InstanceNormalization",
    }
)
#: Input positions that must stay float32 even inside float16 ops.
KEEP_FP32_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
_FP16_MAX = float(np.finfo(np.float16).max)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of ``model`` whose float32 inputs/outputs are unchanged (casts inside)."""
    model = _constants_to_initializers(onnx.ModelProto.FromString(model.SerializeToString()))
    graph = model.graph
    if any(
        attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for attr in n.attribute
    ):
        raise ExportError("fp16 conversion does not handle control-flow subgraphs (If/Loop/Scan)")
    original_types = _tensor_types(model)
    initializers = {init.name: init for init in graph.initializer}

    float_outputs = {o.name for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT}
    renamed = {name: f"{name}__fp16" for name in float_outputs}
    for node in graph.node:
        node.output[:] = [renamed.get(o, o) for o in node.output]
        node.input[:] = [renamed.get(i, i) for i in node.input]
    for old, new in renamed.items():
        original_types[new] = original_types.get(old, TensorProto.FLOAT)

    current: dict[str, int] = {i.name: TensorProto.FLOAT for i in graph.input}
    casts: dict[tuple[str, int], str] = {}
    fp16_initializers: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            casts[key] = f"{name}__to_{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=f"{casts[key]}_cast"))
        return casts[key]

    def half_initializer(name: str) -> str:
        if name not in fp16_initializers:
            values = numpy_helper.to_array(initializers[name])
            half = np.clip(values, -_FP16_MAX, _FP16_MAX).astype(np.float16)
            fp16_initializers[name] = f"{name}__fp16"
            graph.initializer.append(numpy_helper.from_array(half, fp16_initializers[name]))
        return fp16_initializers[name]

    for node in graph.node:
        in_fp16 = node.op_type not in KEEP_FP32_OPS
        kept = KEEP_FP32_INPUTS.get(node.op_type, frozenset())
        for position, name in enumerate(node.input):
            if not name or original_types.get(name) != TensorProto.FLOAT:
                continue
            want = TensorProto.FLOAT16 if in_fp16 and position not in kept else TensorProto.FLOAT
            if name in initializers and name not in current:
                node.input[position] = half_initializer(name) if want == TensorProto.FLOAT16 else name
            elif name not in current:
                raise ExportError(
                    f"fp16 conversion: tensor {name!r} of node {node.name!r} has no known producer"
                )
            elif current[name] != want:
                node.input[position] = cast(name, want)
        for output in node.output:
            if original_types.get(output) == TensorProto.FLOAT:
                current[output] = TensorProto.FLOAT16 if in_fp16 else TensorProto.FLOAT
        new_nodes.append(node)

    for old, new in renamed.items():
        if current.get(new) == TensorProto.FLOAT16:
            new_nodes.append(
                helper.make_node("Cast", [new], [old], to=TensorProto.FLOAT, name=f"{old}_to_fp32")
            )
        else:
            new_nodes.append(helper.make_node("Identity", [new], [old], name=f"{old}_identity"))

    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    kept_initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    del graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(inferred)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"fp16 conversion produced an invalid graph: {exc}") from exc
    return inferred


def _constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move tensor-valued ``Constant`` nodes into initializers so one code path converts all weights."""
    graph = model.graph
    remaining = []
    for node in graph.node:
        value = next(
            (a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None
        )
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            remaining.append(node)
    del graph.node[:]
    graph.node.extend(remaining)
    return model


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor (inputs, outputs, intermediates, initializers) after shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError as exc:
        raise ExportError(f"fp16 conversion needs type inference, which failed: {exc}") from exc
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types
