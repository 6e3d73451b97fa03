"""Accuracy evidence: STARS against its ablations and baselines, same backbone, data, steps and schedule.

The study (issue 11): every method x seed (and the lambda_tr sweep) trained on synthetic scenes and scored
on every modality-availability pattern of held-out test scenes, plus a real Sentinel-1/-2 check
(Sen1Floods11 chip, left half train, right half test). Each run appends its record to a JSONL results log
as soon as it finishes, tagged with the git commit and a fingerprint of the code that defines the model and
training; re-running skips runs already logged for the current code, so the study resumes across sessions.
The renderer refuses to mix code versions unless told to (``--allow-mixed``, then the tables say so).

    python benchmarks/accuracy.py --jobs 2                  # the study: two 1-thread runs side by side
    python benchmarks/accuracy.py --plan                    # which runs are done / to do for this code
    python benchmarks/accuracy.py --jobs 2 --only @keys.txt # just these runs, most important first
    python benchmarks/accuracy.py --render                  # JSON, Markdown, plots and targets from the log
    python benchmarks/accuracy.py --quick --results-log /tmp/q.jsonl --out /tmp/q   # smoke (meaningless)
    python benchmarks/accuracy.py --carry-over-from COMMIT  # COMMIT's runs count if every probe matches
    python benchmarks/accuracy.py --carry-over-from COMMIT --recipe-change translation-strides-8-32
                                                            # a deliberate recipe change: matching kinds only

The settings flags (``--steps``, ``--variant``, ...) identify a study: pass the same ones to ``--render`` and
``--plan``. Every run's checkpoint and log.jsonl go under ``--work-dir``. This file is the command line and
the runner; ``benchmarks/accuracy_report.py`` renders the log (which run goes into which table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy_plan import RECIPE_CHANGES  # noqa: E402
from benchmarks.accuracy_report import render_study  # noqa: E402
from benchmarks.accuracy_runs import (  # noqa: E402
    PARTS,
    RunSpec,
    StudyData,
    StudySettings,
    choose_shaspec,
    execute,
    plan,
)
from benchmarks.accuracy_sen1floods11 import SEN1FLOODS11  # noqa: E402
from benchmarks.accuracy_store import (  # noqa: E402
    ResultsLog,
    code_fingerprint,
    git_commit,
    select_records,
)
from benchmarks.accuracy_study import RESULTS, RESULTS_LOG, Study  # noqa: E402
from benchmarks.common import BenchmarkError  # noqa: E402

SETTINGS_FLAGS: tuple[str, ...] = (
    "variant", "steps", "batch_size", "tile_size", "lr", "train_scenes", "train_scene_size", "val_scenes",
    "val_every", "test_scenes", "scene_size", "threads", "autocast", "flop_steps",
)  # fmt: skip
QUICK = dict(
    variant="tiny", steps=20, tile_size=64, batch_size=4, train_scenes=2, train_scene_size=128,
    val_every=10, test_scenes=1, scene_size=128, flop_steps=1, seeds=(0,), sweep_seeds=(0,),
)  # fmt: skip


DataCache = dict[tuple[str, int, str], StudyData]


def _data(study: Study, run: RunSpec, cache: DataCache) -> StudyData:
    from benchmarks.accuracy_runs import synthetic_data
    from benchmarks.accuracy_sen1floods11 import sen1floods11_data

    key = (run.experiment, run.seed, json.dumps(run.data_options, sort_keys=True))
    if key not in cache:
        if run.experiment == "sen1floods11":
            cache[key] = sen1floods11_data(study.settings, run.seed, study.sen1floods11)
        else:
            cache[key] = synthetic_data(study.settings, run.seed, run.data_options)
    return cache[key]


def shaspec_weights(study: Study) -> tuple[float, float] | None:
    """ShaSpec's tuned weight pair for the current code and settings (``None`` until the grid is logged)."""
    records = ResultsLog(study.log).read()
    current = select_records(records, study.settings_id, "current", current=code_fingerprint()).records
    return choose_shaspec(current, study.settings)


def study_plan(study: Study) -> list[RunSpec]:
    """``plan`` with the tuned ShaSpec weights read from the results log."""
    return plan(study.settings, study.parts, shaspec_weights(study))


