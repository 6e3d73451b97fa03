"""Compiled kernels (``runtime/kernels.py``), C and numba: the same bits as the numpy path they replace, the
numpy path where they are switched off, and a clear error where they are asked for but missing."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin
from test_runtime_stride4 import build as build_pooled
from test_runtime_support import assert_same_tiles, clean_path_taken, make_physical, use_kernels

from runtime import Predictor
from runtime.array_source import ArraySource
from runtime.kernels import (
    KERNELS_ENV,
    c_built,
    compiled,
    kernels_choice,
    load,
    numba_installed,
    prefer_compiled,
)
from runtime.raster_source import RasterSource
from runtime.scheduling import PreparedTile, ReadSettings, Timer, prepare
from runtime.tile_source import NO_SCALE, clean_window
from runtime.tiling import TileGrid
from runtime.validity import normalize_owned
from stars_edge.errors import ConfigError
from stars_edge.modalities import DEFAULT_SPECS

needs_numba = pytest.mark.skipif(not numba_installed(), reason="numba is not installed")


@pytest.fixture(params=["c", "numba"])
def build(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each compiled build in turn (skipped where not installed), loaded: numba loads on a background
    thread and the runtime takes its numpy path until it is ready, so the tests wait for it and the compiled
    path is the one they exercise (a test switches to ``numpy`` where it compares)."""
    use_kernels(monkeypatch, request.param)
    return str(request.param)


GRID = from_origin(500000, 4000000, 10, 10)


def _prepared(source: ArraySource, grid: TileGrid, settings: ReadSettings) -> list[PreparedTile]:
    return [
        prepare(source, grid, r, c, settings, Timer()) for r in range(grid.rows) for c in range(grid.cols)
    ]


SOURCE_TYPES = [np.float32, np.float64, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64]


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("dtype", SOURCE_TYPES)
def test_cut_normalised_gives_the_numpy_paths_bits(dtype: type, scaled: bool, build: str) -> None:
    """Every source type (int64 has no C loop: it goes to ``clean_numpy``), with and without GDAL scale/offset
    (a multiply-add: compiled as one fused operation it would round once and change the bits), against
    ``apply_scale_offset`` and ``ModalitySpec.normalize``; and arrays the C loops do not read (the other
    byte order, unaligned, columns strided, bands last) give the same bits too."""
    kernels = load()
    assert kernels is not None
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    low, high = (info.min, min(info.max, 2**31)) if info else (-300.0, 3000.0)
    array = rng.uniform(low, high, size=(4, 40, 50)).astype(dtype)
    spec = DEFAULT_SPECS["optical"]
    mean, std = (np.asarray(v, dtype=np.float32) for v in (spec.mean, spec.std))
    scale = np.array([1e-4, 3.3e-3, 0.7, 1.9], np.float32) if scaled else NO_SCALE
    offset = np.array([-0.1, 0.25, -7.5, 1e-3], np.float32) if scaled else NO_SCALE

    def want(window: np.ndarray) -> np.ndarray:
        values = np.array(window, dtype=np.float32)
        if scaled:
            np.multiply(values, scale[:, None, None], out=values)
            np.add(values, offset[:, None, None], out=values)
        return spec.normalize(values)

    none = np.zeros((0, 0), dtype=bool)
    swapped = array.astype(array.dtype.newbyteorder())  # the same values, stored the other byte order
    unaligned = np.frombuffer(b"\0" + array.tobytes(), dtype=array.dtype, offset=1).reshape(array.shape)
    assert np.array_equal(swapped, array) and (array.itemsize == 1 or not unaligned.flags.aligned)
    for layout in (
        swapped,
        unaligned,
        array,
        np.asarray(array.repeat(2, axis=2)[:, :, ::2]),
        array.transpose(1, 2, 0).copy().transpose(2, 0, 1),
    ):
        out = np.empty((4, 16, 16), dtype=np.float32)
        if layout.dtype.isnative or build == "c":  # numba cannot type the other byte order
            assert kernels.cut_normalised(layout, none, 7, 21, scale, offset, mean, std, out)
            assert out.tobytes() == want(layout[:, 7:23, 21:37]).tobytes()
        # the runtime's entry point (numba cannot type the other byte order: ``clean_window`` routes it)
        got = clean_window(kernels, layout, none, scale, offset, 7, 21, 16, spec, [(5, 25, 19, 39)], out)
        assert got is not None and got.tobytes() == want(layout[:, 7:23, 21:37]).tobytes()


