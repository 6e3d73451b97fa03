"""SceneTileDataset: normalisation, identical augmentation across modalities, determinism, padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stars_edge.data import SceneTileDataset, open_dataset
from stars_edge.data.synthetic import Scene, SyntheticConfig, generate_dataset, generate_scene
from stars_edge.errors import DataError
from stars_edge.modalities import ModalitySpec


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [generate_scene(SyntheticConfig(size=48, seed=s, sar_gap=0.2, dsm_voids=0.1)) for s in (0, 1)]


def test_item_layout_and_normalisation(scenes: list[Scene]) -> None:
    dataset = SceneTileDataset(scenes, tile_size=32, augment=False)
    assert len(dataset) == 2 * 4  # 48 px -> 2 x 2 grid tiles per scene
    item = dataset[0]
    assert set(item) == {"optical", "sar", "dsm", "label", "valid"}
    assert item["optical"].dtype == torch.float32 and item["optical"].shape == (4, 32, 32)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (32, 32)
    assert item["valid"]["sar"].dtype == torch.bool
    spec = scenes[0].specs["sar"]
    expected = spec.normalize(scenes[0].image("sar")[:, :32, :32])
    mask = scenes[0].valid["sar"][:32, :32]
    np.testing.assert_allclose(item["sar"].numpy()[:, mask], expected[:, mask], rtol=1e-6)
    assert (item["sar"].numpy()[:, ~mask] == 0).all()  # invalid pixels are zero after normalisation


def test_grid_tiles_pad_the_edge_with_ignore(scenes: list[Scene]) -> None:
    dataset = SceneTileDataset(scenes, tile_size=32, augment=False)
    corner = dataset[3]  # bottom-right tile of scene 0: only 16 x 16 real pixels
    assert (corner["label"][16:, :] == 255).all() and (corner["label"][:, 16:] == 255).all()
    assert not corner["valid"]["optical"][16:, :].any()
    np.testing.assert_array_equal(corner["label"][:16, :16].numpy(), scenes[0].label[32:, 32:])


def test_augmentation_is_identical_across_modalities_and_deterministic(scenes: list[Scene]) -> None:
    # a single-band "scene" whose optical, dsm and label all encode the pixel position lets us check that
    # the same crop / flip / rotation reached every array
    base = scenes[0]
    position = np.arange(48 * 48, dtype=np.float32).reshape(48, 48)
    specs = {
        "optical": ModalitySpec("optical", ("a", "b", "c", "d"), (0.0,) * 4, (1.0,) * 4),
        "dsm": ModalitySpec("dsm", ("h",), (0.0,), (1.0,)),
    }
    probe = type(base)(
        name="probe",
        label=(position % 251).astype(np.uint8),
        optical=np.stack([position] * 4),
        sar=None,
        dsm=position[None].copy(),
        valid={"optical": np.ones((48, 48), bool), "dsm": np.ones((48, 48), bool)},
        transform=base.transform,
        crs=base.crs,
        specs=specs,
    )
    dataset = SceneTileDataset([probe], tile_size=16, augment=True, seed=3, samples_per_epoch=20)
    seen_orientations = set()
    for index in range(len(dataset)):
        item = dataset[index]
        optical = item["optical"][0].numpy()
        np.testing.assert_array_equal(optical, item["dsm"][0].numpy())
        np.testing.assert_array_equal((optical % 251).astype(np.int64), item["label"].numpy())
        row_step = optical[1, 0] - optical[0, 0]
        col_step = optical[0, 1] - optical[0, 0]
        seen_orientations.add((row_step, col_step))
        again = dataset[index]
        torch.testing.assert_close(again["optical"], item["optical"])
    assert len(seen_orientations) > 2  # flips / rotations really happen
    epoch0 = [dataset[i]["optical"] for i in range(5)]
    dataset.set_epoch(1)
    assert any(not torch.equal(a, dataset[i]["optical"]) for i, a in enumerate(epoch0))


def test_fixed_modalities_fill_absent_ones(scenes: list[Scene]) -> None:
    sar_only = generate_scene(SyntheticConfig(size=32, seed=4, modalities=("sar",)))
    specs = dict(scenes[0].specs)
    dataset = SceneTileDataset(
        [sar_only], tile_size=32, specs=specs, augment=False, modalities=("optical", "sar", "dsm")
    )
    item = dataset[0]
    assert item["optical"].shape == (4, 32, 32) and not item["valid"]["optical"].any()
    assert (item["optical"] == 0).all() and item["valid"]["sar"].all()
    batch = torch.utils.data.default_collate(
        [item, SceneTileDataset(scenes, 32, augment=False, modalities=("optical", "sar", "dsm"))[0]]
    )
    assert batch["optical"].shape == (2, 4, 32, 32)


def test_errors_are_data_errors(scenes: list[Scene]) -> None:
    with pytest.raises(DataError):
        SceneTileDataset([], tile_size=32)
    bad_spec = {
        "optical": ModalitySpec("optical", ("x",), (0.0,), (1.0,)),
        **{k: v for k, v in scenes[0].specs.items() if k != "optical"},
    }
    with pytest.raises(DataError, match="bands"):
        SceneTileDataset(scenes, tile_size=32, specs=bad_spec, augment=False)[0]


def test_works_with_a_dataloader_on_disk_dataset(tmp_path: Path) -> None:
    generate_dataset(tmp_path, scenes=3, size=32, seed=0, progress=False)
    scenes = open_dataset(tmp_path, split="train")
    loader = torch.utils.data.DataLoader(SceneTileDataset(scenes, 32, samples_per_epoch=4), batch_size=2)
    batch = next(iter(loader))
    assert batch["optical"].shape == (2, 4, 32, 32) and batch["valid"]["dsm"].shape == (2, 32, 32)
