"""Which post-training quantizer writes the INT8 Q/DQ graph: ours, OpenVINO's NNCF, or NVIDIA's ModelOpt.

Why several: the vendors' quantizers encode what their runtimes want (NNCF: OpenVINO's CPU plugin, unsigned
activations after ReLU; ModelOpt: TensorRT, every convolution and residual add quantized), and the only fair
way to choose is to run each through the same accuracy gate (ONNX Runtime and OpenVINO) on the same
calibration, control and gate tiles. ``studies/quantizers.py`` does that; docs/EXPORT.md has the numbers.

Common to all three:

- the FP32 graph is first rewritten by ``split_concat_convs`` (no quantized convolution reads a Concat):
  OpenVINO's CPU plugin computes a signed-int8 Concat -> Conv wrongly whoever placed the Q/DQ (measured on
  the ``dsm`` engine of docs/EXPORT.md's quantizer comparison: on OpenVINO, ModelOpt's file agreed with FP32
  on 81 % of the gate's pixels without the rewrite and 96 % with it, NNCF's on 91 % and 95 %);
- calibration uses the same tiles; INT8 accuracy control (``export/accuracy_control.py``) keeps the same
  layers float through each quantizer's own exclusion list (``float_nodes``), then ``read_float_inputs``
  makes them read float.

Each vendor keeps its own placement and range calibration (NNCF: its defaults, the ``performance`` preset;
ModelOpt INT8: entropy); ``--calib-method`` and ``--int8-placement`` apply to ``ours`` only.

ModelOpt (``nvidia-modelopt[onnx]``) pins a CUDA onnxruntime-gpu, onnx 1.21 and cupy, which clash with the
``export`` extra, so it runs from its own virtualenv (``make modelopt-venv``: ``.venv-modelopt``) as a
subprocess, on the FP32 file, with the calibration tiles saved to ``.npz``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import onnx
from onnx import TensorProto

from export.concat_split import split_concat_convs
from export.quantize import (
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_PLACEMENT,
    quantize_int8,
    read_float_inputs,
    validate_calibration_tiles,
)
from stars_edge.errors import BackendUnavailableError, DataError, ExportError
from stars_edge.io import atomic_path

QuantizerName = Literal["ours", "nncf", "modelopt"]
QUANTIZERS: tuple[QuantizerName, ...] = get_args(QuantizerName)
#: The default per build target (docs/EXPORT.md, "Quantizers"). CPU builds (``--backend onnxruntime``, run by
#: ONNX Runtime or OpenVINO): NNCF, measured faster at the same gate accuracy (OpenVINO 5-17 %, ONNX Runtime
#: 0.87x FP32 where ours is 1.6x; at the default 256 px tile the only INT8 over 1.5x ONNX Runtime FP32).
#: TensorRT builds: ours, TensorRT-legal and needing no other virtualenv. A default vendor quantizer whose
#: INT8 the gate flags is replaced by ours for that pattern (``BuildOptions.int8_fallback``, export/build.py).
DEFAULT_QUANTIZERS: dict[str, QuantizerName] = {"onnxruntime": "nncf", "tensorrt": "ours"}


def default_quantizer(backend: str) -> QuantizerName:
    """The quantizer a build for ``backend`` uses unless ``--quantizer`` says otherwise."""
    return DEFAULT_QUANTIZERS.get(backend, "ours")


#: The Python of ModelOpt's own virtualenv; ``make modelopt-venv`` creates the default one.
MODELOPT_PYTHON_ENV = "STARS_EDGE_MODELOPT_PYTHON"
DEFAULT_MODELOPT_VENV = Path(__file__).resolve().parents[1] / ".venv-modelopt"
#: ModelOpt's INT8 post-training quantization run in its own venv, on the CPU provider only; the float part
#: stays float32 (its default converts it to float16, which the CPU gate would not measure fairly, and the
#: TensorRT FP16 base is ``export/tensorrt_build.py``'s job).
MODELOPT_ARGS = (
    "--quantize_mode", "int8", "--calibration_eps", "cpu", "--high_precision_dtype", "fp32",
    "--log_level", "WARNING",
)  # fmt: skip
MODELOPT_TIMEOUT_S = 1800


def modelopt_python() -> Path:
    """Python of ModelOpt's virtualenv: ``$STARS_EDGE_MODELOPT_PYTHON``, else ``.venv-modelopt``."""
    configured = os.environ.get(MODELOPT_PYTHON_ENV)
    return Path(configured) if configured else DEFAULT_MODELOPT_VENV / "bin" / "python"


