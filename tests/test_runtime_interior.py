"""Interior fast path of the blender (issue 21): without probabilities requested, softmax and accumulation run
only on the overlap bands and the interior takes its class from the logits. The class and pattern maps must
be byte-identical to (a) the full blend (probabilities requested) and (b) the blender as it was before,
frozen below (it took softmaxed probabilities; the adapter applies the softmax the scheduler used to)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_runtime_support import build_engines, random_weights

import runtime.writing
from runtime import Predictor
from runtime.blending import RowBlender
from runtime.outputs import CLASS_NODATA
from runtime.pixels import argmax_channels, clear_argmax, softmax_channels
from runtime.tiling import Chunk, TileGrid, blend_window, plan_chunks
from stars_edge.data.synthetic import SyntheticConfig, generate_scene, synthetic_specs
from stars_edge.modalities import ALL_PATTERNS, Pattern


def frozen_softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """``runtime.scheduling.softmax`` before the change, applied to engine batches ``(N, C, H, W)``."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


class FrozenRowBlender:
    """``runtime.blending.RowBlender`` before the change (full blend of every pixel), fed logits."""

    def __init__(
        self,
        grid: TileGrid,
        classes: int,
        probabilities: str | None = None,
        patterns: Sequence[Pattern] = ALL_PATTERNS,
        chunk: Chunk | None = None,
    ) -> None:
        self.grid, self.classes, self.probabilities = grid, classes, probabilities
        self.window = blend_window(grid.tile, grid.overlap)
        self._indices = np.zeros(0, dtype=np.uint8)
        self._channel_of: dict[int, int] = {}
        self._channels = classes
        self.chunk = chunk or plan_chunks(grid, None)[0]
        self._x0 = self.chunk.first_col * grid.stride
        self._width = (self.chunk.last_col - self.chunk.first_col) * grid.stride + grid.tile
        self._carry = np.zeros((self._channels, grid.overlap, self._width), dtype=np.float32)
        self._col_carry: np.ndarray | None = None
        self._classes = np.empty((0, 0), dtype=np.uint8)
        self._patterns = np.empty((0, 0), dtype=np.uint8)
        self._probs: np.ndarray | None = None

    def start_row(self, row: int, fresh: bool = False) -> None:
        if fresh:
            self._carry[...] = 0.0
        self._col_carry = None
        self._row = row
        start, stop = self.grid.final_rows(row)
        rows = self.grid.tile if row == self.grid.rows - 1 else self.grid.stride
        self._start, self._rows_kept = start, stop - start
        if self._classes.shape[0] != rows:
            self._classes = np.empty((rows, self._width), dtype=np.uint8)
            self._patterns = np.empty((rows, self._width), dtype=np.uint8)
            if self.probabilities is not None:
                self._probs = np.empty((self.classes, rows, self._width), dtype=self.probabilities)
        self._classes.fill(CLASS_NODATA)
        self._patterns.fill(0)
        if self._probs is not None:
            self._probs.fill(0)

    def add(self, col: int, logits: np.ndarray | None, pattern_index: np.ndarray) -> None:
        probabilities = None if logits is None else frozen_softmax(logits[None])[0]
        grid, t, o, s = self.grid, self.grid.tile, self.grid.overlap, self.grid.stride
        c = self.classes
        x0 = col * s - self._x0
        present = np.zeros(0, dtype=np.intp)
        if probabilities is not None:
            present = np.flatnonzero(np.bincount(pattern_index.ravel(), minlength=8)[1:]) + 1
            for index in present:
                self._add_channel(int(index))
        local = np.zeros((self._channels, t, t), dtype=np.float32)
        first = 0 if col == self.chunk.first_col else o
        local[:, :o, first:] = self._carry[:, :, x0 + first : x0 + t]
        if self._col_carry is not None:
            local[:, :, :o] = self._col_carry
        if probabilities is not None:
            weights = self.window * (pattern_index > 0)
            local[:c] += probabilities * weights
            for index in present:
                channel = self._channel_of[int(index)]
                if len(present) == 1:
                    local[channel] += weights
                else:
                    local[channel] += np.where(pattern_index == index, weights, 0.0)
        last_row = self._row == grid.rows - 1
        rows_final = t if last_row else s
        cols_final = t if col == grid.cols - 1 else s
        self._finalize(local[:, :rows_final, :cols_final], x0)
        if not last_row:
            self._carry[:, :, x0 : x0 + cols_final] = local[:, s:t, :cols_final]
        self._col_carry = None if col == self.chunk.last_col else local[:, :, s:t].copy()

    def _add_channel(self, index: int) -> None:
        if index in self._channel_of:
            return
        position = int(np.searchsorted(self._indices, index))
        self._indices = np.insert(self._indices, position, index)
        self._carry = np.insert(self._carry, self.classes + position, 0.0, axis=0)
        if self._col_carry is not None:
            self._col_carry = np.insert(self._col_carry, self.classes + position, 0.0, axis=0)
        self._channel_of = {int(i): self.classes + k for k, i in enumerate(self._indices)}
        self._channels += 1

    def _finalize(self, block: np.ndarray, x0: int) -> None:
        c, width = self.classes, block.shape[-1]
        weight = block[c:].sum(axis=0)
        covered = weight > 0
        classes = argmax_channels(block[:c])
        classes[~covered] = CLASS_NODATA
        self._classes[:, x0 : x0 + width] = classes
        if self._channels > c:
            strongest = self._indices[argmax_channels(block[c:])]
            self._patterns[:, x0 : x0 + width] = np.where(covered, strongest, 0)
        else:
            self._patterns[:, x0 : x0 + width] = 0
        if self._probs is not None:
            probs = block[:c] / np.where(covered, weight, 1.0)
            if self.probabilities == "uint8":
                scaled = np.where(covered, np.rint(probs * 255.0), 0)
                self._probs[:, :, x0 : x0 + width] = scaled.astype(np.uint8)
            else:
                self._probs[:, :, x0 : x0 + width] = np.where(covered, probs, np.nan)

    def finish_row(self) -> runtime.writing.RowBands:
        cols = slice(self.chunk.x_start - self._x0, self.chunk.x_stop - self._x0)
        rows = self._rows_kept
        probs = None if self._probs is None else self._probs[:, :rows, cols]
        return runtime.writing.RowBands(
            self._start, self._classes[:rows, cols], self._patterns[:rows, cols], probs
        )


