"""Helpers shared by the runtime tests: tiny real ONNX engines (1x1 convolutions) and their manifest.

A 1x1 convolution over the concatenated inputs is translation-equivariant and has known outputs, so tests
can predict exactly which class every pixel gets and compare tiled against untiled runs. The helpers are
tested here too, so a broken fixture fails loudly instead of making other tests pass vacuously.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stars_edge.io import sha256_file
from stars_edge.manifest import EngineEntry, Manifest, ModelInfo, engine_inputs, save_manifest
from stars_edge.modalities import ALL_PATTERNS, DEFAULT_SPECS, ModalitySpec, Pattern, all_patterns

#: ``(pattern, total input bands) -> (weight (classes, bands), bias (classes,))``.
WeightFn = Callable[[Pattern, int], tuple[np.ndarray, np.ndarray]]
CHECKPOINT = "c0ffee" * 10 + "abcd"


def conv_engine(
    path: Path,
    pattern: Pattern,
    bands: Mapping[str, int],
    weight: np.ndarray,
    bias: np.ndarray,
    kernel: int = 1,
    logits_stride: int = 1,
) -> Path:
    """Write ``logits = Conv(concat(inputs of pattern))`` as an ONNX file with dynamic N/H/W (with
    ``logits_stride`` 4, averaged over 4x4 blocks: logits at a quarter of the input size, as engines built
    with ``--logits-stride 4`` return them).

    ``kernel`` 1 gives a 1x1 convolution; an odd ``kernel`` k > 1 spreads the 1x1 weights over a k x k
    kernel (centre weight 1/2, the rest sharing the other half) with zero padding: an engine with a real
    spatial receptive field of radius (k - 1) / 2, so fill values and tile edges show in its output.
    """
    if kernel > 1:
        spread = np.full((kernel, kernel), 0.5 / (kernel * kernel - 1), dtype=np.float32)
        spread[kernel // 2, kernel // 2] = 0.5
        weight4 = weight.astype(np.float32)[:, :, None, None] * spread[None, None] * 2.0
    else:
        weight4 = weight.astype(np.float32)[:, :, None, None]
    inputs = [helper.make_tensor_value_info(m, TensorProto.FLOAT, ["N", bands[m], "H", "W"]) for m in pattern]
    classes = weight.shape[0]
    size = ["H", "W"] if logits_stride == 1 else ["h", "w"]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, *size])
    initializers = [
        numpy_helper.from_array(weight4, "weight"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
    ]
    nodes = []
    if len(pattern) > 1:
        nodes.append(helper.make_node("Concat", list(pattern), ["stacked"], axis=1))
        source = "stacked"
    else:
        source = pattern.modalities[0]
    pad = kernel // 2
    conv = "logits" if logits_stride == 1 else "full"
    nodes.append(
        helper.make_node(
            "Conv", [source, "weight", "bias"], [conv], kernel_shape=[kernel, kernel], pads=[pad] * 4
        )
    )
    if logits_stride != 1:
        nodes.append(
            helper.make_node(
                "AveragePool",
                [conv],
                ["logits"],
                kernel_shape=[logits_stride] * 2,
                strides=[logits_stride] * 2,
            )
        )
    graph = helper.make_graph(nodes, f"conv_{pattern.name}", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def pattern_class_weights(classes: int = 8) -> WeightFn:
    """Engines whose every pixel gets class ``pattern.index``: the class map then shows the engine used."""

    def weights(pattern: Pattern, bands: int) -> tuple[np.ndarray, np.ndarray]:
        bias = np.zeros(classes, dtype=np.float32)
        bias[pattern.index] = 10.0
        return np.zeros((classes, bands), dtype=np.float32), bias

    return weights


def random_weights(classes: int = 4, seed: int = 0) -> WeightFn:
    """Data-dependent engines (fixed random 1x1 convolutions), one per pattern."""

    def weights(pattern: Pattern, bands: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed + pattern.index)
        return rng.normal(size=(classes, bands)).astype(np.float32), rng.normal(size=classes).astype(
            np.float32
        )

    return weights


def build_engines(
    folder: Path,
    weights: WeightFn,
    classes: int,
    specs: Mapping[str, ModalitySpec] | None = None,
    patterns: tuple[Pattern, ...] | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    checkpoint: str = CHECKPOINT,
    tile_size: int = 64,
    context_margin: int | None = 0,
    kernel: int = 1,
    write_engine: Callable[..., object] | None = None,
    logits_stride: int = 1,
) -> Path:
    """Write one engine per pattern (and precision) plus ``manifest.json``; returns ``folder``.

    ``write_engine(path, pattern, bands, weight, bias, kernel)`` writes each engine (default:
    ``conv_engine`` at ``logits_stride``); ``logits_stride`` is recorded in the manifest.
    """
    write: Callable[..., object] = write_engine or functools.partial(conv_engine, logits_stride=logits_stride)
    specs = dict(specs or DEFAULT_SPECS)
    folder.mkdir(parents=True, exist_ok=True)
    patterns = patterns or all_patterns(tuple(specs))
    manifest = Manifest(
        model=ModelInfo(
            "test-conv", "stars", checkpoint, classes, tuple(f"class{i}" for i in range(classes))
        ),
        modalities=specs,
        tile_size=tile_size,
        context_margin=context_margin,
        logits_stride=logits_stride,
    )
    bands = {m: s.bands for m, s in specs.items()}
    for pattern in patterns:
        weight, bias = weights(pattern, sum(bands[m] for m in pattern))
        for precision in precisions:
            name = f"{pattern}.{precision}.onnx"
            write(folder / name, pattern, bands, weight, bias, kernel)
            manifest.add(
                EngineEntry(
                    pattern=pattern,
                    precision=precision,  # type: ignore[arg-type]
                    backend="onnxruntime",
                    path=name,
                    sha256=sha256_file(folder / name),
                    inputs=engine_inputs(pattern, specs),
                    tile_size=tile_size,
                )
            )
    save_manifest(manifest, folder)
    return folder


def reference_probabilities(
    inputs: Mapping[str, np.ndarray], specs: Mapping[str, ModalitySpec], pattern: Pattern, weights: WeightFn
) -> np.ndarray:
    """What a conv engine computes for whole arrays, in numpy: softmax(W @ normalised + b)."""
    stacked = np.concatenate([specs[m].normalize(inputs[m]) for m in pattern], axis=0)
    weight, bias = weights(pattern, stacked.shape[0])
    logits = np.einsum("cb,bhw->chw", weight, stacked) + bias[:, None, None]
    logits -= logits.max(axis=0, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=0, keepdims=True)


def test_conv_engine_computes_the_reference(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    weights = random_weights(classes=3)
    pattern = Pattern.parse("optical+sar")
    bands = {"optical": 4, "sar": 2}
    weight, bias = weights(pattern, 6)
    path = conv_engine(tmp_path / "e.onnx", pattern, bands, weight, bias)
    rng = np.random.default_rng(1)
    feed = {
        "optical": rng.normal(size=(2, 4, 32, 64)).astype(np.float32),
        "sar": rng.normal(size=(2, 2, 32, 64)).astype(np.float32),
    }
    (logits,) = onnxruntime.InferenceSession(str(path)).run(["logits"], feed)
    expected = np.einsum("cb,nbhw->nchw", weight, np.concatenate([feed["optical"], feed["sar"]], 1))
    np.testing.assert_allclose(logits, expected + bias[None, :, None, None], rtol=1e-5, atol=1e-5)


def test_build_engines_writes_a_loadable_manifest(tmp_path: Path) -> None:
    from stars_edge.manifest import load_manifest

    build_engines(tmp_path, pattern_class_weights(), classes=8)
    manifest = load_manifest(tmp_path)
    assert manifest.patterns == ALL_PATTERNS
    assert manifest.select("sar+dsm", "fp32", "onnxruntime").path == "sar+dsm.fp32.onnx"


def write_raster(
    path: Path,
    data: np.ndarray,
    transform: object,
    crs: str = "EPSG:32631",
    nodata: float | None = None,
) -> Path:
    """Write ``(bands, H, W)`` as a GeoTIFF with rasterio (tests build their own small scenes)."""
    import rasterio

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dataset:
        dataset.write(data)
    return path


def make_physical(shape: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible physical values for the default specs: reflectance, dB, metres."""
    rng = np.random.default_rng(seed)
    height, width = shape
    return {
        "optical": rng.normal(0.12, 0.05, (4, height, width)).astype(np.float32),
        # co-polarised above cross-polarised, as on Earth (the input contract checks it)
        "sar": rng.normal((-10.0, -17.0), 4.0, (height, width, 2)).transpose(2, 0, 1).astype(np.float32),
        "dsm": rng.normal(5.0, 8.0, (1, height, width)).astype(np.float32),
    }


