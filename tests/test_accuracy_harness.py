"""The accuracy study's harness: results log, code fingerprints, rendering, targets, and the speed options.

Tiny sizes only (a few steps of the ``tiny`` variant): these tests check the bookkeeping that lets a
many-hour study run across sessions without mixing code versions, not any accuracy number.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import accuracy, accuracy_targets, report  # noqa: E402
from benchmarks.accuracy_runs import RunSpec, StudySettings, plan  # noqa: E402
from benchmarks.accuracy_store import (  # noqa: E402
    MixedFingerprintsError,
    ResultsLog,
    code_fingerprint,
    select_records,
)
from benchmarks.common import BenchmarkError  # noqa: E402
from stars_edge.errors import ConfigError  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import TrainingData, build_training_data  # noqa: E402
from training.loop import train  # noqa: E402

CLASSES = ("background", "building", "car")
TINY_STUDY = dict(
    variant="tiny", steps=2, batch_size=2, tile_size=64, train_scenes=1, train_scene_size=128, val_scenes=1,
    val_every=1, test_scenes=1, scene_size=64, flop_steps=1, methods=("zero_fill_dropout",), seeds=(0,),
    sweep_seeds=(0,),
)  # fmt: skip


def _study(tmp_path: Path, **changes: Any) -> accuracy.Study:
    settings = StudySettings(**{**TINY_STUDY, **changes})
    return accuracy.Study(settings, ("main",), tmp_path / "log.jsonl", tmp_path / "work")


def _record(
    study: accuracy.Study,
    run: RunSpec,
    miou: float,
    fingerprint: str,
    classes: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A results-log record as ``run_one`` writes it, with made-up scores (no training)."""
    patterns = [p.name for p in ALL_PATTERNS if set(p) <= set(run.modalities)]
    per_class = classes or dict.fromkeys(CLASSES, miou)
    return {
        "key": run.key,
        "spec": {**run.__dict__, "modalities": list(run.modalities)},
        "fingerprint": fingerprint,
        "commit": "abc123",
        "dirty": False,
        "settings_id": study.settings_id,
        "settings": study.settings.to_dict(),
        "finished": "2026-01-01T00:00:00Z",
        "run": {
            "train_seconds": 1.0,
            "seconds_per_step": 0.5,
            "flops_per_step": 2e9,
            "parameters": 1000,
            "lambda_psa": 0.1,
            "final_losses": {},
            "final_feature_std": None,
            "final_effective_rank": None,
        },
        "curve": [
            {"step": 1, "miou": miou - 5, "per_pattern": {}},
            {"step": 2, "miou": miou, "per_pattern": {}},
        ],
        "rows": [
            {"pattern": p, "miou": miou, "mf1": miou, "pixel_accuracy": 90.0, "per_class_iou": per_class}
            for p in patterns
        ],
        "data": {"test_class_pixels": {"background": 9000, "building": 3000, "car": 2000}},
    }


# --------------------------------------------------------------------------- results log, fingerprints


def test_log_appends_whole_records_and_knows_what_is_done_per_fingerprint(tmp_path: Path) -> None:
    study = _study(tmp_path)
    log = ResultsLog(study.log)
    first, second = RunSpec("synthetic", "stars", 0), RunSpec("synthetic", "stars", 1)
    log.append(_record(study, first, 50.0, "code-a"))
    log.append(_record(study, second, 51.0, "code-b"))
    with study.log.open("a") as handle:
        handle.write('{"key": "truncated by a kill')  # a writer killed mid-line
    assert [r["key"] for r in log.read()] == [first.key, second.key]
    assert log.done_keys("code-a", study.settings_id) == {first.key}
    assert log.done_keys("code-a", "other-settings") == set()
    # more seeds or methods extend the same study; a different budget is another study
    assert _study(tmp_path, seeds=(0, 1, 2), methods=("stars",)).settings_id == study.settings_id
    assert _study(tmp_path, steps=3).settings_id != study.settings_id


