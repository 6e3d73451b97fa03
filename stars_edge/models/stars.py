"""The STARS model (our reconstruction, see docs/MODEL.md): shared-specific encoders, per-scale fusion,
cross-modal translators that stand in for missing modalities, SCSE fusion, FPN decoder.

``model(inputs)`` takes a mapping ``{modality: (N, bands, H, W)}``; the pattern is the set of keys present.
Missing modalities never run their stem or encoders: their features come from the present ones
(translation, zeros or shared features, depending on the method).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stars_edge.errors import ConfigError, DataError
from stars_edge.modalities import MODALITIES, Pattern, all_patterns
from stars_edge.models.blocks import ConvBNReLU
from stars_edge.models.decoder import decode_features, decoder_parts
from stars_edge.models.encoders import Encoder, EncoderBody, TimmEncoder, build_stem, get_arch
from stars_edge.models.methods import get_method
from stars_edge.models.modality_norm import active_modality, modality_norms, use_modality_norms
from stars_edge.models.model_config import DECODER_MODES, ModelConfig
from stars_edge.models.pattern_norm import PatternNorm, pattern_key, pattern_norms

__all__ = [
    "DECODER_MODES",
    "INPUT_MULTIPLE",
    "EncodedModality",
    "ModelConfig",
    "STARSModel",
    "Translator",
    "translator_key",
]

#: Inputs must be multiples of this (the stride of the deepest feature map).
INPUT_MULTIPLE = 32


@dataclass
class EncodedModality:
    """Per-scale features of one present modality (strides 4, 8, 16, 32)."""

    shared: list[Tensor]
    specific: list[Tensor]
    fused: list[Tensor]


class Translator(nn.Module):
    """T_{j->k}: a small conv mapping modality j's fused features to modality k's at one scale (or to k's
    specific features only, ``out_channels`` wide, with ``translation_target="specific"``).

    ``depth`` x ``ConvBNReLU(-> C / reduction, kernel)`` then a linear 1x1 conv back to C: two 3x3 layers
    see a 5x5 neighbourhood of the source, which is what predicting another sensor's content needs at the
    deep scales; wide backbones use a reduction so that one translator per ordered pair and scale stays cheap.
    """

    def __init__(
        self,
        channels: int,
        kernel: int = 3,
        reduction: int = 1,
        depth: int = 1,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        layers: list[nn.Module] = [
            ConvBNReLU(channels if i == 0 else hidden, hidden, kernel) for i in range(depth)
        ]
        self.body = nn.Sequential(*layers, nn.Conv2d(hidden, out_channels or channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def translator_key(source: str, target: str) -> str:
    return f"{source}_to_{target}"


class STARSModel(nn.Module):
    """Missing-modality segmentation model; see the module docstring and docs/MODEL.md."""

    def __init__(
        self,
        in_channels: Mapping[str, int],
        classes: int,
        method: str = "stars",
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        config = config or ModelConfig()
        unknown = [m for m in in_channels if m not in MODALITIES]
        if unknown or not in_channels:
            raise ConfigError(
                f"in_channels must map modalities ({', '.join(MODALITIES)}) to band counts, "
                f"got {dict(in_channels)}"
            )
        if any(int(b) < 1 for b in in_channels.values()):
            raise ConfigError(f"every band count must be >= 1, got {dict(in_channels)}")
        if classes < 2:
            raise ConfigError(f"classes must be >= 2, got {classes}")
        self.method = method
        self.method_spec = get_method(method)
        if self.method_spec.single_modality and len(in_channels) != 1:
            raise ConfigError(
                f"method single_modality builds one model per modality; pass one modality in in_channels, "
                f"got {', '.join(in_channels)}"
            )
        self.config = config
        self.classes = classes
        self.modalities: tuple[str, ...] = tuple(m for m in MODALITIES if m in in_channels)
        #: Every availability pattern of this model, full pattern first.
        self.patterns: tuple[Pattern, ...] = tuple(all_patterns(self.modalities))
        self.in_channels: dict[str, int] = {m: int(in_channels[m]) for m in self.modalities}
        self.fill = self.method_spec.fill

        stems: dict[str, nn.Module] = {}
        specific: dict[str, nn.Module] = {}
        if config.encoder.startswith("timm:"):
            adapter = config.timm_adapter_channels
            shared: nn.Module = TimmEncoder(config.encoder.split(":", 1)[1], adapter)
            specific_arch = get_arch(config.specific_encoder or "tiny").scaled(
                config.specific_width, config.specific_depth
            )
            for m, bands in self.in_channels.items():
                stems[m] = ConvBNReLU(bands, adapter, 1)
                specific[m] = Encoder(specific_arch, adapter)
        else:
            arch = get_arch(config.encoder)
            specific_arch = get_arch(config.specific_encoder or config.encoder).scaled(
                config.specific_width, config.specific_depth
            )
            shared = EncoderBody(arch, arch.stem_channels)
            for m, bands in self.in_channels.items():
                stems[m] = build_stem(arch, bands)
                specific[m] = EncoderBody(specific_arch, arch.stem_channels)
        self.stems = nn.ModuleDict(stems)
        per_modality = config.trunk_norm == "modality" and len(self.in_channels) > 1
        if per_modality and not use_modality_norms(shared, self.modalities):
            raise ConfigError(f"trunk_norm 'modality': encoder {config.encoder!r} has no BatchNorm2d")
        self.shared = shared
        self._trunk_norms = modality_norms(shared)
        self.specific = nn.ModuleDict(specific)
        shared_ch: list[int] = list(shared.feature_channels)  # type: ignore[arg-type]
        specific_ch: list[int] = list(next(iter(specific.values())).feature_channels)  # type: ignore[arg-type]
        self.feature_channels = shared_ch

        self.mixers = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    [ConvBNReLU(s + p, s, 1) for s, p in zip(shared_ch, specific_ch, strict=True)]
                )
                for m in self.modalities
            }
        )
        #: Scales at which a missing modality is translated; at the others it is filled with zeros.
        self.translation_scales: tuple[int, ...] = config.translation_scales
        self.translation_target = config.translation_target
        target_ch = specific_ch if self.translation_target == "specific" else shared_ch
        self.translators = nn.ModuleDict()
        if self.fill == "translate" and len(self.modalities) > 1:
            for source in self.modalities:
                for target in self.modalities:
                    if source != target:
                        self.translators[translator_key(source, target)] = nn.ModuleDict(
                            {
                                str(i): Translator(
                                    shared_ch[i],
                                    config.translator_kernel,
                                    config.translator_reduction,
                                    config.translator_depth,
                                    target_ch[i],
                                )
                                for i in self.translation_scales
                            }
                        )
        n_mod = len(self.modalities)
        width = config.decoder_channels
        names = [p.name for p in self.patterns]

        def new_decoder(patterns: list[str]) -> tuple[nn.ModuleList, nn.Module, nn.Conv2d]:
            return decoder_parts(
                patterns, shared_ch, n_mod, width, classes, config.scse_reduction, config.pattern_norm
            )

        #: One decoder per pattern (``decoder="per_pattern"``), keyed by ``pattern_key``; else empty.
        self.pattern_decoders = nn.ModuleDict()
        if config.decoder == "per_pattern" and len(names) > 1:
            for name in names:
                fusion, smooth, head = new_decoder([name])
                parts = {"fusion": fusion, "smooth": smooth, "head": head}
                self.pattern_decoders[pattern_key(name)] = nn.ModuleDict(parts)
        else:
            self.fusion, self.smooth, self.head = new_decoder(names)

        self.psa_head: nn.Module | None = None
        if self.method_spec.psa:
            c = shared_ch[config.psa_scale]
            # BatchNorm in the head keeps the hidden layer's variance up, so the embedding cannot fall into
            # the all-equal state where PSA sits at its trivial value with a vanishing gradient (measured)
            self.psa_head = nn.Sequential(
                nn.Conv2d(c, c, 1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, config.psa_dim, 1),
            )
        self.modality_classifier: nn.Module | None = None
        if self.method_spec.shaspec_losses:
            self.modality_classifier = nn.Linear(specific_ch[-1], n_mod)

    # ----------------------------------------------------------------------------------------- inputs
    def check_inputs(self, inputs: Mapping[str, Tensor]) -> Pattern:
        """Validate a modality mapping against this model; return its pattern (raises ``DataError``)."""
        if not inputs:
            raise DataError(f"no input modality given; this model takes {', '.join(self.modalities)}")
        unknown = [m for m in inputs if m not in self.modalities]
        if unknown:
            raise DataError(
                f"modality {unknown[0]!r} was not part of this model's training; it takes "
                f"{', '.join(self.modalities)}"
            )
        reference: tuple[int, ...] | None = None
        for m, x in inputs.items():
            if x.ndim != 4 or x.shape[1] != self.in_channels[m]:
                raise DataError(
                    f"{m}: expected (N, {self.in_channels[m]}, H, W) input, got shape {tuple(x.shape)}; "
                    "check the band layout matches the checkpoint"
                )
            h, w = int(x.shape[2]), int(x.shape[3])
            if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
                raise DataError(
                    f"{m}: height and width must be multiples of {INPUT_MULTIPLE}, got {h}x{w}; pad"
                )
            size = (int(x.shape[0]), h, w)
            if reference is not None and size != reference:
                raise DataError(f"{m}: batch/size {size} differs from the other modalities' {reference}")
            reference = size
        return Pattern(tuple(inputs))

    # --------------------------------------------------------------------------------------- stages
    def encode(self, inputs: Mapping[str, Tensor]) -> dict[str, EncodedModality]:
        """Run stems, the shared trunk and the specific branches for the present modalities only.

        With ``trunk_norm="modality"`` the trunk runs once per modality with that modality's BatchNorms.
        Otherwise, in training, it sees all modalities in one batch, so its BatchNorm statistics are the
        mixture it will use at inference; in eval mode (and export) each modality runs on its own.
        """
        present = [m for m in self.modalities if m in inputs]
        stems = {m: self.stems[m](inputs[m]) for m in present}
        if self._trunk_norms:
            shared = {}
            for m in present:
                with active_modality(self._trunk_norms, m):
                    shared[m] = self.shared(stems[m])
        elif self.training and len(present) > 1:
            joint = self.shared(torch.cat([stems[m] for m in present], dim=0))
            chunks = [f.chunk(len(present), dim=0) for f in joint]
            shared = {m: [c[i] for c in chunks] for i, m in enumerate(present)}
        else:
            shared = {m: self.shared(stems[m]) for m in present}
        encoded: dict[str, EncodedModality] = {}
        for m in present:
            specific = self.specific[m](stems[m])
            mixers = cast(nn.ModuleList, self.mixers[m])
            fused = [
                s + mixer(torch.cat([s, p], dim=1))
                for s, p, mixer in zip(shared[m], specific, mixers, strict=True)
            ]
            encoded[m] = EncodedModality(shared=shared[m], specific=specific, fused=fused)
        return encoded

    def translate(self, source: str, target: str, features: Sequence[Tensor]) -> dict[int, Tensor]:
        """T_{source->target} at every translated scale (``{scale index: features}``)."""
        translators = cast(nn.ModuleDict, self.translators[translator_key(source, target)])
        return {i: translators[str(i)](features[i]) for i in self.translation_scales}

    def translation_targets(self, encoded: Mapping[str, EncodedModality]) -> dict[str, list[Tensor]]:
        """What each modality's translators are trained to predict: its fused or its specific features."""
        if self.translation_target == "specific":
            return {m: e.specific for m, e in encoded.items()}
        return {m: e.fused for m, e in encoded.items()}

    def complete(
        self,
        encoded: Mapping[str, EncodedModality],
        translations: Mapping[tuple[str, str], Mapping[int, Tensor]] | None = None,
    ) -> dict[str, list[Tensor]]:
        """Per-scale features for every model modality: real where present, filled where missing.

        ``translations`` reuses translations already computed (in training, for the translation loss).
        A translating model fills only its ``translation_scales`` by translation, the others with zeros.
        """
        present = [m for m in self.modalities if m in encoded]
        out: dict[str, list[Tensor]] = {}
        for m in self.modalities:
            if m in encoded:
                out[m] = encoded[m].fused
                continue
            if self.fill == "translate":
                sources = [
                    translations[(j, m)]
                    if translations is not None and (j, m) in translations
                    else self.translate(j, m, encoded[j].fused)
                    for j in present
                ]
                means = {i: _mean([s[i] for s in sources]) for i in self.translation_scales}
                if self.translation_target == "specific":
                    means = self._fuse_translated_specific(m, [encoded[j] for j in present], means)
                reference = encoded[present[0]].fused
                out[m] = [means[i] if i in means else torch.zeros_like(f) for i, f in enumerate(reference)]
            elif self.fill == "shared":
                out[m] = _mean_lists([encoded[j].shared for j in present])
            else:
                out[m] = [torch.zeros_like(f) for f in encoded[present[0]].fused]
        return out

    def _fuse_translated_specific(
        self, target: str, present: Sequence[EncodedModality], specific: Mapping[int, Tensor]
    ) -> dict[int, Tensor]:
        """A missing modality's fused features from the present ones' mean shared features and its
        translated specific features, through its own mixer (as if it had been encoded)."""
        mixers = cast(nn.ModuleList, self.mixers[target])
        fused: dict[int, Tensor] = {}
        for i, translated in specific.items():
            shared = _mean([e.shared[i] for e in present])
            fused[i] = shared + mixers[i](torch.cat([shared, translated], dim=1))
        return fused

    def decode(self, features: Mapping[str, Sequence[Tensor]], pattern: Pattern | None = None) -> Tensor:
        """Concat modalities per scale -> SCSE -> 1x1 conv; FPN top-down to stride 4; head; upsample x4.

        ``pattern`` (default: the full pattern) selects the decoder's per-pattern normalization, or the
        pattern's own decoder with ``decoder="per_pattern"``.
        """
        name = (pattern or self.patterns[0]).name
        if self.pattern_decoders:
            parts = cast(nn.ModuleDict, self.pattern_decoders[pattern_key(name)])
            fusion, smooth, head = parts["fusion"], parts["smooth"], parts["head"]
        else:
            fusion, smooth, head = self.fusion, self.smooth, self.head
        # one walk of the module tree per call: the norms found here are the ones switched to ``name``
        return decode_features(features, self.modalities, fusion, smooth, head, self._pattern_norms, name)

    @property
    def _pattern_norms(self) -> list[PatternNorm]:
        """The norms that keep per-pattern statistics (the others ignore the active pattern)."""
        return [n for n in pattern_norms(self) if n.per_pattern]

    def project(self, features: Sequence[Tensor]) -> Tensor:
        """PSA embedding (L2-normalised per pixel) of one modality's features at ``psa_scale``."""
        if self.psa_head is None:
            raise ConfigError(f"method {self.method!r} has no PSA projection head")
        return F.normalize(self.psa_head(features[self.config.psa_scale]), dim=1)

    # -------------------------------------------------------------------------------------- forward
    def forward_modalities(self, tensors: Sequence[Tensor], modalities: Sequence[str]) -> Tensor:
        """Logits from positional tensors (no shape checks: the export path, traced with symbolic shapes)."""
        encoded = self.encode(dict(zip(modalities, tensors, strict=True)))
        return self.decode(self.complete(encoded), Pattern(tuple(modalities)))

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Logits ``(N, classes, H, W)`` for whatever subset of modalities ``inputs`` holds."""
        pattern = self.check_inputs(inputs)
        return self.forward_modalities([inputs[m] for m in pattern], pattern.modalities)


def _mean(items: Sequence[Tensor]) -> Tensor:
    return items[0] if len(items) == 1 else torch.stack(list(items), dim=0).mean(dim=0)


def _mean_lists(items: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    if len(items) == 1:
        return list(items[0])
    return [torch.stack(level, dim=0).mean(dim=0) for level in zip(*items, strict=True)]
