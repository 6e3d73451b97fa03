"""Per-pattern modules export to ONNX (opset 17, dynamic N/H/W) and match PyTorch in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stars_edge.modalities import ALL_PATTERNS, Pattern
from stars_edge.models import create_model, export_module

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx_checks import BANDS, check_against_torch, conv_count, export_legacy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


#: Methods and model options whose every pattern must export; the last two are the non-default options.
MODEL_OPTIONS: list[dict[str, str]] = [
    {"method": "stars"},
    {"method": "shaspec"},
    {"method": "stars", "trunk_norm": "modality"},
    {"method": "stars", "decoder": "per_pattern"},
]


@pytest.mark.parametrize("options", MODEL_OPTIONS, ids=lambda o: "-".join(o.values()))
def test_every_pattern_exports_with_only_its_inputs(tmp_path: Path, options: dict[str, str]) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, **options)
    conv_counts = {}
    for pattern in ALL_PATTERNS:
        module = export_module(model, pattern)
        names = list(pattern.modalities)
        path = tmp_path / f"{pattern.name}.onnx"
        export_legacy(module, names, path)
        check_against_torch(module, names, path)
        conv_counts[pattern.name] = conv_count(path)
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
    check_against_torch(module, names, path)
