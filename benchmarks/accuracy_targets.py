"""The issue's targets evaluated on the study's rows, each PASS / MISS with the numbers behind it.

Claims (issue 11): STARS >= the single-modality model on its modality; STARS > zero-fill and > ShaSpec on
every pattern with a missing modality; PSA's balanced sampling gains >= +1 IoU on `car` and `building` over
uniform sampling (``stars_psa_uniform``); PSA itself (``stars`` - ``stars_no_psa``, no PSA at all) and the
translation loss itself (``stars`` at the shipped lambda_tr - ``stars`` at lambda_tr = 0) as measured mIoU
differences, PASS when > 0; the lambda_tr spread of STARS is at most half that of STARS without
stop-gradient (over the lambdas both have: 0 is a STARS-only control); INT8 loses at most 0.5 mIoU (from
the export gate). Evidence checks: every test class has thousands of pixels, the seed-to-seed std of STARS's
mean mIoU is at most 1.0, and the validation curves are flat at the end of the budget. A target without the
runs it needs is ``n/a``, never a PASS. Means are over seeds (and patterns where stated), paired by seed
where two methods are compared, rows as in ``accuracy_synthetic.json``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: lambda_tr of the main table (the shipped default, ``TrainConfig.lambda_tr``); the sweep varies it.
DEFAULT_LAMBDA_TR = 2.0

FULL_PATTERN = "optical+sar+dsm"
MISSING_PATTERNS: tuple[str, ...] = ("optical+sar", "optical+dsm", "sar+dsm", "optical", "sar", "dsm")
ALL_PATTERN_NAMES: tuple[str, ...] = (FULL_PATTERN, *MISSING_PATTERNS)
SINGLE: tuple[str, ...] = ("optical", "sar", "dsm")
MIN_CLASS_PIXELS = 1000
MAX_SEED_STD = 1.0
MAX_LAST_QUARTER_GAIN = 1.0
PSA_CLASSES: tuple[str, ...] = ("car", "building")
PSA_MIN_GAIN = 1.0
INT8_MAX_DROP = 0.5


@dataclass(frozen=True)
class Target:
    """One claim or evidence check: ``status`` is PASS, MISS or n/a; ``detail`` carries the numbers."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        """One printable line."""
        return f"{self.status:<4}  {self.name}: {self.detail}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _cell(
    rows: Sequence[Mapping[str, Any]],
    method: str,
    pattern: str,
    lam: float = DEFAULT_LAMBDA_TR,
    seeds: Collection[int] | None = None,
) -> float | None:
    """Mean over ``seeds`` (default all) of one method's mIoU on one pattern (``None`` without rows)."""
    values = [
        float(r["miou"])
        for r in rows
        if r["method"] == method
        and r["pattern"] == pattern
        and float(r.get("lambda_tr", DEFAULT_LAMBDA_TR)) == lam
        and r["miou"] is not None
        and (seeds is None or int(r["seed"]) in seeds)
    ]
    return float(np.mean(values)) if values else None


def common_seeds(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[int]:
    """Seeds every one of ``methods`` has rows for (at the shipped lambda_tr): compare like with like."""
    sets = [{int(r["seed"]) for r in rows if r["method"] == m and r["miou"] is not None} for m in methods]
    return sorted(set.intersection(*sets)) if sets else []


def _seeds_note(seeds: Sequence[int]) -> str:
    return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}"


def seed_means(
    rows: Sequence[Mapping[str, Any]], method: str, lam: float = DEFAULT_LAMBDA_TR
) -> dict[int, float]:
    """Per seed, the method's mIoU averaged over the patterns it was scored on."""
    by_seed: dict[int, list[float]] = {}
    for r in rows:
        if (
            r["method"] == method
            and float(r.get("lambda_tr", DEFAULT_LAMBDA_TR)) == lam
            and r["miou"] is not None
        ):
            by_seed.setdefault(int(r["seed"]), []).append(float(r["miou"]))
    return {seed: float(np.mean(v)) for seed, v in sorted(by_seed.items())}


