"""Carrying finished study runs across a code change: only a change that computes the same is carried.

A throwaway git repository holds a copy of the code; a comment-only edit is carried over (the probe matches
and the old runs count for the new code), an edit that changes the translation loss is refused, and a recipe
change carries (renamed) only the runs whose kind computes the same under both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.accuracy_compat import verify_carry_over  # noqa: E402
from benchmarks.accuracy_runs import RunSpec, StudySettings, run_options  # noqa: E402
from benchmarks.accuracy_store import ResultsLog, code_fingerprint, select_records, settings_id  # noqa: E402
from benchmarks.common import BenchmarkError  # noqa: E402

SETTINGS = StudySettings(variant="tiny", seeds=(0,), sweep_seeds=(0,))
RUNS = [RunSpec("synthetic", "stars", 0)]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _new_repo(root: Path) -> Path:
    """A git repository with the code a study run needs, one commit."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "configs")
    for folder in ("stars_edge", "training", "benchmarks", "export", "runtime"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder, ignore=ignore)
    _git(root, "init", "-q")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old")
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _new_repo(tmp_path_factory.mktemp("carry") / "repo")


def _commit(repo: Path, path: str, old: str, new: str, message: str) -> None:
    file = repo / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message)


def test_a_change_that_computes_the_same_is_carried_and_one_that_does_not_is_refused(
    repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "log.jsonl"
    old_fingerprint = code_fingerprint(repo)
    ResultsLog(log).append(
        {"key": "synthetic/stars/seed0", "fingerprint": old_fingerprint, "settings_id": "s"}
    )
    _commit(repo, "training/objective.py", '"""One training step', '"""(A comment.) One training step', "doc")
    new_fingerprint = code_fingerprint(repo)
    assert new_fingerprint != old_fingerprint
    # a run kind the old commit's plan does not hold has nothing to carry: left out, not probed, listed
    unplanned = RunSpec("synthetic", "stars", 0, options=(("synthetic_train_cloud_cover", 0.1),))
    alias = verify_carry_over(log, "HEAD~1", SETTINGS, tmp_path, root=repo, runs=[*RUNS, unplanned])
    assert alias["carried"] and alias["alias"] == {"from": old_fingerprint, "to": new_fingerprint}
    assert alias["new_kinds"] == [unplanned.key] and alias["probe"]["runs"] == [RUNS[0].key]
    (record,) = ResultsLog(log).read()
    assert record["fingerprint"] == new_fingerprint and record["fingerprint_logged"] == old_fingerprint
    assert select_records([record], "s", "current", current=new_fingerprint).records == [record]

    _commit(
        repo,
        "training/objective.py",
        'total = total + cfg.lambda_tr * losses["translation"]',
        'total = total + 1.5 * cfg.lambda_tr * losses["translation"]',
        "changes the translation weight",
    )
    refused = verify_carry_over(log, "HEAD~1", SETTINGS, tmp_path, root=repo, runs=RUNS)
    assert not refused["carried"] and refused["differing"] == [RUNS[0].key]
    assert len([line for line in log.read_text().splitlines() if "alias" in json.loads(line)]) == 1


def test_uncommitted_code_is_not_vouched_for(repo: Path, tmp_path: Path) -> None:
    (repo / "training" / "objective.py").write_text((repo / "training" / "objective.py").read_text() + "\n")
    try:
        with pytest.raises(BenchmarkError, match="commit the current code first"):
            verify_carry_over(tmp_path / "log.jsonl", "HEAD~1", SETTINGS, tmp_path, root=repo, runs=RUNS)
    finally:
        _git(repo, "checkout", "-q", "--", ".")


def test_a_recipe_change_carries_renamed_runs_of_the_kinds_that_compute_the_same(tmp_path: Path) -> None:
    """The former recipe (translation at stride 32 only, strides 8-32 a fidelity option) against today's."""
    repo = tmp_path / "repo"
    _new_repo(repo)
    model_config = "stars_edge/models/model_config.py"
    _commit(repo, model_config, "= (1, 2, 3)\n", "= (3,)\n", "former recipe")
    plan_file = "benchmarks/accuracy_plan.py"
    today = next(
        line for line in (repo / plan_file).read_text().splitlines() if line.startswith("FIDELITY_OPTIONS")
    )
    before = 'FIDELITY_OPTIONS: tuple[dict[str, Any], ...] = ({"translation_scales": (1, 2, 3)},)'
    _commit(repo, plan_file, today, before, "former fidelity option")
    former = code_fingerprint(repo)
    study = settings_id(SETTINGS.to_dict())
    logged = {
        "stride32": RunSpec("synthetic", "stars", 0),
        "strides8_32": RunSpec("synthetic", "stars", 0, options=run_options(translation_scales=(1, 2, 3))),
        "zero_fill": RunSpec("synthetic", "zero_fill_dropout", 0),
        "low_label": RunSpec("synthetic", "stars", 0, options=run_options(synthetic_train_scenes=1)),
        "ablation": RunSpec("synthetic", "stars_no_psa", 0),
    }
    log = tmp_path / "log.jsonl"
    for run in logged.values():
        ResultsLog(log).append(
            {"key": run.key, "fingerprint": former, "settings_id": study, "spec": run.to_dict()}
        )
    _commit(repo, model_config, "= (3,)\n", "= (1, 2, 3)\n", "today's recipe")
    _commit(repo, plan_file, before, today, "today's fidelity options")
    now = code_fingerprint(repo)
    stride32_now = RunSpec("synthetic", "stars", 0, options=run_options(translation_scales=(3,)))
    probes = [RunSpec("synthetic", "stars", 0), stride32_now, logged["zero_fill"], logged["low_label"]]
    alias = verify_carry_over(
        log, "HEAD~2", SETTINGS, tmp_path, root=repo, runs=probes, recipe_change="translation-strides-8-32"
    )
    assert alias["carried"] and alias["alias"] == {"from": former, "to": now}
    assert alias["differing"] == [logged["low_label"].key]  # the recipe changed what it computes
    moves = {m["from"]: m["to"] for m in alias["runs"]}
    assert moves == {
        logged["strides8_32"].key: logged["stride32"].key,  # what the fidelity run set is the recipe now
        logged["stride32"].key: stride32_now.key,  # the former recipe is the stride-32 ablation now
        logged["zero_fill"].key: logged["zero_fill"].key,
    }  # the ablation's new key (stride 32 only) is not in the plan: it reruns with the new recipe
    by_key = {r["key"]: r for r in ResultsLog(log).read() if r["fingerprint"] == now}
    assert set(by_key) == set(moves.values())
    assert by_key[logged["stride32"].key]["key_logged"] == logged["strides8_32"].key
    assert by_key[stride32_now.key]["spec"]["options"] == [["translation_scales", [3]]]
    assert RunSpec.from_dict(by_key[stride32_now.key]["spec"]) == stride32_now
