"""Several checkpoints, one manifest: per pattern the best validation mIoU wins, ties go to fewer GFLOPs.

Tiny checkpoints of two methods (``stars`` and ``zero_fill_dropout``) trained a few seconds on synthetic
calibration-seed tiles (never the gate's seeds), plus an untrained one as a deliberately bad candidate.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from int8_models import BANDS, SPECS, TILE, save_untrained_checkpoint, small, train_tiny

from export.build import build_engines
from export.report import BuildReport
from export.selection import TIE_TOLERANCE, Candidate, Score, held_out, select
from export.tiles import CALIBRATION_SEED_BASE, GATE_SEED_BASE, load_tiles
from stars_edge.checkpoint import CheckpointMeta, save_checkpoint
from stars_edge.data.synthetic import CLASS_NAMES, generate_dataset
from stars_edge.errors import ConfigError, ExportError
from stars_edge.manifest import load_manifest
from stars_edge.modalities import Pattern

PATTERNS = "optical+sar+dsm,optical"
#: Synthetic scenes (256 px) the tiny models train on: calibration seeds, so disjoint from the gate's.
TRAIN_SCENES = 4


def _train(method: str, steps: int, seed: int) -> torch.nn.Module:
    tiles = load_tiles("synthetic", SPECS, TRAIN_SCENES * (256 // TILE) ** 2, TILE, "calibration")
    return train_tiny(tiles, steps, method=method, seed=seed)


def _meta(method: str, **changes: Any) -> CheckpointMeta:
    meta = CheckpointMeta(
        variant="tiny",
        method=method,
        in_channels=BANDS,
        classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        specs=SPECS,
        tile_size=TILE,
        config={
            "data": "synthetic",
            "synthetic_seed": CALIBRATION_SEED_BASE,
            "synthetic_train_scenes": TRAIN_SCENES,
        },
    )
    return dataclasses.replace(meta, **changes)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    stars = save_checkpoint(folder / "stars.pt", _train("stars", 300, 0), _meta("stars"))
    zero = _train("zero_fill_dropout", 30, 1)  # less trained: stars scores higher
    zero_fill = save_checkpoint(folder / "zero_fill.pt", zero, _meta("zero_fill_dropout"))
    return {"stars": stars, "zero_fill": zero_fill, "untrained": save_untrained_checkpoint(folder / "u.pt")}


def _sha(report: BuildReport, name: str) -> str:
    return next(str(c["sha256"]) for c in report.manifest.model.checkpoints if Path(c["path"]).name == name)


@pytest.fixture(scope="module")
def best_wins(
    checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, BuildReport]:
    """The untrained checkpoint is the default (first): only selection lets the trained one serve."""
    out = tmp_path_factory.mktemp("best")
    options = small(
        checkpoints["untrained"],
        out,
        patterns=PATTERNS,
        precisions=("fp32", "fp16"),
        gate_tiles=4,
        other_checkpoints=(checkpoints["stars"],),
        tie_tolerance=0.0,
    )
    return out, build_engines(options)


def test_the_trained_checkpoint_beats_an_untrained_default_on_every_pattern(
    best_wins: tuple[Path, BuildReport],
) -> None:
    out, report = best_wins
    manifest = load_manifest(out)  # every file verified
    stars = _sha(report, "stars.pt")
    assert [e.describe() for e in manifest.engines] == [
        f"{p} {q}/onnxruntime" for p in ("optical+sar+dsm", "optical") for q in ("fp32", "fp16")
    ]
    for entry in manifest.engines:
        assert entry.checkpoint["sha256"] == stars and entry.checkpoint["method"] == "stars"
        assert entry.options["checkpoint_sha256"] == stars
        scores = {Path(c["path"]).name: c["validation_miou"] for c in entry.selection["candidates"]}
        assert scores["stars.pt"] > scores["u.pt"] + 5, scores  # the gap is not noise
        assert entry.checkpoint["validation_miou"] == scores["stars.pt"]
        assert entry.checkpoint["gflops"] > 0 and entry.selection["reason"] == "best validation mIoU"
    fp32 = manifest.select("optical", "fp32")
    assert fp32.accuracy is not None and fp32.accuracy["miou"] == fp32.checkpoint["validation_miou"]
    # One checkpoint serves every engine: the manifest's identity is that checkpoint's hash.
    assert manifest.model.checkpoint_sha256 == stars and manifest.model.method == "stars"
    listed = {Path(c["path"]).name: c["patterns"] for c in manifest.model.checkpoints}
    assert listed == {"u.pt": [], "stars.pt": ["optical+sar+dsm", "optical"]}
    assert set(report.selections) == {"optical+sar+dsm", "optical"}
    # The untrained checkpoint records no training data: the report says its held-out tiles are unverified.
    assert any("u.pt" in note and "not verified" in note for note in report.notes), report.notes


def test_rerun_reuses_the_choice_and_a_changed_candidate_set_rebuilds(
    checkpoints: dict[str, Path], best_wins: tuple[Path, BuildReport], tmp_path: Path
) -> None:
    out, _ = best_wins
    lines: list[str] = []
    base = small(
        checkpoints["untrained"],
        out,
        patterns=PATTERNS,
        precisions=("fp32", "fp16"),
        gate_tiles=4,
        other_checkpoints=(checkpoints["stars"],),
        tie_tolerance=0.0,
    )
    again = build_engines(base, log=lines.append)
    assert not again.built and len(again.skipped) == 4
    assert sum("still chosen" in line for line in lines) == 2, lines
    assert not any(": chose " in line for line in lines)  # nothing scored again
    # A third candidate changes the set: everything is chosen and built again (in a copy of the folder).
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    three = (checkpoints["stars"], checkpoints["zero_fill"])
    grown = build_engines(base, out=copy, precisions=("fp32",), other_checkpoints=three)
    assert len(grown.built) == 2 and not grown.skipped
    assert all(len(e.selection["candidates"]) == 3 for e in grown.manifest.engines)


def test_ties_go_to_fewer_gflops_and_the_runtime_runs_the_mix(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Within the tolerance every candidate ties: ``optical`` goes to zero-fill (no translators to run),
    the full pattern (same GFLOPs for both methods) to the better mIoU; the runtime runs the mix."""
    report = build_engines(
        small(
            checkpoints["stars"],
            tmp_path,
            patterns=PATTERNS,
            precisions=("fp32",),
            gate_tiles=4,
            other_checkpoints=(checkpoints["zero_fill"],),
            tie_tolerance=100.0,
        )
    )
    manifest = load_manifest(tmp_path)
    optical = manifest.select("optical", "fp32")
    by_name = {Path(c["path"]).name: c for c in optical.selection["candidates"]}
    assert by_name["zero_fill.pt"]["gflops"] < by_name["stars.pt"]["gflops"]
    assert by_name["stars.pt"]["validation_miou"] > by_name["zero_fill.pt"]["validation_miou"], by_name
    assert optical.checkpoint["method"] == "zero_fill_dropout"  # worse mIoU, fewer GFLOPs: the tie rule
    assert "fewer GFLOPs" in optical.selection["reason"]
    full = manifest.select("optical+sar+dsm", "fp32")
    scores = {Path(c["path"]).name: c for c in full.selection["candidates"]}
    assert scores["stars.pt"]["gflops"] == scores["zero_fill.pt"]["gflops"]
    best = max(scores.values(), key=lambda c: c["validation_miou"])
    assert full.checkpoint["sha256"] == best["sha256"] == _sha(report, "stars.pt")
    # A real mix: the manifest's model names both methods and identifies the mix, not one checkpoint.
    assert manifest.model.method == "mixed(stars,zero_fill_dropout)"
    assert manifest.model.checkpoint_sha256 not in {c["sha256"] for c in manifest.model.checkpoints}
    assert manifest.context_margin is not None  # measured over both checkpoints' engines

    from runtime import Predictor

    rng = np.random.default_rng(0)
    spec = SPECS["optical"]
    values = rng.normal(np.array(spec.mean)[:, None, None], np.array(spec.std)[:, None, None], (4, 128, 128))
    with Predictor(tmp_path, backend="onnxruntime", threads=1) as predictor:
        classes, patterns = predictor.predict_arrays(
            {"optical": values.astype(np.float32)}, allow_out_of_range=True
        )
    assert classes.shape == (128, 128) and set(np.unique(patterns)) == {Pattern.parse("optical").index}