class FullBlender(RowBlender):
    """The current blender with probabilities requested: every pixel blended (the full path)."""

    def __init__(self, grid: TileGrid, classes: int, probabilities: str | None = None, *args: Any) -> None:
        super().__init__(grid, classes, probabilities or "float32", *args)


def near_tie_logits(rng: np.random.Generator, classes: int, size: int) -> np.ndarray:
    """Random logits with exact ties, 1-ulp leads, leads just around ``CLEAR_LEAD``, NaN and infinities."""
    logits = (rng.normal(size=(classes, size, size)) * 2.0).astype(np.float32)
    top = logits.max(axis=0)
    pick = rng.random((size, size))
    other = rng.integers(0, classes, size=(size, size))
    for low, high, value in [
        (0.00, 0.05, top),  # exact tie with the maximum
        (0.05, 0.10, np.nextafter(top, np.float32(np.inf))),  # leads by one ulp
        (0.10, 0.15, top + np.float32(9e-4)),  # just below the clear lead
        (0.15, 0.20, top + np.float32(1.1e-3)),  # just above it
        (0.20, 0.22, np.full_like(top, np.nan)),
        (0.22, 0.24, np.full_like(top, np.inf)),
    ]:
        rows, cols = np.nonzero((pick >= low) & (pick < high))
        logits[other[rows, cols], rows, cols] = value[rows, cols]
    small = rng.random((size, size)) < 0.05  # tiny logits: 1-ulp differences vanish in exp
    logits[:, small] *= np.float32(1e-6)
    return logits


