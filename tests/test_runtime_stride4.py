"""Stride-4 logits (issue 21, opt-in): the runtime blends at stride 4 and upsamples once per output pixel.

The oracle is the same engine with its upsampling in the graph (an ONNX ``Resize``, linear, half-pixel: the
model's ``F.interpolate``) run as a stride-1 engine: with the stride-4 manifest the runtime must give its
class map (bar exact near-ties) and its probabilities (within float tolerance), tiled and untiled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_runtime_support import build_engines, make_physical, random_weights, use_kernels

import runtime.blending_stride4
from runtime import Predictor
from runtime.blending import RowBands
from runtime.blending_stride4 import CHUNK_HALO, Stride4Blender, check_stride4
from runtime.pixels import CLEAR_LEAD
from runtime.stride4_quads import Quads
from runtime.tiling import TileGrid, plan_chunks
from runtime.upsampling import input_resolution, upsample4, upsample4_quads
from stars_edge.errors import ConfigError, ManifestError
from stars_edge.manifest import (
    MANIFEST_NAME,
    load_manifest,
)
from stars_edge.modalities import DEFAULT_SPECS, Pattern

CLASSES = 5


def pooled_engine(
    path: Path, pattern: Pattern, weight: np.ndarray, bias: np.ndarray, upsample: bool, kernel: int = 1
) -> None:
    """``Conv1x1(AveragePool4x4/4(concat(inputs)))``: logits at stride 4, translation-equivariant on the
    4-px grid; ``upsample`` appends ``Resize(x4, linear, half_pixel)`` (a stride-1 engine). ``kernel`` 3
    spreads the weights over a zero-padded 3x3 window: tile edges then show (not equivariant)."""
    bands = {m: s.bands for m, s in DEFAULT_SPECS.items()}
    inputs = [helper.make_tensor_value_info(m, TensorProto.FLOAT, ["N", bands[m], "H", "W"]) for m in pattern]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES, "h", "w"])
    initializers = [
        numpy_helper.from_array(
            np.repeat(np.repeat(weight.astype(np.float32)[:, :, None, None], kernel, 2), kernel, 3)
            / kernel**2,
            "weight",
        ),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([1, 1, 4, 4], dtype=np.float32), "scales"),
    ]
    nodes = [helper.make_node("Concat", list(pattern), ["stacked"], axis=1)]
    nodes.append(
        helper.make_node("AveragePool", ["stacked"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4])
    )
    conv = ["coarse" if upsample else "logits"]
    nodes.append(helper.make_node("Conv", ["pooled", "weight", "bias"], conv, pads=[kernel // 2] * 4))
    if upsample:
        nodes.append(
            helper.make_node(
                "Resize",
                ["coarse", "", "scales"],
                ["logits"],
                mode="linear",
                coordinate_transformation_mode="half_pixel",
            )
        )
    graph = helper.make_graph(nodes, f"pooled_{pattern.name}", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build(folder: Path, stride: int, seed: int = 3, kernel: int = 1) -> Path:
    """Engines for every pattern and their manifest; ``stride`` 4 records ``logits_stride`` 4."""

    def write(
        path: Path, pattern: Pattern, bands: object, weight: np.ndarray, bias: np.ndarray, k: int
    ) -> None:
        pooled_engine(path, pattern, weight * 3.0, bias, stride == 1, k)

    weights = random_weights(CLASSES, seed)
    return build_engines(folder, weights, CLASSES, kernel=kernel, write_engine=write, logits_stride=stride)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(stride-4 engines, the same engines upsampling in the graph)."""
    root = tmp_path_factory.mktemp("stride4")
    return build(root / "s4", 4), build(root / "s1", 1)


def _predict(folder: Path, inputs: dict[str, np.ndarray], **options: object) -> tuple[np.ndarray, np.ndarray]:
    with Predictor(folder, backend="onnxruntime", threads=1) as predictor:
        return predictor.predict_arrays(inputs, **options)  # type: ignore[arg-type]


