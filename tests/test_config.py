from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from stars_edge.config import config_to_dict, load_config
from stars_edge.errors import ConfigError


@dataclass
class Example:
    steps: int = 10
    lr: float = 1e-3
    name: str = "x"
    amp: bool = False
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    out: Path = Path("runs")
    threads: int | None = None


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\nlr: 0.5\nsizes: [3, 4]\namp: true\n")
    config = load_config(Example, path, {"steps": "30", "threads": None, "mode": "b"})
    assert config == Example(steps=30, lr=0.5, amp=True, mode="b", sizes=(3, 4))
    assert config_to_dict(config)["out"] == "runs"


def test_unknown_key_names_file_and_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key\(s\) stepz; valid keys: amp"):
        load_config(Example, path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": "many"}, "steps must be int"),
        ({"steps": 1.5}, "integer"),
        ({"amp": "maybe"}, "true or false"),
        ({"mode": "c"}, "one of a, b"),
    ],
)
def test_wrong_types_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Example, None, overrides)


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Example, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="flat mapping"):
        load_config(Example, bad)
