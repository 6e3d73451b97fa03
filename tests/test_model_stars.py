"""The STARS model: every pattern works, absent branches never run, the contract's errors are clear."""

from __future__ import annotations

import time

import pytest
import torch

from stars_edge.errors import ConfigError, DataError
from stars_edge.modalities import ALL_PATTERNS, Pattern
from stars_edge.models import (
    ENCODER_REGISTRY,
    METHODS,
    MODEL_REGISTRY,
    create_encoder,
    create_model,
    export_module,
)
from stars_edge.models.stars import translator_key

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


def _inputs(pattern: Pattern, size: int = 64, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, BANDS[m], size, size, generator=generator) for m in pattern}


@pytest.mark.parametrize("method", ["stars", "zero_fill_dropout", "shaspec"])
def test_every_pattern_gives_logits_of_the_input_size(method: str) -> None:
    model = create_model("tiny", BANDS, classes=5, method=method).eval()
    for pattern in ALL_PATTERNS:
        logits = model(_inputs(pattern))
        assert logits.shape == (2, 5, 64, 64)
        assert torch.isfinite(logits).all()


def test_absent_branches_are_not_run_and_used_parameters_all_get_gradients() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=4).train()
    pattern = Pattern.parse("sar")
    called: list[str] = []
    for m in BANDS:
        model.stems[m].register_forward_hook(lambda *_args, m=m: called.append(m))
        model.specific[m].register_forward_hook(lambda *_args, m=m: called.append(m))
    model(_inputs(pattern)).logsumexp(dim=1).mean().backward()
    assert set(called) == {"sar"}
    used_prefixes = (
        "stems.sar",
        "specific.sar",
        "mixers.sar",
        "shared.",
        "fusion.",
        "smooth.",
        "head.",
        f"translators.{translator_key('sar', 'optical')}",
        f"translators.{translator_key('sar', 'dsm')}",
    )
    for name, parameter in model.named_parameters():
        if name.startswith(used_prefixes):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_missing_modality_is_filled_by_translation_from_present_ones() -> None:
    """Translated scales hold the mean of the present modalities' translations; the others are zeros."""
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=4).eval()
    assert model.translation_scales == (1, 2, 3)  # the recipe: strides 8-32, stride 4 zero-filled
    inputs = _inputs(Pattern.parse("optical+sar"))
    encoded = model.encode(inputs)
    completed = model.complete(encoded)
    from_optical = model.translate("optical", "dsm", encoded["optical"].fused)
    from_sar = model.translate("sar", "dsm", encoded["sar"].fused)
    for scale, got in enumerate(completed["dsm"]):
        if scale in model.translation_scales:
            torch.testing.assert_close(got, (from_optical[scale] + from_sar[scale]) / 2)
        else:
            assert not got.any()


def test_export_module_takes_pattern_tensors_positionally() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3)
    pattern = Pattern.parse("dsm+optical")
    module = export_module(model, pattern)
    assert module.input_names == ("optical", "dsm")
    assert not module.training
    inputs = _inputs(pattern)
    torch.testing.assert_close(module(inputs["optical"], inputs["dsm"]), model(inputs))


def test_tiny_forward_backward_on_64px_is_well_under_a_second() -> None:
    model = create_model("tiny", BANDS, classes=7).train()
    inputs = _inputs(Pattern.full(), batch=2)
    model(inputs).mean().backward()  # warm-up
    start = time.perf_counter()
    model(inputs).mean().backward()
    assert time.perf_counter() - start < 0.5


def test_edge_variant_fits_the_edge_compute_budget() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("edge", BANDS, classes=7).eval()
    module = export_module(model, Pattern.full())
    inputs = _inputs(Pattern.full(), size=512, batch=1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs.values())
    gflops = counter.get_total_flops() / 1e9
    assert 0.3 < gflops < 2.0, gflops


def test_bad_inputs_raise_data_errors_naming_the_fix() -> None:
    model = create_model("tiny", BANDS, classes=3).eval()
    with pytest.raises(DataError, match="expected \\(N, 2, H, W\\)"):
        model({"sar": torch.randn(1, 3, 64, 64)})
    with pytest.raises(DataError, match="multiples of 32"):
        model({"sar": torch.randn(1, 2, 60, 64)})
    with pytest.raises(DataError, match="no input modality"):
        model({})
    sar_only = create_model("tiny", {"sar": 2}, classes=3, method="single_modality").eval()
    with pytest.raises(DataError, match="not part of this model"):
        sar_only({"optical": torch.randn(1, 4, 64, 64)})
    with pytest.raises(DataError, match="differs"):
        model({"sar": torch.randn(1, 2, 64, 64), "dsm": torch.randn(1, 1, 32, 64)})


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid variants: tiny, edge"):
        create_model("huge", BANDS)
    with pytest.raises(ConfigError, match="valid methods: stars"):
        create_model("tiny", BANDS, method="magic")
    with pytest.raises(ConfigError, match="valid encoders: tiny, edge"):
        create_model("tiny", BANDS, encoder="vgg")
    with pytest.raises(ConfigError, match="valid options"):
        create_model("tiny", BANDS, widht=3)
    with pytest.raises(ConfigError, match="one modality"):
        create_model("tiny", BANDS, method="single_modality")


@pytest.mark.parametrize("name", sorted(ENCODER_REGISTRY))
def test_registry_encoders_give_features_at_strides_4_to_32(name: str) -> None:
    encoder = create_encoder(name, in_chans=5).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 5, 64, 64))
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]
    assert [f.shape[1] for f in features] == encoder.feature_channels
    assert encoder.in_chans == 5


def test_resnet50_uses_bottleneck_blocks_with_paper_widths() -> None:
    encoder = create_encoder("resnet50", in_chans=3)
    assert encoder.feature_channels == [256, 512, 1024, 2048]
    n_params = sum(p.numel() for p in encoder.parameters())
    assert 23e6 < n_params < 24e6  # torchvision's resnet50 without the fc layer: 23.5M


def test_timm_encoder_when_timm_imports() -> None:
    pytest.importorskip("timm", reason="timm cannot be imported beside the CPU torch wheel here")
    model = create_model("tiny", BANDS, classes=3, encoder="timm:resnet18").eval()
    assert model(_inputs(Pattern.parse("sar"))).shape == (2, 3, 64, 64)


def test_every_method_and_variant_is_constructible() -> None:
    for method in METHODS:
        bands = {"sar": 2} if method == "single_modality" else BANDS
        model = create_model("tiny", bands, classes=3, method=method)
        assert model.method == method
    assert {"tiny", "edge", "resnet50"} <= set(MODEL_REGISTRY)


def test_translator_reduction_shrinks_translators_and_resnet50_uses_it() -> None:
    full = create_model("tiny", BANDS, classes=3)
    reduced = create_model("tiny", BANDS, classes=3, translator_reduction=2)

    def translator_params(model: torch.nn.Module) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith("translators."))

    assert translator_params(reduced) < translator_params(full)
    assert MODEL_REGISTRY["resnet50"].translator_kernel == 1
    assert MODEL_REGISTRY["resnet50"].translator_reduction == 4
    with pytest.raises(ConfigError, match="translator_reduction"):
        create_model("tiny", BANDS, translator_reduction=0)


def test_timm_encoder_without_timm_is_a_clear_config_error() -> None:
    try:
        import timm  # noqa: F401
    except Exception:
        with pytest.raises(ConfigError, match="needs a working timm install"):
            create_model("tiny", BANDS, classes=3, encoder="timm:resnet18")
    else:
        pytest.skip("timm imports here; the error path needs an environment without timm")
