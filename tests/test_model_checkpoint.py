"""Checkpoints: round trip with identical outputs, clear errors for foreign or mismatched files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stars_edge.checkpoint import (
    CheckpointMeta,
    check_compatible,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from stars_edge.errors import CheckpointError
from stars_edge.modalities import DEFAULT_SPECS
from stars_edge.models import STARSModel, create_model

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


def _meta(model: STARSModel, variant: str = "tiny", method: str = "stars") -> CheckpointMeta:
    return CheckpointMeta(
        variant=variant,
        method=method,
        in_channels=dict(BANDS),
        classes=3,
        class_names=("a", "b", "c"),
        specs=dict(DEFAULT_SPECS),
        tile_size=64,
        model_kwargs=model.config.to_dict(),
        step=12,
        config={"lr": 0.001},
    )


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, decoder_channels=8)
    model.train()
    model({m: torch.randn(2, b, 64, 64) for m, b in BANDS.items()})  # move BN running stats off their init
    model.eval()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, _meta(model))
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta.variant == "tiny" and meta.method == "stars" and meta.step == 12
    assert meta.in_channels == BANDS and meta.class_names == ("a", "b", "c")
    assert meta.specs["sar"] == DEFAULT_SPECS["sar"] and meta.model_kwargs["decoder_channels"] == 8
    inputs = {"sar": torch.randn(1, 2, 64, 64), "dsm": torch.randn(1, 1, 64, 64)}
    with torch.no_grad():
        assert torch.equal(model(inputs), loaded(inputs))


@pytest.mark.parametrize("option", [{"decoder": "per_pattern"}, {"trunk_norm": "modality"}])
def test_round_trip_keeps_the_model_options(tmp_path: Path, option: dict[str, str]) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, **option)
    model.train()
    model({m: torch.randn(2, b, 64, 64) for m, b in BANDS.items()})
    model.eval()
    loaded, meta = load_checkpoint(save_checkpoint(tmp_path / "ckpt.pt", model, _meta(model)))
    assert all(meta.model_kwargs[k] == v for k, v in option.items())
    inputs = {"optical": torch.randn(1, 4, 64, 64)}
    with torch.no_grad():
        assert torch.equal(model(inputs), loaded(inputs))


def test_the_file_records_the_models_architecture_even_when_the_caller_does_not(tmp_path: Path) -> None:
    """A checkpoint must rebuild its model after a default changes (issue 22 changed translation_scales)."""
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, translation_scales=(3,)).eval()
    meta = _meta(model)
    meta.model_kwargs.clear()  # a caller that passes no architecture
    loaded, read = load_checkpoint(save_checkpoint(tmp_path / "ckpt.pt", model, meta))
    assert read.model_kwargs["translation_scales"] == (3,) and loaded.translation_scales == (3,)
    inputs = {"sar": torch.randn(1, 2, 64, 64)}  # optical and dsm translated from sar
    with torch.no_grad():
        assert torch.equal(model(inputs), loaded(inputs))


def test_missing_corrupt_and_foreign_files_are_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a stars-edge checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_weights_of_another_variant_or_band_layout_are_rejected(tmp_path: Path) -> None:
    tiny = create_model("tiny", BANDS, classes=3)
    edge = create_model("edge", BANDS, classes=3)
    with pytest.raises(CheckpointError, match="same variant, method and band layout"):
        load_model_state(edge, tiny.state_dict(), "tiny.pt")
    thirteen_bands = create_model("tiny", {**BANDS, "optical": 13}, classes=3)
    with pytest.raises(CheckpointError, match=r"shape of stems\.optical"):
        load_model_state(thirteen_bands, tiny.state_dict(), "tiny.pt")
    meta = _meta(tiny)
    with pytest.raises(CheckpointError, match="variant tiny, not edge"):
        check_compatible(meta, "tiny.pt", variant="edge")
    with pytest.raises(CheckpointError, match="band layout"):
        check_compatible(meta, "tiny.pt", in_channels={**BANDS, "optical": 13})
    check_compatible(meta, "tiny.pt", variant="tiny", method="stars", in_channels=BANDS, classes=3)
