"""Per-pattern modules export to ONNX (opset 17, dynamic N/H/W) and match PyTorch in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stars_edge.modalities import ALL_PATTERNS, Pattern
from stars_edge.models import create_model, export_module

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

BANDS = {"optical": 4, "sar": 2, "dsm": 1}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _export_legacy(module: torch.nn.Module, names: list[str], path: Path) -> None:
    example = tuple(torch.randn(1, BANDS[n], 64, 64) for n in names)
    axes = {n: {0: "batch", 2: "height", 3: "width"} for n in [*names, "logits"]}
    torch.onnx.export(
        module,
        example,
        str(path),
        input_names=names,
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
        dynamic_axes=axes,
    )


def _check_against_torch(module: torch.nn.Module, names: list[str], path: Path) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names
    inputs = [torch.randn(2, BANDS[n], 96, 128) for n in names]
    (got,) = session.run(["logits"], {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
    with torch.no_grad():
        want = module(*inputs).numpy()
    assert got.shape == (2, 3, 96, 128)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["stars", "shaspec"])
def test_every_pattern_exports_with_only_its_inputs(tmp_path: Path, method: str) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, method=method)
    conv_counts = {}
    for pattern in ALL_PATTERNS:
        module = export_module(model, pattern)
        names = list(pattern.modalities)
        path = tmp_path / f"{pattern.name}.onnx"
        _export_legacy(module, names, path)
        _check_against_torch(module, names, path)
        graph = onnx.load(str(path)).graph
        conv_counts[pattern.name] = sum(node.op_type == "Conv" for node in graph.node)
    # absent modalities' stems and encoders are not in the graph: one modality has fewer convs than three
    assert conv_counts["sar"] < conv_counts["optical+sar+dsm"]


@pytest.mark.slow
def test_dynamo_export_with_dynamic_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3)
    pattern = Pattern.parse("sar+dsm")
    module = export_module(model, pattern)
    names = list(pattern.modalities)
    example = tuple(torch.randn(1, BANDS[n], 64, 64) for n in names)
    dims = {
        n: {0: torch.export.Dim("batch", max=64), 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
        for n in names
    }
    path = tmp_path / "sar+dsm.onnx"
    torch.onnx.export(
        module,
        example,
        str(path),
        input_names=names,
        output_names=["logits"],
        opset_version=18,
        dynamo=True,
        dynamic_shapes=dims,
    )
    _check_against_torch(module, names, path)