def test_cut_normalised_refuses_a_tile_with_an_invalid_pixel(build: str) -> None:
    kernels = load()
    assert kernels is not None
    array = np.ones((2, 20, 20), dtype=np.float32)
    mean, std = np.zeros(2, np.float32), np.ones(2, np.float32)
    out = np.empty((2, 8, 8), dtype=np.float32)
    none = np.zeros((0, 0), dtype=bool)
    assert kernels.cut_normalised(array, none, 4, 4, NO_SCALE, NO_SCALE, mean, std, out)
    for bad in (np.nan, np.inf, -np.inf):
        broken = array.copy()
        broken[1, 11, 5] = bad
        assert not kernels.cut_normalised(broken, none, 4, 4, NO_SCALE, NO_SCALE, mean, std, out)
        assert kernels.cut_normalised(
            broken, none, 12, 4, NO_SCALE, NO_SCALE, mean, std, out
        )  # outside this tile
    scale, offset = np.full(2, 1e-4, np.float32), np.full(2, -0.1, np.float32)
    assert kernels.cut_normalised(array, none, 4, 4, scale, offset, mean, std, out)
    overflowing = array.copy()
    overflowing[0, 6, 6] = np.inf
    assert not kernels.cut_normalised(overflowing, none, 4, 4, scale, offset, mean, std, out)
    assert not kernels.window_valid(overflowing, none, scale, offset, 6, 7, 0, 20)
    mask = np.ones((20, 20), dtype=bool)
    mask[4, 11] = False
    assert not kernels.cut_normalised(array, mask, 4, 4, NO_SCALE, NO_SCALE, mean, std, out)
    assert kernels.window_valid(array, mask, NO_SCALE, NO_SCALE, 5, 20, 0, 20)
    assert not kernels.window_valid(array, mask, NO_SCALE, NO_SCALE, 0, 5, 0, 20)


