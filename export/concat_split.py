"""Concat -> Conv rewritten as a sum of one conv per Concat input, so no quantized convolution reads a Concat.

Why: OpenVINO's CPU plugin (measured on 2026.4) runs a symmetric-int8 Q/DQ on the output of a channel
Concat, or on its inputs, wrongly when a convolution reads it: a two-input Concat -> Q/DQ -> 1x1 Conv gives a
25-30 % mean relative error against ONNX Runtime, while the same conv on one input is exact, and so is the
Concat with uint8 activations (which TensorRT does not accept). STARS concatenates shared and specific
features before every modality's projection, so its OpenVINO INT8 engines lost up to 7.4 mIoU (``dsm``) to
this alone.

Convolution is linear in its input channels: ``conv(concat(a, b), W) + bias == conv(a, W_a) + conv(b, W_b) +
bias``. The rewritten graph computes the same function in float (tested), each partial conv gets an ordinary
one-input Q/DQ that every backend runs correctly, and TensorRT fuses the partial convs and the sum as usual.
The sums are left in float (they are not residual joins), so the rewrite adds no quantization step. Not
measured: whether TensorRT fuses a float sum of two INT8 convs as tightly as one conv (no TensorRT here).
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

#: Channel axes of an NCHW Concat.
_CHANNEL_AXES = (1, -3)
#: Marks the Add nodes that sum partial convs (they keep their Conv's name plus this and an index).
PARTIAL_SUM_MARK = "/concat_split_sum"


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _channel_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Channel count (dim 1) of every rank-4 tensor whose count shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    counts: dict[str, int] = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            counts[info.name] = dims[1].dim_value
    return counts


def split_concat_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy where every ungrouped Conv that reads a channel Concat reads its inputs separately.

    Returns the copy and the names of the Add nodes that sum the partial convs (the quantizer leaves them
    float). A Concat that nothing reads any more is removed; one with other readers stays.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    channels = _channel_counts(model)
    rewritten: list[onnx.NodeProto] = []
    sums: list[str] = []
    replaced_weights: set[str] = set()
    for node in graph.node:
        concat = producers.get(node.input[0]) if node.op_type == "Conv" else None
        widths = [channels.get(name) for name in concat.input] if concat is not None else []
        if (
            concat is None
            or concat.op_type != "Concat"
            or _attribute(concat, "axis", 0) not in _CHANNEL_AXES
            or _attribute(node, "group", 1) != 1
            or node.input[1] not in initializers
            or any(width is None for width in widths)
        ):
            rewritten.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if sum(w for w in widths if w is not None) != weight.shape[1]:
            rewritten.append(node)
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        partials: list[str] = []
        start = 0
        for index, (source, width) in enumerate(zip(concat.input, widths, strict=True)):
            assert width is not None
            weight_name = f"{node.name}/split{index}/weight"
            graph.initializer.append(numpy_helper.from_array(weight[:, start : start + width], weight_name))
            start += width
            inputs = [source, weight_name, *([bias] if bias and index == 0 else [])]
            partial = helper.make_node(
                "Conv", inputs, [f"{node.output[0]}/split{index}"], name=f"{node.name}/split{index}"
            )
            partial.attribute.extend(node.attribute)
            rewritten.append(partial)
            partials.append(partial.output[0])
        running = partials[0]
        for index, partial_output in enumerate(partials[1:], start=1):
            last = index == len(partials) - 1
            total = node.output[0] if last else f"{node.output[0]}{PARTIAL_SUM_MARK}{index}"
            add = helper.make_node(
                "Add", [running, partial_output], [total], name=f"{node.name}{PARTIAL_SUM_MARK}{index}"
            )
            rewritten.append(add)
            sums.append(add.name)
            running = total
        replaced_weights.add(node.input[1])
    # Dropping an unread Concat frees no initializer (a Concat of weights is not rewritten), so one read set
    # serves both clean-ups.
    read = {name for node in rewritten for name in node.input} | {out.name for out in graph.output}
    kept = [n for n in rewritten if n.op_type != "Concat" or any(out in read for out in n.output)]
    del graph.node[:]
    graph.node.extend(kept)
    unused = [init for init in graph.initializer if init.name in replaced_weights and init.name not in read]
    for init in unused:
        graph.initializer.remove(init)
    return model, sums


def partial_sums(model: onnx.ModelProto) -> list[str]:
    """Names of the Adds ``split_concat_convs`` inserted (float by design, not residual joins)."""
    return [n.name for n in model.graph.node if n.op_type == "Add" and PARTIAL_SUM_MARK in n.name]


def convs_reading_concat(model: onnx.ModelProto) -> list[str]:
    """Names of Convs whose activation input is a Concat, directly or through a Q/DQ pair."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        source = producers.get(node.input[0])
        while source is not None and source.op_type in ("QuantizeLinear", "DequantizeLinear"):
            source = producers.get(source.input[0])
        if source is not None and source.op_type == "Concat":
            found.append(node.name)
    return found
