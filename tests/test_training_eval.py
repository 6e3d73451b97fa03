"""`stars-edge eval`: per-pattern scores of a checkpoint on a dataset folder, and its error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stars_edge.cli import main as cli_main
from stars_edge.data.synthetic import generate_dataset
from stars_edge.errors import DataError
from training.config import TrainConfig
from training.evaluation import evaluate_checkpoint
from training.loop import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval_ckpt")
    config = TrainConfig(
        variant="tiny",
        tile_size=64,
        batch_size=2,
        synthetic_size=64,
        synthetic_train_scenes=2,
        synthetic_val_scenes=1,
        steps=2,
        val_every=1000,
        output_dir=out,
        val_patterns="sar",
    )
    return train(config, progress=False).checkpoint


def test_scores_every_pattern_of_a_dataset_split(tmp_path: Path, checkpoint: Path) -> None:
    data = tmp_path / "ds"
    generate_dataset(data, scenes=3, size=64, seed=1, split_fractions=(0.34, 0.33, 0.33), progress=False)
    report = evaluate_checkpoint(checkpoint, data, split="test", patterns="all", progress=False)
    assert len(report.scores) == 7
    rows = report.rows()
    assert rows[0]["pattern"] == "optical+sar+dsm"
    assert all(0 <= r["miou"] <= 100 for r in rows)
    assert "car" in rows[0]["per_class_iou"]
    assert "sar+dsm" in report.format()


def test_cli_prints_the_table_and_writes_json(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "ds"
    generate_dataset(data, scenes=3, size=64, seed=2, split_fractions=(0.34, 0.33, 0.33), progress=False)
    out = tmp_path / "scores.json"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            [
                "eval",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--patterns",
                "sar,optical+sar",
                "--json",
                str(out),
            ]
        )
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "optical+sar" in printed and "mIoU" in printed
    assert [r["pattern"] for r in json.loads(out.read_text())["rows"]] == ["sar", "optical+sar"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(data)])
    assert exit_info.value.code == 1
    assert "does not exist" in capsys.readouterr().err


def test_data_with_another_band_layout_is_refused(tmp_path: Path, checkpoint: Path) -> None:
    data = tmp_path / "ds5"
    generate_dataset(
        data,
        scenes=3,
        size=64,
        seed=3,
        split_fractions=(0.34, 0.33, 0.33),
        progress=False,
        optical_bands=5,
    )
    with pytest.raises(DataError, match=r"optical has 5 bands, checkpoint .* expects 4"):
        evaluate_checkpoint(checkpoint, data, split="test", progress=False)
