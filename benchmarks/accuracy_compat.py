"""Carry a study's finished runs across a code change that does not change what a run computes.

The results log keys every run by a fingerprint of the code that trains and scores it, so any edit to that
code (a refactor, a new option that is off by default) would send hours of finished runs back to the queue.
``verify_carry_over`` decides instead by measurement: it checks out the old commit in a temporary git
worktree, runs a short probe of every kind of run in the study (each method, each option the plan sets, the
real-data experiment) under the old code and under the current code, one thread each on this machine, and
compares a hash of everything a run reports (validation curve, test scores, final losses, parameter count).
Only when every probe matches does it append an alias record ``old fingerprint -> current fingerprint`` to
the log; ``ResultsLog.read`` then files the old runs under the current code, and every carried record keeps
``fingerprint_logged`` (what it ran with) and ``carried_by`` (the alias's probe and date).

A probe covers the code paths a run takes, not every number a 3000-step run produces: a change that only
shows after many steps (or only on another CPU) could pass. That is why the alias names the machine and the
probe, and why a change meant to alter results must never be carried over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.accuracy_plan import RECIPE_CHANGES, RecipeChange, recipe_renamed
from benchmarks.accuracy_runs import PARTS, SHASPEC_GRID, RunSpec, StudySettings, plan
from benchmarks.accuracy_store import ROOT, ResultsLog, code_fingerprint, git_commit, settings_id
from benchmarks.common import BenchmarkError, cpu_flags, cpu_model

#: A probe run: a few steps of the study's model on small tiles, one thread, scored on one small scene.
PROBE_SETTINGS: dict[str, Any] = dict(
    steps=4, batch_size=2, tile_size=64, train_scenes=2, train_scene_size=128, val_scenes=1, val_every=2,
    test_scenes=1, scene_size=128, threads=1, flop_steps=0, seeds=(0,), sweep_seeds=(0,),
)  # fmt: skip

#: Run by ``python -c`` inside a code root: probe every run kind with that root's own study code and print
#: ``{key: sha256}`` as JSON on the last line.
_PROBE_PROGRAM = r"""
import hashlib, json, sys
from pathlib import Path
root, settings_json, runs_json, real = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, root)
import torch
torch.set_num_threads(1)
from benchmarks.accuracy_runs import RunSpec, StudySettings, execute, synthetic_data
settings = StudySettings.from_dict(json.loads(settings_json))
hashes = {}
for spec in json.loads(runs_json):
    spec["modalities"] = tuple(spec["modalities"])
    spec["options"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in spec["options"])
    run = RunSpec(**spec)
    if run.experiment == "sen1floods11":
        from benchmarks.accuracy_sen1floods11 import sen1floods11_data
        data = sen1floods11_data(settings, run.seed, Path(real))
    else:
        data = synthetic_data(settings, run.seed, run.data_options)
    with __import__("tempfile").TemporaryDirectory() as work:
        result = execute(settings, run, data, Path(work))
    timing = ("train_seconds", "seconds_per_step", "flops_per_step")
    result["run"] = {k: v for k, v in result["run"].items() if k not in timing}
    hashes[run.key] = hashlib.sha256(json.dumps(result, sort_keys=True, default=str).encode()).hexdigest()
print(json.dumps(hashes))
"""


def run_kind(run: RunSpec) -> tuple[Any, ...]:
    """What a probe stands for: experiment, method, lambda_tr = 0 or not, modality count, option names."""
    return (
        run.experiment,
        run.method,
        run.lambda_tr == 0.0,
        len(run.modalities),
        tuple(k for k, _ in run.options),
    )


def probe_runs(settings: StudySettings) -> list[RunSpec]:
    """One run of every kind the study holds: each method, option set and experiment, on the first seed."""
    probe = StudySettings.from_dict({**settings.to_dict(), **PROBE_SETTINGS})
    kinds: dict[tuple[Any, ...], RunSpec] = {}
    for run in plan(probe, PARTS, SHASPEC_GRID[0]):
        kinds.setdefault(run_kind(run), run)
    return list(kinds.values())


#: Run by ``python -c`` inside a code root: the keys of the probe runs that root's own study plan holds.
_PLAN_PROGRAM = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from benchmarks.accuracy_runs import PARTS, SHASPEC_GRID, StudySettings, plan
settings = StudySettings.from_dict(json.loads(sys.argv[2]))
print(json.dumps([run.key for run in plan(settings, PARTS, SHASPEC_GRID[0])]))
"""


