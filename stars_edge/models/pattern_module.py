"""One availability pattern of a ``STARSModel`` as a plain module, for tracing and ONNX export."""

from __future__ import annotations

import inspect

from torch import Tensor, nn

from stars_edge.errors import ConfigError
from stars_edge.modalities import Pattern
from stars_edge.models.decoder import logits_at_stride
from stars_edge.models.stars import STARSModel


class PatternModule(nn.Module):
    """One availability pattern as a plain module: ``forward(*tensors)`` in canonical order -> logits.

    Only the pattern's stems and encoders are ever called, so tracing/exporting it yields a graph without
    the absent branches. ``export_module`` returns a per-pattern subclass whose ``forward`` signature names
    the modalities (``forward(sar, dsm)``), so ``torch.export`` / ``torch.onnx.export(dynamo=True)`` can take
    per-input ``dynamic_shapes`` keyed by modality.
    """

    def __init__(self, model: STARSModel, pattern: Pattern, logits_stride: int = 1) -> None:
        super().__init__()
        missing = [m for m in pattern if m not in model.modalities]
        if missing:
            raise ConfigError(
                f"pattern {pattern} needs {', '.join(missing)}, which this model was not trained with "
                f"(its modalities: {', '.join(model.modalities)})"
            )
        self.model = model
        self.pattern = pattern
        self.input_names: tuple[str, ...] = pattern.modalities
        #: 4: logits at stride 4, the decoder's final upsampling left to the runtime (issue 21).
        self.logits_stride = logits_stride

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.logits(tensors)

    def logits(self, tensors: tuple[Tensor, ...]) -> Tensor:
        """The pattern's logits at ``logits_stride``."""
        with logits_at_stride(self.logits_stride):
            return self.model.forward_modalities(tensors, self.input_names)


def _pattern_class(pattern: Pattern) -> type[PatternModule]:
    """A PatternModule subclass whose ``forward`` signature is ``(self, <modality>, ...)``."""

    def forward(self: PatternModule, *tensors: Tensor) -> Tensor:
        return self.logits(tensors)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter("self", kind)]
    parameters += [inspect.Parameter(m, kind, annotation=Tensor) for m in pattern]
    forward.__signature__ = inspect.Signature(parameters, return_annotation=Tensor)  # type: ignore[attr-defined]
    name = "PatternModule_" + "_".join(pattern.modalities)
    return type(name, (PatternModule,), {"forward": forward, "__module__": __name__})


def export_module(model: STARSModel, pattern: Pattern | str, logits_stride: int = 1) -> PatternModule:
    """Wrap ``model`` for one pattern (switches it to eval mode); inputs positional, canonical order.
    ``logits_stride`` 4 returns the logits before the decoder's final x4 upsampling."""
    if isinstance(pattern, str):
        pattern = Pattern.parse(pattern)
    module = _pattern_class(pattern)(model, pattern, logits_stride)
    module.eval()
    return module
