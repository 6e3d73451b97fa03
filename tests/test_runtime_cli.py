"""``stars-edge run``: a real run through the CLI entry point, and errors as one line with exit code 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, make_physical, pattern_class_weights, write_raster

from stars_edge.cli import main
from stars_edge.modalities import Pattern

TRANSFORM = Affine(2.0, 0.0, 100.0, 0.0, -2.0, 900.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    values = make_physical((80, 96), seed=9)
    values["sar"][:, 40:, :] = np.nan
    return {
        "engines": build_engines(folder / "engines", pattern_class_weights(), classes=8),
        "sar": write_raster(folder / "sar.tif", values["sar"], TRANSFORM),
        "dsm": write_raster(folder / "dsm.tif", values["dsm"], TRANSFORM),
        "folder": folder,
    }


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


def test_run_writes_outputs_and_prints_a_summary(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup["folder"] / "pred.tif"
    code = _main(
        [
            "run",
            "--engines",
            str(setup["engines"]),
            "--sar",
            str(setup["sar"]),
            "--dsm",
            str(setup["dsm"]),
            "--out",
            str(out),
            "--pattern-map",
            str(setup["folder"] / "patterns.tif"),
            "--tile",
            "32",
            "--overlap",
            "8",
            "--batch",
            "2",
            "--backend",
            "onnxruntime",
            "--threads",
            "1",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "pixels per pattern" in printed and "sar+dsm" in printed and "time per stage" in printed
    with rasterio.open(setup["folder"] / "patterns.tif") as dataset:
        patterns = dataset.read(1)
    assert (patterns[:16] == Pattern.parse("sar+dsm").index).all()
    assert (patterns[-16:] == Pattern.parse("dsm").index).all()


def test_run_error_is_one_line_and_exit_code_1(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _main(
        [
            "run",
            "--engines",
            str(setup["engines"]),
            "--optical",
            str(setup["folder"] / "missing.tif"),
            "--out",
            str(setup["folder"] / "x.tif"),
            "--tile",
            "32",
            "--overlap",
            "8",
            "--no-progress",
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 1
    assert error.startswith("error:") and "missing.tif" in error and "\n" not in error
    assert not (setup["folder"] / "x.tif").exists()


def test_run_refuses_a_missing_manifest(
    tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _main(
        ["run", "--engines", str(tmp_path), "--sar", str(setup["sar"]), "--out", str(tmp_path / "p.tif")]
    )
    assert code == 1
    assert "build-engines" in capsys.readouterr().err
