"""STARS models: one constructor vocabulary for every variant and method.

```python
model = create_model("edge", in_channels={"optical": 4, "sar": 2, "dsm": 1}, classes=7, method="stars")
logits = model({"optical": x_opt, "sar": x_sar})
module = export_module(model, Pattern.parse("sar+dsm"))   # forward(sar, dsm) -> logits
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from stars_edge.errors import ConfigError
from stars_edge.models.encoders import ENCODER_REGISTRY, EncoderArch, create_encoder
from stars_edge.models.methods import METHODS, MethodSpec, get_method
from stars_edge.models.model_config import ModelConfig
from stars_edge.models.pattern_module import PatternModule, export_module
from stars_edge.models.stars import INPUT_MULTIPLE, EncodedModality, STARSModel

#: Model variants. "tiny" exists for tests (a 64x64 forward+backward in milliseconds); "edge" is the default,
#: sized for 2 CPU cores and Jetson-class GPUs; "resnet50" follows the paper's backbone.
MODEL_REGISTRY: dict[str, ModelConfig] = {
    "tiny": ModelConfig(encoder="tiny", specific_width=0.5, decoder_channels=16, psa_dim=16, psa_scale=1),
    "edge": ModelConfig(encoder="edge", specific_width=0.5, decoder_channels=24, psa_dim=32, psa_scale=1),
    "resnet18": ModelConfig(
        encoder="resnet18",
        specific_width=0.25,
        decoder_channels=128,
        psa_dim=64,
        psa_scale=1,
        translator_reduction=4,
    ),
    "resnet50": ModelConfig(
        encoder="resnet50",
        specific_width=0.125,
        decoder_channels=256,
        psa_dim=128,
        psa_scale=1,
        translator_kernel=1,
        translator_reduction=4,
    ),
}

DEFAULT_VARIANT = "edge"


def model_config(variant: str = DEFAULT_VARIANT, **overrides: Any) -> ModelConfig:
    """The variant's ModelConfig with ``overrides`` applied (unknown variants/keys: ``ConfigError``)."""
    try:
        base = MODEL_REGISTRY[variant]
    except KeyError:
        raise ConfigError(
            f"unknown model variant {variant!r}; valid variants: {', '.join(MODEL_REGISTRY)}"
        ) from None
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown model option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(fields))}"
        )
    return dataclasses.replace(base, **overrides)


def create_model(
    variant: str = DEFAULT_VARIANT,
    in_channels: Mapping[str, int] | None = None,
    classes: int = 7,
    method: str = "stars",
    **overrides: Any,
) -> STARSModel:
    """Build a STARS model (or a baseline) for a band layout; see ``MODEL_REGISTRY`` and ``METHODS``."""
    if in_channels is None:
        in_channels = {"optical": 4, "sar": 2, "dsm": 1}
    return STARSModel(in_channels, classes, method=method, config=model_config(variant, **overrides))


__all__ = [
    "DEFAULT_VARIANT",
    "ENCODER_REGISTRY",
    "INPUT_MULTIPLE",
    "METHODS",
    "MODEL_REGISTRY",
    "EncodedModality",
    "EncoderArch",
    "MethodSpec",
    "ModelConfig",
    "PatternModule",
    "STARSModel",
    "create_encoder",
    "create_model",
    "export_module",
    "get_method",
    "model_config",
]
