"""The trainer: a short run produces a checkpoint and logs, resume is exact, bad input fails clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from stars_edge.checkpoint import load_checkpoint
from stars_edge.config import load_config
from stars_edge.errors import CheckpointError, ConfigError, DataError, TrainingError
from training.config import TrainConfig
from training.data import TrainingData, build_training_data
from training.loop import train
from training.train import main

TINY: dict[str, Any] = dict(
    variant="tiny",
    tile_size=64,
    batch_size=4,
    synthetic_size=128,
    synthetic_train_scenes=2,
    synthetic_val_scenes=1,
    log_every=2,
    val_every=1000,
    checkpoint_every=1000,
    seed=3,
)


@pytest.fixture(scope="module")
def tiny_data() -> TrainingData:
    return build_training_data(TrainConfig(**TINY))


def _config(tmp_path: Path, name: str, **changes: Any) -> TrainConfig:
    return TrainConfig(**{**TINY, "output_dir": tmp_path / name, **changes})


def test_short_run_writes_checkpoint_log_validation_and_diagnostics(
    tmp_path: Path, tiny_data: TrainingData
) -> None:
    result = train(
        _config(tmp_path, "run", steps=4, val_patterns="optical+sar+dsm sar"), progress=False, data=tiny_data
    )
    model, meta = load_checkpoint(result.checkpoint)
    assert meta.step == 4 and meta.variant == "tiny" and meta.class_names == tiny_data.class_names
    assert meta.in_channels == {"optical": 4, "sar": 2, "dsm": 1} and meta.tile_size == 64
    rows = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    losses = [row for row in rows if "total" in row]
    assert [row["step"] for row in losses] == [2, 4]
    assert {"seg", "translation", "psa", "feature_std", "effective_rank", "feature_std/sar"} <= set(
        losses[-1]
    )
    val = [row["val"] for row in rows if "val" in row][-1]
    assert set(val) == {"optical+sar+dsm", "sar"} and 0 <= val["sar"]["miou"] <= 100
    inputs = {"sar": torch.randn(1, 2, 64, 64)}
    with torch.no_grad():
        assert torch.equal(model(inputs), result.model(inputs))


@pytest.mark.parametrize("method", ["zero_fill_dropout", "shaspec", "stars_no_psa"])
def test_baselines_train_with_the_same_loop(tmp_path: Path, tiny_data: TrainingData, method: str) -> None:
    result = train(_config(tmp_path, method, steps=2, method=method), progress=False, data=tiny_data)
    assert result.meta.method == method
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last_losses.values())
    if method == "shaspec":
        assert {"shared_align", "modality_cls"} <= set(result.last_losses)


def test_single_modality_baseline_trains_on_one_modality(tmp_path: Path, tiny_data: TrainingData) -> None:
    result = train(
        _config(tmp_path, "single", steps=2, method="single_modality", modalities=("sar",)),
        progress=False,
        data=tiny_data,
    )
    assert result.model.modalities == ("sar",) and set(result.val_scores) == {"sar"}


def test_resumed_run_matches_the_uninterrupted_run_exactly(tmp_path: Path, tiny_data: TrainingData) -> None:
    full = train(
        _config(tmp_path, "full", steps=6, checkpoint_every=3, keep_checkpoints=True),
        progress=False,
        data=tiny_data,
    )
    halfway = tmp_path / "full" / "checkpoint-000003.pt"
    resumed = train(_config(tmp_path, "resumed", steps=6, resume=halfway), progress=False, data=tiny_data)
    expected = full.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_resume_refuses_a_checkpoint_of_another_variant(tmp_path: Path, tiny_data: TrainingData) -> None:
    first = train(_config(tmp_path, "a", steps=1), progress=False, data=tiny_data)
    with pytest.raises(CheckpointError, match="variant tiny, not edge"):
        train(
            _config(tmp_path, "b", steps=2, variant="edge", resume=first.checkpoint),
            progress=False,
            data=tiny_data,
        )


class _PoisonedTiles:
    """Wraps a dataset; tiles read after ``clean_reads`` reads contain NaN."""

    def __init__(self, base: Any, clean_reads: int) -> None:
        self.base, self.reads, self.clean_reads = base, 0, clean_reads

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[index])
        self.reads += 1
        if self.reads > self.clean_reads:
            item["optical"] = torch.full_like(item["optical"], float("nan"))
        return item


def test_nan_loss_names_the_step_and_the_last_good_checkpoint(
    tmp_path: Path, tiny_data: TrainingData
) -> None:
    poisoned = TrainingData(
        _PoisonedTiles(tiny_data.train, clean_reads=8), None, tiny_data.specs, tiny_data.class_names
    )
    with pytest.raises(TrainingError, match=r"non-finite loss at step 3 .*checkpoint\.pt"):
        train(_config(tmp_path, "nan", steps=5, checkpoint_every=1), progress=False, data=poisoned)


def test_band_counts_that_contradict_the_config_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="optical has 4 bands but the config says optical_bands: 13"):
        build_training_data(_config(tmp_path, "bands", optical_bands=13))


def test_unknown_config_keys_and_bad_values_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("variant: tiny\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) learning_rate"):
        load_config(TrainConfig, path)
    with pytest.raises(ConfigError, match="multiple of 32"):
        TrainConfig(tile_size=100)
    with pytest.raises(ConfigError, match="single_modality"):
        TrainConfig(method="single_modality")


def test_cli_runs_from_yaml_with_flag_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(
        "variant: tiny\ntile_size: 64\nbatch_size: 2\nsynthetic_size: 64\nsynthetic_train_scenes: 2\n"
        "steps: 50\nval_patterns: sar\n"
    )
    out = tmp_path / "cli"
    assert main(["--config", str(path), "--steps", "2", "--output-dir", str(out), "--quiet"]) == 0
    assert (out / "checkpoint.pt").is_file()
    assert "val sar" in capsys.readouterr().out
    assert main(["--config", str(path), "--method", "nope"]) == 1
    assert "valid methods" in capsys.readouterr().err


def test_example_configs_load() -> None:
    folder = Path(__file__).resolve().parents[1] / "stars_edge" / "configs"
    paths = sorted(folder.glob("*.yaml"))
    assert paths
    for path in paths:
        config = load_config(TrainConfig, path)
        assert config.steps > 0, path


def test_per_pattern_decoders_are_reestimated_and_the_checkpoint_says_so(
    tmp_path: Path, tiny_data: TrainingData
) -> None:
    result = train(_config(tmp_path, "pp", steps=2, decoder="per_pattern"), progress=False, data=tiny_data)
    _, meta = load_checkpoint(result.checkpoint)
    assert meta.config["decoder_statistics"] == "reestimated"
    shared = train(_config(tmp_path, "shared", steps=2, decoder="shared"), progress=False, data=tiny_data)
    assert "decoder_statistics" not in load_checkpoint(shared.checkpoint)[1].config
