"""The accuracy study's plan (issue 22): ShaSpec tuned on validation scenes, the lambda_tr = 0 control, the
fidelity variants and the low-label runs, each with its own run key and training options."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import accuracy  # noqa: E402
from benchmarks.accuracy_plan import RECIPE_CHANGES, recipe_renamed  # noqa: E402
from benchmarks.accuracy_runs import (  # noqa: E402
    SHASPEC_GRID,
    RunSpec,
    StudySettings,
    choose_shaspec,
    plan,
    run_options,
    shaspec_tuning_runs,
    synthetic_data,
    train_config,
)

SETTINGS = StudySettings(
    variant="tiny", steps=2, batch_size=2, tile_size=64, train_scenes=4, train_scene_size=128, val_scenes=1,
    test_scenes=1, scene_size=64, seeds=(0, 1), sweep_seeds=(0,),
)  # fmt: skip


def _tuning_record(run: RunSpec, validation: float, test: float) -> dict[str, Any]:
    return {"key": run.key, "curve": [{"step": 2, "miou": validation}], "rows": [{"miou": test}]}


def test_shaspec_waits_for_its_tuning_grid_then_uses_the_best_validation_pair() -> None:
    keys = [r.key for r in plan(SETTINGS, ("main",))]
    assert not [k for k in keys if "/shaspec/" in k]  # not tuned yet: left out
    grid = shaspec_tuning_runs(SETTINGS)
    assert len(grid) == len(SHASPEC_GRID) == 9 and {r.seed for r in grid} == {0}
    # the test scores favour the first pair, validation the fifth: validation decides
    records = [_tuning_record(run, 50.0 + (i == 4) * 5, 90.0 - i) for i, run in enumerate(grid)]
    assert choose_shaspec(records[:-1], SETTINGS) is None  # an unfinished grid chooses nothing
    chosen = choose_shaspec(records, SETTINGS)
    assert chosen == SHASPEC_GRID[4]
    shaspec = [r for r in plan(SETTINGS, ("main",), chosen) if r.method == "shaspec"]
    assert [r.seed for r in shaspec] == [0, 1]
    assert shaspec[0].key == grid[4].key  # seed 0's main run is that tuning run
    config = train_config(SETTINGS, shaspec[1], Path("/tmp/unused"))
    assert (config.lambda_shaspec_align, config.lambda_shaspec_domain) == SHASPEC_GRID[4]


def test_the_sweep_has_one_lambda_zero_control_and_the_main_methods_both_psa_ablations() -> None:
    runs = plan(SETTINGS, ("main", "sweep"))
    zero = [r for r in runs if r.lambda_tr == 0.0]
    assert [(r.method, r.seed) for r in zero] == [("stars", 0)]
    assert train_config(SETTINGS, zero[0], Path("/tmp/unused")).lambda_tr == 0.0
    methods = {r.method for r in runs}
    assert {"stars_no_psa", "stars_psa_uniform"} <= methods


def test_fidelity_runs_change_only_their_option() -> None:
    """The fidelity ablations left: the former recipe (stride 32 only) and the cheaper strides 16-32."""
    runs = plan(SETTINGS, ("fidelity",))
    assert len(runs) == 2 * len(SETTINGS.seeds)
    configs = [train_config(SETTINGS, r, Path("/tmp/unused")) for r in runs]
    assert [c.translation_scales for c in configs[:2]] == [(3,), (2, 3)]
    assert configs[0].psa_views == "real" and configs[0].translation_target is None
    shipped = train_config(SETTINGS, RunSpec("synthetic", "stars", 0), Path("/tmp/unused"))
    assert shipped.translation_scales is None  # the model's default: strides 8-32
    assert len({r.key for r in runs}) == len(runs) and all("," not in r.key for r in runs)


def test_a_recipe_change_renames_only_exact_option_sets_of_translating_methods() -> None:
    changes = RECIPE_CHANGES["translation-strides-8-32"]
    former = RunSpec("synthetic", "stars", 1, options=run_options(translation_scales=(1, 2, 3)))
    assert recipe_renamed(former, changes) == RunSpec("synthetic", "stars", 1)
    assert recipe_renamed(RunSpec("synthetic", "stars", 1), changes).options == (
        ("translation_scales", (3,)),
    )
    assert recipe_renamed(RunSpec("synthetic", "stars", 1), changes, forward=False) == former
    untouched = [
        RunSpec("synthetic", "zero_fill_dropout", 0),
        RunSpec("synthetic", "stars", 0, options=run_options(synthetic_train_scenes=2)),
        RunSpec("synthetic", "stars", 0, options=run_options(psa_views="real+translated")),
    ]
    assert [recipe_renamed(r, changes) for r in untouched] == untouched


def test_low_label_runs_hold_labelled_and_unlabelled_scenes_apart() -> None:
    runs = [r for r in plan(SETTINGS, ("low_label",)) if r.seed == 0]
    # L = 1 and 2 (4 = train_scenes is the main study): stars +U, stars, zero-fill, 3 specialists each
    assert len(runs) == 2 * 6
    unlabelled = [r for r in runs if r.data_options.get("synthetic_unlabelled_scenes")]
    assert [(r.method, r.data_options) for r in unlabelled] == [
        ("stars", {"synthetic_train_scenes": 1, "synthetic_unlabelled_scenes": 3}),
        ("stars", {"synthetic_train_scenes": 2, "synthetic_unlabelled_scenes": 2}),
    ]
    data = synthetic_data(SETTINGS, 0, unlabelled[0].data_options)
    assert data.info["train_seeds"] == [0, 0] and data.info["unlabelled_seeds"] == [1, 3]
    assert data.train.unlabelled is not None and len(data.train.train.scenes) == 1


def test_run_keys_with_options_parse_as_only_keys() -> None:
    runs = plan(SETTINGS, ("low_label",))
    text = ",".join(r.key for r in runs[:3])
    assert accuracy._keys(text) == tuple(r.key for r in runs[:3])
