"""studies/specialist_gap.py: scores STARS and each specialist on fit and held-out scenes, gap means."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stars_edge.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from stars_edge.data.synthetic import CLASS_NAMES, synthetic_specs  # noqa: E402
from stars_edge.models import create_model  # noqa: E402
from studies import specialist_gap  # noqa: E402

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


def _save(folder: Path, bands: dict[str, int], method: str) -> None:
    torch.manual_seed(0)
    specs = synthetic_specs(4)
    meta = CheckpointMeta(
        variant="tiny",
        method=method,
        in_channels=bands,
        classes=len(CLASS_NAMES),
        class_names=tuple(CLASS_NAMES),
        specs={m: specs[m] for m in bands},
        tile_size=64,
    )
    model = create_model("tiny", bands, classes=len(CLASS_NAMES), method=method)
    save_checkpoint(folder / "checkpoint.pt", model.eval(), meta)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    folder = root / "synthetic_stars_seed0_lambda2_optical-sar-dsm"
    folder.mkdir()
    _save(folder, BANDS, "stars")
    for modality, bands in BANDS.items():
        folder = root / f"synthetic_single_modality_seed0_lambda2_{modality}"
        folder.mkdir()
        _save(folder, {modality: bands}, "single_modality")
    return root


def test_scores_every_modality_on_fit_and_test_scenes(work: Path, tmp_path: Path) -> None:
    args = ["--work-dir", str(work), "--scenes", "1", "--scene-size", "64", "--out", str(tmp_path)]
    assert specialist_gap.main(args) == 0
    payload = json.loads((tmp_path / "specialist_gap.json").read_text())
    assert {(r["modality"], r["split"]) for r in payload["rows"]} == {
        (m, s) for m in BANDS for s in ("fit", "test")
    }
    assert all(0 <= r["stars"] <= 100 and 0 <= r["single_modality"] <= 100 for r in payload["rows"])
    assert "| dsm | test |" in (tmp_path / "specialist_gap.md").read_text()


def test_summary_gap_is_specialist_minus_stars_over_seeds() -> None:
    rows = [
        {"seed": s, "modality": "sar", "split": "test", "stars": stars, "single_modality": single}
        for s, stars, single in ((0, 70.0, 72.0), (1, 71.0, 74.0))
    ]
    (entry,) = specialist_gap.summary(rows)
    assert entry["gap"] == pytest.approx(2.5) and entry["stars"] == pytest.approx(70.5)
    assert entry["gap_std"] == pytest.approx(0.7071, abs=1e-3) and entry["seeds"] == [0, 1]


def test_missing_checkpoints_are_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert specialist_gap.main(["--work-dir", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert "run benchmarks/accuracy.py first" in capsys.readouterr().err
