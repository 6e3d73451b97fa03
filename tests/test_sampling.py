"""Class-balanced pixel sampling: equal anchors per class, whatever the class imbalance."""

from __future__ import annotations

import pytest
import torch

from stars_edge.data.sampling import class_balanced_pixel_indices
from stars_edge.errors import DataError


def _skewed_labels() -> torch.Tensor:
    """2 x 64 x 64 map: class 0 dominates, class 1 is common-ish, class 2 has 12 pixels, 255 ignored."""
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, :8, :] = 1
    labels[0, 40, 10:22] = 2
    labels[1, 60:, :] = 255
    return labels


def test_balanced_sampling_gives_equal_counts_per_class() -> None:
    labels = _skewed_labels()
    generator = torch.Generator().manual_seed(0)
    indices, classes = class_balanced_pixel_indices(labels, per_class=10, generator=generator)
    counts = torch.bincount(classes, minlength=3).tolist()
    assert counts == [10, 10, 10]
    assert torch.equal(labels.reshape(-1)[indices], classes)
    assert len(set(indices.tolist())) == indices.numel()


def test_rare_class_contributes_all_its_pixels_when_fewer_than_k() -> None:
    labels = _skewed_labels()
    _, classes = class_balanced_pixel_indices(
        labels, per_class=50, generator=torch.Generator().manual_seed(1)
    )
    assert torch.bincount(classes, minlength=3).tolist() == [50, 50, 12]


def test_uniform_sampling_keeps_total_but_follows_the_imbalance() -> None:
    labels = _skewed_labels()
    generator = torch.Generator().manual_seed(0)
    indices, classes = class_balanced_pixel_indices(labels, per_class=10, generator=generator, balanced=False)
    assert indices.numel() == 30
    counts = torch.bincount(classes, minlength=3)
    assert counts[0] > 20  # the majority class takes most uniform draws
    assert (classes != 255).all()


def test_ignore_index_is_never_sampled_and_sampling_is_seeded() -> None:
    labels = torch.full((1, 32, 32), 255, dtype=torch.long)
    labels[0, :4, :4] = 3
    first, _ = class_balanced_pixel_indices(labels, 5, generator=torch.Generator().manual_seed(7))
    second, _ = class_balanced_pixel_indices(labels, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    assert (labels.reshape(-1)[first] == 3).all()
    empty, empty_classes = class_balanced_pixel_indices(torch.full((1, 8, 8), 255), 5)
    assert empty.numel() == 0 and empty_classes.numel() == 0


def test_bad_arguments_raise_data_errors() -> None:
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        class_balanced_pixel_indices(torch.zeros(8, 8, dtype=torch.long), 4)
    with pytest.raises(DataError, match="per_class"):
        class_balanced_pixel_indices(torch.zeros(1, 8, 8, dtype=torch.long), 0)
