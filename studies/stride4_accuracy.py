"""Do stride-4 engines keep the accuracy of stride-1 engines through the runtime? (issue 21: keep stride 4
only if mIoU stays within 0.1 on the study's test scenes)

Runs two engine folders built from one checkpoint (``build-engines --logits-stride 1`` and ``4``, FP32) with
ONNX Runtime through ``Predictor.predict_arrays`` at the runtime's defaults, on (1) the accuracy study's 8
test scenes (512 px, seeds 200000-200007) once per availability pattern (only that pattern's modalities
given) and (2) 8 held-out cloudy scenes (768 px, seeds 8700000-8700007, 15 % cloud, 20 % SAR gap). Prints
and writes mean mIoU over scenes per case and stride.

    python studies/stride4_accuracy.py --stride1 DIR1 --stride4 DIR4 --out /tmp/stride4_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python studies/stride4_accuracy.py`
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from runtime import Predictor  # noqa: E402
from stars_edge.data.synthetic import SyntheticConfig, generate_scene  # noqa: E402
from stars_edge.metrics import segmentation_scores  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS, MODALITIES  # noqa: E402
from studies.common import short_commit  # noqa: E402

TEST_SEEDS = range(200_000, 200_008)
CLOUDY_SEEDS = range(8_700_000, 8_700_008)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stride1", type=Path, required=True, help="engines built with --logits-stride 1")
    parser.add_argument("--stride4", type=Path, required=True, help="engines built with --logits-stride 4")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    predictors = {
        stride: Predictor(folder, backend="onnxruntime", precision="fp32", threads=1)
        for stride, folder in ((1, args.stride1), (4, args.stride4))
    }
    classes = predictors[1].classes
    results: dict[str, dict[int, list[float]]] = {}
    test = [generate_scene(SyntheticConfig(size=512, seed=seed)) for seed in TEST_SEEDS]
    for pattern in ALL_PATTERNS:
        for stride, predictor in predictors.items():
            for scene in test:
                inputs = {m: getattr(scene, m) for m in pattern}
                valid = {m: scene.valid[m] for m in pattern if m in scene.valid}
                predicted, patterns = predictor.predict_arrays(inputs, valid=valid)
                score = segmentation_scores(predicted, scene.label, classes, valid=patterns > 0).miou
                results.setdefault(f"test {pattern.name}", {}).setdefault(stride, []).append(score)
    for seed in CLOUDY_SEEDS:
        scene = generate_scene(SyntheticConfig(size=768, seed=seed, cloud_cover=0.15, sar_gap=0.2))
        for stride, predictor in predictors.items():
            inputs = {m: getattr(scene, m) for m in MODALITIES}
            predicted, patterns = predictor.predict_arrays(inputs, valid=scene.valid)
            score = segmentation_scores(predicted, scene.label, classes, valid=patterns > 0).miou
            results.setdefault("cloudy", {}).setdefault(stride, []).append(score)
    rows = {}
    for case, scores in results.items():
        one, four = float(np.mean(scores[1])), float(np.mean(scores[4]))
        rows[case] = {"stride1": one, "stride4": four, "difference": four - one, "per_scene": scores}
        print(f"{case}: stride 1 {one:.3f}, stride 4 {four:.3f}, difference {four - one:+.3f}")
    record = {"commit": short_commit(), "engines": [str(args.stride1), str(args.stride4)], "cases": rows}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