def _close_margin(folder: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Pixels whose two best full-resolution logits (the stride-1 oracle's) are within 1e-4: near-ties."""
    pattern = Pattern.full()
    stacked = np.concatenate([DEFAULT_SPECS[m].normalize(inputs[m]) for m in pattern])[None]
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / f"{pattern}.fp32.onnx"), providers=["CPUExecutionProvider"])
    feed, start = {}, 0
    for m in pattern:
        feed[m] = stacked[:, start : start + DEFAULT_SPECS[m].bands]
        start += DEFAULT_SPECS[m].bands
    logits = np.sort(session.run(None, feed)[0][0], axis=0)
    return logits[-1] - logits[-2] < 1e-4


@pytest.mark.parametrize(("tile", "overlap"), [(128, 0), (32, 8), (64, 16)])
def test_stride4_runtime_equals_the_engine_that_upsamples_in_its_graph(
    engines: tuple[Path, Path], tile: int, overlap: int
) -> None:
    """The oracle runs untiled on a 128 px scene (one tile, no padding: its in-graph upsampling clamps at the
    scene's edges, as the runtime does); the stride-4 runtime runs untiled or tiled with overlap."""
    stride4, stride1 = engines
    inputs = make_physical((128, 128), seed=11)
    got, got_patterns = _predict(stride4, inputs, tile=tile, overlap=overlap, batch=2)
    want, want_patterns = _predict(stride1, inputs, tile=128, overlap=0)
    np.testing.assert_array_equal(got_patterns, want_patterns)
    differ = got != want
    assert not (differ & ~_close_margin(stride1, inputs)).any()
    assert differ.mean() < 1e-3


def _scene_outputs(
    folder: Path,
    paths: dict[str, Path],
    out: Path,
    tile: int,
    overlap: int,
    context_margin: int | None = None,
    fill: float = 0.0,
) -> dict[str, np.ndarray]:
    """``predict_scene`` over GeoTIFFs with every output (float32 probabilities): classes, patterns and
    probabilities as read back."""
    import rasterio

    out.mkdir(parents=True, exist_ok=True)
    with Predictor(folder, backend="onnxruntime", threads=1, context_margin=context_margin) as predictor:
        predictor.fill_value = fill
        predictor.predict_scene(
            **paths,  # type: ignore[arg-type]
            out=out / "classes.tif",
            pattern_map=out / "patterns.tif",
            probabilities=out / "probabilities.tif",
            probabilities_dtype="float32",
            tile=tile,
            overlap=overlap,
            chunk_width=None,
            progress=False,
        )
    arrays = {}
    for name in ("classes", "patterns", "probabilities"):
        with rasterio.open(out / f"{name}.tif") as dataset:
            arrays[name] = dataset.read()
    return arrays


def _rasters(inputs: dict[str, np.ndarray], folder: Path) -> dict[str, Path]:
    from rasterio.transform import Affine
    from test_runtime_support import write_raster

    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5700000.0)
    return {m: write_raster(folder / f"{m}.tif", a, transform) for m, a in inputs.items()}


def test_stride4_probabilities_match_within_tolerance(engines: tuple[Path, Path], tmp_path: Path) -> None:
    """The probabilities output too, through ``predict_scene`` (GeoTIFFs), tiled with overlap."""
    stride4, stride1 = engines
    paths = _rasters(make_physical((128, 128), seed=12), tmp_path)
    got = _scene_outputs(stride4, paths, tmp_path / "s4", 32, 8)
    want = _scene_outputs(stride1, paths, tmp_path / "s1", 128, 0)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=2e-5)


