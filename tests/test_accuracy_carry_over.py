"""Carrying finished study runs across a code change: only a change that computes the same is carried.

A throwaway git repository holds a copy of the code; a comment-only edit is carried over (the probe matches
and the old runs count for the new code), an edit that changes the translation loss is refused.
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
from benchmarks.accuracy_runs import RunSpec, StudySettings  # noqa: E402
from benchmarks.accuracy_store import ResultsLog, code_fingerprint, select_records  # noqa: E402
from benchmarks.common import BenchmarkError  # noqa: E402

SETTINGS = StudySettings(variant="tiny", seeds=(0,), sweep_seeds=(0,))
RUNS = [RunSpec("synthetic", "stars", 0)]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with the code a study run needs, one commit."""
    root = tmp_path_factory.mktemp("carry") / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "configs")
    for folder in ("stars_edge", "training", "benchmarks", "export", "runtime"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder, ignore=ignore)
    _git(root, "init", "-q")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old")
    return root


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