def quantizer_unavailable(name: str) -> str | None:
    """Why ``name`` cannot run here (with the fix), or None. Checked before anything is built."""
    if name == "nncf":
        try:
            import nncf  # noqa: F401
        except ImportError as exc:
            return (
                f"--quantizer nncf (the default INT8 quantizer of CPU builds) needs NNCF ({exc}); "
                "pip install 'stars-edge[export]', or pass --quantizer ours"
            )
        return None
    if name == "modelopt":
        python = modelopt_python()
        if not python.is_file():
            return (
                f"--quantizer modelopt runs in its own virtualenv, {python} is missing; create it with "
                f"`make modelopt-venv` or point {MODELOPT_PYTHON_ENV} at a Python with nvidia-modelopt"
            )
        probe = subprocess.run(
            [str(python), "-c", "import modelopt.onnx.quantization"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if probe.returncode:
            last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            return f"--quantizer modelopt: {python} cannot import modelopt.onnx.quantization ({last})"
    return None


def require_quantizer(name: str) -> None:
    """Raise ``BackendUnavailableError`` (CLI exit 1) when ``name`` cannot run here."""
    reason = quantizer_unavailable(name)
    if reason is not None:
        raise BackendUnavailableError(reason)


def quantize_with(
    quantizer: str,
    fp32_path: Path,
    out_path: Path,
    tiles: Mapping[str, np.ndarray],
    float_nodes: Sequence[str] = (),
    method: str = DEFAULT_CALIBRATION_METHOD,
    placement: str = DEFAULT_PLACEMENT,
    ranges_cache: Path | None = None,
) -> Path:
    """INT8 Q/DQ copy of ``fp32_path`` by ``quantizer``, with ``float_nodes`` left float.

    ``method``, ``placement`` and ``ranges_cache`` are ours only (``export/quantize.py``).
    """
    if quantizer == "ours":
        return quantize_int8(
            fp32_path, out_path, tiles, method, placement, float_nodes=float_nodes, ranges_cache=ranges_cache
        )
    if quantizer not in QUANTIZERS:
        raise ExportError(f"unknown quantizer {quantizer!r}; choose {', '.join(QUANTIZERS)}")
    model, _sums = split_concat_convs(onnx.load(str(fp32_path)))
    bands = {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in model.graph.input}
    validate_calibration_tiles(tiles, bands, source=str(fp32_path))
    feed = {name: np.ascontiguousarray(tiles[name], dtype=np.float32) for name in bands}
    with atomic_path(out_path) as tmp:
        try:
            if quantizer == "nncf":
                quantized = _quantize_nncf(model, feed, float_nodes)
            else:
                quantized = _quantize_modelopt(model, feed, float_nodes, Path(tmp))
        except (DataError, ExportError, BackendUnavailableError):
            raise
        except Exception as exc:  # vendor quantizers raise their own, untyped errors
            raise ExportError(
                f"--quantizer {quantizer} failed on {fp32_path}: {type(exc).__name__}: {exc}"
            ) from exc
        if float_nodes:
            read_float_inputs(quantized, float_nodes)
        onnx.save(quantized, str(tmp))
    return out_path


def _quantize_nncf(
    model: onnx.ModelProto, tiles: Mapping[str, np.ndarray], float_nodes: Sequence[str]
) -> onnx.ModelProto:
    """``nncf.quantize`` (ONNX backend) with its defaults, one calibration item per tile."""
    import nncf

    count = len(next(iter(tiles.values())))
    items = [{name: array[i : i + 1] for name, array in tiles.items()} for i in range(count)]
    with _quiet():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),
            subset_size=count,
            ignored_scope=nncf.IgnoredScope(names=list(float_nodes), validate=False),
        )
    return quantized


def _quantize_modelopt(
    model: onnx.ModelProto, tiles: Mapping[str, np.ndarray], float_nodes: Sequence[str], target: Path
) -> onnx.ModelProto:
    """``python -m modelopt.onnx.quantization`` in ModelOpt's own venv, calibration tiles from an ``.npz``."""
    require_quantizer("modelopt")
    with tempfile.TemporaryDirectory(prefix="stars-modelopt-") as scratch:
        source, calibration = Path(scratch) / "fp32.onnx", Path(scratch) / "calibration.npz"
        onnx.save(model, str(source))
        np.savez(calibration, **cast(dict[str, Any], tiles))  # one array per input name
        command = [
            str(modelopt_python()), "-m", "modelopt.onnx.quantization", "--onnx_path", str(source),
            "--calibration_data", str(calibration), "--output_path", str(target), *MODELOPT_ARGS,
        ]  # fmt: skip
        if float_nodes:  # ModelOpt reads regular expressions: match each name exactly
            command += ["--nodes_to_exclude", *(f"{re.escape(name)}$" for name in float_nodes)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=MODELOPT_TIMEOUT_S, cwd=scratch, check=False
        )
    if done.returncode or not target.is_file():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise ExportError(f"ModelOpt INT8 quantization failed (exit {done.returncode}): {tail}")
    return onnx.load(str(target))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF logs and draws progress bars for every statistic; keep the build's progress bar readable."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def tensorrt_refusal(quantizer: str) -> str | None:
    """Why ``--backend tensorrt`` cannot use this quantizer's INT8 files, or None."""
    if quantizer == "nncf":
        return (
            "--quantizer nncf writes uint8 activations (OpenVINO's recipe), which TensorRT does not accept; "
            "TensorRT's INT8 needs --quantizer ours (the default of a --backend tensorrt build) or modelopt"
        )
    return None


def qdq_summary(model: onnx.ModelProto) -> dict[str, Any]:
    """Q/DQ placement of an INT8 graph: node counts, zero-point types, which convolutions run INT8."""
    from export.accuracy_control import quantized_convs

    initializers = {init.name: init for init in model.graph.initializer}
    ops = Counter(node.op_type for node in model.graph.node)
    zero_points: Counter[str] = Counter()  # of activations (ModelOpt also writes Q on constant weights)
    for node in model.graph.node:
        if (
            node.op_type == "QuantizeLinear"
            and node.input[0] not in initializers
            and len(node.input) > 2
            and node.input[2] in initializers
        ):
            zero_points[TensorProto.DataType.Name(initializers[node.input[2]].data_type)] += 1
    quantized = quantized_convs(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    adds = [
        n.name
        for n in model.graph.node
        if n.op_type == "Add"
        and any(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input)
    ]
    return {
        "quantize_linear": ops["QuantizeLinear"],
        "dequantize_linear": ops["DequantizeLinear"],
        "convs": ops["Conv"],
        "quantized_convs": len(quantized),
        "quantized_conv_names": sorted(quantized),
        "quantized_adds": len(adds),
        "activation_zero_point_types": dict(zero_points),
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
    }