def test_a_cloudy_tile_gives_the_oracle_probabilities(engines: tuple[Path, Path], tmp_path: Path) -> None:
    """One tile with a cloud (no overlap, nothing blended): the pure cells interpolated on the coarse grid and
    the boundary pixels upsampled from their own engine give the stride-1 engines' probabilities."""
    stride4, stride1 = engines
    inputs = make_physical((128, 128), seed=18)
    inputs["optical"][:, 37:90, 21:66] = np.nan  # not on the 4-px grid: mixed cells along every edge
    inputs["sar"][:, 100:, 90:] = np.nan  # a second hole pattern in a corner
    paths = _rasters(inputs, tmp_path)
    got = _scene_outputs(stride4, paths, tmp_path / "s4", 128, 0, context_margin=5)
    want = _scene_outputs(stride1, paths, tmp_path / "s1", 128, 0, context_margin=5)
    np.testing.assert_array_equal(got["patterns"], want["patterns"])
    assert len(np.unique(got["patterns"])) == 3
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=2e-5)


def test_cloud_hole_is_composed_at_full_resolution(engines: tuple[Path, Path]) -> None:
    """A cloud hole (optical invalid) inside tiles: its pixels take the sar+dsm engine, the rest the full
    engine, composed per pixel at full resolution: the same classes and patterns as the stride-1 oracle
    except at the pixels the per-window upsampling differs (within 2 px of a window edge) and near-ties."""
    stride4, stride1 = engines
    inputs = make_physical((104, 104), seed=13)
    clouds = np.zeros((104, 104), dtype=bool)
    clouds[40:70, 30:61] = True
    inputs["dsm"][:, :, 100:] = np.nan  # nodata at the edge: dsm missing, the pixels still predicted
    options = {"cloud_mask": clouds, "tile": 32, "overlap": 8, "batch": 3, "allow_out_of_range": True}
    got, got_patterns = _predict(stride4, inputs, **options)
    want, want_patterns = _predict(stride1, inputs, **options)
    np.testing.assert_array_equal(got_patterns, want_patterns)
    assert (got_patterns == Pattern.parse("sar+dsm").index).sum() > 500
    assert (got == want).mean() > 0.995
    hole = Pattern.parse("sar+dsm").index
    assert (got[got_patterns == hole] == want[want_patterns == hole]).mean() > 0.99


def test_fill_values_reach_no_pixel_beyond_the_margin_at_stride_4(
    engines: tuple[Path, Path], tmp_path: Path
) -> None:
    """A cloud across tile edges: its pixels take the sar+dsm windows' logits alone, the other pixels the
    full engine's cells, so what is put into the cloud's optical pixels changes no class, pattern or
    probability. These engines' outputs reach 6 px (a 4x4 pooling cell, then bilinear to the next cell): a
    margin of 8 covers it; with margin 0 the same fills do show (the test can fail)."""
    stride4, _ = engines
    inputs = make_physical((100, 102), seed=17)  # the last tiles hang over the edge (padding)
    inputs["optical"][:, 20:60, 26:96] = np.nan  # across the overlap bands (tile 32, overlap 8), to the edge
    paths = _rasters(inputs, tmp_path)
    base = _scene_outputs(stride4, paths, tmp_path / "a", 32, 8, context_margin=8, fill=0.0)
    other = _scene_outputs(stride4, paths, tmp_path / "b", 32, 8, context_margin=8, fill=9.0)
    for part in base:
        np.testing.assert_array_equal(base[part], other[part], err_msg=part)
    assert (base["patterns"] == Pattern.parse("sar+dsm").index).sum() > 40 * 44
    leak_a = _scene_outputs(stride4, paths, tmp_path / "c", 32, 8, context_margin=0, fill=0.0)
    leak_b = _scene_outputs(stride4, paths, tmp_path / "d", 32, 8, context_margin=0, fill=9.0)
    assert not np.array_equal(leak_a["probabilities"], leak_b["probabilities"])


