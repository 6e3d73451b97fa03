"""Does choosing the cloud-edge settings by accuracy beat the measured context margin on held-out scenes?

For each engine folder (one trained checkpoint each, e.g. ``make demo`` with several ``--seed``): the
selection of ``build-engines --edge-selection`` (``runtime/edges.py``, 8 validation scenes) picks a
(margin, optical dilation); then every candidate pair is scored on held-out cloudy scenes (other seeds,
cloud cover 10-30 %, a 20 % SAR gap), pooled mIoU. Reported per checkpoint: the measured margin (today's
default), the best fixed margin without dilation, the selection's pick and the best pair in hindsight.
One JSON line per checkpoint is appended to ``--out`` (method, seed, commit), so a study can continue.

    python studies/edge_study.py --engines demo_out/engines --engines /tmp/seed1/engines \
        --out benchmarks/results/edge_study.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python studies/edge_study.py`: make `studies.` importable
    sys.path.insert(0, str(ROOT))

from export.tiles import hole_scenes  # noqa: E402
from runtime.edges import DILATIONS, MARGINS, HoleScene, choose_edges  # noqa: E402
from stars_edge.manifest import Manifest, load_manifest  # noqa: E402
from studies.common import RESULTS_DIR, short_commit  # noqa: E402

#: Held-out scenes: seeds far from training, calibration, gate, the edge-selection scenes and the demo.
HELD_OUT_SEED_BASE = 9_600_000
CLOUD_COVERS = (0.1, 0.15, 0.2, 0.3)


def sensitivity_margin(manifest: Manifest) -> int:
    """The margin measured at export (the sensitivity bound): a manifest whose margin was chosen by
    accuracy keeps it in its ``edge_choice`` record, and its ``context_margin`` is then the chosen one."""
    choice = manifest.edge_choice or {}
    return int(choice.get("measured_margin", manifest.context_margin or 0))


def study(
    engines: Path,
    scenes: int,
    size: int,
    tile: int | None,
    seed_base: int = HELD_OUT_SEED_BASE,
    validation_scenes: int | None = None,
    validation_covers: Sequence[float] | None = None,
) -> dict[str, Any]:
    """One checkpoint: the selection on validation scenes (by default the build's own: ``hole_scenes``'
    defaults; ``validation_scenes``/``validation_covers`` try another validation set) against every
    candidate pair on held-out scenes."""
    manifest = load_manifest(engines)
    measured = sensitivity_margin(manifest)
    drawn: dict[str, Any] = {}
    if validation_scenes is not None:
        drawn["count"] = validation_scenes
    if validation_covers is not None:
        drawn["cloud_covers"] = tuple(validation_covers)
    validation = [HoleScene(i, c, lab) for i, c, lab in hole_scenes(manifest.modalities, **drawn)]
    picked = choose_edges(engines, validation, measured, "validation", tile=tile)
    evaluation = [
        HoleScene(i, c, lab)
        for i, c, lab in hole_scenes(manifest.modalities, scenes, size, seed_base, CLOUD_COVERS)
    ]
    held_out = choose_edges(engines, evaluation, measured, "held-out", tile=tile)
    score = {(r["context_margin"], r["optical_dilation"]): r["miou"] for r in held_out.scores}
    fixed = {pair: value for pair, value in score.items() if pair[1] == 0}
    best_fixed = max(fixed, key=lambda pair: fixed[pair])
    best = max(score, key=lambda pair: score[pair])
    chosen = (picked.context_margin, picked.mask_dilation.get("optical", 0))
    return {
        "engines": str(engines),
        "method": manifest.model.method,
        "checkpoint_sha256": manifest.model.checkpoint_sha256,
        "held_out": {"scenes": scenes, "size": size, "seed_base": seed_base},
        "validation": drawn or "the build's",
        "measured_margin": [measured, score[(measured, 0)]],
        "best_fixed_margin": [list(best_fixed), score[best_fixed]],
        "selection": [list(chosen), score[chosen]],
        "best_in_hindsight": [list(best), score[best]],
        "selection_minus_best_fixed": round(score[chosen] - score[best_fixed], 3),
        "validation_scores": picked.scores,
        "held_out_scores": held_out.scores,
    }


def render(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "# Cloud edges by accuracy vs the measured margin (`studies/edge_study.py`)",
        "",
        f"Candidates: margins {list(MARGINS)} + the measured one, optical dilations {list(DILATIONS)}; "
        "pooled mIoU on held-out cloudy scenes.",
        "",
        "| checkpoint | measured margin | best fixed margin | selection (validation) | best in hindsight | "
        "selection - best fixed |",
        "| --- | --- | --- | --- | --- | ---: |",
    ]
    for row in rows:
        cells = [
            f"{row['measured_margin'][0]} px: {row['measured_margin'][1]:.2f}",
            f"{row['best_fixed_margin'][0][0]} px: {row['best_fixed_margin'][1]:.2f}",
            "{}/{}: {:.2f}".format(*row["selection"][0], row["selection"][1]),
            "{}/{}: {:.2f}".format(*row["best_in_hindsight"][0], row["best_in_hindsight"][1]),
        ]
        name = f"{row['checkpoint_sha256'][:8]} ({row['engines']})"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['selection_minus_best_fixed']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", type=Path, action="append", required=True, help="engine folder (repeat)")
    parser.add_argument("--scenes", type=int, default=8, help="held-out cloudy scenes")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=None, help="default: each manifest's tile size")
    parser.add_argument(
        "--seed-base",
        type=int,
        default=HELD_OUT_SEED_BASE,
        help="first held-out scene seed; another base gives a fresh held-out set (a hypothesis formed on one "
        "set is tested on another)",
    )
    parser.add_argument("--validation-scenes", type=int, help="validation scenes (default: the build's, 8)")
    parser.add_argument(
        "--validation-covers",
        type=lambda text: [float(v) for v in text.split(",")],
        help="validation cloud covers, comma-separated (default: the build's, 0.1-0.3 cycled)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "edge_study.jsonl")
    args = parser.parse_args(argv)
    commit = short_commit()
    rows = []
    for engines in args.engines:
        measured = study(
            engines,
            args.scenes,
            args.size,
            args.tile,
            args.seed_base,
            args.validation_scenes,
            args.validation_covers,
        )
        row = {**measured, "commit": commit}
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(render([row]).splitlines()[-1], flush=True)
    print(render(rows))
    # the Markdown holds every checkpoint of the file, so a study continued over several calls reads whole
    logged = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    args.out.with_suffix(".md").write_text(render(logged))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
