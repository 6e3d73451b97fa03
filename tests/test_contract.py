"""The input contract's test on its own: each rule, the approximate contract, serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from stars_edge.contract import (
    FAR_DISTANCE,
    ModalityContract,
    check_values,
    contract_disagrees,
    contract_from_spec,
    contract_from_values,
    contracts_from_dict,
)
from stars_edge.errors import ConfigError
from stars_edge.manifest import Manifest, ModelInfo
from stars_edge.modalities import DEFAULT_SPECS, ModalitySpec

RNG = np.random.default_rng(0)
SAR = DEFAULT_SPECS["sar"]


def _sar(n: int = 20_000) -> np.ndarray:
    return np.stack([RNG.normal(-10, 4, n), RNG.normal(-17, 4, n)])


def test_swapped_polarisations_are_caught_by_physics_even_without_measured_quantiles() -> None:
    """The normal approximation judges no band order; co-pol below cross-pol still gives it away."""
    approximate = contract_from_spec(SAR)
    assert not approximate.measured
    assert check_values(_sar(), approximate).problem is None
    verdict = check_values(_sar()[::-1], approximate)
    assert verdict.problem is not None and "vv above vh on only" in verdict.problem
    assert verdict.explanation is not None and "--bands sar=2,1" in verdict.explanation.fix


def test_band_order_is_judged_only_against_measured_quantiles() -> None:
    optical = DEFAULT_SPECS["optical"]
    values = np.stack([RNG.normal(m, s, 20_000) for m, s in zip(optical.mean, optical.std, strict=True)])
    measured = contract_from_values(optical, values, "test")
    nir_first = values[[3, 0, 1, 2]]
    assert "bands in the order nir" in (check_values(nir_first, measured).problem or "")
    assert check_values(nir_first, contract_from_spec(optical)).problem is None


def test_far_off_data_is_refused_even_when_nothing_explains_it() -> None:
    dsm = DEFAULT_SPECS["dsm"]
    contract = contract_from_values(dsm, RNG.normal(5, 8, (1, 20_000)), "test")
    verdict = check_values(-RNG.normal(5000, 8, (1, 20_000)), contract)
    assert verdict.distance > FAR_DISTANCE and verdict.explanation is None
    assert verdict.problem is not None and "spreads from what the engines were trained on" in verdict.problem


def test_too_few_samples_give_no_verdict() -> None:
    verdict = check_values(_sar(100)[::-1] * 0 + 5, contract_from_spec(SAR))
    assert verdict.problem is None and verdict.notes


def test_calibration_data_unlike_the_normalisation_is_detected() -> None:
    contract = contract_from_values(SAR, _sar(), "test")
    assert contract_disagrees(contract, SAR) is None
    assert "vv median" in (contract_disagrees(contract_from_values(SAR, _sar() + 20, "x"), SAR) or "")


def test_contract_round_trips_through_the_manifest() -> None:
    contract = contract_from_values(SAR, _sar(), "calibration scenes")
    restored = contracts_from_dict({"sar": contract.to_dict()})["sar"]
    assert restored.bands[0].name == "vv" and restored.units == "dB" and restored.measured
    assert np.allclose(restored.bands[1].quantiles, contract.bands[1].quantiles, atol=1e-5)
    manifest = Manifest(
        model=ModelInfo("tiny", "stars", "0" * 64, 2, ("a", "b")),
        modalities={"sar": SAR, "dsm": DEFAULT_SPECS["dsm"]},
        tile_size=64,
        input_contract={"sar": contract},
    )
    again = Manifest.from_dict(manifest.to_dict())
    assert again.contract("sar").measured and not again.contract("dsm").measured
    with pytest.raises(ConfigError, match="quantile"):
        ModalityContract.from_dict("sar", {"bands": [{"name": "vv", "quantiles": [1, 2]}]})


def test_units_without_a_known_signature_only_get_the_generic_rules() -> None:
    spec = ModalitySpec("dsm", ("height",), (0.5,), (0.2,), units="")
    contract = contract_from_values(spec, RNG.normal(0.5, 0.2, (1, 5000)), "test")
    assert check_values(RNG.normal(0.5, 0.2, (1, 5000)) + 0.3, contract).problem is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int16])
def test_quantiles_are_numpys_percentiles_to_the_bit(dtype: type) -> None:
    """The sample's quantiles (sorted first, then ``np.percentile``) equal ``np.percentile`` of the values
    as float64, ties, NaN and a single value included."""
    from stars_edge.contract import QUANTILE_LEVELS, _quantiles

    rng = np.random.default_rng(3)
    values = (
        rng.normal(100, 40, (3, 5001))
        if dtype in (np.float32, np.float64)
        else rng.integers(0, 60, (3, 5001))
    )
    values = values.astype(dtype)
    if values.dtype.kind == "f":
        values[1, ::7] = values[1, 3]  # ties
        values[2, 17] = np.nan
    for sample in (values, values[:, :1]):
        want = np.percentile(sample.astype(np.float64), QUANTILE_LEVELS, axis=1).T
        got = _quantiles(sample)
        assert got.tobytes() == want.tobytes()