def test_nodata_pixels_stay_nodata(engines: tuple[Path, Path]) -> None:
    """Pixels no modality covers are nodata (255) with pattern 0 in both; their neighbours are predicted."""
    stride4, stride1 = engines
    inputs = make_physical((72, 72), seed=14)
    for array in inputs.values():
        array[:, 20:30, 33:45] = np.nan
    got, got_patterns = _predict(stride4, inputs, tile=32, overlap=8)
    want, want_patterns = _predict(stride1, inputs, tile=32, overlap=8)
    np.testing.assert_array_equal(got == 255, want == 255)
    np.testing.assert_array_equal(got_patterns, want_patterns)
    assert (got[20:30, 33:45] == 255).all() and (got != 255).sum() == 72 * 72 - 120


def test_chunked_equals_unchunked(tmp_path: Path) -> None:
    """Column chunks (each running the tiles within the halo of its edges) give the unchunked bits, with
    engines whose tile edges show (a zero-padded 3x3 conv): every tile's share counts."""
    stride4 = build(tmp_path / "edged", 4, kernel=3)
    inputs = make_physical((70, 150), seed=15)
    whole, whole_patterns = _predict(stride4, inputs, tile=32, overlap=8)
    for width in (36, 40, 64):
        chunked, patterns = _predict(stride4, inputs, tile=32, overlap=8, chunk_width=width)
        np.testing.assert_array_equal(chunked, whole)
        np.testing.assert_array_equal(patterns, whole_patterns)


def test_a_manifest_without_logits_stride_is_stride_1(engines: tuple[Path, Path], tmp_path: Path) -> None:
    stride4, stride1 = engines
    data = json.loads((stride1 / MANIFEST_NAME).read_text())
    assert "logits_stride" not in data
    assert load_manifest(stride1).logits_stride == 1
    assert json.loads((stride4 / MANIFEST_NAME).read_text())["logits_stride"] == 4
    data["logits_stride"] = 2
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="logits_stride"):
        load_manifest(tmp_path, verify=False)


@pytest.mark.parametrize(("tile", "overlap"), [(30, 8), (32, 6), (32, 16)])
def test_tilings_the_stride4_grid_cannot_carry_are_refused(tile: int, overlap: int) -> None:
    with pytest.raises(ConfigError, match="--logits-stride 4"):
        check_stride4(tile, overlap)


def test_the_runtime_refuses_an_overlap_not_divisible_by_4(engines: tuple[Path, Path]) -> None:
    stride4, stride1 = engines
    inputs = make_physical((64, 64), seed=16)
    with pytest.raises(ConfigError, match="--logits-stride 4"):
        _predict(stride4, inputs, tile=32, overlap=6)
    _predict(stride1, inputs, tile=32, overlap=6)  # stride-1 engines take it


def test_chunk_halo_takes_the_neighbouring_tiles() -> None:
    grid = TileGrid(64, 200, 32, 8)
    plain, wide = plan_chunks(grid, 48), plan_chunks(grid, 48, halo=8)
    assert [c.first_col for c in wide] <= [c.first_col for c in plain]
    assert any(w.first_col < p.first_col or w.last_col > p.last_col for w, p in zip(wide, plain, strict=True))


def test_input_resolution_upsamples_stride4_logits_only() -> None:
    logits = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    assert input_resolution(logits, (8, 8)) is logits
    np.testing.assert_array_equal(input_resolution(logits, (32, 32)), upsample4(logits))
    with pytest.raises(ManifestError, match="quarter"):
        input_resolution(logits, (16, 16))
    flat = np.full((1, 1, 3, 3), 2.0, dtype=np.float32)
    np.testing.assert_array_equal(upsample4(flat), np.full((1, 1, 12, 12), 2.0, dtype=np.float32))


