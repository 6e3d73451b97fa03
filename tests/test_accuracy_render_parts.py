"""Rendering the accuracy study's parts (issue 22) from made-up results-log records (no training): the main
table keeps to the shipped recipe and the chosen ShaSpec pair, and the ShaSpec tuning, PSA, sweep, fidelity,
low-label and carry-over parts each show up where they belong."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import accuracy, accuracy_low_label, accuracy_render, accuracy_targets  # noqa: E402
from benchmarks.accuracy_runs import (  # noqa: E402
    SHASPEC_GRID,
    RunSpec,
    StudySettings,
    run_options,
    shaspec_options,
    shaspec_tuning_runs,
)
from benchmarks.accuracy_store import ResultsLog  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS  # noqa: E402

PATTERNS = [p.name for p in ALL_PATTERNS]
MISSING = list(accuracy_targets.MISSING_PATTERNS)
STUDY = dict(
    variant="tiny", steps=100, batch_size=2, tile_size=64, train_scenes=4, train_scene_size=128, val_scenes=1,
    val_every=50, test_scenes=1, scene_size=64, seeds=(0, 1), sweep_seeds=(0,),
    methods=("stars", "zero_fill_dropout", "shaspec"), sweep_lambdas=(0.0, 0.1, 1.0, 10.0),
)  # fmt: skip
ALL_PARTS = ("main", "shaspec_tuning", "sweep", "fidelity", "low_label")
FIDELITY = run_options(translation_scales=(3,))
LEAK = 99.0  # the score of every run that must stay out of the main table


def _study(tmp_path: Path, parts: tuple[str, ...] = ALL_PARTS, **changes: Any) -> accuracy.Study:
    return accuracy.Study(
        StudySettings(**{**STUDY, **changes}), parts, tmp_path / "log.jsonl", tmp_path / "w"
    )


def _record(
    study: accuracy.Study,
    run: RunSpec,
    miou: float | dict[str, float],
    validation: float = 50.0,
    fingerprint: str = "code-a",
    rise: float = 1.0,
) -> dict[str, Any]:
    """A results-log record as ``run_one`` writes it (spec through ``RunSpec``), with made-up scores."""
    if run.method == "single_modality":
        patterns = [run.modalities[0]]
    else:
        patterns = [p for p in PATTERNS if set(p.split("+")) <= set(run.modalities)]
    scores = miou if isinstance(miou, dict) else dict.fromkeys(patterns, miou)
    return {
        "key": run.key,
        "spec": {
            **run.__dict__,
            "modalities": list(run.modalities),
            "options": [list(o) for o in run.options],
        },
        "fingerprint": fingerprint,
        "commit": "abc123",
        "dirty": False,
        "settings_id": study.settings_id,
        "settings": study.settings.to_dict(),
        "finished": "2026-01-01T00:00:00Z",
        "run": {"train_seconds": 1.0, "seconds_per_step": 0.5, "flops_per_step": 2e9, "parameters": 1000},
        "curve": [
            {"step": 50, "miou": validation - rise, "per_pattern": {}},
            {"step": 100, "miou": validation, "per_pattern": {}},
        ],
        "rows": [
            {"pattern": p, "miou": v, "per_class_iou": {"background": v, "car": v, "building": v}}
            for p, v in scores.items()
        ],
        "data": {
            "test_class_pixels": {"background": 9000, "car": 2000, "building": 3000},
            "val_seeds": [7, 7],
        },
    }


def _log(study: accuracy.Study, *records: dict[str, Any]) -> None:
    log = ResultsLog(study.log)
    for record in records:
        log.append(record)


def _grid(study: accuracy.Study, best: int = 4, skip: int | None = None) -> list[dict[str, Any]]:
    """The 9 tuning runs: pair ``best`` has the best validation mIoU, pair 0 the best test mIoU."""
    return [
        _record(study, run, LEAK if i == 0 else 40.0 + i, validation=70.0 if i == best else 60.0)
        for i, run in enumerate(shaspec_tuning_runs(study.settings))
        if i != skip
    ]


def _render(study: accuracy.Study, tmp_path: Path) -> tuple[dict[str, Any], str, list[Any]]:
    out = tmp_path / "out"
    evaluated = accuracy.render_study(study, out, command="test")
    return (
        json.loads((out / "accuracy_synthetic.json").read_text()),
        (out / "accuracy_synthetic.md").read_text(),
        evaluated,
    )


def _main_part(text: str) -> str:
    """The Markdown up to the sections of the other parts (targets, main table, per-class, curves)."""
    return text.split("## lambda_tr sweep")[0].split("## ShaSpec tuning")[0]


# --------------------------------------------------------------------------- main table, ShaSpec tuning


def test_main_table_holds_the_shipped_recipe_and_the_chosen_shaspec_only(tmp_path: Path) -> None:
    study = _study(tmp_path)
    chosen = shaspec_options(*SHASPEC_GRID[4])
    main_runs = [RunSpec("synthetic", m, s) for m in ("stars", "zero_fill_dropout") for s in (0, 1)]
    _log(
        study,
        *[_record(study, run, 60.0 if run.method == "stars" else 50.0) for run in main_runs],
        *_grid(study),
        _record(study, RunSpec("synthetic", "shaspec", 1, options=chosen), 44.0),
        _record(study, RunSpec("synthetic", "stars", 0, options=FIDELITY), LEAK, rise=LEAK),
        _record(
            study,
            RunSpec("synthetic", "stars", 0, options=run_options(synthetic_train_scenes=1)),
            LEAK,
            rise=LEAK,
        ),
        _record(study, RunSpec("synthetic", "stars", 0, 0.1), LEAK, rise=LEAK),
    )
    data, text, evaluated = _render(study, tmp_path)
    grid_chosen = shaspec_tuning_runs(study.settings)[4].key
    assert {r["key"] for r in data["runs"]} == {r.key for r in main_runs} | {
        grid_chosen,
        RunSpec("synthetic", "shaspec", 1, options=chosen).key,
    }
    shaspec = [r for r in data["rows"] if r["method"] == "shaspec"]
    assert {r["seed"] for r in shaspec} == {0, 1}
    assert {r["options"] for r in shaspec} == {"lambda_shaspec_align=0.1:lambda_shaspec_domain=0.1"}
    assert {r["options"] for r in data["rows"] if r["method"] != "shaspec"} == {""}
    assert all(r["miou"] != LEAK for r in data["rows"])
    # nor in the targets, the per-class table or the curves above the other parts' sections
    assert "99.00" not in _main_part(text) and "## Per-class IoU" in _main_part(text)
    assert "## Validation curves" in _main_part(text)
    assert all("99.00" not in t.detail for t in evaluated)
    budget = next(t for t in evaluated if t.name.startswith("budget"))  # the curves: main runs only
    assert budget.detail == "stars +1.00, zero_fill_dropout +1.00, shaspec +1.00"
    assert data["shaspec_tuning"]["chosen"] == list(SHASPEC_GRID[4])


def test_shaspec_tuning_section_shows_validation_scores_and_the_chosen_pair(tmp_path: Path) -> None:
    study = _study(tmp_path)
    _log(study, *_grid(study))
    _, text, _ = _render(study, tmp_path)
    section = text.split("## ShaSpec tuning")[1].split("\n## ")[0]
    assert "validation scenes" in section and "never the test scenes" in section
    assert "Chosen: align 0.1, domain 0.1" in section  # best validation, not pair 0's best test score
    assert section.count("| 70.00 |") == 1 and section.count("| 60.00 |") == 8
    chosen_rows = [line for line in section.splitlines() if "**chosen**" in line]
    assert chosen_rows == ["| 0.1 | 0.1 | 70.00 | 100 | **chosen** |"]


def test_unfinished_tuning_says_how_far_it_is_and_keeps_shaspec_out(tmp_path: Path) -> None:
    study = _study(tmp_path)
    chosen = shaspec_options(*SHASPEC_GRID[4])
    _log(
        study,
        _record(study, RunSpec("synthetic", "stars", 0), 60.0),
        *_grid(study, skip=8),
        _record(study, RunSpec("synthetic", "shaspec", 1, options=chosen), 44.0),
    )
    data, text, _ = _render(study, tmp_path)
    assert "tuning incomplete: 8/9" in text and "not logged" in text
    assert {r["method"] for r in data["rows"]} == {"stars"}
    assert data["shaspec_tuning"]["chosen"] is None and data["shaspec_tuning"]["done"] == 8


# --------------------------------------------------------------------------- PSA, sweep


def _rows(method: str, miou: float, seed: int, lam: float = 2.0, car: float = 10.0) -> list[dict[str, Any]]:
    return [
        {
            "method": method,
            "pattern": p,
            "miou": miou,
            "seed": seed,
            "lambda_tr": lam,
            "per_class_iou": {"car": car},
        }
        for p in PATTERNS
    ]


def test_psa_targets_compare_balancing_with_uniform_and_psa_with_none() -> None:
    rows = []
    for seed in (0, 1, 2):
        rows += _rows("stars", 60.0 + seed, seed, car=14.0)
    for seed in (0, 1):  # stars_no_psa lacks seed 2: the difference pairs seeds 0 and 1
        rows += _rows("stars_no_psa", 59.0 + 2 * seed, seed, car=40.0)
        rows += _rows("stars_psa_uniform", 50.0, seed, car=10.0)
    targets = accuracy_targets.evaluate(rows, [], (0.1,))
    (car,) = [t for t in targets if t.name.startswith("PSA balancing") and "car" in t.name]
    assert car.status == "PASS" and car.detail.startswith("+4.00")  # against uniform, not no-PSA (-26)
    itself = [t for t in targets if t.name.startswith("PSA itself")]
    assert [t.name for t in itself] == [
        "PSA itself: stars - stars_no_psa, mean mIoU over the 6 missing-modality patterns (PASS when > 0)",
        "PSA itself: stars - stars_no_psa, mean mIoU over all 7 (PASS when > 0)",
    ]
    # seed 0: 60 - 59 = +1, seed 1: 61 - 61 = 0 -> +0.50 ± 0.71
    assert all(t.status == "PASS" and t.detail.startswith("+0.50 ± 0.71 (seeds 0, 1") for t in itself)
    worse = [r if r["method"] != "stars" else {**r, "miou": 50.0} for r in rows]
    assert {t.status for t in accuracy_targets.psa_itself_targets(worse)} == {"MISS"}


def test_sweep_keeps_lambda_zero_for_stars_and_the_spread_leaves_it_out(tmp_path: Path) -> None:
    study = _study(tmp_path, ("main", "sweep"), methods=("stars",), seeds=(0,))
    records = [_record(study, RunSpec("synthetic", "stars", 0), dict.fromkeys(PATTERNS, 60.0))]
    for lam, stars, free in ((0.0, 57.0, None), (0.1, 60.0, 58.0), (1.0, 60.5, 60.0), (10.0, 60.2, 52.0)):
        records.append(_record(study, RunSpec("synthetic", "stars", 0, lam), stars))
        if free is not None:
            records.append(_record(study, RunSpec("synthetic", "stars_no_stopgrad", 0, lam), free))
    _log(study, *records)
    _, text, evaluated = _render(study, tmp_path)
    sweep = text.split("## lambda_tr sweep")[1]
    assert "| stars λ_tr=0 |" in sweep and "stars_no_stopgrad λ_tr=0 |" not in sweep
    stopgrad = next(t for t in evaluated if t.name.startswith("stop-gradient"))
    assert stopgrad.status == "PASS" and "spread 0.50 vs 8.00" in stopgrad.detail
    assert "over lambda_tr 0.1, 1, 10" in stopgrad.detail
    translation = next(t for t in evaluated if t.name.startswith("translation loss's own contribution"))
    assert "lambda_tr=2 minus lambda_tr=0" in translation.name
    assert translation.status == "PASS" and translation.detail.startswith("+3.00 (seed 0")
    assert f"- {translation.name}: **PASS**" in sweep  # the line under the sweep table
    zero = [r for r in ResultsLog(study.log).read() if r["spec"]["lambda_tr"] == 0.0]
    less = [{**r, "miou": 61.0} for r in accuracy_render.flatten(zero)]
    assert accuracy_targets.translation_target(less).status == "n/a"  # no lambda 2 rows: no pair


# --------------------------------------------------------------------------- fidelity, low label


def test_fidelity_variants_against_the_shipped_stars_on_paired_seeds(tmp_path: Path) -> None:
    study = _study(tmp_path, ("main", "fidelity"), methods=("stars",), seeds=(0, 1, 2))
    shipped = [_record(study, RunSpec("synthetic", "stars", s), 60.0 + s) for s in (0, 1)]
    shipped.append(_record(study, RunSpec("synthetic", "stars", 2), 30.0))  # no variant pairs with it
    variant = [
        _record(study, RunSpec("synthetic", "stars", s, options=FIDELITY), 61.0 + 2 * s) for s in (0, 1)
    ]
    _log(study, *shipped, *variant)
    data, text, _ = _render(study, tmp_path)
    section = text.split("## Fidelity variants")[1].split("\n## ")[0]
    lines = {line.split(" | ")[0]: line for line in section.splitlines() if line.startswith("| ")}
    assert "| stars (shipped) | 0, 1, 2 | 50.33 ± 17.62" in section
    assert lines["| stars translation_scales=3"].startswith("| stars translation_scales=3 | 0, 1 | 62.00")
    # seed 0: +1, seed 1: +2 (seed 2 has no variant run)
    assert lines["| Δ translation_scales=3 − shipped"].count("+1.50 ± 0.71") == 9
    assert "translation_scales=2-3 | none |" in section  # the variant without runs says so
    assert data["fidelity"]["translation_scales=3"]["0"]["missing"] == 61.0
    assert all(r["options"] == "" for r in data["rows"])


def _low_label_records(study: accuracy.Study) -> list[dict[str, Any]]:
    """Main runs (L = 4) and L = 1 runs for seeds 0 and 1; the specialists' validation favours sar while
    the optical specialist has the better test score."""
    records = []
    specialists = {"optical": (55.0, 40.0), "sar": (45.0, 50.0), "dsm": (30.0, 20.0)}  # (test, validation)
    for seed in (0, 1):
        for labelled, options in ((4, ()), (1, run_options(synthetic_train_scenes=1))):
            drop = 0.0 if labelled == 4 else 20.0
            unlabelled = run_options(synthetic_train_scenes=1, synthetic_unlabelled_scenes=3)
            records.append(
                _record(study, RunSpec("synthetic", "stars", seed, options=options), 60.0 + seed - drop)
            )
            records.append(
                _record(study, RunSpec("synthetic", "zero_fill_dropout", seed, options=options), 50.0)
            )
            if labelled == 1:
                records.append(_record(study, RunSpec("synthetic", "stars", seed, options=unlabelled), 45.0))
            for modality, (test, validation) in specialists.items():
                run = RunSpec("synthetic", "single_modality", seed, 2.0, (modality,), options=options)
                records.append(_record(study, run, test - drop, validation))
    return records


def test_low_label_rows_lines_and_specialists_chosen_on_validation(tmp_path: Path) -> None:
    study = _study(tmp_path)
    rows = accuracy_low_label.low_label_rows(_low_label_records(study), train_scenes=4)
    by = {(r["line"], r["labelled_scenes"], r["seed"]): r for r in rows}
    assert {(line, n) for line, n, _ in by} == {
        (line, n) for line in accuracy_low_label.LINES for n in (1, 4)
    }
    main_stars = by[("stars_unlabelled", 4, 0)]
    assert (
        main_stars["main_study"]
        and main_stars["mean_missing"] == 60.0
        and main_stars["unlabelled_scenes"] == 0
    )
    assert by[("stars_labelled", 4, 1)]["full"] == 61.0 and by[("stars_unlabelled", 1, 0)]["full"] == 45.0
    assert by[("stars_unlabelled", 1, 0)]["unlabelled_scenes"] == 3
    specialist = by[("best_specialist", 4, 0)]
    assert specialist["specialist_picked"]["optical+sar"] == "sar"  # validation 50 > 40, test 45 < 55
    assert specialist["per_pattern"]["optical+sar"] == 45.0 and specialist["full"] == 45.0
    assert specialist["per_pattern"]["optical+dsm"] == 55.0 and specialist["per_pattern"]["dsm"] == 30.0
    assert abs(specialist["mean_missing"] - (45 + 55 + 45 + 55 + 45 + 30) / 6) < 1e-9
    summary = {(e["line"], e["labelled_scenes"]): e for e in accuracy_low_label.summarise(rows)}
    entry = summary[("stars_labelled", 4)]
    assert entry["mean_missing"] == 60.5 and abs(entry["mean_missing_std"] - 0.7071) < 1e-3
    assert entry["mean_missing_seeds"] == [0, 1]


def test_low_label_section_plot_and_json_are_written(tmp_path: Path) -> None:
    study = _study(tmp_path, methods=("stars", "zero_fill_dropout", "single_modality"))
    _log(study, *_low_label_records(study))
    data, text, _ = _render(study, tmp_path)
    section = text.split("## Low-label study")[1]
    assert "![low-label study](accuracy_low_label.png)" in section
    assert "| line | L=1 | L=4 (main study) |" in section
    assert "| STARS + unlabelled scenes | 45.00 ± 0.00 (n=2) | 60.50 ± 0.71 (n=2) |" in section
    assert "validation scenes, not test" in section
    out = tmp_path / "out"
    assert (out / "accuracy_low_label.png").stat().st_size > 0
    low = json.loads((out / "accuracy_low_label.json").read_text())
    assert {r["labelled_scenes"] for r in low["rows"]} == {1, 4} and low["summary"]
    # the L = 1 runs stay out of the main table; the main runs are its L = 4 points
    assert {r["options"] for r in data["rows"]} == {""}
    assert {r["seed"] for r in data["rows"] if r["method"] == "single_modality"} == {0, 1}


# --------------------------------------------------------------------------- rows' options, carried runs


def test_rows_carry_their_run_options() -> None:
    study = accuracy.Study(StudySettings(**STUDY))
    rows = accuracy_render.flatten(
        [
            _record(study, RunSpec("synthetic", "stars", 0, options=FIDELITY), 60.0),
            _record(study, RunSpec("synthetic", "stars", 0), 60.0),
        ]
    )
    assert {r["options"] for r in rows} == {"translation_scales=3", ""}


def test_settings_say_how_many_runs_were_carried_and_from_which_commits(tmp_path: Path) -> None:
    study = _study(tmp_path, ("main",), methods=("stars",), seeds=(0, 1, 2))
    old = [
        {
            **_record(study, RunSpec("synthetic", "stars", s), 60.0, fingerprint="old-code"),
            "commit": "0ld" * 6,
        }
        for s in (0, 1)
    ]
    alias = {
        "alias": {"from": "old-code", "to": "code-a"},
        "old_commit": "0ld" * 6,
        "new_commit": "new" * 6,
        "verified": "2026-02-02T00:00:00Z",
        "carried": True,
    }
    _log(study, *old, alias, _record(study, RunSpec("synthetic", "stars", 2), 61.0))
    data, text, _ = _render(study, tmp_path)
    assert data["settings"]["carried_runs"] == 2 and data["settings"]["carried_from_commits"] == ["0ld" * 6]
    assert "Carried over: 2 of 3 runs ran with earlier code (commit(s) 0ld0ld0ld0ld)" in text
    assert "0ld0ld0ld0ld->newnewnewnew on 2026-02-02T00:00:00Z" in text
    assert "MIXED" not in text
