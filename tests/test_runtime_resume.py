"""Interrupted runs: nothing under the final name, and --resume gives exactly the uninterrupted result."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, make_physical, random_weights, write_raster

from runtime import Predictor, RunSummary
from runtime.outputs import BLOCK, GeoTiffSink, journal_path, partial_path
from stars_edge.errors import DataError, ManifestError, OutputError

TRANSFORM = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)
TILE, OVERLAP = 32, 8
STRIDE = TILE - OVERLAP
SIZE = (600, 70)  # 25 tile rows of stride 24; output block bands end at rows 256, 512 and 600


class Interrupt(Exception):
    """Raised from the row hook to stop a run deterministically."""


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), random_weights(classes=4), classes=4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scene")
    values = make_physical(SIZE, seed=3)
    sar = values["sar"]
    sar[:, 30:60, 10:40] = np.nan  # a gap so several patterns and per-pixel choices are involved
    return {
        "optical": write_raster(folder / "optical.tif", values["optical"], TRANSFORM),
        "sar": write_raster(folder / "sar.tif", sar, TRANSFORM),
    }


def _run(engines: Path, scene: dict[str, Path], folder: Path, **kwargs: Any) -> RunSummary:
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    return predictor.predict_scene(
        optical=scene["optical"],
        sar=scene["sar"],
        out=folder / "pred.tif",
        pattern_map=folder / "pat.tif",
        probabilities=folder / "prob.tif",
        probabilities_dtype="float32",
        tile=TILE,
        overlap=OVERLAP,
        progress=False,
        **kwargs,
    )


def _read(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for name in ("pred.tif", "pat.tif", "prob.tif"):
        with rasterio.open(folder / name) as dataset:
            arrays[name] = dataset.read()
    return arrays


def _interrupt_after(rows: int):  # type: ignore[no-untyped-def]
    def hook(row: int) -> None:
        if row + 1 == rows:
            raise Interrupt(f"stopped after {rows} tile rows")

    return hook


def _written_before(row: int) -> int:
    """Raster rows on disk once tile row ``row`` was handed to the writer: whole 256-row block bands."""
    stop = min(row * STRIDE + STRIDE, SIZE[0])
    return stop // BLOCK * BLOCK


@pytest.mark.parametrize("stop_after", [4, 13, 23])
def test_resume_equals_uninterrupted(
    engines: Path, scene: dict[str, Path], tmp_path: Path, stop_after: int
) -> None:
    _run(engines, scene, tmp_path / "whole")
    expected = _read(tmp_path / "whole")

    folder = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        _run(engines, scene, folder, on_row_done=_interrupt_after(stop_after))
    assert not (folder / "pred.tif").exists()  # nothing that looks complete
    written = _written_before(stop_after - 1)
    assert partial_path(folder / "pred.tif").exists() is (written > 0)
    assert journal_path(folder / "pred.tif").exists() is (written > 0)
    summary = _run(engines, scene, folder, resume=True)
    assert summary.resumed is (written > 0)
    assert summary.resumed_from_row == written // STRIDE
    assert summary.processed_pixels == (SIZE[0] - written) * SIZE[1]
    if written:
        assert f"resumed at tile row {written // STRIDE} of 25" in summary.format()
    for name, array in _read(folder).items():
        np.testing.assert_array_equal(array, expected[name], err_msg=name)
    assert not partial_path(folder / "pred.tif").exists() and not journal_path(folder / "pred.tif").exists()
    whole = _run(engines, scene, tmp_path / "again")
    assert summary.pattern_pixels == whole.pattern_pixels
    # engine calls: this call's only (not the interrupted one's), call shapes and runs alike
    shaped = {
        n: sum(int(k.split("x")[0]) * c for k, c in calls.items())
        for n, calls in summary.engine_shapes.items()
    }
    assert shaped == summary.engine_runs
    if written:
        assert sum(summary.engine_runs.values()) < sum(whole.engine_runs.values())


def test_interrupted_twice_then_resumed(engines: Path, scene: dict[str, Path], tmp_path: Path) -> None:
    _run(engines, scene, tmp_path / "whole")
    folder = tmp_path / "twice"
    with pytest.raises(Interrupt):
        _run(engines, scene, folder, on_row_done=_interrupt_after(12))
    with pytest.raises(Interrupt):
        _run(engines, scene, folder, resume=True, on_row_done=_interrupt_after(23))
    _run(engines, scene, folder, resume=True)
    for name, array in _read(folder).items():
        np.testing.assert_array_equal(array, _read(tmp_path / "whole")[name], err_msg=name)


def test_resume_without_journal_starts_fresh(engines: Path, scene: dict[str, Path], tmp_path: Path) -> None:
    summary = _run(engines, scene, tmp_path, resume=True)
    assert summary.resumed_from_row == 0
    assert (tmp_path / "pred.tif").exists()


def test_resume_refuses_another_model(engines: Path, scene: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(Interrupt):
        _run(engines, scene, tmp_path, on_row_done=_interrupt_after(12))
    other = build_engines(tmp_path / "other", random_weights(classes=5), classes=5, checkpoint="ab" * 32)
    with pytest.raises(ManifestError, match="5 classes"):
        _run(other, scene, tmp_path, resume=True)


def test_resume_refuses_other_settings(engines: Path, scene: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(Interrupt):
        _run(engines, scene, tmp_path, on_row_done=_interrupt_after(12))
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    with pytest.raises(OutputError, match="overlap"):
        predictor.predict_scene(
            optical=scene["optical"],
            sar=scene["sar"],
            out=tmp_path / "pred.tif",
            pattern_map=tmp_path / "pat.tif",
            probabilities=tmp_path / "prob.tif",
            probabilities_dtype="float32",
            tile=TILE,
            overlap=4,
            progress=False,
            resume=True,
        )


@pytest.mark.parametrize(
    ("error", "kept"), [(OutputError("disk full"), True), (DataError("bad pixels"), False)]
)
def test_failed_writes_stay_resumable_but_bad_data_leaves_nothing(
    engines: Path, scene: dict[str, Path], tmp_path: Path, error: Exception, kept: bool
) -> None:
    def hook(row: int) -> None:
        if row == 12:
            raise error

    with pytest.raises(type(error)):
        _run(engines, scene, tmp_path, on_row_done=hook)
    assert journal_path(tmp_path / "pred.tif").exists() is kept
    assert partial_path(tmp_path / "pred.tif").exists() is kept
    assert not (tmp_path / "pred.tif").exists()


def _slow_writes(monkeypatch: pytest.MonkeyPatch, fail_band: int | None = None) -> dict[str, Any]:
    """Wrap ``GeoTiffSink.write``: record each band's thread, hold it 0.2 s, optionally fail band n."""
    seen: dict[str, Any] = {"threads": [], "writing": threading.Event(), "bands": 0}
    original = GeoTiffSink.write

    def write(self: GeoTiffSink, row_start: int, col_start: int, bands: Any) -> None:
        seen["threads"].append(threading.current_thread().name)
        seen["bands"] += 1
        seen["writing"].set()
        try:
            time.sleep(0.2)
            if seen["bands"] == fail_band:
                raise RuntimeError("injected failure on the writer thread")
            original(self, row_start, col_start, bands)
        finally:
            seen["writing"].clear()

    monkeypatch.setattr(GeoTiffSink, "write", write)
    return seen