def test_upsample4_quads_are_the_bits_of_upsample4() -> None:
    """Each 4x4 quad from its 2x2 cells, edge-clamped quads included, equals ``upsample4`` bit for bit."""
    rng = np.random.default_rng(1)
    for h, w in ((1, 1), (2, 3), (5, 4)):
        cells = (rng.normal(size=(3, h, w)) * rng.choice([1e-3, 1.0, 300.0], size=(3, h, w))).astype(
            np.float32
        )
        padded = np.pad(cells, ((0, 0), (1, 1), (1, 1)), mode="edge")
        g, f = (a.ravel() for a in np.meshgrid(np.arange(h + 1), np.arange(w + 1), indexing="ij"))
        quads = np.stack([np.stack([padded[:, g + i, f + j] for j in (0, 1)]) for i in (0, 1)])
        pixels = upsample4_quads(quads)  # (4, 4, 3, n)
        whole = np.empty((3, 4 * (h + 1), 4 * (w + 1)), dtype=np.float32)
        for k in range(g.size):
            whole[:, 4 * g[k] : 4 * g[k] + 4, 4 * f[k] : 4 * f[k] + 4] = np.moveaxis(pixels[..., k], 2, 0)
        np.testing.assert_array_equal(whole[:, 2:-2, 2:-2].view(np.uint32), upsample4(cells).view(np.uint32))