def _run_in(root: Path, program: str, *args: str) -> str:
    """The last stdout line of ``python -c program args`` run with ``root``'s code, one thread."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", program, str(root), *args],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise BenchmarkError(f"the probe failed under {root} (exit {done.returncode}):\n{tail}")
    return done.stdout.strip().splitlines()[-1]


def planned_keys(root: Path, settings: StudySettings) -> set[str]:
    """Keys of the probe-sized runs that the study plan under ``root`` holds (a subprocess)."""
    probe = StudySettings.from_dict({**settings.to_dict(), **PROBE_SETTINGS})
    return set(json.loads(_run_in(root, _PLAN_PROGRAM, json.dumps(probe.to_dict()))))


def probe_hashes(root: Path, settings: StudySettings, runs: list[RunSpec], real_data: Path) -> dict[str, str]:
    """``{run key: hash of its result}`` of ``runs`` trained by the code under ``root`` (a subprocess)."""
    probe = StudySettings.from_dict({**settings.to_dict(), **PROBE_SETTINGS})
    specs = [run.to_dict() for run in runs]
    output = _run_in(root, _PROBE_PROGRAM, json.dumps(probe.to_dict()), json.dumps(specs), str(real_data))
    return dict(json.loads(output))


def verify_carry_over(
    log: Path,
    old_commit: str,
    settings: StudySettings,
    real_data: Path,
    root: Path = ROOT,
    runs: list[RunSpec] | None = None,
    recipe_change: str | None = None,
) -> dict[str, Any]:
    """Probe ``old_commit`` against the current (committed) code; log the alias when it carries anything.

    ``runs`` defaults to ``probe_runs(settings)`` (every run kind). Kinds the old commit's plan does not hold
    (an option added since) are left out: the old code cannot run them and has no runs of them to carry;
    the record lists them as ``new_kinds``. Without ``recipe_change`` every probe must match and the alias
    carries the whole fingerprint. With one (a name in ``RECIPE_CHANGES``) the recipe changed on purpose:
    each probe runs under the current code and, as the former recipe named it, under the old one, and the
    alias lists the logged runs it carries one by one (``runs``: the old key, the new key and spec), only
    those of a kind whose probes matched and only into the current plan. Returns the alias record
    (``"carried": False`` and the differing probes when nothing is carried).
    """
    if git_commit(root)["dirty"]:
        raise BenchmarkError("commit the current code first: a carry-over names the commit it vouches for")
    if recipe_change is not None and recipe_change not in RECIPE_CHANGES:
        raise BenchmarkError(
            f"unknown recipe change {recipe_change!r}; known: {', '.join(RECIPE_CHANGES) or 'none'}"
        )
    changes = RECIPE_CHANGES[recipe_change] if recipe_change is not None else ()
    current = code_fingerprint(root)
    runs = probe_runs(settings) if runs is None else runs
    pairs = [(recipe_renamed(run, changes, forward=False), run) for run in runs]
    with tempfile.TemporaryDirectory(prefix="stars-edge-carry-") as scratch:
        tree = Path(scratch) / "old"
        _git(root, "worktree", "add", "--detach", str(tree), old_commit)
        try:
            old = code_fingerprint(tree)
            if old == current:
                raise BenchmarkError(f"{old_commit} has the current code fingerprint: nothing to carry")
            known = planned_keys(tree, settings)
            new_kinds = sorted(new.key for former, new in pairs if former.key not in known)
            pairs = [(former, new) for former, new in pairs if former.key in known]
            if new_kinds:
                listed = ", ".join(new_kinds)
                print(f"not in {old_commit[:12]}'s plan (nothing to carry): {listed}", flush=True)
            print(f"probing {len(pairs)} run kinds under {old_commit[:12]} (code {old[:12]})", flush=True)
            before = probe_hashes(tree, settings, [former for former, _ in pairs], real_data)
        finally:
            _git(root, "worktree", "remove", "--force", str(tree))
    print(f"probing {len(pairs)} run kinds under the current code ({current[:12]})", flush=True)
    after = probe_hashes(root, settings, [new for _, new in pairs], real_data)
    same = [before[f.key] == after.get(n.key) for f, n in pairs]
    matched = {(run_kind(f), run_kind(n)) for (f, n), ok in zip(pairs, same, strict=True) if ok}
    differing = sorted(n.key for (_, n), ok in zip(pairs, same, strict=True) if not ok)
    record: dict[str, Any] = {
        "alias": {"from": old, "to": current},
        "old_commit": _git(root, "rev-parse", old_commit),
        "new_commit": git_commit(root)["commit"],
        "probe": {
            "settings": PROBE_SETTINGS,
            "runs": sorted(before),
            "hashes": after,
            "renamed": {f.key: n.key for f, n in pairs if f.key != n.key},
        },
        "machine": {"cpu": cpu_model(), "flags": cpu_flags()},
        "verified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "differing": differing,
        "new_kinds": new_kinds,
    }
    if recipe_change is None:
        record["carried"] = not differing
    else:
        record["recipe_change"] = recipe_change
        record["runs"] = carried_runs(ResultsLog(log).read(), old, settings, changes, matched)
        record["carried"] = bool(record["runs"])
    if record["carried"]:
        ResultsLog(log).append(record)
    return record


def carried_runs(
    records: list[dict[str, Any]],
    fingerprint: str,
    settings: StudySettings,
    changes: tuple[RecipeChange, ...],
    matched: set[tuple[tuple[Any, ...], tuple[Any, ...]]],
) -> list[dict[str, Any]]:
    """The logged runs of ``fingerprint`` and this study a recipe change carries: ``{"from", "to", "spec"}``
    each, for runs of a kind whose probes matched (``matched``: former and current kind) that the current
    plan holds."""
    wanted = settings_id(settings.to_dict())
    in_plan = {r.key for pair in (None, *SHASPEC_GRID) for r in plan(settings, PARTS, pair)}
    carried = []
    for record in records:
        if record.get("fingerprint") != fingerprint or record.get("settings_id") != wanted:
            continue
        former = RunSpec.from_dict(record["spec"])
        new = recipe_renamed(former, changes)
        if (run_kind(former), run_kind(new)) in matched and new.key in in_plan:
            carried.append({"from": record["key"], "to": new.key, "spec": new.to_dict()})
    return sorted(carried, key=lambda c: str(c["from"]))


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchmarkError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()