def test_fingerprint_follows_the_model_and_training_sources(tmp_path: Path) -> None:
    for relative in ("stars_edge/models/stars.py", "training/loop.py", "benchmarks/accuracy_render.py"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x = 1\n")
    before = code_fingerprint(tmp_path)
    (tmp_path / "benchmarks/accuracy_render.py").write_text("x = 2\n")  # rendering does not change results
    assert code_fingerprint(tmp_path) == before
    (tmp_path / "training/loop.py").write_text("x = 2\n")
    assert code_fingerprint(tmp_path) != before


def test_rerun_skips_logged_runs_of_the_current_code_only(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    study = _study(tmp_path)
    assert accuracy.run_study(study) == 0
    (record,) = ResultsLog(study.log).read()
    assert (
        record["fingerprint"] == code_fingerprint()
        and record["key"] == plan(study.settings, ("main",))[0].key
    )
    assert record["run"]["flops_per_step"] > 0 and record["run"]["parameters"] > 0
    assert [p["step"] for p in record["curve"]] == [1, 2]  # the validation curve, every val_every steps
    assert {r["pattern"] for r in record["rows"]} == {p.name for p in ALL_PATTERNS}
    assert accuracy.run_study(study) == 0
    assert len(ResultsLog(study.log).read()) == 1
    assert "1 already logged for this code, 0 to run" in capsys.readouterr().out
    # the same run logged by other code does not count as done
    study.log.write_text(json.dumps({**record, "fingerprint": "older-code"}) + "\n")
    accuracy.run_study(study)
    assert [r["fingerprint"] for r in ResultsLog(study.log).read()] == ["older-code", code_fingerprint()]


def test_only_runs_the_given_keys_in_the_given_order(tmp_path: Path) -> None:
    study = _study(tmp_path, methods=("stars", "zero_fill_dropout"), seeds=(0, 1))
    runs = plan(study.settings, ("main",))
    wanted = (runs[3].key, runs[0].key)
    ResultsLog(study.log).append(_record(study, runs[0], 40.0, code_fingerprint()))  # already done
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# most important first\n{wanted[0]}\n{wanted[1]}\n")
    for only in (accuracy._keys(f"{wanted[0]},{wanted[1]}"), accuracy._keys(f"@{keys_file}")):
        _, todo = accuracy.pending(dataclasses.replace(study, only=only))
        assert [r.key for r in todo] == [wanted[0]]  # in order, done runs skipped
    with pytest.raises(BenchmarkError, match="no run 'nope'"):
        accuracy.pending(dataclasses.replace(study, only=("nope",)))


# --------------------------------------------------------------------------- rendering


def _fill_log(study: accuracy.Study, fingerprints: tuple[str, str] = ("code-a", "code-a")) -> None:
    log = ResultsLog(study.log)
    runs = plan(study.settings, ("main",))
    for i, run in enumerate(runs):
        log.append(_record(study, run, 40.0 + i + run.seed, fingerprints[i % 2]))


def test_render_writes_the_documented_schema(tmp_path: Path) -> None:
    study = _study(tmp_path, methods=("stars", "zero_fill_dropout", "single_modality"), seeds=(0, 1))
    _fill_log(study)
    out = tmp_path / "out"
    targets = accuracy.render_study(study, out, command="test")
    data = json.loads((out / "accuracy_synthetic.json").read_text())
    assert data["schema"] == "stars-edge/accuracy/v1" and data["mixed"] is False
    assert {"variant", "steps", "test_scenes", "scene_size", "commit"} <= set(data["settings"])
    assert data["settings"]["commit"] == "abc123" and data["settings"]["test_class_pixels"]["car"] == 2000
    # one row per method x pattern x seed (single_modality: its own pattern, one model per modality)
    assert len(data["rows"]) == 2 * (7 + 7 + 3)
    assert {r["method"] for r in data["rows"]} == {"stars", "zero_fill_dropout", "single_modality"}
    assert all(
        {"miou", "per_class_iou", "seed", "pattern", "flops_per_step", "parameters"} <= set(r)
        for r in data["rows"]
    )
    assert [t["name"] for t in data["targets"]] == [t.name for t in targets]
    text = (out / "accuracy_synthetic.md").read_text()
    assert "## Targets" in text and "GFLOPs / training step" in text and "MIXED" not in text
    assert (out / "accuracy_synthetic_curves.png").stat().st_size > 0
    assert report.collect([out / "accuracy_synthetic.json"]).accuracy  # the report still reads it


def test_render_refuses_to_mix_code_versions_unless_told(tmp_path: Path) -> None:
    study = _study(tmp_path, methods=("stars", "zero_fill_dropout"))
    _fill_log(study, ("code-a", "code-b"))
    out = tmp_path / "out"
    with pytest.raises(MixedFingerprintsError, match="--allow-mixed"):
        accuracy.render_study(study, out)
    assert not (out / "accuracy_synthetic.json").exists()
    accuracy.render_study(study, out, fingerprint="code-b")
    assert {r["method"] for r in json.loads((out / "accuracy_synthetic.json").read_text())["rows"]} == {
        "zero_fill_dropout"
    }
    accuracy.render_study(study, out, allow_mixed=True)
    data = json.loads((out / "accuracy_synthetic.json").read_text())
    assert data["mixed"] is True and data["settings"]["fingerprints"] == ["code-a", "code-b"]
    assert "MIXED CODE VERSIONS" in (out / "accuracy_synthetic.md").read_text()
    with pytest.raises(accuracy.BenchmarkError, match="no runs"):
        accuracy.render_study(_study(tmp_path, steps=3), out)  # other settings: another study


def test_select_keeps_the_last_record_of_a_repeated_run(tmp_path: Path) -> None:
    study = _study(tmp_path)
    run = RunSpec("synthetic", "stars", 0)
    records = [_record(study, run, 10.0, "a"), _record(study, run, 20.0, "a")]
    chosen = select_records(records, study.settings_id)
    assert [r["rows"][0]["miou"] for r in chosen.records] == [20.0] and not chosen.mixed


# --------------------------------------------------------------------------- targets


def _rows(
    method: str,
    mious: dict[str, float],
    seed: int = 0,
    lam: float = accuracy_targets.DEFAULT_LAMBDA_TR,
    **classes: float,
) -> list[dict]:
    per_class = {"car": 10.0, "building": 50.0, **classes}
    return [
        {
            "method": method,
            "pattern": p,
            "miou": v,
            "seed": seed,
            "lambda_tr": lam,
            "per_class_iou": per_class,
        }
        for p, v in mious.items()
    ]


def _status(targets: list[accuracy_targets.Target], prefix: str) -> str:
    (found,) = [t for t in targets if t.name.startswith(prefix)]
    return found.status


def test_targets_pass_and_miss_with_the_numbers() -> None:
    patterns = [p.name for p in ALL_PATTERNS]
    rows = []
    for seed in (0, 1):
        rows += _rows("stars", dict.fromkeys(patterns, 60.0 + 0.2 * seed), seed, car=14.0, building=50.5)
        # PSA with uniform sampling: the balancing target's reference (minority classes)
        rows += _rows("stars_psa_uniform", dict.fromkeys(patterns, 59.0), seed, car=10.0, building=50.0)
        rows += _rows("shaspec", dict.fromkeys(patterns, 55.0), seed)
        # zero-fill beats STARS on sar: that target must MISS and say where
        rows += _rows("zero_fill_dropout", {**dict.fromkeys(patterns, 50.0), "sar": 61.0}, seed)
        rows += _rows("single_modality", {"optical": 59.0, "sar": 61.0, "dsm": 40.0}, seed)
    sweep = []
    for lam, stars, free in ((0.1, 60.0, 58.0), (1.0, 60.5, 60.0), (10.0, 60.2, 52.0)):
        sweep += _rows("stars", {"sar": stars}, 0, lam) + _rows("stars_no_stopgrad", {"sar": free}, 0, lam)
    curves = {
        "stars": [[{"step": 50, "miou": 58.0}, {"step": 75, "miou": 59.5}, {"step": 100, "miou": 60.0}]]
    }
    pixels = {"background": 9000, "car": 800}
    targets = accuracy_targets.evaluate(
        rows, sweep, (0.1, 1.0, 10.0), pixels, curves, 100, {"sar": 0.7, "dsm": 0.1}
    )
    assert _status(targets, "STARS >= single-modality model on optical") == "PASS"
    assert _status(targets, "STARS >= single-modality model on sar") == "MISS"
    assert _status(targets, "STARS > shaspec") == "PASS"
    miss = next(t for t in targets if t.name.startswith("STARS > zero_fill_dropout"))
    assert miss.status == "MISS" and "5/6" in miss.detail and "sar -0.90" in miss.detail
    assert _status(targets, "PSA balancing: stars - stars_psa_uniform on car") == "PASS"  # +4
    assert _status(targets, "PSA balancing: stars - stars_psa_uniform on building") == "MISS"  # +0.5 < 1
    assert {t.status for t in targets if t.name.startswith("PSA itself")} == {"n/a"}  # no stars_no_psa
    stopgrad = next(t for t in targets if t.name.startswith("stop-gradient"))
    assert stopgrad.status == "PASS" and "spread 0.50 vs 8.00" in stopgrad.detail
    assert _status(targets, "INT8") == "MISS"
    assert _status(targets, "test set") == "MISS"  # car 800 < 1000
    assert _status(targets, "seed-to-seed std") == "PASS"  # 0.14
    assert _status(targets, "budget") == "PASS"  # +0.5 over the last quarter
    # without the runs a target needs, it is n/a, never a PASS
    empty = accuracy_targets.evaluate([], [], (0.1, 1.0, 10.0))
    assert {t.status for t in empty} == {"n/a"}


def test_stopgrad_spread_compares_only_seeds_run_at_every_lambda() -> None:
    """A study continued across sessions has extra seeds at some lambdas: they must not enter the spread."""
    sweep = []
    for lam, stars, free in ((0.1, 60.0, 58.0), (1.0, 60.5, 60.0), (10.0, 60.2, 52.0)):
        sweep += _rows("stars", {"sar": stars}, 0, lam) + _rows("stars_no_stopgrad", {"sar": free}, 0, lam)
    sweep += _rows("stars", {"sar": 40.0}, 1, 0.1)  # seed 1 exists only at lambda 0.1
    target = accuracy_targets.stopgrad_target(sweep, (0.1, 1.0, 10.0))
    assert target.status == "PASS" and "spread 0.50 vs 8.00 (seed 0)" in target.detail
    assert accuracy_targets.sweep_seeds(sweep, ("stars",), (0.1, 1.0)) == [0]


def test_method_comparisons_use_the_seeds_both_methods_have() -> None:
    """STARS has seeds 0-1, the specialist and zero-fill only seed 0: compare on seed 0 alone."""
    patterns = [p.name for p in ALL_PATTERNS]
    rows = _rows("stars", dict.fromkeys(patterns, 60.0), 0) + _rows("stars", dict.fromkeys(patterns, 50.0), 1)
    rows += _rows("single_modality", {"sar": 59.0}, 0) + _rows(
        "zero_fill_dropout", dict.fromkeys(patterns, 59.0), 0
    )
    (sar,) = [t for t in accuracy_targets.single_modality_targets(rows) if t.name.endswith("sar")]
    assert sar.status == "PASS" and "60.00 vs 59.00" in sar.detail and "seed 0" in sar.detail
    zero_fill = accuracy_targets.baseline_targets(rows, "zero_fill_dropout")
    assert zero_fill.status == "PASS" and "6/6" in zero_fill.detail


# --------------------------------------------------------------------------- speed options

SPEED: dict[str, Any] = dict(
    variant="tiny", tile_size=64, batch_size=2, synthetic_size=128, synthetic_train_scenes=1,
    synthetic_val_scenes=0, steps=3, log_every=1, val_every=1000, checkpoint_every=1000, seed=5,
    diagnostics=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def speed_data() -> TrainingData:
    return build_training_data(TrainConfig(**SPEED))


def _losses(tmp_path: Path, data: TrainingData, name: str, **changes: Any) -> tuple[list[dict], Any]:
    result = train(
        TrainConfig(**{**SPEED, "output_dir": tmp_path / name, **changes}), progress=False, data=data
    )
    rows = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "lr"} for r in rows if "total" in r], result.model


def test_fp32_path_is_bit_stable_and_speed_options_change_the_computation(
    tmp_path: Path, speed_data: TrainingData
) -> None:
    first, _ = _losses(tmp_path, speed_data, "a")
    second, _ = _losses(tmp_path, speed_data, "b")
    assert len(first) == 3 and first == second  # identical floats, every loss term, every step
    bf16, _ = _losses(tmp_path, speed_data, "bf16", autocast="bf16")
    assert bf16[0]["total"] != first[0]["total"]  # autocast really ran the forward in bf16
    assert all(torch.isfinite(torch.tensor(r["total"])) for r in bf16)
    channels_last, model = _losses(tmp_path, speed_data, "cl", channels_last=True)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert channels_last[0]["total"] == pytest.approx(first[0]["total"], rel=1e-4)


def test_unknown_autocast_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="autocast must be one of none, bf16"):
        TrainConfig(autocast="fp16")