@pytest.mark.parametrize("classes", [5, 8, 12])
def test_kernels_match_the_frozen_softmax_and_argmax(classes: int) -> None:
    rng = np.random.default_rng(classes)
    logits = near_tie_logits(rng, classes, 96)
    some = rng.random((96, 96)) < 0.1
    with np.errstate(invalid="ignore"):
        expected_probs = frozen_softmax(logits[None])[0]
        probs = softmax_channels(logits)
        picked = logits[:, some]  # pixel-major layout, where np.sum(axis=0) adds pairwise
        gathered = softmax_channels(picked, out=np.empty_like(picked))
        index, unclear = clear_argmax(logits)
    np.testing.assert_array_equal(probs.view(np.uint32), expected_probs.view(np.uint32))
    np.testing.assert_array_equal(gathered.view(np.uint32), expected_probs[:, some].view(np.uint32))
    expected = argmax_channels(expected_probs)
    np.testing.assert_array_equal(index[~unclear], expected[~unclear])
    assert 0.1 < unclear.mean() < 0.5  # the crafted cases are flagged; most pixels are not


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "chunk_width"),
    [(300, 410, 128, 32, None), (300, 410, 128, 32, 256), (200, 200, 64, 32, None), (150, 170, 64, 0, 128)],
)
def test_blender_matches_the_frozen_one_on_hard_logits(
    height: int, width: int, tile: int, overlap: int, chunk_width: int | None
) -> None:
    """Tiles of near-tie logits, several patterns per tile (pattern 0 included) and empty tiles, blended by
    the fast path, the full path and the frozen blender, chunk by chunk: the same maps (and, with
    probabilities requested, the same probabilities)."""
    grid = TileGrid(height, width, tile, overlap)
    rng = np.random.default_rng(height + width + tile)
    classes = 5
    tiles = {}
    for row in range(grid.rows):
        for col in range(grid.cols):
            index = rng.choice([0, 2, 5, 7], size=(tile, tile), p=[0.2, 0.4, 0.2, 0.2]).astype(np.uint8)
            logits: np.ndarray | None = near_tie_logits(rng, classes, tile)
            if rng.random() < 0.15:
                index[:] = 0
                logits = None
            tiles[row, col] = (logits, index)
    fast, full, frozen = (
        blend_all(b, None, grid, tiles, chunk_width) for b in (RowBlender, FullBlender, FrozenRowBlender)
    )
    for maps in (fast, full):
        np.testing.assert_array_equal(maps[0], frozen[0])
        np.testing.assert_array_equal(maps[1], frozen[1])
    assert (frozen[0] != 77).all() and (frozen[0] == CLASS_NODATA).any()
    for dtype in ("uint8", "float32"):  # probabilities requested: the same bits as before as well
        probs = blend_all(FullBlender, dtype, grid, tiles, chunk_width)[2]
        np.testing.assert_array_equal(probs, blend_all(FrozenRowBlender, dtype, grid, tiles, chunk_width)[2])