def run_one(study: Study, run: RunSpec, cache: DataCache | None = None) -> dict[str, Any]:
    """Train and score one run, append its record to the results log, return the record."""
    import torch

    torch.set_num_threads(study.settings.threads)
    data = _data(study, run, {} if cache is None else cache)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fingerprint = code_fingerprint()
    result = execute(study.settings, run, data, study.work)
    if code_fingerprint() != fingerprint:
        raise BenchmarkError(
            f"run {run.key}: the model/training code changed while it ran; its result is not logged, "
            "re-run it"
        )
    record = {
        "key": run.key,
        "spec": dataclasses.asdict(run),
        "fingerprint": fingerprint,
        **git_commit(),
        "settings_id": study.settings_id,
        "settings": study.settings.to_dict(),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": os.uname().nodename,
        **result,
    }
    ResultsLog(study.log).append(record)
    mean = sum(r["miou"] for r in record["rows"]) / max(len(record["rows"]), 1)
    print(f"  done {run.key:<58} {result['run']['train_seconds']:8.1f} s  mean mIoU {mean:6.2f}", flush=True)
    return record


def pending(study: Study) -> tuple[list[RunSpec], list[RunSpec]]:
    """(all runs of the study, the ones not yet logged for the current code and settings).

    With ``study.only``, the pending runs are those keys, in that order: a study continued across sessions
    runs what matters most first.
    """
    runs = study_plan(study)
    done = ResultsLog(study.log).done_keys(code_fingerprint(), study.settings_id)
    todo = [r for r in runs if r.key not in done]
    if not study.only:
        return runs, todo
    by_key = {r.key: r for r in runs}
    unknown = [key for key in study.only if key not in by_key]
    if unknown:
        raise BenchmarkError(f"no run {unknown[0]!r} in this study (--only); see --plan for the keys")
    return runs, [by_key[key] for key in dict.fromkeys(study.only) if by_key[key] in todo]


def _child(study: Study, run: RunSpec, settings_file: Path) -> int:
    """Run one run in a fresh single-thread process (its output goes to the run's .out file)."""
    threads = str(study.settings.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    command = [
        sys.executable, str(Path(__file__).resolve()), "--settings-file", str(settings_file),
        "--run-one", run.key, "--results-log", str(study.log), "--work-dir", str(study.work),
        "--sen1floods11", str(study.sen1floods11),
    ]  # fmt: skip
    out = study.work / f"{run.name}.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        code = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
    print(f"  {'ok ' if code == 0 else 'FAILED'} {run.key} (exit {code}; output {out})", flush=True)
    return code


def run_study(study: Study, jobs: int = 1) -> int:
    """Run every pending run (``jobs`` processes side by side, else in this process); failed runs count."""
    runs, todo = pending(study)
    logged = len(ResultsLog(study.log).done_keys(code_fingerprint(), study.settings_id))
    chosen = f" of the {len(study.only)} chosen (--only)" if study.only else ""
    print(
        f"study {study.settings_id}: {len(runs)} runs, {logged} already logged for this code, "
        f"{len(todo)}{chosen} to run -> {study.log}",
        flush=True,
    )
    if "main" in study.parts and "shaspec" in study.settings.methods and shaspec_weights(study) is None:
        print("  the main study's ShaSpec runs wait for the ShaSpec tuning grid (part shaspec_tuning)")
    if jobs <= 1:
        cache: DataCache = {}
        for run in todo:
            run_one(study, run, cache)
        return 0
    study.work.mkdir(parents=True, exist_ok=True)
    settings_file = study.work / f"settings-{study.settings_id}.json"
    settings_file.write_text(json.dumps(study.settings.to_dict(), indent=1))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(lambda run: _child(study, run, settings_file), todo))
    return sum(code != 0 for code in codes)


def _csv(text: str, kind: type = str) -> tuple[Any, ...]:
    return tuple(kind(v) for v in text.replace(",", " ").split())


