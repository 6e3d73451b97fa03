"""PyTorch -> ONNX for one availability pattern, checked against PyTorch, then simplified.

The exported graph takes only the pattern's inputs (named after the modalities, canonical order), returns
``logits`` and has dynamic batch/height/width. The TorchScript exporter (``dynamo=False``) is tried first: it
handles dynamic axes with plain names and is fast; where it is missing or fails, the dynamo exporter is used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from stars_edge.errors import ExportError
from stars_edge.io import atomic_path
from stars_edge.manifest import OUTPUT_NAME
from stars_edge.metrics import argmax_agreement
from stars_edge.modalities import Pattern

if TYPE_CHECKING:
    import torch

#: Opsets accepted: 17 is the oldest with everything the model needs, 20 the newest TensorRT 10 parses.
SUPPORTED_OPSETS = range(17, 21)
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX graph in ONNX Runtime reproduces PyTorch on the same inputs."""

    max_abs_diff: float
    argmax_agreement: float  # percent of pixels with the same class

    def __str__(self) -> str:
        return f"max |onnx - torch| = {self.max_abs_diff:.2e}, argmax agreement {self.argmax_agreement:.3f}%"


def sample_inputs(
    pattern: Pattern, bands: Mapping[str, int], size: int, batch: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
    """Deterministic normalised-looking inputs (standard normal) for tracing and parity checks."""
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((batch, bands[m], size, size)).astype(np.float32) for m in pattern}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters print progress and deprecation chatter; keep the CLI output readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_onnx(
    module: torch.nn.Module,
    pattern: Pattern,
    bands: Mapping[str, int],
    path: str | Path,
    opset: int = 17,
    trace_size: int = 64,
) -> Path:
    """Export ``module`` (``forward(*pattern tensors) -> logits``) to ``path`` with dynamic N/H/W."""
    import torch

    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported; choose {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
        )
    path = Path(path)
    names = list(pattern.modalities)
    args = tuple(torch.from_numpy(a) for a in sample_inputs(pattern, bands, trace_size).values())
    module = module.eval()
    errors: list[str] = []
    with atomic_path(path) as tmp:
        for dynamo in (False, True):
            try:
                with _quiet_exporter(), torch.no_grad():
                    _run_exporter(module, args, tmp, names, opset, dynamo=dynamo)
                break
            except Exception as exc:  # exporter failures are many and untyped; keep each one's message
                errors.append(
                    f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(exc).__name__}: {exc}"
                )
        else:
            raise ExportError(f"cannot export pattern {pattern} to {path}: {' | '.join(errors)}")
        model = onnx.load(str(tmp))
        _check_interface(model, pattern, path)
        onnx.save(model, str(tmp))
    return path


def _run_exporter(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    target: Path,
    names: list[str],
    opset: int,
    dynamo: bool,
) -> None:
    import torch

    if dynamo:
        dims = {axis: torch.export.Dim.AUTO for axis in DYNAMIC_AXES}
        torch.onnx.export(
            module,
            args,
            str(target),
            input_names=names,
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes=tuple(dims for _ in names),
        )
        # The dynamo exporter names output dims by expression; give them stable names as the contract says.
        model = onnx.load(str(target))
        for value in [*model.graph.input, *model.graph.output]:
            for axis, label in DYNAMIC_AXES.items():
                value.type.tensor_type.shape.dim[axis].dim_param = label
        onnx.save(model, str(target))
    else:
        torch.onnx.export(
            module,
            args,
            str(target),
            input_names=names,
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={name: DYNAMIC_AXES for name in [*names, OUTPUT_NAME]},
            do_constant_folding=True,
        )


def _check_interface(model: onnx.ModelProto, pattern: Pattern, path: Path) -> None:
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != list(pattern.modalities) or outputs != [OUTPUT_NAME]:
        raise ExportError(
            f"{path}: exported graph has inputs {inputs} and outputs {outputs}; expected "
            f"{list(pattern.modalities)} -> [{OUTPUT_NAME!r}] (check export_module for pattern {pattern})"
        )


def check_parity(
    module: torch.nn.Module,
    onnx_path: str | Path,
    pattern: Pattern,
    bands: Mapping[str, int],
    size: int = 64,
    batch: int = 2,
    seed: int = 1,
) -> ParityReport:
    """Run PyTorch and ONNX Runtime on the same random inputs (a shape other than the traced one)."""
    import torch

    from export.ort_utils import make_session

    inputs = sample_inputs(pattern, bands, size, batch=batch, seed=seed)
    with torch.no_grad():
        expected = module.eval()(*(torch.from_numpy(a) for a in inputs.values())).numpy()
    got = make_session(onnx_path).run([OUTPUT_NAME], inputs)[0]
    if got.shape != expected.shape:
        raise ExportError(f"{onnx_path}: ONNX output shape {got.shape} differs from PyTorch {expected.shape}")
    return ParityReport(float(np.abs(got - expected).max()), argmax_agreement(got, expected))


def simplify_onnx(path: str | Path) -> Path:
    """Simplify in place with onnxslim (constant folding, fusions, dead-node removal); must precede Q/DQ."""
    import onnxslim

    path = Path(path)
    model = onnx.load(str(path))
    try:
        with _quiet_exporter():
            slim = onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises assorted errors on graphs it cannot handle
        raise ExportError(f"onnxslim failed on {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(slim, onnx.ModelProto):
        raise ExportError(f"onnxslim returned no model for {path}")
    with atomic_path(path) as tmp:
        onnx.save(slim, str(tmp))
    return path
