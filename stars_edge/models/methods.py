"""Training methods: STARS, its ablations and the baselines, as switches on one model and one trainer.

Every method shares the backbone, decoder and training budget; only how a missing modality is filled and
which auxiliary losses run differ. That is what makes the ablation table a fair comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stars_edge.errors import ConfigError

FillStrategy = Literal["translate", "zero", "shared"]


@dataclass(frozen=True)
class MethodSpec:
    """What a method changes: the missing-modality fill, and the auxiliary losses the trainer adds."""

    fill: FillStrategy
    translation_loss: bool = False
    stop_gradient: bool = True
    psa: bool = False
    psa_balanced: bool = True
    shaspec_losses: bool = False
    single_modality: bool = False
    description: str = ""


METHODS: dict[str, MethodSpec] = {
    "stars": MethodSpec(
        "translate",
        translation_loss=True,
        psa=True,
        description="shared-specific encoders, bidirectional translation with stop-gradient, PSA",
    ),
    "stars_no_stopgrad": MethodSpec(
        "translate",
        translation_loss=True,
        stop_gradient=False,
        psa=True,
        description="STARS with gradients flowing into the translation target (symmetric alignment)",
    ),
    "stars_no_psa": MethodSpec(
        "translate",
        translation_loss=True,
        description="STARS without pixel-level semantic alignment (no PSA loss, no projection head)",
    ),
    "stars_psa_uniform": MethodSpec(
        "translate",
        translation_loss=True,
        psa=True,
        psa_balanced=False,
        description="STARS with uniform instead of class-balanced pixel sampling for the alignment loss "
        "(isolates the balancing; called stars_no_psa in results logged before 2026-12-05)",
    ),
    "zero_fill_dropout": MethodSpec(
        "zero",
        description="missing modality features set to zero, trained with modality dropout",
    ),
    "shaspec": MethodSpec(
        "shared",
        shaspec_losses=True,
        description="ShaSpec-style: missing slot gets the present modalities' shared feature; L1 shared "
        "alignment and modality classification of specific features",
    ),
    "single_modality": MethodSpec(
        "zero",
        single_modality=True,
        description="one model per modality, trained on that modality alone",
    ),
}


def get_method(name: str) -> MethodSpec:
    """Look up a method; the error lists every valid name."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None