def _keys(text: str) -> tuple[str, ...]:
    """``a,b`` or ``@file`` (one key per line, ``#`` comments) -> keys."""
    if text.startswith("@"):
        lines = Path(text[1:]).read_text().splitlines()
        return tuple(k for k in (line.split("#")[0].strip() for line in lines) if k)
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _option(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--train-option takes key=value, got {text!r}")
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_argument_group("what to do (default: run the pending runs, then render)")
    mode.add_argument("--render", action="store_true", help="only render results from the log")
    mode.add_argument("--plan", action="store_true", help="list the study's runs: done or to do")
    mode.add_argument("--jobs", type=int, default=1, help="runs side by side, one process each")
    mode.add_argument("--run-one", metavar="KEY", help=argparse.SUPPRESS)
    mode.add_argument(
        "--only",
        type=_keys,
        default=(),
        metavar="KEYS",
        help="run only these run keys (see --plan), in this order: comma-separated, or @FILE, one per line",
    )
    mode.add_argument("--settings-file", type=Path, help="study settings as JSON (overrides settings flags)")
    s = parser.add_argument_group("study settings (the same flags identify the study for --render)")
    defaults = StudySettings()
    for name in SETTINGS_FLAGS:
        value = getattr(defaults, name)
        s.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None, help=f"default {value}")
    s.add_argument("--channels-last", action="store_true", default=None, help="channels-last training")
    s.add_argument("--methods", type=_csv, default=None, help=f"default {','.join(defaults.methods)}")
    s.add_argument("--seeds", type=lambda t: _csv(t, int), default=None, help="default 0,1,2")
    s.add_argument("--sweep-seeds", type=lambda t: _csv(t, int), default=None, help="default 0,1,2")
    s.add_argument("--sweep-lambdas", type=lambda t: _csv(t, float), default=None, help="default 0.1,1,10")
    s.add_argument(
        "--train-option", type=_option, action="append", default=[], help="extra TrainConfig field k=v"
    )
    s.add_argument("--quick", action="store_true", help="tiny smoke-test settings (numbers meaningless)")
    s.add_argument("--parts", type=_csv, default=PARTS, help=f"default {','.join(PARTS)}")
    io = parser.add_argument_group("files")
    io.add_argument("--results-log", type=Path, default=RESULTS_LOG, help="JSONL run records")
    io.add_argument("--out", type=Path, default=RESULTS, help="folder for JSON, Markdown and plots")
    io.add_argument("--work-dir", type=Path, default=Path("/tmp/stars_edge_accuracy"), help="run folders")
    io.add_argument("--sen1floods11", type=Path, default=SEN1FLOODS11, help="Sen1Floods11 sample folder")
    io.add_argument("--fingerprint", help="render only runs of this code fingerprint (prefix, or 'current')")
    mode.add_argument(
        "--carry-over-from",
        metavar="COMMIT",
        help="probe the study's run kinds under COMMIT and the current (committed) code; when every probe "
        "matches, log an alias so COMMIT's finished runs count for the current code "
        "(benchmarks/accuracy_compat.py)",
    )
    mode.add_argument(
        "--recipe-change",
        choices=sorted(RECIPE_CHANGES),
        help="with --carry-over-from: the recipe changed on purpose; carry only the runs whose kind computes "
        "the same under both (renamed where the change says; RECIPE_CHANGES in benchmarks/accuracy_plan.py)",
    )
    io.add_argument(
        "--allow-mixed", action="store_true", help="render runs of several code versions, labelled"
    )
    io.add_argument(
        "--int8-manifest",
        type=Path,
        action="append",
        default=[],
        help="engine folder whose manifest has the INT8 gate results; repeat for several checkpoints (the "
        "worst drop per pattern counts)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """Defaults, then ``--quick``, then explicit flags (or the settings file, as written by the runner)."""
    if args.settings_file is not None:
        return StudySettings.from_dict(json.loads(args.settings_file.read_text()))
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for f in dataclasses.fields(StudySettings):
        given = getattr(args, f.name, None)
        if given is not None and f.name != "train_options":
            values[f.name] = given
    settings = StudySettings(**values)
    settings.train_options.update(dict(args.train_option))
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    study = Study(
        settings_from_args(args),
        tuple(args.parts),
        args.results_log,
        args.work_dir,
        args.sen1floods11,
        args.only,
    )
    command = " ".join(["python benchmarks/accuracy.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        if args.run_one:
            matches = [
                r for r in plan(study.settings, PARTS, shaspec_weights(study)) if r.key == args.run_one
            ]
            if not matches:
                raise BenchmarkError(f"no run {args.run_one!r} in this study; see --plan")
            run_one(study, matches[0])
            return 0
        if args.carry_over_from:
            from benchmarks.accuracy_compat import verify_carry_over

            alias = verify_carry_over(
                study.log,
                args.carry_over_from,
                study.settings,
                study.sen1floods11,
                recipe_change=args.recipe_change,
            )
            if not alias["carried"]:
                raise BenchmarkError(
                    f"{args.carry_over_from} computes differently: probes {', '.join(alias['differing'])} "
                    "differ; its runs stay with their code"
                )
            moved = f"{len(alias['runs'])} runs" if "runs" in alias else "every run"
            print(f"carried over ({moved}): {alias['alias']['from'][:12]} -> {alias['alias']['to'][:12]}")
            if alias["differing"]:
                print(f"not carried (computes differently now): {', '.join(alias['differing'])}")
            return 0
        if args.plan:
            runs, todo = pending(study)
            for run in runs:
                print(f"{'todo' if run in todo else 'done'}  {run.key}")
            print(f"{len(runs) - len(todo)}/{len(runs)} done for code {code_fingerprint()[:16]}")
            return 0
        failed = 0 if args.render else run_study(study, args.jobs)
        render_study(study, args.out, args.fingerprint, args.allow_mixed, args.int8_manifest, command)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
