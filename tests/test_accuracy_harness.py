"""The accuracy study's harness: results log, code fingerprints, which runs are still to do, and the speed
options. Rendering is tested in ``test_accuracy_harness_render.py``, targets in
``test_accuracy_harness_targets.py`` (the made-up records they share: ``accuracy_records.py``).

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

from accuracy_records import log_record, tiny_study  # noqa: E402

from benchmarks import accuracy  # noqa: E402
from benchmarks.accuracy_runs import RunSpec, plan  # noqa: E402
from benchmarks.accuracy_store import ResultsLog, code_fingerprint  # noqa: E402
from benchmarks.common import BenchmarkError  # noqa: E402
from stars_edge.errors import ConfigError  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import TrainingData, build_training_data  # noqa: E402
from training.loop import train  # noqa: E402

# --------------------------------------------------------------------------- results log, fingerprints


def test_log_appends_whole_records_and_knows_what_is_done_per_fingerprint(tmp_path: Path) -> None:
    study = tiny_study(tmp_path)
    log = ResultsLog(study.log)
    first, second = RunSpec("synthetic", "stars", 0), RunSpec("synthetic", "stars", 1)
    log.append(log_record(study, first, 50.0, "code-a"))
    log.append(log_record(study, second, 51.0, "code-b"))
    with study.log.open("a") as handle:
        handle.write('{"key": "truncated by a kill')  # a writer killed mid-line
    assert [r["key"] for r in log.read()] == [first.key, second.key]
    assert log.done_keys("code-a", study.settings_id) == {first.key}
    assert log.done_keys("code-a", "other-settings") == set()
    # more seeds or methods extend the same study; a different budget is another study
    assert tiny_study(tmp_path, seeds=(0, 1, 2), methods=("stars",)).settings_id == study.settings_id
    assert tiny_study(tmp_path, steps=3).settings_id != study.settings_id


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
    study = tiny_study(tmp_path)
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
    study = tiny_study(tmp_path, methods=("stars", "zero_fill_dropout"), seeds=(0, 1))
    runs = plan(study.settings, ("main",))
    wanted = (runs[3].key, runs[0].key)
    ResultsLog(study.log).append(log_record(study, runs[0], 40.0, code_fingerprint()))  # already done
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# most important first\n{wanted[0]}\n{wanted[1]}\n")
    for only in (accuracy._keys(f"{wanted[0]},{wanted[1]}"), accuracy._keys(f"@{keys_file}")):
        _, todo = accuracy.pending(dataclasses.replace(study, only=only))
        assert [r.key for r in todo] == [wanted[0]]  # in order, done runs skipped
    with pytest.raises(BenchmarkError, match="no run 'nope'"):
        accuracy.pending(dataclasses.replace(study, only=("nope",)))


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