def single_modality_targets(rows: Sequence[Mapping[str, Any]]) -> list[Target]:
    """STARS >= the model trained on that modality alone, on that modality's pattern (same seeds)."""
    main = [r for r in rows if float(r.get("lambda_tr", DEFAULT_LAMBDA_TR)) == DEFAULT_LAMBDA_TR]
    out = []
    for modality in SINGLE:
        name = f"STARS >= single-modality model on {modality}"
        singles = [r for r in main if r["method"] != "single_modality" or r["pattern"] == modality]
        seeds = common_seeds(singles, ("stars", "single_modality"))
        stars = _cell(main, "stars", modality, seeds=seeds) if seeds else None
        single = _cell(main, "single_modality", modality, seeds=seeds) if seeds else None
        if stars is None or single is None:
            out.append(Target(name, "n/a", "runs missing"))
        else:
            detail = f"{stars:.2f} vs {single:.2f} ({stars - single:+.2f}; {_seeds_note(seeds)})"
            out.append(Target(name, _verdict(stars >= single), detail))
    return out


def baseline_targets(rows: Sequence[Mapping[str, Any]], baseline: str) -> Target:
    """STARS > ``baseline`` on each of the six patterns with a missing modality (same seeds)."""
    name = f"STARS > {baseline} on each of the 6 missing-modality patterns"
    main = [r for r in rows if float(r.get("lambda_tr", DEFAULT_LAMBDA_TR)) == DEFAULT_LAMBDA_TR]
    seeds = common_seeds(main, ("stars", baseline))
    diffs = {}
    for pattern in MISSING_PATTERNS:
        stars = _cell(main, "stars", pattern, seeds=seeds) if seeds else None
        other = _cell(main, baseline, pattern, seeds=seeds) if seeds else None
        if stars is None or other is None:
            return Target(name, "n/a", f"runs missing ({pattern})")
        diffs[pattern] = stars - other
    wins = sum(d > 0 for d in diffs.values())
    detail = f"{wins}/6 patterns; " + ", ".join(f"{p} {d:+.2f}" for p, d in diffs.items())
    return Target(name, _verdict(wins == len(MISSING_PATTERNS)), f"{detail} ({_seeds_note(seeds)})")


def psa_targets(rows: Sequence[Mapping[str, Any]]) -> list[Target]:
    """PSA's balanced sampling: ``stars`` minus ``stars_psa_uniform`` (PSA with uniform sampling) IoU on each
    minority class, paired by pattern and seed."""
    paired: dict[tuple[str, int], Mapping[str, Any]] = {
        (r["pattern"], int(r["seed"])): r
        for r in rows
        if r["method"] == "stars_psa_uniform"
        and float(r.get("lambda_tr", DEFAULT_LAMBDA_TR)) == DEFAULT_LAMBDA_TR
    }
    out = []
    for cls in PSA_CLASSES:
        diffs = []
        for r in rows:
            other = paired.get((r["pattern"], int(r["seed"])))
            if (
                r["method"] != "stars"
                or float(r.get("lambda_tr", DEFAULT_LAMBDA_TR)) != DEFAULT_LAMBDA_TR
                or other is None
            ):
                continue
            a, b = r["per_class_iou"].get(cls), other["per_class_iou"].get(cls)
            if a is not None and b is not None:
                diffs.append(float(a) - float(b))
        name = f"PSA balancing: stars - stars_psa_uniform on {cls} IoU >= +{PSA_MIN_GAIN:g}"
        if not diffs:
            out.append(Target(name, "n/a", "runs missing"))
        else:
            gain = float(np.mean(diffs))
            out.append(
                Target(
                    name,
                    _verdict(gain >= PSA_MIN_GAIN),
                    f"{gain:+.2f} (mean of {len(diffs)} pattern x seed pairs)",
                )
            )
    return out


def seed_pattern_means(
    rows: Sequence[Mapping[str, Any]],
    method: str,
    patterns: Sequence[str],
    lam: float = DEFAULT_LAMBDA_TR,
) -> dict[int, float]:
    """Per seed, ``method``'s mIoU averaged over ``patterns`` (a seed missing any of them is left out)."""
    by_seed: dict[int, dict[str, float]] = {}
    for r in rows:
        if (
            r["method"] == method
            and r["pattern"] in patterns
            and float(r.get("lambda_tr", DEFAULT_LAMBDA_TR)) == lam
            and r["miou"] is not None
        ):
            by_seed.setdefault(int(r["seed"]), {})[r["pattern"]] = float(r["miou"])
    return {
        s: float(np.mean(list(v.values()))) for s, v in sorted(by_seed.items()) if set(v) == set(patterns)
    }


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """``a - b`` on the seeds both have."""
    return {seed: a[seed] - b[seed] for seed in sorted(set(a) & set(b))}


