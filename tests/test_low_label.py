"""Unlabelled training scenes: only the translation loss sees them, only methods with one use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from stars_edge.errors import ConfigError
from stars_edge.models import create_model
from training.config import TrainConfig
from training.data import TrainingData, build_training_data, collate
from training.loop import train
from training.objective import TrainingObjective
from training.steps import unlabelled_batch

TINY: dict[str, Any] = dict(
    variant="tiny",
    tile_size=64,
    batch_size=2,
    synthetic_size=128,
    synthetic_train_scenes=1,
    synthetic_unlabelled_scenes=2,
    synthetic_val_scenes=1,
    log_every=1,
    val_every=1000,
    checkpoint_every=1000,
    seed=5,
)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return build_training_data(TrainConfig(**TINY))


def test_unlabelled_scenes_are_other_scenes_than_the_labelled_ones(data: TrainingData) -> None:
    assert data.unlabelled is not None and len(data.unlabelled) > 0
    labelled = data.train.scenes[0].optical  # type: ignore[attr-defined]
    for scene in data.unlabelled.scenes:  # type: ignore[attr-defined]
        assert not torch.equal(torch.as_tensor(scene.optical), torch.as_tensor(labelled))
    assert build_training_data(TrainConfig(**{**TINY, "synthetic_unlabelled_scenes": 0})).unlabelled is None


def _losses(data: TrainingData, unlabelled: bool, method: str = "stars") -> tuple[dict[str, Any], Any]:
    torch.manual_seed(0)
    config = TrainConfig(**{**TINY, "method": method})
    model = create_model("tiny", data.in_channels(config.modalities), len(data.class_names), method)
    objective = TrainingObjective(model, config)
    keys = [*model.modalities, "label"]
    batch = collate([data.train[i] for i in range(2)], keys)
    extra = collate([data.unlabelled[i] for i in range(2)], list(model.modalities)) if unlabelled else None
    losses = objective(batch, model.patterns[0], torch.Generator().manual_seed(1), extra)
    losses["total"].backward()
    translator = next(p for n, p in model.named_parameters() if "translat" in n and p.grad is not None)
    return losses, translator.grad.clone()


def test_the_translation_loss_also_trains_on_unlabelled_tiles(data: TrainingData) -> None:
    without, grad_without = _losses(data, unlabelled=False)
    with_extra, grad_with = _losses(data, unlabelled=True)
    assert "translation_unlabelled" in with_extra and "translation_unlabelled" not in without
    expected = (without["translation"] + with_extra["translation_unlabelled"]) / 2
    assert torch.allclose(with_extra["translation"], expected)
    assert torch.equal(with_extra["seg"], without["seg"])  # no labels, no segmentation term
    assert not torch.allclose(grad_with, grad_without)


def test_methods_without_a_translation_loss_get_no_unlabelled_batch(data: TrainingData) -> None:
    from training.distributed import DistributedContext

    context = DistributedContext()
    for method, expected in (("stars", True), ("zero_fill_dropout", False), ("shaspec", False)):
        config = TrainConfig(**{**TINY, "method": method})
        model = create_model("tiny", data.in_channels(config.modalities), len(data.class_names), method)
        batch = unlabelled_batch(data, model, config, 0, context, torch.device("cpu"))
        assert (batch is not None) == expected, method
        if batch is not None:
            assert set(batch) == set(model.modalities)  # no label key


def test_a_short_run_logs_the_unlabelled_translation_loss(data: TrainingData, tmp_path: Path) -> None:
    config = TrainConfig(**{**TINY, "steps": 2, "output_dir": tmp_path / "run"})
    result = train(config, progress=False, data=data)
    assert "translation_unlabelled" in result.last_losses


def test_unlabelled_scenes_need_synthetic_data_and_a_count() -> None:
    with pytest.raises(ConfigError, match="synthetic_unlabelled_scenes must be >= 0"):
        TrainConfig(synthetic_unlabelled_scenes=-1)
    with pytest.raises(ConfigError, match="needs data: synthetic"):
        TrainConfig(data="some/folder", synthetic_unlabelled_scenes=2)
