"""ONNX export per pattern: named inputs, dynamic shapes, parity with PyTorch, FP16 with float32 IO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.fp16 import convert_to_fp16
from export.onnx_export import check_parity, export_onnx, sample_inputs, simplify_onnx
from export.ort_utils import make_session
from stars_edge.errors import ExportError
from stars_edge.modalities import ALL_PATTERNS, Pattern
from stars_edge.models import STARSModel, create_model, export_module

BANDS = {"optical": 4, "sar": 2, "dsm": 1}
#: FP32 ONNX vs PyTorch: same float32 maths, different kernels; 1e-4 on logits is already generous.
FP32_TOLERANCE = 1e-4
#: FP16 keeps ~3 significant digits; logits of the tiny model are O(1).
FP16_TOLERANCE = 2e-2


@pytest.fixture(scope="module")
def model() -> STARSModel:
    torch.manual_seed(0)
    net = create_model("tiny", BANDS, classes=7)
    # Non-trivial BatchNorm statistics, so folding them during export/simplification is actually exercised.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def exported(model: STARSModel, tmp_path_factory: pytest.TempPathFactory) -> dict[Pattern, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for pattern in ALL_PATTERNS:
        path = folder / f"{pattern}.fp32.onnx"
        export_onnx(export_module(model, pattern), pattern, BANDS, path, opset=17)
        simplify_onnx(path)
        paths[pattern] = path
    return paths


@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=str)
def test_every_pattern_matches_pytorch(
    model: STARSModel, exported: dict[Pattern, Path], pattern: Pattern
) -> None:
    report = check_parity(export_module(model, pattern), exported[pattern], pattern, BANDS, size=64, batch=2)
    print(f"{pattern}: {report}")
    assert report.max_abs_diff < FP32_TOLERANCE
    assert report.argmax_agreement > 99.9


def test_graph_takes_only_the_pattern_inputs_with_dynamic_axes(exported: dict[Pattern, Path]) -> None:
    graph = onnx.load(str(exported[Pattern.parse("sar+dsm")])).graph
    assert [i.name for i in graph.input] == ["sar", "dsm"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 2, "height", "width"]
    assert 11 not in {init.data_type for init in graph.initializer}  # no float64 weights
    session = make_session(exported[Pattern.parse("sar+dsm")])
    inputs = sample_inputs(Pattern.parse("sar+dsm"), BANDS, 96, batch=3)
    inputs["sar"] = np.ascontiguousarray(np.concatenate([inputs["sar"]] * 2, axis=3)[..., :128])
    inputs["dsm"] = np.ascontiguousarray(np.concatenate([inputs["dsm"]] * 2, axis=3)[..., :128])
    assert session.run(["logits"], inputs)[0].shape == (3, 7, 96, 128)


def test_fp16_graph_keeps_float32_io_and_tracks_fp32(
    model: STARSModel, exported: dict[Pattern, Path], tmp_path: Path
) -> None:
    pattern = Pattern.parse("optical+sar+dsm")
    half = convert_to_fp16(onnx.load(str(exported[pattern])))
    path = tmp_path / "full.fp16.onnx"
    onnx.save(half, str(path))
    assert {i.type.tensor_type.elem_type for i in half.graph.input} == {onnx.TensorProto.FLOAT}
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = {n.input[1] for n in half.graph.node if n.op_type == "Conv"}
    weight_types = {i.data_type for i in half.graph.initializer if i.name in conv_weights}
    assert weight_types == {onnx.TensorProto.FLOAT16}
    report = check_parity(export_module(model, pattern), path, pattern, BANDS, size=64, batch=2)
    print(f"fp16: {report}")
    assert report.max_abs_diff < FP16_TOLERANCE
    assert report.argmax_agreement > 98.0


def test_unsupported_opset_is_refused(model: STARSModel, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(export_module(model, "sar"), Pattern.parse("sar"), BANDS, tmp_path / "x.onnx", opset=16)
    assert not (tmp_path / "x.onnx").exists()


def test_dynamo_exporter_takes_over_when_torchscript_fails(
    model: STARSModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import export.onnx_export as onnx_export

    real_exporter = onnx_export._run_exporter

    def torchscript_gone(
        module: torch.nn.Module,
        args: tuple[torch.Tensor, ...],
        target: Path,
        names: list[str],
        opset: int,
        dynamo: bool,
    ) -> None:
        if not dynamo:
            raise RuntimeError("TorchScript-based ONNX export was removed")
        real_exporter(module, args, target, names, opset, dynamo=dynamo)

    monkeypatch.setattr(onnx_export, "_run_exporter", torchscript_gone)
    pattern = Pattern.parse("sar+dsm")
    path = export_onnx(export_module(model, pattern), pattern, BANDS, tmp_path / "dynamo.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["sar", "dsm"]
    assert [d.dim_param for d in graph.output[0].type.tensor_type.shape.dim] == [
        "batch",
        "",
        "height",
        "width",
    ]
    report = check_parity(export_module(model, pattern), path, pattern, BANDS, size=96, batch=2)
    assert report.max_abs_diff < FP32_TOLERANCE