def _regions(rng: np.random.Generator, shape: tuple[int, int], size: int = 6) -> np.ndarray:
    """A random value in 0..3 per ``size`` x ``size`` block of cells, at cell resolution."""
    blocks = rng.integers(0, 4, size=(-(-shape[0] // size), -(-shape[1] // size)))
    return np.repeat(np.repeat(blocks, size, axis=0), size, axis=1)[: shape[0], : shape[1]]


def _coarse_field(rng: np.random.Generator, shape: tuple[int, int], classes: int) -> np.ndarray:
    """Cell logits in regions: plateaus (one class leads by 2), near-ties (leads of either sign around
    ``CLEAR_LEAD``, exact ties), large logits and logits of 1e4 whose leader leads by 2 float32 steps."""
    h, w = shape
    kind, leader = _regions(rng, shape), _regions(rng, shape, 3) % classes
    rival = (leader + 1 + _regions(rng, shape) % (classes - 1)) % classes if classes > 1 else leader
    at = np.indices(shape)
    field = rng.normal(scale=0.3, size=(classes, h, w)).astype(np.float32)
    field[leader, *at] += 2.0
    leads = np.array([-9e-4, -5e-4, -1e-7, 0.0, 1e-7, 5e-4, CLEAR_LEAD - 1e-6, CLEAR_LEAD, 1.1e-3, 2e-3])
    near = kind == 1
    field[:, near] = np.float32(1.5)
    field[rival, *at] = np.where(near, np.float32(2.5), field[rival, *at])
    field[leader, *at] = np.where(near, np.float32(2.5) + rng.choice(leads, size=shape), field[leader, *at])
    field[:, kind == 2] *= np.float32(300.0)
    huge = kind == 3
    step = np.float32(2.0**-10)  # a float32 step at 1e4
    base = np.float32(1e4) + step * rng.integers(0, 64, size=shape).astype(np.float32)
    field[:, huge] = base[huge] - 8 * step
    low, high = np.minimum(leader, rival), np.maximum(leader, rival)  # the leader has the larger index
    field[low, *at] = np.where(huge, base, field[low, *at])
    field[high, *at] = np.where(huge, base + 2 * step, field[high, *at])
    return field


def _adversarial_cells(
    rng: np.random.Generator, shape: tuple[int, int], classes: int, patterns: list[int]
) -> np.ndarray:
    """``Stride4Blender._coarse`` channels over the whole scene: logit sums of ``_coarse_field`` times
    weights that divide exactly (some cells uncovered), and the weights of two of ``patterns`` per region,
    tied or a few float32 steps apart."""
    weights = np.array([0.0, 0.25, 0.5, 1.0, 2.0], dtype=np.float32)
    weight = rng.choice(weights, p=[0.04, 0.24, 0.24, 0.24, 0.24], size=shape)
    cells = np.zeros((classes + 1 + 7, *shape), dtype=np.float32)
    cells[:classes] = _coarse_field(rng, shape, classes) * weight
    cells[classes] = weight
    at, options = np.indices(shape), np.array(patterns)
    first = _regions(rng, shape, 4) % options.size
    second = (first + 1 + _regions(rng, shape, 5) % (options.size - 1)) % options.size
    top = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    steps = rng.choice(np.array([0, 1, 1, 2, 3, 1000]), size=shape) * np.spacing(top)
    cells[classes + options[first], *at] = np.where(weight > 0, top, 0.0)
    cells[classes + options[second], *at] = np.where(weight > 0, top - steps, 0.0)
    return cells


def _blend_both(
    grid: TileGrid,
    field: np.ndarray,
    patterns: list[int],
    rng: np.random.Generator,
    chunk_width: int | None,
    cells: np.ndarray | None = None,
) -> list[tuple[list[RowBands], list[RowBands]]]:
    """Run the same tiles through the class-only blender and the full-upsample one (probabilities on);
    ``cells`` then replaces each tile row's coarse sums (``_coarse``), for values no tiles would give."""
    classes, t, size = field.shape[0], grid.tile, grid.tile // 4
    tiles: dict[tuple[int, int], tuple[np.ndarray | None, np.ndarray]] = {}
    for row in range(grid.rows):
        for col in range(grid.cols):
            y, x = grid.origin(row, col)
            coarse = np.zeros((classes, size, size), dtype=np.float32)
            part = field[:, y // 4 : y // 4 + size, x // 4 : x // 4 + size]
            coarse[:, : part.shape[1], : part.shape[2]] = part
            noise = rng.normal(scale=0.05, size=coarse.shape).astype(np.float32) * (rng.random() < 0.5)
            coarse += np.where(np.abs(coarse) < 100.0, noise, 0.0)
            index = np.full((t, t), patterns[(row + 2 * col) % len(patterns)], dtype=np.uint8)
            kind = rng.random()
            logits: np.ndarray | None = coarse
            if kind < 0.08:
                logits, index = None, np.zeros((t, t), dtype=np.uint8)  # no valid pixel
            elif kind < 0.2:
                index[t // 4 : t // 2, 3 : t // 3] = 0  # nodata pixels: composed at full resolution
            elif kind < 0.3:
                index[5 : t // 2, t // 3 :] = patterns[0] % 7 + 1  # a second pattern: full-resolution logits
                logits = upsample4(coarse) + rng.normal(scale=0.01, size=(classes, t, t)).astype(np.float32)
            tiles[row, col] = (logits, index)
    results = []
    for chunk in plan_chunks(grid, chunk_width, CHUNK_HALO):
        outputs = []
        for probabilities in (None, "float32"):
            blender = Stride4Blender(grid, classes, probabilities, chunk=chunk)
            bands = []
            for row in range(1, grid.rows):  # row 1 first: a resume's warm-up row starts fresh
                blender.start_row(row, fresh=row == 1)
                for col in range(chunk.first_col, chunk.last_col + 1):
                    blender.add(col, *tiles[row, col])
                if cells is not None:
                    coarse = blender._coarse
                    y0, x0 = row * grid.stride // 4 - 1, chunk.first_col * grid.stride // 4  # row >= 1
                    coarse[...] = cells[:, y0 : y0 + coarse.shape[1], x0 : x0 + coarse.shape[2]]
                bands.append(blender.finish_row())
            outputs.append(bands)
        results.append((outputs[0], outputs[1]))
    return results


CASES = [
    (150, 203, 32, 8, [7], None, 4),
    (150, 203, 32, 8, [7, 3, 5], None, 4),
    (181, 246, 64, 16, [1, 4], 70, 5),
    (97, 130, 32, 12, [2, 6], 40, 3),
    (96, 128, 32, 0, [7, 3], None, 4),
    (70, 90, 32, 8, [7, 5], None, 1),
]


@pytest.mark.parametrize("kernels", ["numpy", "c", "numba"])
@pytest.mark.parametrize("adversarial", [False, True])
@pytest.mark.parametrize(("height", "width", "tile", "overlap", "patterns", "chunk_width", "classes"), CASES)
def test_class_map_without_probabilities_is_the_full_upsample(
    monkeypatch: pytest.MonkeyPatch,
    height: int,
    width: int,
    tile: int,
    overlap: int,
    patterns: list[int],
    chunk_width: int | None,
    classes: int,
    adversarial: bool,
    kernels: str,
) -> None:
    """Without probabilities, classes are read per 4x4 quad from its cells where they agree clearly and
    interpolated elsewhere: the class and pattern maps must be the bits of the full upsample (the path
    probabilities take), on plateaus, near-ties, large logits, overlaps, scene edges, chunks and nodata;
    ``adversarial`` also writes coarse sums no tiles would give (pattern weights a few float32 steps
    apart, uncovered cells anywhere). ``numba``: the interpolated quads through the compiled kernel
    (``quad_pixels`` of ``kernels_numba``), ``c`` the same through ``kernels_c``; their near-ties through the
    numpy path."""
    module = use_kernels(monkeypatch, kernels)
    compiled_calls = []
    if module is not None:
        quad_pixels = module.quad_pixels

        def counted(*args: object) -> np.ndarray:
            compiled_calls.append(1)
            return quad_pixels(*args)

        monkeypatch.setattr(module, "quad_pixels", counted)
    gathered: dict[int, set[tuple[int, int]]] = {}  # per band's Quads: the quads gathered, once each
    alive: list[Quads] = []  # so that no two bands' Quads share an id
    gather = runtime.blending_stride4.Quads.cells

    def counting(self: Quads, stacked: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        alive.append(self)
        gathered.setdefault(id(self), set()).update(zip(qy.tolist(), qx.tolist(), strict=True))
        return gather(self, stacked, qy, qx)

    monkeypatch.setattr(runtime.blending_stride4.Quads, "cells", counting)
    rng = np.random.default_rng(height + width + tile + classes)
    grid = TileGrid(height, width, tile, overlap)
    shape = (-(-height // 4) + tile, -(-width // 4) + tile)
    field = _coarse_field(rng, shape, classes)
    seen = sorted({*patterns, patterns[0] % 7 + 1})  # the patterns tiles bring (channel classes + index)
    cells = _adversarial_cells(rng, shape, classes, seen) if adversarial else None
    for fast, full in _blend_both(grid, field, patterns, rng, chunk_width, cells):
        for got, want in zip(fast, full, strict=True):
            assert got.start == want.start and got.probabilities is None
            np.testing.assert_array_equal(got.classes, want.classes)
            np.testing.assert_array_equal(got.patterns, want.patterns)
    assert 0 < 16 * sum(map(len, gathered.values())) < 0.75 * height * width  # both paths; shortcut on most
    assert bool(compiled_calls) == (kernels != "numpy")


def test_probabilities_upsampled_in_row_parts_are_the_bytes_of_one_pass(
    engines: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probabilities path upsamples ``DENSE_ROWS`` rows at a time (peak memory); parts of 4 and 24 rows
    (not a multiple of a band, cutting through clouds and the boundary pixels) give one pass's bytes."""
    import runtime.blending_stride4 as blending_stride4

    stride4, _ = engines
    inputs = make_physical((136, 120), seed=21)
    inputs["optical"][:, 37:90, 21:66] = np.nan
    inputs["sar"][:, 100:, 90:] = np.nan
    paths = _rasters(inputs, tmp_path)
    outputs = {}
    for rows in (4, 24, 100_000):
        monkeypatch.setattr(blending_stride4, "DENSE_ROWS", rows)
        outputs[rows] = _scene_outputs(stride4, paths, tmp_path / f"rows{rows}", 64, 16, context_margin=5)
    for rows in (4, 24):
        for name in ("classes", "patterns", "probabilities"):
            np.testing.assert_array_equal(
                outputs[rows][name], outputs[100_000][name], err_msg=f"{rows} {name}"
            )


def test_pattern_leads_are_the_sorted_channels_lead() -> None:
    """The running largest and runner-up give the bits of a sort over the channels, ties included."""
    from runtime.stride4_quads import pattern_leads

    rng = np.random.default_rng(3)
    weights = rng.integers(0, 4, (5, 9, 11)).astype(np.float32) / 3  # many ties, zeros
    weights[:, 0, 0] = [0.5, 0.5, 0.5, 0.0, 0.0]  # a three-way tie: lead 0
    index, lead, largest = pattern_leads(weights)
    ordered = np.sort(weights, axis=0)
    assert np.array_equal(lead, ordered[-1] - ordered[-2]) and np.array_equal(largest, ordered[-1])
    assert np.array_equal(index, np.argmax(weights, axis=0))
    assert lead[0, 0] == 0.0


def test_quad_pixels_repeat_each_quad_value_four_by_four() -> None:
    from runtime.stride4_quads import Band, Quads

    values = np.arange(12, dtype=np.uint8).reshape(3, 4)
    quads = Quads(Band(0, 12, 0, 16), (0, 0), np.arange(4), np.arange(5))  # 3 x 4 quads
    pixels = quads.pixels(values)
    assert pixels.flags.writeable and pixels.shape == (12, 16)
    assert np.array_equal(pixels, np.kron(values, np.ones((4, 4), dtype=np.uint8)))


def test_quads_covering_needs_every_pixel_of_the_quad_in_the_band() -> None:
    from runtime.stride4_quads import Band, Quads

    rng = np.random.default_rng(5)
    quads = Quads(Band(1, 11, 2, 15), (0, 0), np.arange(4), np.arange(5))  # 3 x 4 quads, band cut inside
    pixels = rng.random((10, 13)) < 0.9
    pixels[3:7, 2:6] = True  # quad (1, 1): pixels 4-7 x 4-7, inside the band, holds everywhere
    pixels[0, 3] = False  # quad (0, 1) misses pixel (1, 5)
    covered = quads.covering(pixels)
    full = np.ones((12, 16), dtype=bool)
    full[1:11, 2:15] = pixels
    expected = full.reshape(3, 4, 4, 4).transpose(0, 2, 1, 3).reshape(3, 4, 16).all(axis=2)
    assert np.array_equal(covered, expected) and covered[1, 1] and not covered[0, 1]


def test_a_pixel_band_sums_what_overlapping_tiles_add_at_their_boundary_pixels() -> None:
    """``PixelBand.add``: two tiles' boundary pixels that overlap accumulate (the blend's weighted sums), the
    channels not given stay as they were, and the written pixels are recorded for the band's shift. (The
    runtime tests above cannot see a lost sum: their engines give every tile the same logits there.)"""
    from runtime.stride4_bands import PixelBand
    from runtime.stride4_quads import LAG, Band

    stride, tile, x0 = 8, 16, 32
    band = PixelBand((4, tile + LAG, 40), x0, stride)
    band.start_row(1, fresh=True)  # band rows are scene rows [stride - LAG, stride + tile)
    box = (stride, stride + 4, x0 + 8, x0 + 14)
    rows, cols = np.array([0, 1, 3, 3]), np.array([0, 5, 2, 3])
    band.add(box, rows, cols, [(0, np.full(4, 1.5, np.float32)), (2, np.arange(4, dtype=np.float32))])
    band.add(box, rows[1:], cols[1:], [(0, np.full(3, 0.25, np.float32)), (2, np.ones(3, np.float32))])
    view = band.view(Band(box[0], box[1], box[2], box[3]))
    assert view is not None
    want = np.zeros((4, 4, 6), dtype=np.float32)
    want[0, rows, cols] = [1.5, 1.75, 1.75, 1.75]
    want[2, rows, cols] = [0.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(view, want)
    assert band.boxes == [box, box]
    np.testing.assert_array_equal(band.pixels[0][0], rows + box[0])  # type: ignore[index]
    np.testing.assert_array_equal(band.pixels[0][1], cols + box[2])  # type: ignore[index]
