"""The accuracy study's targets: PASS / MISS from the numbers, seeds compared only where both sides have them,
and the INT8 target over every manifest. Made-up rows only: no training.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import accuracy_targets  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS  # noqa: E402

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
