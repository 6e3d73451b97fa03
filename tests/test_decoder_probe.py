"""studies/decoder_probe.py: fine-tunes exactly the named parameter groups, and a run writes its row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stars_edge.data import SceneTileDataset  # noqa: E402
from stars_edge.data.synthetic import synthetic_specs  # noqa: E402
from stars_edge.models import create_model  # noqa: E402
from studies import decoder_probe  # noqa: E402
from training.data import synthetic_scenes  # noqa: E402

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


@pytest.fixture(scope="module")
def tiles() -> SceneTileDataset:
    specs = synthetic_specs(4)
    return SceneTileDataset(synthetic_scenes(1, 64, 5), tile_size=64, specs=specs, augment=False, seed=0)


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> set[str]:
    old = dict(before.named_parameters())
    return {n for n, p in after.named_parameters() if not torch.equal(p, old[n])}


@pytest.mark.parametrize("part", ["decoder", "modality_path"])
def test_fine_tuning_moves_only_its_parameter_group(tiles: SceneTileDataset, part: str) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=7)
    prefixes = decoder_probe.trainable_prefixes("stars", "optical", part)
    changed = _changed(model, decoder_probe.fine_tune(model, tiles, "optical", prefixes, 2, seed=0))
    assert any(n.startswith("head.") for n in changed)
    assert all(n.startswith(prefixes) for n in changed), sorted(changed)
    assert not any(n.startswith(("stems.sar", "specific.dsm", "translators.")) for n in changed)
    assert any(n.startswith("shared.") for n in changed) == (part == "modality_path")


def test_frozen_batchnorm_statistics_do_not_move(tiles: SceneTileDataset) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=7)
    tuned = decoder_probe.fine_tune(model, tiles, "optical", ("",), 2, seed=0)
    for (name, before), (_, after) in zip(model.named_buffers(), tuned.named_buffers(), strict=True):
        assert torch.equal(before, after), name


def test_a_run_appends_its_row(tmp_path: Path) -> None:
    results = tmp_path / "probe.jsonl"
    args = ["--method", "single_modality", "--modality", "sar", "--steps", "2", "--finetune-steps", "1"]
    args += ["--test-scenes", "1", "--set", "variant=tiny", "--set", "synthetic_train_scenes=2"]
    assert decoder_probe.main([*args, "--results", str(results)]) == 0
    row = json.loads(results.read_text())
    assert row["method"] == "single_modality" and set(row["miou"]) == {"trained", "all"}
    assert all(0 <= v <= 100 for v in row["miou"].values())
