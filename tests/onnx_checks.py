"""Legacy (TorchScript) ONNX export of a per-pattern module and its check against PyTorch in ONNX Runtime,
shared by the model export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


def export_legacy(module: torch.nn.Module, names: list[str], path: Path) -> None:
    """Opset 17, dynamic batch, height and width, inputs named after their modalities."""
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


def check_against_torch(module: torch.nn.Module, names: list[str], path: Path) -> None:
    """ONNX Runtime reproduces PyTorch on a batch of 2 at another size than the export's."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names
    inputs = [torch.randn(2, BANDS[n], 96, 128) for n in names]
    (got,) = session.run(["logits"], {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
    with torch.no_grad():
        want = module(*inputs).numpy()
    assert got.shape == (2, 3, 96, 128)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def conv_count(path: Path) -> int:
    return sum(node.op_type == "Conv" for node in onnx.load(str(path)).graph.node)