@pytest.mark.parametrize(("dilation", "names"), [({}, "optical+sar+dsm"), ({"optical": 6}, "optical+sar")])
def test_prepare_gives_the_same_tiles_with_and_without_the_kernels(
    dilation: dict[str, int], names: str, build: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clean tiles take the compiled path, tiles with (or near) holes the numpy path; every tile's inputs
    and codes are the same bits either way. The hole sits so that the dilated halo of some tiles reaches
    it and of others does not, and the raster's size leaves padded edge tiles."""
    inputs = {m: a for m, a in make_physical((150, 170), seed=5).items() if m in names.split("+")}
    inputs["sar"][0, 60, 100] = np.nan  # speckle
    valid = {"optical": np.ones((150, 170), dtype=bool)}
    valid["optical"][20:30, 10:24] = False  # a hole
    grid = TileGrid(height=150, width=170, tile=32, overlap=8)
    settings = ReadSettings(DEFAULT_SPECS, 0.5, 4, dilation=dilation)
    fast = _prepared(ArraySource(inputs, valid), grid, settings)
    monkeypatch.setenv(KERNELS_ENV, "numpy")
    slow = _prepared(ArraySource(inputs, valid), grid, settings)
    assert_same_tiles(fast, slow)
    monkeypatch.setenv(KERNELS_ENV, build)
    source = ArraySource(inputs, valid)
    taken = clean_path_taken(source, grid, dilation)
    assert 0 < sum(taken) < len(taken)  # both paths ran


def test_the_kernels_leave_the_maps_unchanged(
    build: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engines = build_pooled(tmp_path / "engines", 4)
    inputs = make_physical((96, 112), seed=2)
    valid = {"optical": np.ones((96, 112), dtype=bool)}
    valid["optical"][40:60, 50:90] = False
    maps = []
    for choice in (build, "numpy"):
        monkeypatch.setenv(KERNELS_ENV, choice)
        with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
            maps.append(predictor.predict_arrays(inputs, valid=valid, tile=32, overlap=8))
    for got, want in zip(maps[0], maps[1], strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_choice_follows_the_environment(build: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """C where the install built it, else numpy, unless ``STARS_EDGE_KERNELS`` asks for a build."""
    assert kernels_choice() == build and compiled() is not None  # loaded by the fixture
    monkeypatch.delenv(KERNELS_ENV)
    assert kernels_choice() == "c" and compiled() is not None  # the fixture skipped where C is missing
    monkeypatch.setattr("runtime.kernels.c_built", lambda: False)
    assert kernels_choice() == "numpy" and compiled() is None
    monkeypatch.setenv(KERNELS_ENV, " NumPy ")
    assert kernels_choice() == "numpy" and compiled() is None
    monkeypatch.setenv(KERNELS_ENV, "fortran")
    with pytest.raises(ConfigError, match="c, numba, numpy"):
        kernels_choice()


def test_the_c_kernels_are_built_where_a_compiler_is() -> None:
    """``pip install`` builds them (setup.py, optional): on a machine with a C compiler a missing library is
    a broken build, not a choice, and would silently cost a first scene its compiled passes."""
    import shutil
    import sysconfig

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler on this machine")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        pytest.skip("no Python headers on this machine (python3-dev): the optional build cannot run")
    assert c_built(), "runtime/_kernels_c.c was not built: reinstall (pip install -e .) and read its log"


def test_asking_for_c_where_it_was_not_built_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runtime.kernels.c_built", lambda: False)
    monkeypatch.setenv(KERNELS_ENV, "c")
    with pytest.raises(ConfigError, match=r"C kernels were not built.*gcc or clang"):
        kernels_choice()


def _failing_import(monkeypatch: pytest.MonkeyPatch, module: str, message: str) -> list[str]:
    """Make ``importlib.import_module(module)`` raise ImportError(``message``); returns the attempts."""
    import importlib

    real, attempts = importlib.import_module, []

    def failing(name: str, *args: object) -> object:
        if name == module:
            attempts.append(name)
            raise ImportError(message)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", failing)
    return attempts


def test_a_c_library_from_other_sources_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library whose ABI is not the wrapper's (built from older sources and left behind) is never called:
    asked for, it is an error naming the fix; as the default, a warning and the numpy path."""

    import runtime.kernels

    if not c_built():
        pytest.skip("the C kernels were not built")
    _failing_import(monkeypatch, "runtime.kernels_c", "_kernels_c.so was built from other sources (ABI 0)")
    runtime.kernels._c_kernels.cache_clear()
    monkeypatch.setenv(KERNELS_ENV, "c")
    with pytest.raises(ConfigError, match=f"ABI 0.*{KERNELS_ENV}=numpy"):
        compiled()
    monkeypatch.delenv(KERNELS_ENV)
    with pytest.warns(RuntimeWarning, match="numpy path instead"):
        assert compiled() is None
    assert kernels_choice() == "numpy" and compiled() is None  # once: the default went back to numpy
    monkeypatch.undo()
    runtime.kernels._c_kernels.cache_clear()


def test_the_wrapper_refuses_a_library_of_another_abi(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: ``kernels_c`` compares the library's ``kernels_abi()`` with its own."""
    import runtime.kernels_c as kernels_c

    if not c_built():
        pytest.skip("the C kernels were not built")
    monkeypatch.setattr(kernels_c, "ABI", kernels_c.ABI + 1)
    with pytest.raises(ImportError, match="built from other sources"):
        kernels_c._load()


@needs_numba
def test_a_long_lived_process_prefers_the_kernels_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``prefer_compiled`` (``run-batch`` workers) keeps C where it was built and otherwise makes numba the
    default where it is installed; the environment, where set, still decides; without either the default
    stays numpy."""
    monkeypatch.delenv(KERNELS_ENV, raising=False)
    if c_built():
        assert prefer_compiled() == "c" and compiled() is not None
    monkeypatch.setattr("runtime.kernels.c_built", lambda: False)
    assert kernels_choice() == "numpy"
    assert prefer_compiled() == "numba" and kernels_choice() == "numba" and compiled() is not None
    monkeypatch.setenv(KERNELS_ENV, "numpy")
    assert prefer_compiled() == "numpy" and compiled() is None
    monkeypatch.delenv(KERNELS_ENV)
    import runtime.kernels

    monkeypatch.setattr(runtime.kernels, "_default", None)
    monkeypatch.setattr(runtime.kernels, "numba_installed", lambda: False)
    assert prefer_compiled() == "numpy"


@needs_numba
def test_kernels_that_fail_to_load_fall_back_only_where_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken numba install: a process that only preferred the kernels (``run-batch`` workers without the
    C library) warns and takes the numpy path, which gives the same bits; one that asked for them
    (``STARS_EDGE_KERNELS=numba``) gets the error with the fix."""

    import runtime.kernels

    _failing_import(monkeypatch, "runtime.kernels_numba", "numba is broken in this test")
    monkeypatch.setattr(runtime.kernels, "_LOADER", runtime.kernels._Loader())
    monkeypatch.setattr(runtime.kernels, "c_built", lambda: False)
    with pytest.raises(ConfigError, match="failed to load"):  # the load fails on its thread
        runtime.kernels._LOADER.wait()
    monkeypatch.delenv(KERNELS_ENV, raising=False)
    assert prefer_compiled() == "numba"
    with pytest.warns(RuntimeWarning, match="numpy path instead"):
        assert compiled() is None
    assert kernels_choice() == "numpy" and compiled() is None  # once: the default went back to numpy
    monkeypatch.setenv(KERNELS_ENV, "numba")
    with pytest.raises(ConfigError, match="failed to load"):
        compiled()


def test_asking_for_numba_without_it_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a)
    )
    numba_installed.cache_clear()
    monkeypatch.setenv(KERNELS_ENV, "numba")
    with pytest.raises(ConfigError, match=r"stars-edge\[fast\]"):
        kernels_choice()
    monkeypatch.delenv(KERNELS_ENV)
    assert kernels_choice() == ("c" if c_built() else "numpy")
    monkeypatch.undo()
    numba_installed.cache_clear()


def _product_files(folder: Path) -> dict[str, Path]:
    """Files encoded as products are: optical uint16 DN with an L2A scale/offset, nodata 0 and a hole; SAR
    with an alpha band cutting a strip and a hole of NaN; a cloud mask with one cloud; the DSM plain
    float32. Some tiles have a hole just outside them, within the dilations of the tests."""
    import rasterio
    from rasterio.enums import ColorInterp

    physical = make_physical((150, 170), seed=9)
    optical = np.clip((physical["optical"] + 0.1) * 10000, 1, 60000).astype(np.uint16)
    optical[:, 90:97, 120:131] = 0  # nodata hole
    profile = dict(driver="GTiff", height=150, width=170, crs="EPSG:32631", transform=GRID)
    paths = {name: folder / f"{name}.tif" for name in ("optical", "sar", "dsm", "clouds")}
    with rasterio.open(paths["optical"], "w", count=4, dtype="uint16", nodata=0, **profile) as out:
        out.write(optical)
        out.scales, out.offsets = (1e-4,) * 4, (-0.1,) * 4
    physical["sar"][:, 60:64, 57:61] = np.nan  # a NaN hole (not speckle: dilation grows it)
    alpha = np.full((1, 150, 170), 255, dtype=np.float32)
    alpha[:, :, 150:] = 0
    with rasterio.open(paths["sar"], "w", count=3, dtype="float32", **profile) as out:
        out.colorinterp = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.alpha]
        out.write(np.concatenate([physical["sar"], alpha]))
    with rasterio.open(paths["dsm"], "w", count=1, dtype="float32", **profile) as out:
        out.write(physical["dsm"])
    clouds = np.zeros((1, 150, 170), dtype=np.uint8)
    clouds[:, 20:31, 30:45] = 1
    with rasterio.open(paths["clouds"], "w", count=1, dtype="uint8", **profile) as out:
        out.write(clouds)
    return paths


@pytest.mark.parametrize("dilation", [{}, {"optical": 6, "sar": 3}])
def test_files_encoded_like_products_give_the_same_tiles_with_and_without_the_kernels(
    dilation: dict[str, int], build: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scale/offset, nodata, an alpha band and a cloud mask, with and without dilation: every tile's inputs
    and codes are the same bits through the compiled path (clean tiles) and the numpy path (the rest)."""
    paths = _product_files(tmp_path)
    grid = TileGrid(height=150, width=170, tile=32, overlap=8)
    settings = ReadSettings(DEFAULT_SPECS, 0.5, 4, dilation=dilation)

    def source() -> RasterSource:
        files = {m: paths[m] for m in ("optical", "sar", "dsm")}
        return RasterSource(files, DEFAULT_SPECS, cloud_mask=paths["clouds"])

    with closing(source()) as fast_source:
        fast = _prepared(fast_source, grid, settings)
        taken = [
            fast_source.read_normalised(*grid.origin(r, c), grid.tile, dilation, DEFAULT_SPECS) is not None
            for r in range(grid.rows)
            for c in range(grid.cols)
        ]
    assert 0 < sum(taken) < len(taken)  # both paths ran
    monkeypatch.setenv(KERNELS_ENV, "numpy")
    with closing(source()) as slow_source:
        slow = _prepared(slow_source, grid, settings)
    assert_same_tiles(fast, slow)


def test_a_terrain_model_or_a_warped_input_takes_the_numpy_path(build: str, tmp_path: Path) -> None:
    """What the compiled path does not reproduce (the DSM minus a terrain model, a window resampled on
    its own) it leaves to the numpy path."""
    import rasterio

    paths = _product_files(tmp_path)
    files = {m: paths[m] for m in ("optical", "sar", "dsm")}
    with closing(RasterSource(files, DEFAULT_SPECS)) as plain:
        assert plain.read_normalised(0, 0, 32, {}, DEFAULT_SPECS) is not None
    with closing(RasterSource(files, DEFAULT_SPECS, dtm=paths["dsm"])) as with_terrain:
        assert with_terrain.read_normalised(0, 0, 32, {}, DEFAULT_SPECS) is None
    shifted = tmp_path / "dsm_shifted.tif"
    with rasterio.open(paths["dsm"]) as dataset:
        profile, data = dataset.profile, dataset.read()
    profile["transform"] = GRID @ GRID.translation(0.5, 0.5)
    with rasterio.open(shifted, "w", **profile) as out:
        out.write(data)
    with closing(RasterSource({**files, "dsm": shifted}, DEFAULT_SPECS)) as warped:
        assert warped.read_normalised(0, 0, 32, {}, DEFAULT_SPECS) is None


def test_a_broken_numba_is_raised_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels load on a background thread; its failure reaches the next caller as a one-line error
    that names the way out, and until the load ends the caller gets the numpy path (None)."""

    from runtime.kernels import _Loader

    started = _failing_import(
        monkeypatch, "runtime.kernels_numba", "libllvmlite.so: cannot open shared object file"
    )
    loader = _Loader()
    with pytest.raises(ConfigError, match=f"libllvmlite.so.*{KERNELS_ENV}=numpy"):
        loader.wait()
    assert started == ["runtime.kernels_numba"]
    with pytest.raises(ConfigError, match="failed to load"):
        loader.ready()


def test_a_row_stream_gives_the_same_maps_and_holds_the_same_rows(
    build: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sensor's row stream (``predict_rows``) through the compiled path: the maps of the numpy path, and
    the same input rows held at most (the compiled read holds the dilated window the numpy read would)."""
    from test_runtime_rows import SHAPE, blocks_of, make_scene, stitched
    from test_runtime_support import build_engines, random_weights

    engines = build_engines(tmp_path / "engines", random_weights(5, seed=7), 5, kernel=3, logits_stride=4)
    scene = make_scene()
    got = {}
    for choice in (build, "numpy"):
        monkeypatch.setenv(KERNELS_ENV, choice)
        with Predictor(engines, backend="onnxruntime", threads=1, mask_dilation={"optical": 8}) as predictor:
            stream = predictor.predict_rows(blocks_of(scene, 7), *SHAPE, tile=64, overlap=16)
            got[choice] = (stitched(list(stream), *SHAPE), stream.peak_rows)
    for fast, slow in zip(got[build][0], got["numpy"][0], strict=True):
        np.testing.assert_array_equal(fast, slow)
    assert got[build][1] == got["numpy"][1]


@pytest.mark.parametrize("shares", [0, 3])
@pytest.mark.parametrize("with_fine", [False, True])
def test_quad_pixels_gives_the_numpy_paths_logits_classes_and_patterns(
    shares: int, with_fine: bool, build: str
) -> None:
    """The stride-4 blender's undecided quads (``kernels_numba.quad_pixels`` against ``upsample4_quads``,
    ``pixel_logits``, ``classes_of`` and ``patterns_of``): every pixel's logits bit for bit, and
    the classes and patterns of every quad the kernel does not hand back; it hands back exactly the quads
    with a covered near-tie, NaN or infinite leader. Cells with weights that are not powers of two (so
    ``x * w / w`` rounds), near-ties around ``CLEAR_LEAD``, NaN (in any class, in pattern weights),
    infinities, uncovered cells, tied pattern weights, and a full-resolution band that is empty at some
    pixels and decides others."""
    from runtime.outputs import CLASS_NODATA
    from runtime.pixels import CLEAR_LEAD, clear_argmax
    from runtime.stride4_quads import LEAD, NO_FINE, classes_of, patterns_of, pixel_logits
    from runtime.upsampling import upsample4_quads

    kernels = load()
    rng = np.random.default_rng(10 + shares + 3 * with_fine)
    classes, n = 5, 3000
    cells = np.zeros((2, 2, classes + 2 + shares, n), dtype=np.float32)
    logits = rng.normal(scale=2.0, size=(2, 2, classes, n)).astype(np.float32)
    leaders = rng.integers(0, classes, size=n)
    near = rng.random(n) < 0.3  # a runner-up within a few CLEAR_LEADs of the leader at every cell
    leads = rng.choice(np.array([0.0, 1e-7, 5e-4, CLEAR_LEAD, 1.1e-3, 3e-3]), size=n).astype(np.float32)
    for k in np.flatnonzero(near):
        logits[:, :, :, k] = 1.0
        logits[:, :, leaders[k], k] = np.float32(1.0) + leads[k]
    odd = rng.random(n)
    logits[..., odd < 0.01] = np.nan
    logits[0, 1, 2, (odd >= 0.03) & (odd < 0.04)] = np.nan  # behind a finite first class
    logits[0, 0, 0, (odd >= 0.01) & (odd < 0.02)] = np.inf
    logits[1, 0, 1, (odd >= 0.02) & (odd < 0.03)] = -np.inf
    cells[:, :, :classes] = logits
    cells[:, :, classes] = rng.uniform(0.3, 1.7, size=(2, 2, n)).astype(np.float32)
    cells[:, :, classes + 1] = (rng.random((2, 2, n)) > 0.1).astype(np.float32)
    options = np.array([0.5, 0.5, 0.75, 1.0, np.nan], dtype=np.float32)
    for s in range(shares):  # pattern weights, often tied, rarely NaN
        cells[:, :, classes + 2 + s] = rng.choice(options, (2, 2, n), p=[0.3, 0.3, 0.2, 0.19, 0.01])
    seen = [3, 6, 7][: max(shares, 1)]  # three pattern channels: a NaN can sit before the last
    share_channels = [classes + 1 + s for s in range(shares)]  # in the band: logit sums, weight, shares
    fine = None
    if with_fine:
        fine = np.zeros((classes + 1 + shares, 4, 4, n), dtype=np.float32)
        some = rng.random((4, 4, n)) < 0.4  # empty elsewhere: its pixels keep the cells' logits, re-weighted
        fine[classes] = np.where(some, rng.uniform(0.2, 1.3, size=(4, 4, n)), 0.0)
        fine[:classes] = np.where(some, rng.normal(scale=3.0, size=(classes, 4, 4, n)), 0.0) * fine[classes]
        fine[classes + 1 :] = np.where(some, rng.uniform(0.0, 2.0, size=(shares, 4, 4, n)), 0.0)
    # the numpy path
    own = [0, 0, 1, 1]
    inside = cells[:, :, classes + 1][own][:, own] > 0
    with np.errstate(invalid="ignore"):  # NaN and infinite logits, on purpose
        up = np.moveaxis(upsample4_quads(cells), 2, 0)
        want_logits, covered, weights = pixel_logits(up, inside, fine, share_channels, classes)
        want_classes = classes_of(want_logits, covered)
        want_patterns = patterns_of(seen, list(range(shares)), weights, covered)
        unclear = clear_argmax(want_logits)[1] & covered
    # the kernel, writing each quad's pixels into two maps (quads in rows of 60)
    qy, qx = np.divmod(np.arange(n, dtype=np.intp), 60)
    maps = np.zeros((2, 4 * (qy[-1] + 1), 4 * 60), dtype=np.uint8)
    got_logits = np.empty((classes, 4, 4, n), dtype=np.float32)
    band = NO_FINE if fine is None else np.ascontiguousarray(fine)
    codes = np.asarray(seen, dtype=np.uint8)
    redo = kernels.quad_pixels(
        cells, classes, shares, codes, band, LEAD, CLASS_NODATA, qy, qx, maps[0], maps[1], got_logits
    )
    rows = 4 * qy[None, None, :] + np.arange(4)[:, None, None]
    cols = 4 * qx[None, None, :] + np.arange(4)[None, :, None]
    out = maps[:, rows, cols]  # (2, 4, 4, n): each quad's pixels
    np.testing.assert_array_equal(got_logits.view(np.uint32), want_logits.view(np.uint32))
    np.testing.assert_array_equal(redo, unclear.any(axis=(0, 1)))
    assert 0 < redo.sum() < n
    np.testing.assert_array_equal(out[0][..., ~redo], want_classes[..., ~redo])
    np.testing.assert_array_equal(out[1][..., ~redo], want_patterns[..., ~redo])


@pytest.mark.parametrize("shares", [0, 2, 3])
def test_quad_decisions_give_the_numpy_paths_maps_and_flags(shares: int, build: str) -> None:
    """The stride-4 blender's quad decisions (``stride4_quads.quad_decisions``, compiled against its numpy
    path): every quad's class and pattern pixels, decided and empty flags, over cell grids with clamped edge
    quads, leads just below, at and above ``CLEAR_LEAD``, exact ties, NaN and infinite logits, logits beyond
    ``LOGIT_BOUND``, uncovered cells, tied and NaN pattern weights, and no pattern seen at all."""
    from runtime.blending_stride4 import LOGIT_BOUND, PATTERN_LEAD
    from runtime.pixels import CLEAR_LEAD
    from runtime.stride4_quads import Band, Quads, quad_decisions

    kernels = load()
    rng = np.random.default_rng(40 + shares)
    decided_seen = undecided_seen = 0
    for trial in range(60):
        classes = int(rng.integers(1, 8))
        rows, cols = int(rng.integers(2, 12)), int(rng.integers(2, 12))
        stacked = rng.normal(scale=3.0, size=(classes + 2 + shares, rows, cols)).astype(np.float32)
        stacked[classes] = 1.0
        stacked[classes + 1] = (rng.random((rows, cols)) > 0.15).astype(np.float32)
        kind = rng.random((rows, cols))
        if classes > 1:
            for low, high, lead in ((0.0, 0.1, 0.0), (0.1, 0.15, CLEAR_LEAD), (0.15, 0.2, 1.1e-3)):
                where = (kind >= low) & (kind < high)
                stacked[1][where] = stacked[0][where] + np.float32(lead)
        stacked[0][(kind >= 0.2) & (kind < 0.23)] = np.nan
        stacked[0][(kind >= 0.23) & (kind < 0.26)] = np.inf
        stacked[0][(kind >= 0.26) & (kind < 0.3)] = np.float32(LOGIT_BOUND) * 1.5
        stacked[:classes][:, kind >= 0.6] = stacked[:classes, :1, 0]  # a region of one cell's logits
        if shares:
            weights = stacked[classes + 2 :]
            weights[:] = rng.choice(np.array([0.25, 0.5, 1.0], np.float32), weights.shape)
            weights[1][kind < 0.3] = weights[0][kind < 0.3]
            weights[0][(kind >= 0.5) & (kind < 0.52)] = np.nan
        band = Band(int(rng.integers(0, 3)), 4 * (rows - 1) - int(rng.integers(0, 3)), 1, 4 * (cols - 1))
        quads = Quads.of(band, 0, 0, (rows, cols))
        seen = list(range(1, 1 + shares)) if shares else list(range(1, 1 + trial % 2))
        want = quad_decisions(None, stacked, quads, classes, seen, LOGIT_BOUND, PATTERN_LEAD)
        got = quad_decisions(kernels, stacked, quads, classes, seen, LOGIT_BOUND, PATTERN_LEAD)
        names = ("classes", "patterns", "decided", "empty")
        for name, expected, actual in zip(names, want, got, strict=True):
            assert actual.dtype == expected.dtype and actual.shape == expected.shape, (name, trial)
            np.testing.assert_array_equal(actual, expected, err_msg=f"{name}, trial {trial}")
        decided_seen += int(want[2].sum())
        undecided_seen += int((~want[2] & ~want[3]).sum())
    assert decided_seen > 20 and undecided_seen > 100  # both kinds of quad were compared
    wide = stacked.astype(np.float64)  # not the block the blender builds: the numpy path, not an error
    for expected, actual in zip(
        quad_decisions(None, wide, quads, classes, seen, LOGIT_BOUND, PATTERN_LEAD),
        quad_decisions(kernels, wide, quads, classes, seen, LOGIT_BOUND, PATTERN_LEAD),
        strict=True,
    ):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("layout", ["tile", "crop", "in place"])
def test_a_holed_tile_is_normalised_and_filled_in_one_pass_with_numpys_bits(layout: str, build: str) -> None:
    """``prepare_inputs``' normalisation, hole fill and padding of a tile with holes (``normalise_filled``)
    against its numpy passes: NaN and infinities under the holes and outside the raster, a fill that is not
    0, a crop of a dilated read (strided rows) and a tile normalised in its own buffer."""
    from runtime.validity import _normalised_filled, normalize_owned

    kernels = load()
    spec = DEFAULT_SPECS["optical"]
    rng = np.random.default_rng(7)
    read = make_physical((40, 40), seed=6)["optical"]
    read[:, 5:9, 5:12] = np.nan
    read[1, 20, 20] = np.inf
    data = read[:, 4:36, 4:36] if layout == "crop" else np.ascontiguousarray(read[:, :32, :32])
    holes = rng.random((32, 32)) < 0.2
    holes[1:5, 1:8] = True  # over the NaN pixels
    inside = np.ones((32, 32), dtype=bool)
    inside[:, 27:] = False
    holes &= inside
    fill = np.float32(-0.75)
    want = normalize_owned(spec, data.copy())
    np.copyto(want, fill, where=holes[None])
    np.copyto(want, np.float32(0.0), where=~inside[None])
    slot = None if layout == "in place" else np.full(data.shape, np.nan, dtype=np.float32)
    given = data.copy() if layout == "in place" else data
    got = _normalised_filled(kernels, spec, given, holes, inside, float(fill), slot)
    assert got is not None and got.tobytes() == want.tobytes()
    assert got is (slot if slot is not None else given)  # into the slot, or the tile's own buffer


def test_a_tile_the_compiled_loops_cannot_read_takes_the_numpy_passes(build: str) -> None:
    """An unaligned float32 tile (bytes at an odd address) is not handed to the one-pass kernel, which would
    refuse it mid-run: ``prepare_inputs`` gives the numpy passes' bits instead."""
    from runtime.validity import _normalised_filled, prepare_inputs

    kernels = load()
    spec = DEFAULT_SPECS["optical"]
    tile = make_physical((16, 16), seed=8)["optical"]
    raw = np.zeros(tile.nbytes + 1, dtype=np.uint8)[1:]
    unaligned = raw.view(np.float32).reshape(tile.shape)
    unaligned[...] = tile
    assert not unaligned.flags.aligned
    valid = np.ones((16, 16), dtype=bool)
    valid[3:6, 2:9] = False
    inside = np.ones((16, 16), dtype=bool)
    assert _normalised_filled(kernels, spec, unaligned, ~valid, None, 0.0, None) is None
    got = prepare_inputs({"optical": unaligned}, {"optical": valid}, inside, DEFAULT_SPECS, fill=0.5)
    want = normalize_owned(spec, tile.copy())
    np.copyto(want, np.float32(0.5), where=~valid[None])
    assert got["optical"].tobytes() == want.tobytes()


def test_with_the_kernels_loaded_a_tile_is_normalised_into_its_slot_with_their_bits(build: str) -> None:
    """The numpy path's normalisation writes a ``GroupBuffers`` slot even where the compiled in-place kernel
    would run, with the kernel's bits (its group then reaches the engines without a stacking copy)."""
    spec = DEFAULT_SPECS["optical"]
    data = np.ascontiguousarray(make_physical((16, 16), seed=4)["optical"])
    compiled_in_place = normalize_owned(spec, data.copy())
    slot = np.full(data.shape, np.nan, dtype=np.float32)
    into = normalize_owned(spec, data.copy(), slot)
    assert into is slot
    assert into.tobytes() == compiled_in_place.tobytes()


def test_a_c_library_that_fuses_multiply_adds_is_refused() -> None:
    """The load-time check (``kernels_c._rounds_like_numpy``) on the real library, and on one that rounds a
    scale/offset multiply-add once (what ``-ffp-contract=fast`` compiles): the first passes, the second is
    refused (building with that flag fails ``test_cut_normalised_gives_the_numpy_paths_bits``)."""
    import ctypes

    if not c_built():
        pytest.skip("the C kernels were not built")
    import runtime.kernels_c as kernels_c

    assert kernels_c._rounds_like_numpy(kernels_c._LIBRARY)

    class Fused:
        @staticmethod
        def cut_normalised_uint16(source: int, *args: int) -> int:
            stored = np.ctypeslib.as_array((ctypes.c_uint16 * 256).from_address(source))
            scale, offset = (ctypes.c_float.from_address(a).value for a in args[4:6])
            out = np.ctypeslib.as_array((ctypes.c_float * 256).from_address(args[10]))
            out[:] = (stored.astype(np.float64) * np.float32(scale) + np.float32(offset)).astype(np.float32)
            return 1

    assert not kernels_c._rounds_like_numpy(Fused())  # type: ignore[arg-type]


@pytest.mark.parametrize("choice", ["c", "numpy"])
def test_a_runs_summary_names_the_kernels_it_used(
    choice: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RunSummary.kernels`` (and the report ``stars-edge run`` prints) says which kernels ran, so a slow
    run on a machine whose install could not compile them is explained by its own summary."""
    from test_runtime_support import write_raster

    use_kernels(monkeypatch, choice)
    engines = build_pooled(tmp_path / "engines", 4)
    paths = {
        m: write_raster(tmp_path / f"{m}.tif", a, GRID) for m, a in make_physical((64, 80), seed=3).items()
    }
    with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
        summary = predictor.predict_scene(
            **paths, out=tmp_path / "classes.tif", tile=32, overlap=8, progress=False
        )
    assert summary.kernels == choice and summary.to_dict()["kernels"] == choice
    assert f"{choice} kernels" in summary.format()