def difference_text(diffs: Mapping[int, float]) -> str:
    """Mean (± sample std over seeds) of paired differences, with the seeds and each seed's value."""
    values = list(diffs.values())
    spread = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    each = ", ".join(f"{d:+.2f}" for d in values)
    return f"{np.mean(values):+.2f}{spread} ({_seeds_note(list(diffs))}: {each})"


def difference_target(name: str, diffs: Mapping[int, float]) -> Target:
    """A measured difference: PASS when its mean over the paired seeds is > 0, ``n/a`` without pairs."""
    if not diffs:
        return Target(name, "n/a", "runs missing")
    return Target(name, _verdict(float(np.mean(list(diffs.values()))) > 0), difference_text(diffs))


def psa_itself_targets(rows: Sequence[Mapping[str, Any]]) -> list[Target]:
    """PSA at all: ``stars`` minus ``stars_no_psa`` mean mIoU over the missing-modality and all patterns."""
    out = []
    for patterns, what in (
        (MISSING_PATTERNS, "the 6 missing-modality patterns"),
        (ALL_PATTERN_NAMES, "all 7"),
    ):
        diffs = paired(
            seed_pattern_means(rows, "stars", patterns), seed_pattern_means(rows, "stars_no_psa", patterns)
        )
        name = f"PSA itself: stars - stars_no_psa, mean mIoU over {what} (PASS when > 0)"
        out.append(difference_target(name, diffs))
    return out


def translation_target(rows: Sequence[Mapping[str, Any]]) -> Target:
    """The translation loss's own contribution: ``stars`` at the shipped lambda_tr minus at lambda_tr = 0."""
    name = (
        f"translation loss's own contribution: stars lambda_tr={DEFAULT_LAMBDA_TR:g} minus lambda_tr=0, "
        "mean mIoU over the 6 missing-modality patterns (PASS when > 0)"
    )
    shipped = seed_pattern_means(rows, "stars", MISSING_PATTERNS, DEFAULT_LAMBDA_TR)
    return difference_target(name, paired(shipped, seed_pattern_means(rows, "stars", MISSING_PATTERNS, 0.0)))


def sweep_seeds(
    rows: Sequence[Mapping[str, Any]], methods: Sequence[str], lambdas: Sequence[float]
) -> list[int]:
    """Seeds run at every lambda_tr for every one of ``methods``: a spread compares like with like."""
    sets = [
        set(common_seeds([r for r in rows if float(r.get("lambda_tr", DEFAULT_LAMBDA_TR)) == lam], methods))
        for lam in lambdas
    ]
    return sorted(set.intersection(*sets)) if sets else []


def sweep_spread(
    rows: Sequence[Mapping[str, Any]],
    method: str,
    lambdas: Sequence[float],
    seeds: Sequence[int] | None = None,
) -> float | None:
    """max - min over lambda_tr of the mean (over ``seeds``, default all) of the mean mIoU over patterns."""
    values = []
    for lam in lambdas:
        means = {s: v for s, v in seed_means(rows, method, lam).items() if seeds is None or s in seeds}
        if not means:
            return None
        values.append(float(np.mean(list(means.values()))))
    return max(values) - min(values)


def stopgrad_target(rows: Sequence[Mapping[str, Any]], lambdas: Sequence[float]) -> Target:
    """The lambda_tr spread of STARS is at most half that of STARS without stop-gradient (same seeds), over
    the non-zero lambdas: at lambda_tr = 0 there is no translation loss to stop a gradient in (STARS only)."""
    lambdas = [float(v) for v in lambdas if float(v) != 0.0]
    name = "stop-gradient: lambda_tr spread of stars <= half that of stars_no_stopgrad (lambda_tr > 0)"
    seeds = sweep_seeds(rows, ("stars", "stars_no_stopgrad"), lambdas)
    stars = sweep_spread(rows, "stars", lambdas, seeds) if seeds else None
    free = sweep_spread(rows, "stars_no_stopgrad", lambdas, seeds) if seeds else None
    if stars is None or free is None:
        return Target(name, "n/a", f"sweep runs missing (lambda_tr {', '.join(f'{v:g}' for v in lambdas)})")
    return Target(
        name,
        _verdict(stars <= 0.5 * free),
        f"spread {stars:.2f} vs {free:.2f} (seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}) over lambda_tr {', '.join(f'{v:g}' for v in lambdas)}",
    )