def blend_all(
    blender_class: Any,
    probabilities: str | None,
    grid: TileGrid,
    tiles: dict[Any, Any],
    chunk_width: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Class map, pattern map and probabilities (or None) of ``tiles`` blended chunk by chunk."""
    classes_map = np.full((grid.height, grid.width), 77, dtype=np.uint8)
    patterns_map = np.full((grid.height, grid.width), 77, dtype=np.uint8)
    classes = next(t[0] for t in tiles.values() if t[0] is not None).shape[0]
    probs = None if probabilities is None else np.zeros((classes, grid.height, grid.width), probabilities)
    for chunk in plan_chunks(grid, chunk_width):
        blender = blender_class(grid, classes, probabilities, ALL_PATTERNS, chunk)
        for row in range(grid.rows):
            blender.start_row(row, fresh=row == 0)
            for col in range(chunk.first_col, chunk.last_col + 1):
                with np.errstate(invalid="ignore"):
                    blender.add(col, *tiles[row, col])
            bands = blender.finish_row()
            rows = slice(bands.start, bands.start + bands.classes.shape[0])
            classes_map[rows, chunk.x_start : chunk.x_stop] = bands.classes
            patterns_map[rows, chunk.x_start : chunk.x_stop] = bands.patterns
            if probs is not None:
                probs[:, rows, chunk.x_start : chunk.x_stop] = bands.probabilities
    return classes_map, patterns_map, probs


def tie_weights(classes: int = 7, seed: int = 4) -> Any:
    """Random engines whose class 3 repeats class 1's weights: exact logit ties on every pixel."""
    base = random_weights(classes, seed)

    def weights(pattern: Pattern, bands: int) -> tuple[np.ndarray, np.ndarray]:
        weight, bias = base(pattern, bands)
        weight[3], bias[3] = weight[1], bias[1]
        return weight, bias

    return weights


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("engines")
    specs = synthetic_specs()
    return {
        name: build_engines(folder / name, weights, 7, specs, context_margin=8, kernel=5)
        for name, weights in (("random", random_weights(7, 11)), ("ties", tie_weights()))
    }


def synthetic_inputs(kind: str, height: int, width: int) -> dict[str, Any]:
    """A synthetic scene cut to ``height x width``: ``clean``, ``cloudy`` (clouds and a SAR gap: tiles with
    2-3 patterns) or ``holes`` (a corner with no valid modality: tiles with no valid pixel)."""
    config = SyntheticConfig(size=max(height, width), seed=5)
    if kind == "cloudy":
        config = SyntheticConfig(size=max(height, width), seed=6, cloud_cover=0.25, sar_gap=0.2)
    scene = generate_scene(config)
    crop = (slice(None), slice(0, height), slice(0, width))
    inputs = {m: scene.image(m)[crop] for m in scene.modalities}
    valid = {m: scene.valid[m][crop[1:]].copy() for m in scene.modalities}
    if kind == "holes":
        for mask in valid.values():
            mask[:300, :330] = False
    return {"inputs": inputs, "valid": valid}


def maps_three_ways(
    monkeypatch: pytest.MonkeyPatch, engines: Path, scene: dict[str, Any], **options: Any
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Class and pattern maps of ``predict_arrays``: fast path, full path, frozen blender."""
    results = []
    with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
        for blender in (RowBlender, FullBlender, FrozenRowBlender):
            with monkeypatch.context() as patch:
                patch.setattr(runtime.writing, "RowBlender", blender)
                results.append(predictor.predict_arrays(scene["inputs"], scene["valid"], **options))
    return results


@pytest.mark.parametrize(
    ("kind", "engine", "size", "tile", "overlap", "chunk_width", "batch"),
    [
        ("clean", "random", (700, 610), 256, 64, None, 1),
        ("cloudy", "random", (700, 610), 256, 64, None, 3),
        ("cloudy", "random", (610, 700), 256, 32, 512, 1),
        ("holes", "random", (700, 610), 256, 64, 256, 2),
        ("cloudy", "random", (1000, 770), 512, 64, 512, 2),
        ("holes", "random", (770, 1000), 512, 32, None, 1),
        ("cloudy", "ties", (610, 700), 256, 64, 512, 1),
        ("clean", "ties", (540, 530), 512, 32, None, 1),
    ],
)
def test_predict_arrays_fast_full_and_frozen_agree(
    monkeypatch: pytest.MonkeyPatch,
    engines: dict[str, Path],
    kind: str,
    engine: str,
    size: tuple[int, int],
    tile: int,
    overlap: int,
    chunk_width: int | None,
    batch: int,
) -> None:
    scene = synthetic_inputs(kind, *size)
    options = {"tile": tile, "overlap": overlap, "chunk_width": chunk_width, "batch": batch}
    fast, full, frozen = maps_three_ways(monkeypatch, engines[engine], scene, **options)
    for maps in (fast, full):
        np.testing.assert_array_equal(maps[0], frozen[0])
        np.testing.assert_array_equal(maps[1], frozen[1])
    patterns = set(np.unique(frozen[1]).tolist())
    assert len(patterns - {0}) >= (2 if kind == "cloudy" else 1)
    assert (0 in patterns) is (kind == "holes")


def test_scene_with_probabilities_and_resumed_equal_the_frozen_maps(
    monkeypatch: pytest.MonkeyPatch, engines: dict[str, Path], tmp_path: Path
) -> None:
    """``predict_scene``: maps with probabilities written (full path), without (fast path), interrupted and
    resumed without (the warm-up row rebuilds the carry), and the frozen blender's: all the same bytes."""
    import rasterio

    from stars_edge.data.synthetic import write_scene

    scene = generate_scene(SyntheticConfig(size=600, seed=7, cloud_cover=0.2, sar_gap=0.15))
    paths = write_scene(scene, tmp_path / "scene")
    predictor = Predictor(engines["random"], backend="onnxruntime", threads=1)

    resumed_from = []

    def run(folder: str, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        out = tmp_path / folder
        summary = predictor.predict_scene(
            optical=paths.optical, sar=paths.sar, dsm=paths.dsm, cloud_mask=paths.cloud_mask,
            out=out / "classes.tif", pattern_map=out / "patterns.tif", tile=64, overlap=16,
            progress=False, checkpoint_rows=1, **options,
        )  # fmt: skip
        if summary.resumed:
            resumed_from.append(summary.resumed_from_row)
        with rasterio.open(out / "classes.tif") as classes, rasterio.open(out / "patterns.tif") as patterns:
            return classes.read(1), patterns.read(1)

    class Interrupt(Exception):
        pass

    def stop_at_row_8(row: int) -> None:
        if row == 8:  # rows 0-255 are on disk: resume warms up on tile row 4
            raise Interrupt

    fast = run("fast")
    full = run("full", probabilities=tmp_path / "full" / "probs.tif")
    with pytest.raises(Interrupt):
        run("resumed", on_row_done=stop_at_row_8)
    resumed = run("resumed", resume=True)
    assert resumed_from == [5]
    with monkeypatch.context() as patch:
        patch.setattr(runtime.writing, "RowBlender", FrozenRowBlender)
        frozen = run("frozen")
    for maps in (fast, full, resumed):
        np.testing.assert_array_equal(maps[0], frozen[0])
        np.testing.assert_array_equal(maps[1], frozen[1])
    assert len(set(np.unique(frozen[1]).tolist()) - {0}) >= 2
