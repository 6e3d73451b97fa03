import numpy as np
import pytest

from stars_edge.errors import ConfigError
from stars_edge.modalities import (
    ALL_PATTERNS,
    DEFAULT_SPECS,
    MODALITIES,
    ModalitySpec,
    Pattern,
    parse_patterns,
)


def test_seven_patterns_with_one_spelling_each() -> None:
    names = [p.name for p in ALL_PATTERNS]
    assert names == ["optical+sar+dsm", "optical+sar", "optical+dsm", "sar+dsm", "optical", "sar", "dsm"]
    assert [p.index for p in ALL_PATTERNS] == list(range(1, 8))


def test_parse_is_order_and_case_insensitive() -> None:
    assert Pattern.parse("DSM+optical").name == "optical+dsm"
    assert Pattern.parse("sar,optical") == Pattern(("optical", "sar"))
    assert Pattern.full().modalities == MODALITIES


@pytest.mark.parametrize("text", ["", "lidar", "sar+sar"])
def test_invalid_patterns_are_refused_with_the_valid_names(text: str) -> None:
    with pytest.raises(ConfigError, match="modalit"):
        Pattern.parse(text)


def test_parse_patterns_all_and_list() -> None:
    assert parse_patterns("all") == ALL_PATTERNS
    assert parse_patterns("sar, optical+dsm") == (Pattern.parse("sar"), Pattern.parse("optical+dsm"))
    assert parse_patterns("all", available=("optical", "sar")) == (
        Pattern.parse("optical+sar"),
        Pattern.parse("optical"),
        Pattern.parse("sar"),
    )
    with pytest.raises(ConfigError, match="not trained with"):
        parse_patterns("dsm", available=("optical", "sar"))


def test_pattern_without_and_missing() -> None:
    full = Pattern.full()
    assert full.without("sar") == Pattern.parse("optical+dsm")
    assert Pattern.parse("sar").without("sar") is None
    assert Pattern.parse("sar").missing() == ("optical", "dsm")


def test_spec_normalises_and_round_trips() -> None:
    spec = DEFAULT_SPECS["sar"]
    data = np.full((2, 3, 3), -10.0, dtype=np.float32)
    normalised = spec.normalize(data)
    assert normalised.dtype == np.float32
    assert np.allclose(normalised[0], 0.0) and np.allclose(normalised[1], (-10 + 17) / 4)
    assert ModalitySpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="expected 2 bands"):
        spec.normalize(np.zeros((3, 4, 4), dtype=np.float32))


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="same non-zero length"):
        ModalitySpec("dsm", ("h",), (0.0, 1.0), (1.0,))
    with pytest.raises(ConfigError, match="positive"):
        ModalitySpec("dsm", ("h",), (0.0,), (0.0,))
