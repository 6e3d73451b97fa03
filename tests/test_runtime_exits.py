"""Every way ``stars-edge run`` ends tells the truth in one line, and ``--resume`` works after any of them.

Real processes, real signals and real file-system objects: Ctrl-C / SIGTERM sent to a running CLI child,
SIGKILL and SIGINT delivered inside the COG finalisation (a child process that signals itself right after a
chosen step of the real code), a FIFO, a socket and a character device as outputs, and a journal that
``RLIMIT_FSIZE`` keeps from being written.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, interruptible, make_physical, random_weights, write_raster

from runtime import Predictor
from runtime.outputs import check_output_target, journal_path, partial_path
from stars_edge.cli import main, resume_command
from stars_edge.errors import ConfigError, OutputError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TRANSFORM = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)
TILE, OVERLAP = 32, 8
#: Two output block bands (256 + 44 rows): checkpoints, a partial block band, COG overviews.
SIZE = (300, 70)
#: Long enough (171 tile rows, about a second) to be signalled well after its first checkpoint.
TALL = (4096, 256)
NAMES = ("pred.tif", "pat.tif", "prob.tif")

#: Runs the CLI and signals itself right after one step of the real finalisation has happened.
INJECT = """
import os, signal, sys
import rasterio.shutil
import runtime.outputs
point, count, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
seen = []
def after(module, name, when):
    real = getattr(module, name)
    def step(*args, **kwargs):
        result = real(*args, **kwargs)
        if when(*args):
            seen.append(name)
            if len(seen) == count:
                os.kill(os.getpid(), sig)
        return result
    setattr(module, name, step)
if point == "cog-written":  # a COG copy is complete beside its partial, not renamed onto it yet
    after(rasterio.shutil, "copy", lambda *args: True)
elif point == "partial-is-cog":  # a partial was replaced by its COG
    after(runtime.outputs, "make_cog", lambda *args: True)
elif point == "renamed":  # an output was renamed onto its target, the others not yet
    after(os, "replace", lambda src, dst, *rest: str(dst).endswith(".tif"))
