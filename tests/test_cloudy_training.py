"""Training on scenes with holes (``synthetic_train_cloud_cover`` & co.): the masks reach the objective, the
translation loss and PSA skip hole cells, the segmentation keeps its labels, and the option off changes
nothing."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import training.losses as losses_module
from stars_edge.errors import ConfigError, DataError
from stars_edge.models import STARSModel, create_model
from training.config import TrainConfig
from training.data import TrainingData, build_training_data, draw_batch, step_generator, synthetic_scenes
from training.loop import train
from training.losses import cell_validity, translation_gains, translation_loss
from training.objective import TrainingObjective

ROOT = Path(__file__).resolve().parents[1]

#: The configuration whose one-step losses were recorded from the code before the option existed.
RECORDED: dict[str, Any] = dict(
    variant="tiny",
    tile_size=64,
    batch_size=2,
    synthetic_size=128,
    synthetic_train_scenes=2,
    synthetic_unlabelled_scenes=1,
    synthetic_val_scenes=1,
    log_every=1,
    val_every=1000,
    checkpoint_every=1000,
    seed=3,
    diagnostics=False,
)

#: One objective step of ``RECORDED`` (model seeded with ``torch.manual_seed(0)``, batch of step 0, its
#: unlabelled batch) before the change; on this machine the option-off code reproduces them bit for bit.
BEFORE: dict[str, dict[str, float]] = {
    "real": {
        "seg_full": 2.296475410461426,
        "seg": 16.079402923583984,
        "translation": 2.5236129760742188,
        "translation_unlabelled": 2.43220853805542,
        "translation_gain_min": -2.284923791885376,
        "psa": 5.0190277099609375,
        "psa_samples": 67.0,
        "total": 26.14565658569336,
    },
    "real+translated": {
        "seg": 16.079402923583984,
        "translation": 2.5236129760742188,
        "psa": 6.328590393066406,
        "psa_samples": 67.0,
        "total": 27.455219268798828,
    },
}

HOLES: dict[str, Any] = dict(
    synthetic_train_cloud_cover=0.3, synthetic_train_sar_gap=0.2, synthetic_train_dsm_voids=0.1
)
CLOUDY: dict[str, Any] = {**RECORDED, **HOLES, "batch_size": 4}


def _step(
    config: TrainConfig, data: TrainingData | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], STARSModel]:
    """One objective step of ``config`` as the loop draws it (batch and unlabelled batch of step 0)."""
    data = data or build_training_data(config)
    torch.manual_seed(0)
    # stride 32 only: the translation scales of the code the losses were recorded from (before issue 22)
    model = create_model(
        "tiny",
        data.in_channels(config.modalities),
        len(data.class_names),
        config.method,
        translation_scales=(3,),
    )
    keys = [*model.modalities, "label"]
    masks = config.trains_on_holes()
    batch = draw_batch(data.train, keys, 0, config.batch_size, config.seed, masks=masks)
    unlabelled = None
    if data.unlabelled is not None:
        unlabelled = draw_batch(
            data.unlabelled, list(model.modalities), 0, config.batch_size, config.seed, stream=5, masks=masks
        )
    objective = TrainingObjective(model, config, data.ignore_index)
    losses = objective(batch, model.patterns[0], step_generator(config.seed, 0, 4), unlabelled)
    return losses, batch, model


@pytest.mark.parametrize("views", ["real", "real+translated"])
def test_option_off_reproduces_the_losses_recorded_before_the_change(views: str) -> None:
    losses, batch, _model = _step(TrainConfig(**RECORDED, psa_views=views))  # type: ignore[arg-type]
    for key, value in BEFORE[views].items():
        assert float(losses[key].detach()) == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert set(batch) == {"optical", "sar", "dsm", "label"}  # off, the batch carries no masks


def test_option_explicitly_zero_is_the_default_bit_for_bit() -> None:
    zero: dict[str, Any] = {key: 0.0 for key in HOLES}
    default, _, _ = _step(TrainConfig(**RECORDED))
    explicit, _, _ = _step(TrainConfig(**RECORDED, **zero))
    assert set(default) == set(explicit)
    for key in default:
        assert torch.equal(default[key], explicit[key]), key
    clean = synthetic_scenes(1, 64, 7)[0]
    holes = synthetic_scenes(1, 64, 7, holes={"cloud_cover": 0.0, "sar_gap": 0.0, "dsm_voids": 0.0})[0]
    assert clean.metadata == holes.metadata
    for modality in ("optical", "sar", "dsm"):
        assert (clean.image(modality) == holes.image(modality)).all()


def _features(
    seed: int,
) -> tuple[dict[tuple[str, str], dict[int, torch.Tensor]], dict[str, list[torch.Tensor]]]:
    """Random (2, 6, 8, 8) features of two modalities at scale 0 (stride 4 over 32 x 32 tiles)."""
    generator = torch.Generator().manual_seed(seed)
    fused = {m: [torch.randn(2, 6, 8, 8, generator=generator)] for m in ("optical", "sar")}
    translations = {
        (s, t): {0: torch.randn(2, 6, 8, 8, generator=generator, requires_grad=True)}
        for s, t in (("optical", "sar"), ("sar", "optical"))
    }
    return translations, fused


def _cloud() -> dict[str, torch.Tensor]:
    """A hole in optical covering cells (0..2, 0..2) of tile 0, plus one invalid pixel in cell (5, 5)."""
    optical = torch.ones(2, 32, 32, dtype=torch.bool)
    optical[0, :12, :12] = False
    optical[0, 21, 22] = False
    return {"optical": optical, "sar": torch.ones(2, 32, 32, dtype=torch.bool)}


def _perturbed(
    translations: dict[tuple[str, str], dict[int, torch.Tensor]],
    fused: dict[str, list[torch.Tensor]],
    where: tuple[int, slice, slice],
) -> tuple[dict[tuple[str, str], dict[int, torch.Tensor]], dict[str, list[torch.Tensor]]]:
    """Copies with every source prediction and every target feature changed at cells ``where``."""
    tile, rows, cols = where
    moved_t = {}
    for pair, scales in translations.items():
        pred = scales[0].detach().clone()
        pred[tile, :, rows, cols] += 5.0
        moved_t[pair] = {0: pred}
    moved_f = {}
    for modality, levels in fused.items():
        real = levels[0].clone()
        real[tile, :, rows, cols] -= 3.0
        moved_f[modality] = [real]
    return moved_t, moved_f


@pytest.mark.parametrize("distance", ["standardized", "cosine", "mse", "l1"])
def test_masked_translation_loss_ignores_values_inside_holes(distance: str) -> None:
    translations, fused = _features(0)
    valid = _cloud()
    base = translation_loss(translations, fused, distance=distance, valid=valid)
    for hole in ((0, slice(0, 3), slice(0, 3)), (0, slice(5, 6), slice(5, 6))):
        moved = translation_loss(*_perturbed(translations, fused, hole), distance=distance, valid=valid)
        assert torch.equal(moved, base), hole
    outside = translation_loss(
        *_perturbed(translations, fused, (1, slice(0, 3), slice(0, 3))), distance=distance, valid=valid
    )
    assert not torch.allclose(outside, base)
    unmasked = translation_loss(translations, fused, distance=distance)
    assert not torch.allclose(unmasked, base)


def test_all_valid_masks_give_the_unmasked_loss() -> None:
    translations, fused = _features(1)
    everywhere = {m: torch.ones(2, 32, 32, dtype=torch.bool) for m in fused}
    for distance in ("standardized", "cosine", "mse", "l1"):
        masked = translation_loss(translations, fused, distance=distance, valid=everywhere)
        assert torch.allclose(masked, translation_loss(translations, fused, distance=distance), rtol=1e-5)


@pytest.mark.parametrize("distance", ["standardized", "cosine", "mse", "l1"])
def test_a_batch_without_valid_cells_contributes_zero_not_nan(distance: str) -> None:
    translations, fused = _features(2)
    nowhere = {
        "optical": torch.zeros(2, 32, 32, dtype=torch.bool),
        "sar": torch.ones(2, 32, 32, dtype=torch.bool),
    }
    loss = translation_loss(translations, fused, distance=distance, valid=nowhere)
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    loss.backward()
    grad = translations[("optical", "sar")][0].grad
    assert grad is not None and torch.equal(grad, torch.zeros_like(grad))
    gains = translation_gains(translations, fused, valid=nowhere)
    assert all(math.isfinite(v) and v == 0.0 for v in gains.values())


def test_standardized_distance_needs_two_cells() -> None:
    translations, fused = _features(3)
    single = {
        "optical": torch.zeros(2, 32, 32, dtype=torch.bool),
        "sar": torch.ones(2, 32, 32, dtype=torch.bool),
    }
    single["optical"][1, 8:12, 8:12] = True  # exactly one stride-4 cell
    assert float(translation_loss(translations, fused, valid=single).detach()) == 0.0
    assert float(translation_loss(translations, fused, distance="mse", valid=single).detach()) > 0.0


def test_translation_gains_ignore_values_inside_holes() -> None:
    translations, fused = _features(4)
    valid = _cloud()
    base = translation_gains(translations, fused, valid=valid)
    moved = translation_gains(*_perturbed(translations, fused, (0, slice(0, 3), slice(0, 3))), valid=valid)
    assert moved == base
    outside = translation_gains(*_perturbed(translations, fused, (1, slice(0, 3), slice(0, 3))), valid=valid)
    assert outside != base


def test_cell_validity_is_conservative() -> None:
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[0, 5, 2] = False
    cells = cell_validity(valid, (2, 2))
    assert cells.shape == (1, 1, 2, 2)
    assert cells[0, 0].tolist() == [[True, True], [False, True]]


@pytest.fixture(scope="module")
def cloudy() -> TrainingData:
    return build_training_data(TrainConfig(**CLOUDY))


@pytest.mark.parametrize("views", ["real", "real+translated"])
def test_psa_never_samples_a_cell_with_a_hole(
    cloudy: TrainingData, views: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = losses_module.class_balanced_pixel_indices

    def recording(labels: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        indices, classes = original(labels, *args, **kwargs)
        sampled.append((labels, indices))
        return indices, classes

    monkeypatch.setattr(losses_module, "class_balanced_pixel_indices", recording)
    config = TrainConfig(**CLOUDY, psa_views=views)  # type: ignore[arg-type]
    _losses, batch, model = _step(config, cloudy)
    ((small, indices),) = sampled
    stride = 4 * 2**model.config.psa_scale
    # real views: optical and sar (dsm is no PSA view); translated views are also computed from dsm
    sources = ("optical", "sar") if views == "real" else ("optical", "sar", "dsm")
    n, height, width = batch["label"].shape
    holes = torch.stack([~batch[f"valid/{m}"] for m in sources]).any(dim=0)
    cell_holes = holes.reshape(n, height // stride, stride, width // stride, stride).any(dim=(2, 4))
    assert small.shape == cell_holes.shape
    assert cell_holes.any(), "the fixture must have holes at the PSA scale"
    assert indices.numel() > 0
    assert not cell_holes.reshape(-1)[indices].any()


def test_option_on_masks_translation_and_psa_but_not_the_segmentation(cloudy: TrainingData) -> None:
    off, _, _ = _step(TrainConfig(**{**RECORDED, "batch_size": 4}), cloudy)
    on, batch, _ = _step(TrainConfig(**CLOUDY), cloudy)
    assert not batch["valid/optical"].all()
    assert torch.equal(on["seg"], off["seg"]) and torch.equal(on["seg_full"], off["seg_full"])
    assert not torch.equal(on["translation"], off["translation"])
    assert float(on["psa_samples"]) < float(off["psa_samples"])


def test_option_on_needs_the_masks_in_the_batch(cloudy: TrainingData) -> None:
    config = TrainConfig(**CLOUDY)
    torch.manual_seed(0)
    model = create_model("tiny", cloudy.in_channels(config.modalities), len(cloudy.class_names), "stars")
    batch = draw_batch(cloudy.train, [*model.modalities, "label"], 0, 4, config.seed, masks=True)
    assert {f"valid/{m}" for m in model.modalities} <= set(batch)
    stripped = {k: v for k, v in batch.items() if not k.startswith("valid/")}
    with pytest.raises(DataError, match="validity mask"):
        TrainingObjective(model, config)(stripped, model.patterns[0])
    TrainingObjective(model, TrainConfig(**RECORDED))(stripped, model.patterns[0])  # off: never read


def test_a_short_run_trains_on_holes_with_clean_validation(tmp_path: Path) -> None:
    config = TrainConfig(
        **{**RECORDED, "steps": 3, "output_dir": tmp_path, "psa_views": "real+translated"}, **HOLES
    )
    data = build_training_data(config)
    assert data.val is not None and data.unlabelled is not None
    for scene in data.train.scenes:  # type: ignore[attr-defined]
        assert not scene.valid["optical"].all() and not scene.valid["sar"].all()
    for scene in data.unlabelled.scenes:  # type: ignore[attr-defined]
        assert not scene.valid["optical"].all()
    for scene in data.val.scenes:  # type: ignore[attr-defined]
        assert all(mask.all() for mask in scene.valid.values())
    result = train(config, progress=False, data=data)
    assert result.steps == 3
    assert all(math.isfinite(v) for v in result.last_losses.values())
    assert result.meta.config["synthetic_train_cloud_cover"] == 0.3


def test_config_checks_and_documents_the_option() -> None:
    with pytest.raises(ConfigError, match="cloud_cover"):
        TrainConfig(synthetic_train_cloud_cover=1.0)
    with pytest.raises(ConfigError, match="sar_gap"):
        TrainConfig(synthetic_train_sar_gap=-0.1)
    with pytest.raises(ConfigError, match="data: synthetic"):
        TrainConfig(data="some/folder", synthetic_train_dsm_voids=0.1)
    assert not TrainConfig().trains_on_holes()
    assert TrainConfig(synthetic_train_cloud_cover=0.15).trains_on_holes()
    help_text = subprocess.run(
        [sys.executable, "-m", "training.train", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--synthetic-train-cloud-cover" in help_text
    assert "the translation and PSA losses skip them" in " ".join(help_text.split())
