"""The accuracy study's rendering: the documented JSON schema and Markdown from the results log, never mixing
code versions unless told, the last record of a repeated run.

Made-up records only (``accuracy_records.py``): no training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from accuracy_records import log_record, tiny_study  # noqa: E402

from benchmarks import accuracy, report  # noqa: E402
from benchmarks.accuracy_runs import RunSpec, plan  # noqa: E402
from benchmarks.accuracy_store import MixedFingerprintsError, ResultsLog, select_records  # noqa: E402

# --------------------------------------------------------------------------- rendering


def _fill_log(study: accuracy.Study, fingerprints: tuple[str, str] = ("code-a", "code-a")) -> None:
    log = ResultsLog(study.log)
    runs = plan(study.settings, ("main",))
    for i, run in enumerate(runs):
        log.append(log_record(study, run, 40.0 + i + run.seed, fingerprints[i % 2]))


def test_render_writes_the_documented_schema(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, methods=("stars", "zero_fill_dropout", "single_modality"), seeds=(0, 1))
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
    study = tiny_study(tmp_path, methods=("stars", "zero_fill_dropout"))
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
        accuracy.render_study(tiny_study(tmp_path, steps=3), out)  # other settings: another study


def test_select_keeps_the_last_record_of_a_repeated_run(tmp_path: Path) -> None:
    study = tiny_study(tmp_path)
    run = RunSpec("synthetic", "stars", 0)
    records = [log_record(study, run, 10.0, "a"), log_record(study, run, 20.0, "a")]
    chosen = select_records(records, study.settings_id)
    assert [r["rows"][0]["miou"] for r in chosen.records] == [20.0] and not chosen.mixed