def write_holed_scene(folder: Path, transform: object) -> dict[str, Path]:
    """GeoTIFFs of a 300 x 260 px scene with a cloud mask, a SAR gap and a DSM void (the readers' tests)."""
    inputs = make_physical((300, 260), seed=11)
    inputs["sar"][:, :, 200:] = np.nan
    inputs["dsm"][:, 40:70, 30:90] = np.nan
    clouds = np.zeros((1, 300, 260), dtype=np.uint8)
    clouds[0, 120:190, 60:150] = 1
    paths = {m: write_raster(folder / f"{m}.tif", a, transform) for m, a in inputs.items()}
    paths["cloud_mask"] = write_raster(folder / "clouds.tif", clouds, transform)
    return paths


def interruptible() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: reset SIGINT to its default, because a test
    run started as a background job of a shell without job control ignores SIGINT, and every child would
    inherit that (the run would finish instead of stopping)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def assert_same_tiles(got: list[Any], want: list[Any]) -> None:
    """Prepared tiles (``scheduling.PreparedTile``) equal position by position: codes, inputs bit for bit."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a.row, a.col) == (b.row, b.col)
        np.testing.assert_array_equal(a.codes, b.codes)
        assert a.codes.dtype == b.codes.dtype
        assert set(a.inputs) == set(b.inputs)
        for name in a.inputs:
            assert a.inputs[name].dtype == b.inputs[name].dtype == np.float32
            assert a.inputs[name].tobytes() == b.inputs[name].tobytes(), name


def clean_path_taken(source: Any, grid: Any, dilation: Mapping[str, int]) -> list[bool]:
    """For each tile of ``grid``, whether ``source.read_normalised`` took it (its clean path)."""
    return [
        source.read_normalised(*grid.origin(r, c), grid.tile, dilation, DEFAULT_SPECS) is not None
        for r in range(grid.rows)
        for c in range(grid.cols)
    ]


#: The kernel builds a test may ask for (``runtime/kernels.py``): compiled first, then the numpy path.
KERNEL_CHOICES = ("c", "numba", "numpy")


def use_kernels(monkeypatch: pytest.MonkeyPatch, choice: str) -> Any:
    """Make ``choice`` the runtime's kernels for this test and wait for them (numba loads on a thread);
    skips where that build is not installed. Returns the kernels module (None for ``numpy``)."""
    from runtime.kernels import KERNELS_ENV, c_built, load, numba_installed

    if choice == "c" and not c_built():
        pytest.skip("the C kernels were not built (no C compiler at install)")
    if choice == "numba" and not numba_installed():
        pytest.skip("numba is not installed")
    monkeypatch.setenv(KERNELS_ENV, choice)
    return load()