def test_the_tie_rule_itself() -> None:
    def candidate(name: str) -> Candidate:
        return Candidate(Path(name), name * 8, None, _meta("stars"), "")

    a, b, c = candidate("a"), candidate("b"), candidate("c")
    winner, record = select([Score(a, 70.0, 2.0), Score(b, 69.8, 1.0), Score(c, 60.0, 0.5)], 0.5)
    assert winner.candidate is b and "fewer GFLOPs" in record["reason"]
    winner, record = select([Score(a, 70.0, 2.0), Score(b, 69.8, 1.0)], 0.1)
    assert winner.candidate is a and record["reason"] == "best validation mIoU"
    winner, _ = select([Score(a, 70.0, 1.0), Score(b, 70.0, 1.0)], 0.5)  # exact tie: the default
    assert winner.candidate is a
    assert [item["validation_miou"] for item in record["candidates"]] == [70.0, 69.8]


def test_checkpoints_that_cannot_share_a_manifest_are_refused(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from stars_edge.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoints["stars"])
    renamed = save_checkpoint(
        tmp_path / "renamed.pt", model, _meta("stars", class_names=tuple(reversed(CLASS_NAMES)))
    )
    with pytest.raises(ExportError, match=r"cannot mix .*stars.pt and .*renamed.pt.*class names differ"):
        build_engines(small(checkpoints["stars"], tmp_path / "a", other_checkpoints=(renamed,)))
    specs = dict(SPECS)
    specs["sar"] = dataclasses.replace(SPECS["sar"], mean=(0.0, 0.0))
    shifted = save_checkpoint(tmp_path / "shifted.pt", model, _meta("stars", specs=specs))
    with pytest.raises(ExportError, match=r"shifted.pt.*sar normalisation specs differ \(mean\)") as info:
        build_engines(small(checkpoints["stars"], tmp_path / "b", other_checkpoints=(shifted,)))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="same checkpoint"):
        build_engines(small(checkpoints["stars"], tmp_path / "c", other_checkpoints=(checkpoints["stars"],)))