from stars_edge.cli import main
main(sys.argv[4:])
"""


class Interrupt(Exception):
    """Raised from a row hook to stop a run deterministically."""


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), random_weights(classes=4), classes=4)


def _scene(folder: Path, size: tuple[int, int]) -> dict[str, Path]:
    values = make_physical(size, seed=5)
    values["sar"][:, 40:80, 10:40] = np.nan
    return {
        "optical": write_raster(folder / "optical.tif", values["optical"], TRANSFORM),
        "sar": write_raster(folder / "sar.tif", values["sar"], TRANSFORM),
    }


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _scene(tmp_path_factory.mktemp("scene"), SIZE)


@pytest.fixture(scope="module")
def tall(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _scene(tmp_path_factory.mktemp("tall"), TALL)


def _args(engines: Path, scene: dict[str, Path], folder: Path, *extra: str) -> list[str]:
    return [
        "run", "--engines", str(engines), "--optical", str(scene["optical"]), "--sar", str(scene["sar"]),
        "--out", str(folder / "pred.tif"), "--pattern-map", str(folder / "pat.tif"),
        "--tile", str(TILE), "--overlap", str(OVERLAP), "--backend", "onnxruntime", "--threads", "1",
        "--no-progress", *extra,
    ]  # fmt: skip


def _predict(engines: Path, scene: dict[str, Path], folder: Path, **kwargs: Any) -> Any:
    return Predictor(engines, backend="onnxruntime", threads=1).predict_scene(
        optical=scene["optical"],
        sar=scene["sar"],
        out=folder / "pred.tif",
        pattern_map=folder / "pat.tif",
        tile=TILE,
        overlap=OVERLAP,
        progress=False,
        **kwargs,
    )


def _read(folder: Path, names: tuple[str, ...] = NAMES[:2]) -> dict[str, np.ndarray]:
    arrays = {}
    for name in names:
        with rasterio.open(folder / name) as dataset:
            arrays[name] = dataset.read()
    return arrays


def _assert_same(folder: Path, reference: Path, names: tuple[str, ...] = NAMES[:2]) -> None:
    expected = _read(reference, names)
    for name, array in _read(folder, names).items():
        np.testing.assert_array_equal(array, expected[name], err_msg=name)


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_prints_where_the_run_stopped_and_the_command_that_continues_it(
    engines: Path, tall: dict[str, Path], tmp_path: Path, sig: signal.Signals
) -> None:
    _predict(engines, tall, tmp_path / "whole")
    folder = tmp_path / "run"
    args = _args(engines, tall, folder)
    child = subprocess.Popen(
        [sys.executable, "-m", "stars_edge", *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    journal = journal_path(folder / "pred.tif")
    deadline = time.monotonic() + 120
    while not journal.exists():  # the first checkpoint: the run is well under way
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.002)
    child.send_signal(sig)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr, stderr
    match = re.fullmatch(
        r"interrupted: stopped at row (\d+) of 4096 \((\d+) % of the scene on disk\); progress saved in "
        r"(\S+); continue with: (.+)",
        stderr.strip(),
    )
    assert match, stderr
    rows, percent = int(match[1]), int(match[2])
    assert 256 <= rows < 4096 and rows % 256 == 0 and percent == round(100 * rows / 4096)
    assert match[3] == str(journal)
    command = shlex.split(match[4])
    assert command[:3] == ["python", "-m", "stars_edge"] and command[3:] == [*args, "--resume"]
    resumed = subprocess.run(
        [sys.executable, *command[1:]], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at tile row {rows // (TILE - OVERLAP)}" in resumed.stdout
    _assert_same(folder, tmp_path / "whole")
    assert not journal.exists() and not partial_path(folder / "pred.tif").exists()


def _stop_after(rows: int) -> Callable[[int], None]:
    def hook(row: int) -> None:
        if row + 1 == rows:
            raise Interrupt(f"stopped after {rows} tile rows")

    return hook


def test_a_rerun_over_an_interrupted_output_needs_resume_or_overwrite(
    engines: Path, scene: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _predict(engines, scene, tmp_path / "whole")
    folder = tmp_path / "run"
    with pytest.raises(Interrupt):
        _predict(engines, scene, folder, on_row_done=_stop_after(12))
    journal, partial = journal_path(folder / "pred.tif"), partial_path(folder / "pred.tif")
    kept = {path: path.read_bytes() for path in (journal, partial)}

    with pytest.raises(OutputError) as error:
        _predict(engines, scene, folder)
    message = str(error.value)
    assert str(journal) in message and "--resume" in message and "--overwrite" in message
    assert "\n" not in message
    assert _main(_args(engines, scene, folder)) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"
    with pytest.raises(ConfigError, match=r"--resume .* --overwrite"):
        _predict(engines, scene, folder, resume=True, overwrite=True)
    assert {path: path.read_bytes() for path in kept} == kept  # the progress is untouched

    summary = _predict(engines, scene, folder, overwrite=True)
    assert not summary.resumed and summary.processed_pixels == SIZE[0] * SIZE[1]
    _assert_same(folder, tmp_path / "whole")
    assert not journal.exists() and not partial.exists()
    _predict(engines, scene, folder)  # a finished run leaves no journal: a plain rerun just overwrites


@pytest.mark.parametrize(
    ("point", "count", "sig"),
    [
        ("cog-written", 2, "SIGKILL"),  # a half-finished conversion left a .cog file
        ("partial-is-cog", 1, "SIGKILL"),  # one partial is a COG already (reopening it for rows fails)
        ("partial-is-cog", 3, "SIGINT"),  # every partial a COG, none renamed
        ("renamed", 1, "SIGKILL"),  # one output renamed, its partial gone
        ("renamed", 2, "SIGINT"),  # all but the class map renamed
    ],
)
def test_an_interrupted_cog_finalisation_resumes(
    engines: Path, scene: dict[str, Path], tmp_path: Path, point: str, count: int, sig: str
) -> None:
    extra = ("--cog", "--probabilities", str(tmp_path / "run" / "prob.tif"))
    reference = ("--cog", "--probabilities", str(tmp_path / "whole" / "prob.tif"))
    assert _main(_args(engines, scene, tmp_path / "whole", *reference)) == 0
    args = _args(engines, scene, tmp_path / "run", *extra)
    done = subprocess.run(
        [sys.executable, "-c", INJECT, point, str(count), sig, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=interruptible,
    )
    journal = journal_path(tmp_path / "run" / "pred.tif")
    assert journal.exists() and not (tmp_path / "run" / "pred.tif").exists()
    if sig == "SIGKILL":
        assert done.returncode == -signal.SIGKILL
    else:
        assert done.returncode == 130 and len(done.stderr.splitlines()) == 1, done.stderr
        stopped = "interrupted: stopped while finishing the outputs, every row on disk; progress saved in"
        assert done.stderr.startswith(f"{stopped} {journal}"), done.stderr

    resumed = subprocess.run(
        [sys.executable, "-m", "stars_edge", *args, "--resume"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(tmp_path / "run", tmp_path / "whole", NAMES)
    for name in NAMES:
        with rasterio.open(tmp_path / "run" / name) as dataset:
            assert dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", name
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(NAMES)  # no partial, .cog, journal


def test_a_finished_journal_whose_partial_is_damaged_starts_over(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    _predict(engines, scene, tmp_path / "whole")
    folder = tmp_path / "run"
    last = -(-(SIZE[0] - OVERLAP) // (TILE - OVERLAP)) - 1

    def replace_target(row: int) -> None:  # the pattern map's path becomes a folder while the scene runs
        if row == last:
            (folder / "pat.tif").mkdir()

    with pytest.raises(OutputError, match=r"pat\.tif is a directory"):
        _predict(engines, scene, folder, on_row_done=replace_target)
    assert not (folder / "pred.tif").exists()  # nothing renamed once one target was found replaced
    (folder / "pat.tif").rmdir()
    partial = partial_path(folder / "pred.tif")
    partial.write_bytes(partial.read_bytes()[: partial.stat().st_size // 2])
    summary = _predict(engines, scene, folder, resume=True)
    assert not summary.resumed and summary.processed_pixels == SIZE[0] * SIZE[1]
    _assert_same(folder, tmp_path / "whole")


def test_outputs_must_be_regular_files_or_new_paths(
    engines: Path, scene: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "fifo.tif"
    os.mkfifo(fifo)
    sock = tmp_path / "sock.tif"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    cases: list[tuple[str, Path, Callable[[int], bool], str]] = [
        ("--pattern-map", fifo, stat.S_ISFIFO, "a FIFO"),
        ("--probabilities", sock, stat.S_ISSOCK, "a socket"),
        ("--out", tmp_path, stat.S_ISDIR, "is a directory"),
    ]
    device = tmp_path / "null.tif"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is, in our own folder
        cases.append(("--out", device, stat.S_ISCHR, "a character device"))
    except PermissionError:
        pass  # not root: the device case is only checked against /dev/null below
    try:
        for option, path, kind, words in cases:
            args = _args(engines, scene, tmp_path / "outs")
            if option == "--out":
                args[args.index("--out") + 1] = str(path)
            else:
                args += [option, str(path)]
            assert _main(args) == 1, option
            err = capsys.readouterr().err
            assert len(err.splitlines()) == 1 and str(path) in err and words in err, err
            assert kind(os.stat(path).st_mode), f"{path} was replaced"
        assert not (tmp_path / "outs").exists()
    finally:
        server.close()
    with pytest.raises(OutputError, match="/dev/null is a character device"):
        check_output_target(Path("/dev/null"))  # refused before anything is opened, so safe to try
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def _file_size_limit(size: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


def test_a_journal_that_cannot_be_written_is_one_line_naming_it(engines: Path, tmp_path: Path) -> None:
    """The outputs fit under the file size limit, the journal (long paths in its fingerprint) does not."""
    small = _scene(tmp_path, (24, 24))
    folder = tmp_path.joinpath(*(c * 250 for c in "abcd"))
    limit = 2800
    done = subprocess.run(
        [sys.executable, "-m", "stars_edge", *_args(engines, small, folder)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_file_size_limit(limit),
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    journal = journal_path(folder / "pred.tif")
    assert f"writing the resume journal {journal} failed (File too large" in errors[0], errors[0]
    assert f"file size limit (ulimit -f) of {limit} bytes reached" in errors[0], errors[0]
    assert not (folder / "pred.tif").exists() and not journal.exists()
    assert not partial_path(folder / "pred.tif").exists()  # no journal describes it: it is removed
    again = subprocess.run(
        [sys.executable, "-m", "stars_edge", *_args(engines, small, folder)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr  # no journal was left to refuse: the rerun just runs


def test_the_resume_command_is_the_same_command_with_resume() -> None:
    assert resume_command(["run", "--out", "a b.tif"]) == "stars-edge run --out 'a b.tif' --resume"
    assert resume_command(["run", "--overwrite", "--resume"]) == "stars-edge run --resume"