@pytest.mark.slow
def test_two_jobs_side_by_side_append_one_record_per_run(tmp_path: Path) -> None:
    """``--jobs 2``: one single-thread process per run, each appending its own record, then the tables."""
    log, out = tmp_path / "log.jsonl", tmp_path / "out"
    args = ["--quick", "--steps", "2", "--methods", "zero_fill_dropout", "--seeds", "0,1", "--parts", "main"]
    files = ["--results-log", str(log), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    assert accuracy.main([*args, *files, "--jobs", "2"]) == 0
    assert sorted(r["spec"]["seed"] for r in ResultsLog(log).read()) == [0, 1]
    assert json.loads((out / "accuracy_synthetic.json").read_text())["seeds"] == [0, 1]


def test_main_table_trains_with_the_shipped_lambda_tr() -> None:
    """The study's main rows are the model users get: the harness's lambda_tr is TrainConfig's default."""
    from benchmarks.accuracy_runs import RunSpec
    from benchmarks.accuracy_targets import DEFAULT_LAMBDA_TR
    from training.config import TrainConfig

    assert TrainConfig().lambda_tr == DEFAULT_LAMBDA_TR
    assert RunSpec("synthetic", "stars", 0).lambda_tr == DEFAULT_LAMBDA_TR


def test_int8_target_takes_the_worst_drop_over_every_manifest(tmp_path: Path) -> None:
    from stars_edge.manifest import (
        EngineAccuracy,
        EngineEntry,
        Manifest,
        ModelInfo,
        engine_inputs,
        save_manifest,
    )
    from stars_edge.modalities import DEFAULT_SPECS, Pattern

    for folder, dsm_drop in (("seed0", 0.3), ("seed1", 0.7)):
        model = ModelInfo("tiny", "stars", "ab" * 32, 2, ("background", "building"))
        manifest = Manifest(model=model, modalities=dict(DEFAULT_SPECS), tile_size=128)
        for pattern, drop in (("dsm", dsm_drop), ("sar", 0.1)):
            parsed = Pattern.parse(pattern)
            accuracy = EngineAccuracy(
                miou=50.0, per_class_iou={}, agreement_with_fp32=95.0, miou_drop=drop, gate="pass"
            )
            inputs = engine_inputs(parsed, DEFAULT_SPECS)
            path = f"{pattern}.int8.onnx"
            entry = EngineEntry(parsed, "int8", "onnxruntime", path, "0" * 64, inputs, 128, accuracy=accuracy)
            manifest.add(entry)
        save_manifest(manifest, tmp_path / folder)
    drops = accuracy_targets.int8_drops_from_manifests([tmp_path / "seed0", tmp_path / "seed1"])
    assert drops == {"dsm": 0.7, "sar": 0.1}
    assert accuracy_targets.int8_target(drops).status == "MISS"
    only_seed0 = accuracy_targets.int8_drops_from_manifests([tmp_path / "seed0"])
    assert accuracy_targets.int8_target(only_seed0).status == "PASS"