def test_block_bands_are_written_on_the_writer_thread_while_the_main_thread_goes_on(
    engines: Path, scene: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(engines, scene, tmp_path / "whole")
    seen = _slow_writes(monkeypatch)
    overlapped: list[bool] = []
    _run(
        engines,
        scene,
        tmp_path / "threaded",
        on_row_done=lambda row: overlapped.append(seen["writing"].is_set()),
    )
    assert len(seen["threads"]) == 3  # block bands end at rows 256, 512 and 600
    assert all(name.startswith("stars-edge-writer") for name in seen["threads"]), seen["threads"]
    assert any(overlapped)  # tile rows were finished while a band was being written
    for name, array in _read(tmp_path / "threaded").items():
        np.testing.assert_array_equal(array, _read(tmp_path / "whole")[name], err_msg=name)


@pytest.mark.parametrize(
    ("fail_band", "stop_after", "error"),
    [
        (2, None, RuntimeError),  # the second band fails on the writer thread: its checkpoint must not run
        (None, 11, Interrupt),  # tile row 10 hands over the first band, then the run stops: wait for it
    ],
)
def test_a_band_in_flight_when_the_run_stops_is_recorded_only_once_on_disk(
    engines: Path,
    scene: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fail_band: int | None,
    stop_after: int | None,
    error: type[Exception],
) -> None:
    _run(engines, scene, tmp_path / "whole")
    folder = tmp_path / "stopped"
    hook = None if stop_after is None else _interrupt_after(stop_after)
    with monkeypatch.context() as patch:
        seen = _slow_writes(patch, fail_band=fail_band)
        with pytest.raises(error):
            _run(engines, scene, folder, on_row_done=hook)
    assert seen["bands"] == (2 if fail_band else 1)
    # the journal holds the first band only
    summary = _run(engines, scene, folder, resume=True)
    assert summary.resumed_from_row == BLOCK // STRIDE
    for name, array in _read(folder).items():
        np.testing.assert_array_equal(array, _read(tmp_path / "whole")[name], err_msg=name)


def test_an_interruption_while_waiting_for_the_writer_still_waits_before_closing(tmp_path: Path) -> None:
    """Ctrl-C lands while the main thread waits for the band in flight: unwinding (``settle``) must still
    wait for that band, or the partials would be closed under the writer thread."""
    import contextlib
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from runtime.blending import RowBands
    from runtime.block_bands import BlockWriter
    from runtime.tiling import Chunk

    release = threading.Event()

    class SlowSink:
        broken, written = False, False

        def write(self, row: int, col: int, bands: Any) -> None:
            release.wait(10)  # held until the test lets it go: the signal lands while the main thread waits
            self.written = True

    sink = SlowSink()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as Python's default
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=1) as background:
        stack.callback(signal.signal, signal.SIGINT, previous)
        writer = BlockWriter(sink, Chunk(0, 0, 0, 0, 16), 16, 16, 0, None, background)  # type: ignore[arg-type]
        band = np.zeros((16, 16), dtype=np.uint8)
        writer.add(RowBands(0, band, band, None))  # the band is handed to the writer thread
        with pytest.raises(KeyboardInterrupt):
            threading.Timer(0.1, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
            writer.drain()
        threading.Timer(0.3, release.set).start()
        writer.settle()
        assert sink.written