def int8_target(drops: Mapping[str, float] | None) -> Target:
    """Largest FP32 -> INT8 mIoU drop over patterns, from the export gate's manifest."""
    name = f"INT8 loses <= {INT8_MAX_DROP:g} mIoU on every pattern"
    if not drops:
        return Target(name, "n/a", "not measured: pass --int8-manifest DIR (stars-edge build-engines)")
    worst = max(drops, key=lambda p: drops[p])
    return Target(name, _verdict(drops[worst] <= INT8_MAX_DROP), f"worst {worst} {drops[worst]:.2f}")


def evidence_checks(
    rows: Sequence[Mapping[str, Any]],
    class_pixels: Mapping[str, int] | None,
    curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    steps: int,
) -> list[Target]:
    """Whether the study can tell: test pixels per class, STARS's seed std, flat validation curves."""
    out = []
    if class_pixels:
        rarest = min(class_pixels, key=lambda c: class_pixels[c])
        out.append(
            Target(
                f"test set: every class has >= {MIN_CLASS_PIXELS} pixels",
                _verdict(class_pixels[rarest] >= MIN_CLASS_PIXELS),
                f"rarest {rarest} {class_pixels[rarest]}",
            )
        )
    means = seed_means(rows, "stars")
    name = f"seed-to-seed std of STARS mean mIoU <= {MAX_SEED_STD:g}"
    if len(means) < 2:
        out.append(Target(name, "n/a", f"{len(means)} seed(s); needs >= 2"))
    else:
        std = float(np.std(list(means.values()), ddof=1))
        out.append(Target(name, _verdict(std <= MAX_SEED_STD), f"{std:.2f} over {len(means)} seeds"))
    gains = {method: last_quarter_gain(runs, steps) for method, runs in curves.items()}
    known = {m: g for m, g in gains.items() if g is not None}
    name = f"budget: validation mIoU gains <= {MAX_LAST_QUARTER_GAIN:g} over the last quarter of steps"
    if not known:
        out.append(Target(name, "n/a", "no validation curves"))
    else:
        worst = max(known, key=lambda m: known[m])
        out.append(
            Target(
                name,
                _verdict(known[worst] <= MAX_LAST_QUARTER_GAIN),
                ", ".join(f"{m} {g:+.2f}" for m, g in known.items()),
            )
        )
    return out


def last_quarter_gain(runs: Sequence[Sequence[Mapping[str, Any]]], steps: int) -> float | None:
    """Mean over runs of (final validation mIoU - the last one at or before 75% of the steps)."""
    gains = []
    for curve in runs:
        early = [p for p in curve if p["step"] <= 0.75 * steps]
        if curve and early:
            gains.append(float(curve[-1]["miou"]) - float(early[-1]["miou"]))
    return float(np.mean(gains)) if gains else None


def evaluate(
    main_rows: Sequence[Mapping[str, Any]],
    sweep_rows: Sequence[Mapping[str, Any]],
    lambdas: Sequence[float],
    class_pixels: Mapping[str, int] | None = None,
    curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]] | None = None,
    steps: int = 0,
    int8_drops: Mapping[str, float] | None = None,
) -> list[Target]:
    """Every claim, then the evidence checks."""
    return [
        *single_modality_targets(main_rows),
        baseline_targets(main_rows, "zero_fill_dropout"),
        baseline_targets(main_rows, "shaspec"),
        *psa_targets(main_rows),
        *psa_itself_targets(main_rows),
        stopgrad_target(sweep_rows, lambdas),
        translation_target(sweep_rows),
        int8_target(int8_drops),
        *evidence_checks(main_rows, class_pixels, curves or {}, steps),
    ]


def int8_drops_from_manifests(folders: Iterable[Any]) -> dict[str, float]:
    """Per pattern, the worst mIoU drop of an INT8 engine against FP32 as the export gate measured it, over
    every engine folder given (one per checkpoint)."""
    from stars_edge.manifest import load_manifest

    drops: dict[str, float] = {}
    for folder in folders:
        for entry in load_manifest(folder, verify=False).engines:
            drop = entry.accuracy.get("miou_drop") if entry.accuracy is not None else None
            if entry.precision == "int8" and drop is not None:
                drops[entry.pattern.name] = max(drops.get(entry.pattern.name, float("-inf")), float(drop))
    return drops