def test_a_candidate_trained_on_the_gate_scenes_is_refused(tmp_path: Path) -> None:
    def candidate(config: dict[str, Any]) -> Candidate:
        return Candidate(tmp_path / "x.pt", "0" * 64, None, _meta("stars", config=config), "")

    seeds = {"data": "synthetic", "synthetic_seed": GATE_SEED_BASE - 1, "synthetic_train_scenes": 2}
    with pytest.raises(ExportError, match=r"trained on synthetic seeds .* include the gate's seeds"):
        held_out(candidate(seeds), "synthetic", 16, 64)
    assert held_out(candidate({**seeds, "synthetic_seed": 0}), "synthetic", 16, 64)[0]
    data = tmp_path / "data"
    generate_dataset(data, scenes=8, size=128, seed=5, progress=False)
    on_test = {"data": str(data), "train_split": "test"}  # the gate reads test (else val)
    with pytest.raises(ExportError, match=r"trained on .* file\(s\) that --gate-data"):
        held_out(candidate(on_test), str(data), 4, 64)
    verified, line = held_out(candidate({**on_test, "train_split": "val"}), str(data), 4, 64)
    assert verified and "share no file" in line
    assert not held_out(candidate({}), "synthetic", 4, 64)[0]


def test_cli_takes_repeated_checkpoints_and_prints_the_choice(
    checkpoints: dict[str, Path], best_wins: tuple[Path, BuildReport]
) -> None:
    import typer
    from typer.testing import CliRunner

    from stars_edge.commands.build_engines import build_engines as command

    out, _ = best_wins
    app = typer.Typer()
    app.command("build-engines")(command)
    app.command("unused")(lambda: None)
    arguments = ["build-engines", "--checkpoint", str(checkpoints["untrained"]), "--checkpoint"]
    arguments += [str(checkpoints["stars"]), "--out", str(out), "--patterns", PATTERNS, "--precision"]
    arguments += ["fp32,fp16", "--calib-tiles", "4", "--control-tiles", "0", "--gate-tiles", "4"]
    arguments += ["--tile", "64", "--tie-tolerance", "0", "--no-progress", "--no-edge-selection"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "0 built, 4 up to date" in result.output  # same candidates and options as the fixture's build
    assert "optical fp16/onnxruntime" in result.output and "from stars.pt [stars, " in result.output
    assert "checkpoint per pattern" in result.output and "* stars.pt [stars" in result.output
    assert "  u.pt [stars" in result.output  # the loser is listed with its score
    assert json.loads((out / "manifest.json").read_text())["schema_version"] == 1


def test_cli_tie_tolerance_default_is_the_named_constant() -> None:
    import inspect

    from stars_edge.commands.build_engines import build_engines as command

    default = inspect.signature(command).parameters["tie_tolerance"].default
    assert default.default == TIE_TOLERANCE


def test_a_one_checkpoint_manifest_has_no_selection_fields(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    build_engines(small(checkpoints["stars"], tmp_path, patterns="dsm", precisions=("fp32",)))
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert "checkpoints" not in data["model"]
    assert not {"checkpoint", "selection"} & set(data["engines"][0])
    assert not {"candidates", "checkpoint_sha256"} & set(data["engines"][0]["options"])
