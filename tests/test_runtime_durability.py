"""A run never lies about its output: real failing writes, kill -9, SIGTERM, outputs that are inputs, COGs.

Failures are real: writes fail through ``RLIMIT_FSIZE`` in a child process (Python ignores SIGXFSZ, so
writes fail with EFBIG as on a full disk), and runs are killed with SIGKILL / SIGTERM in child processes.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, make_physical, random_weights, write_raster

from runtime import Predictor
from runtime.outputs import BLOCK, journal_path, partial_path
from stars_edge.errors import DataError, OutputError

ROOT = Path(__file__).resolve().parents[1]
TRANSFORM = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)
TILE, OVERLAP = 32, 8
STRIDE = TILE - OVERLAP
SIZE = (600, 70)
TILE_ROWS = 25

CHILD = """
import json, os, signal, sys
from runtime import Predictor
args = json.loads(sys.argv[1])
kill_at = args.pop("kill_at")
sig = getattr(signal, args.pop("signal"))
streams = args.pop("streams", 1)
def hook(row):
    if row == kill_at:
        os.kill(os.getpid(), sig)
predictor = Predictor(args.pop("engines"), backend="onnxruntime", threads=streams, streams=streams)
predictor.predict_scene(on_row_done=hook, progress=False, **args)
"""


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), random_weights(classes=4), classes=4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scene")
    values = make_physical(SIZE, seed=3)
    values["sar"][:, 300:360, 10:40] = np.nan
    return {
        "optical": write_raster(folder / "optical.tif", values["optical"], TRANSFORM),
        "sar": write_raster(folder / "sar.tif", values["sar"], TRANSFORM),
    }


def _kwargs(scene: dict[str, Path], folder: Path) -> dict[str, object]:
    return {
        "optical": str(scene["optical"]),
        "sar": str(scene["sar"]),
        "out": str(folder / "pred.tif"),
        "pattern_map": str(folder / "pat.tif"),
        "probabilities": str(folder / "prob.tif"),
        "probabilities_dtype": "float32",
        "tile": TILE,
        "overlap": OVERLAP,
    }


def _read(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for name in ("pred.tif", "pat.tif", "prob.tif"):
        with rasterio.open(folder / name) as dataset:
            arrays[name] = dataset.read()
    return arrays


def _child(args: dict[str, object], **popen: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **popen,
    )


@pytest.mark.parametrize(
    ("sig", "kill_at", "streams"),
    # streams 2: engine calls in flight on worker threads when the signal lands (runtime/pipelining.py)
    [("SIGKILL", 16, 1), ("SIGTERM", 13, 1), ("SIGKILL", 16, 2), ("SIGTERM", 13, 2)],
)
def test_killed_run_resumes_to_the_identical_result(
    engines: Path, scene: dict[str, Path], tmp_path: Path, sig: str, kill_at: int, streams: int
) -> None:
    whole = tmp_path / "whole"
    Predictor(engines, backend="onnxruntime", threads=1).predict_scene(
        **_kwargs(scene, whole), progress=False
    )
    folder = tmp_path / "killed"
    done = _child({**_kwargs(scene, folder), "engines": str(engines), "kill_at": kill_at, "signal": sig,
                   "checkpoint_rows": 1, "streams": streams})  # fmt: skip
    if sig == "SIGKILL":
        assert done.returncode == -signal.SIGKILL
    else:  # handled like Ctrl-C: the run unwinds and saves its journal
        assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr
    assert not (folder / "pred.tif").exists()
    # rows on disk: the block bands finished before the kill (tile rows end at (row + 1) * 24)
    expected_rows = ((kill_at + 1) * STRIDE) // BLOCK * BLOCK
    path = journal_path(folder / "pred.tif")
    rows = json.loads(path.read_text())["rows_written"] if path.exists() else 0
    if sig == "SIGTERM":  # unwinding waits for the writer thread, then records every band it wrote
        assert rows == expected_rows
    else:  # the writer thread checkpoints behind the main thread: the kill may land before the last one did
        assert rows in (expected_rows, expected_rows - BLOCK), rows
    summary = Predictor(engines, backend="onnxruntime", threads=1).predict_scene(
        **_kwargs(scene, folder), resume=True, progress=False
    )
    assert summary.resumed is (rows > 0) and summary.resumed_from_row == rows // STRIDE
    if rows:
        assert f"resumed at tile row {rows // STRIDE} of {TILE_ROWS}" in summary.format()
    # bounded recompute: the rows since the last checkpoint that completed (the band being filled and, after
    # a SIGKILL, the band in flight on the writer thread) plus the warm-up row
    assert kill_at + 1 - summary.resumed_from_row <= (1 + (sig == "SIGKILL")) * BLOCK // STRIDE + 1
    for name, array in _read(folder).items():
        np.testing.assert_array_equal(array, _read(whole)[name], err_msg=name)


def _limit(size: int) -> object:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


@pytest.mark.parametrize(
    ("limit", "probabilities"),
    # nothing at all; `ulimit -f 1` (the first checkpoint's flush fails, then the journal cannot be written
    # either: it was 79 lines of chained tracebacks); fails in a write; fails at flush/close
    [(0, True), (1024, False), (30_000, True), (6_000, False)],
)
def test_failing_writes_exit_1_with_one_line_and_nothing_under_the_final_name(
    engines: Path, scene: dict[str, Path], tmp_path: Path, limit: int, probabilities: bool
) -> None:
    out = tmp_path / "pred.tif"
    command = [
        sys.executable, "-m", "stars_edge", "run", "--engines", str(engines),
        "--optical", str(scene["optical"]),
        "--sar", str(scene["sar"]), "--out", str(out), "--tile", str(TILE), "--overlap", str(OVERLAP),
        "--no-progress", "--backend", "onnxruntime",
    ]  # fmt: skip
    if probabilities:
        command += ["--probabilities", str(tmp_path / "prob.tif"), "--probabilities-dtype", "float32"]
    run = functools.partial(
        subprocess.run,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    done = run(command, preexec_fn=_limit(limit))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1, done.stderr
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert ".partial" in errors[0] and "file size limit" in errors[0], errors[0]
    assert not out.exists() and not (tmp_path / "prob.tif").exists()
    journal = journal_path(out)
    if journal.exists():  # what it records is on disk: those rows read back from the partial
        rows = json.loads(journal.read_text())["rows_written"]
        with rasterio.open(partial_path(out)) as dataset:
            dataset.read(window=((0, rows), (0, SIZE[1])))
    else:  # nothing to resume from: no partial left behind either
        assert not partial_path(out).exists()
    resumed = run([*command, "--resume"])  # once there is room again, the same command continues
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    Predictor(engines, backend="onnxruntime", threads=1).predict_scene(
        optical=scene["optical"], sar=scene["sar"], out=whole / "pred.tif", tile=TILE, overlap=OVERLAP,
        progress=False,
    )  # fmt: skip
    with rasterio.open(out) as got, rasterio.open(whole / "pred.tif") as want:
        np.testing.assert_array_equal(got.read(), want.read())


def test_output_that_is_an_input_is_refused_before_writing(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    before = scene["optical"].read_bytes()
    link = tmp_path / "hard.tif"
    os.link(scene["optical"], link)
    soft = tmp_path / "soft.tif"
    soft.symlink_to(scene["sar"])
    for out, extra in ((scene["optical"], {}), (link, {}), (tmp_path / "p.tif", {"pattern_map": soft})):
        with pytest.raises(OutputError, match="is the input") as error:
            predictor.predict_scene(
                optical=scene["optical"], sar=scene["sar"], out=out, tile=TILE, overlap=OVERLAP,
                progress=False,
                **extra,  # type: ignore[arg-type]
            )  # fmt: skip
        assert "\n" not in str(error.value)
    assert scene["optical"].read_bytes() == before
    assert not partial_path(scene["optical"]).exists()


def test_output_folder_is_created_only_once_inputs_are_valid(engines: Path, tmp_path: Path) -> None:
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    with pytest.raises(DataError):
        predictor.predict_scene(optical=tmp_path / "missing.tif", out=tmp_path / "new" / "deep" / "p.tif")
    assert not (tmp_path / "new").exists()


def test_cog_output_is_a_valid_cloud_optimized_geotiff(engines: Path, tmp_path: Path) -> None:
    cogeo = pytest.importorskip("rio_cogeo.cogeo")
    values = make_physical((700, 600), seed=9)
    optical = write_raster(tmp_path / "optical.tif", values["optical"], TRANSFORM)
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    out, probs = tmp_path / "pred.tif", tmp_path / "prob.tif"
    predictor.predict_scene(
        optical=optical, out=out, probabilities=probs, tile=128, overlap=16, cog=True, progress=False
    )
    plain = tmp_path / "plain.tif"
    predictor.predict_scene(optical=optical, out=plain, tile=128, overlap=16, progress=False)
    for path in (out, probs):
        valid, errors, warnings = cogeo.cog_validate(path, quiet=True)
        assert valid and not errors, (errors, warnings)
        with rasterio.open(path) as dataset:
            assert dataset.overviews(1), "a COG carries overviews"
            assert dataset.tags()["STARS_CONTENT"]
    with rasterio.open(out) as cog, rasterio.open(plain) as reference:
        np.testing.assert_array_equal(cog.read(), reference.read())


def test_a_damaged_partial_is_never_renamed(tmp_path: Path) -> None:
    from runtime.outputs import OutputSpec, RasterGrid, commit

    grid = RasterGrid(512, 512, "EPSG:32631", TRANSFORM)
    spec = OutputSpec("classes", tmp_path / "pred.tif", 1, "uint8", 255)
    partial = write_raster(partial_path(spec.target), np.ones((1, 512, 512), dtype=np.uint8), TRANSFORM)
    data = partial.read_bytes()
    partial.write_bytes(data[: len(data) // 2])  # a truncated file, as a crash or a full disk leaves it
    with pytest.raises(OutputError, match=r"validating|missing or empty"):
        commit([spec], grid)
    assert not spec.target.exists()


def test_maps_are_deflate_without_predictor_and_probabilities_keep_theirs(
    engines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class and pattern maps are categorical: no predictor, libdeflate level 4 (issue 21: 2.7x less CPU to
    write than level 6 with predictor 2); probabilities are smooth fields and keep theirs."""
    import runtime.outputs
    from runtime.outputs import CATEGORICAL_COMPRESSION, GeoTiffSink, OutputSpec, RasterGrid

    values = make_physical((300, 280), seed=5)
    optical = write_raster(tmp_path / "optical.tif", values["optical"], TRANSFORM)
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    out, pat, probs = tmp_path / "pred.tif", tmp_path / "pat.tif", tmp_path / "prob.tif"
    predictor.predict_scene(
        optical=optical, out=out, pattern_map=pat, probabilities=probs, tile=128, overlap=16, progress=False
    )
    for path, predictor_tag in ((out, None), (pat, None), (probs, "2")):
        with rasterio.open(path) as dataset:
            structure = dataset.tags(ns="IMAGE_STRUCTURE")
            assert structure["COMPRESSION"] == "DEFLATE", path.name
            assert structure.get("PREDICTOR") == predictor_tag, (path.name, structure)
    # the level reaches GDAL: the same map at level 1 is larger (the file keeps no record of its level)
    with rasterio.open(out) as dataset:
        classes = dataset.read()
    grid = RasterGrid(300, 280, "EPSG:32631", TRANSFORM)
    sizes = {}
    for level in (1, int(CATEGORICAL_COMPRESSION["zlevel"])):
        target = tmp_path / f"level{level}" / "pred.tif"
        target.parent.mkdir()
        spec = OutputSpec("classes", target, 1, "uint8", 255)
        monkeypatch.setattr(
            runtime.outputs, "CATEGORICAL_COMPRESSION", {**CATEGORICAL_COMPRESSION, "zlevel": level}
        )
        sink = GeoTiffSink(grid, [spec], resume=False)
        sink.write(0, 0, {"classes": classes})
        sink.close()
        sizes[level] = partial_path(target).stat().st_size
    assert sizes[int(CATEGORICAL_COMPRESSION["zlevel"])] < sizes[1], sizes
