"""The tiny ONNX graphs and engine folder the benchmark tests time: per modality Conv3x3 -> Relu, summed,
Conv1x1 -> logits (optionally with TensorRT-style Q/DQ), with a hand count of their multiply-accumulates, and
the torch twin of that graph. Shared by ``test_benchmark_*.py``; torch is imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stars_edge.io import sha256_file
from stars_edge.manifest import EngineEntry, Manifest, ModelInfo, engine_inputs, save_manifest
from stars_edge.modalities import ALL_PATTERNS, DEFAULT_SPECS, Pattern

CLASSES = 3
INT8_PATTERNS = ("optical+sar+dsm", "sar")
FULL = Pattern.parse("optical+sar+dsm")
WIDTH = 4


def _conv_weight(name: str, shape: tuple[int, ...], seed: int) -> Any:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


def tiny_graph(pattern: Pattern, int8: bool) -> Any:
    """Per modality Conv3x3 -> Relu, summed, Conv1x1 -> logits; ``int8`` adds TensorRT-style Q/DQ."""
    nodes: list[Any] = []
    initializers: list[Any] = []
    inputs = []
    branch_outputs = []
    if int8:
        initializers += [
            numpy_helper.from_array(np.array(0.05, np.float32), "act_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
        ]

    def quantized(tensor: str, weight_name: str, weight: Any) -> tuple[str, str]:
        if not int8:
            initializers.append(weight)
            return tensor, weight_name
        array = numpy_helper.to_array(weight)
        scale = np.abs(array).reshape(array.shape[0], -1).max(axis=1) / 127.0
        q = np.clip(np.round(array / scale[:, None, None, None]), -127, 127).astype(np.int8)
        initializers.extend(
            [
                numpy_helper.from_array(q, weight_name + "_q"),
                numpy_helper.from_array(scale.astype(np.float32), weight_name + "_scale"),
                numpy_helper.from_array(np.zeros(array.shape[0], np.int8), weight_name + "_zero"),
            ]
        )
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [weight_name + "_q", weight_name + "_scale", weight_name + "_zero"],
                [weight_name + "_dq"],
                axis=0,
            )
        )
        nodes.append(helper.make_node("QuantizeLinear", [tensor, "act_scale", "zero"], [tensor + "_q"]))
        nodes.append(
            helper.make_node("DequantizeLinear", [tensor + "_q", "act_scale", "zero"], [tensor + "_dq"])
        )
        return tensor + "_dq", weight_name + "_dq"

    for seed, modality in enumerate(pattern):
        bands = DEFAULT_SPECS[modality].bands
        inputs.append(helper.make_tensor_value_info(modality, TensorProto.FLOAT, ["N", bands, "H", "W"]))
        data, weight = quantized(
            modality, f"w_{modality}", _conv_weight(f"w_{modality}", (WIDTH, bands, 3, 3), seed)
        )
        nodes.append(helper.make_node("Conv", [data, weight], [f"c_{modality}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c_{modality}"], [f"r_{modality}"]))
        branch_outputs.append(f"r_{modality}")
    nodes.append(helper.make_node("Sum", branch_outputs, ["fused"]))
    data, weight = quantized("fused", "w_head", _conv_weight("w_head", (CLASSES, WIDTH, 1, 1), 99))
    nodes.append(helper.make_node("Conv", [data, weight], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES, "H", "W"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_macs(pattern: Pattern, tile: int) -> int:
    """Hand count for ``tiny_graph``: per output pixel, WIDTH*bands*9 per branch plus CLASSES*WIDTH."""
    per_pixel = sum(WIDTH * DEFAULT_SPECS[m].bands * 9 for m in pattern) + CLASSES * WIDTH
    return per_pixel * tile * tile


def write_engine_folder(folder: Path) -> Path:
    """Write into ``folder`` a manifest with fp32 engines for all 7 patterns (the runtime needs them all)
    and int8 ones for the full pattern and for ``sar``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        model=ModelInfo(
            variant="tiny",
            method="stars",
            checkpoint_sha256="0" * 64,
            classes=CLASSES,
            class_names=("a", "b", "c"),
        ),
        modalities=dict(DEFAULT_SPECS),
        tile_size=64,
    )
    for pattern in ALL_PATTERNS:
        for precision in ("fp32", "int8") if pattern.name in INT8_PATTERNS else ("fp32",):
            name = f"{pattern.name}.{precision}.onnx"
            onnx.save(tiny_graph(pattern, precision == "int8"), str(folder / name))
            manifest.add(
                EngineEntry(
                    pattern=pattern,
                    precision=precision,
                    backend="onnxruntime",
                    path=name,
                    sha256=sha256_file(folder / name),
                    inputs=engine_inputs(pattern, DEFAULT_SPECS),
                    tile_size=64,
                )
            )
    save_manifest(manifest, folder)
    return folder


class TinyTorch:
    """Factory of the torch twin of ``tiny_graph`` (imported lazily: torch is optional for these tests)."""

    def __call__(self, pattern: Pattern) -> Any:
        import torch

        class Tiny(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.branches = torch.nn.ModuleList(
                    torch.nn.Conv2d(DEFAULT_SPECS[m].bands, WIDTH, 3, padding=1, bias=False) for m in pattern
                )
                self.head = torch.nn.Conv2d(WIDTH, CLASSES, 1, bias=False)

            def forward(self, *inputs: Any) -> Any:
                return self.head(
                    sum(torch.relu(conv(x)) for conv, x in zip(self.branches, inputs, strict=True))
                )

        return Tiny()
