"""What ``stars-edge build-engines`` takes (``BuildOptions``), and what each artifact's freshness depends on.

Kept apart from ``export/build.py`` (which does the building) so the options, their validation and the
per-artifact option record read in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from export import gate
from export.accuracy_control import DEFAULT_MAX_FLOAT_LAYERS
from export.quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD, DEFAULT_PLACEMENT, PLACEMENTS
from export.quantizers import QUANTIZERS, default_quantizer, tensorrt_refusal
from export.selection import TIE_TOLERANCE
from export.tiles import SYNTHETIC
from stars_edge.errors import ConfigError
from stars_edge.manifest import BACKENDS, LOGITS_STRIDES, PRECISIONS, Backend, Precision

DEFAULT_TILE = 512


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``stars-edge build-engines`` takes; defaults are the CLI's."""

    #: The default checkpoint (the first ``--checkpoint``): alone, it is built exactly as always.
    checkpoint: Path
    out: Path
    patterns: str | Sequence[str] = "all"
    precisions: tuple[Precision, ...] = ("fp32", "fp16", "int8")
    calib_data: str = SYNTHETIC
    calib_tiles: int = 32
    #: Ours only (the vendors calibrate their own way); empty: ``DEFAULT_CALIBRATION_METHOD``.
    calib_method: str = ""
    #: Tiles from the calibration source, after the calibration tiles, on which INT8 accuracy control picks
    #: the layers to keep float (0: off). Disjoint from the gate's tiles.
    control_tiles: int = 32
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS
    #: Ours only (the vendors place Q/DQ their own way); empty: ``DEFAULT_PLACEMENT``.
    placement: str = ""
    #: Who writes the INT8 Q/DQ graph: ``ours`` (export/quantize.py), ``nncf`` or ``modelopt``
    #: (export/quantizers.py); the same gate measures each. Empty: the backend's default (``nncf`` for CPU
    #: builds, ``ours`` for TensorRT; ``quantizers.default_quantizer``).
    quantizer: str = ""
    #: The quantizer that replaces a pattern's INT8 graph when the gate flags the default quantizer's one
    #: (``ours``: TensorRT-legal, percentile calibration). Decided in ``__post_init__``: ``ours`` when the
    #: quantizer was left to its default and is a vendor's, else empty (an explicit ``--quantizer`` is
    #: never replaced).
    int8_fallback: str | None = None
    gate_data: str = SYNTHETIC
    gate_tiles: int = 16
    gate_budget: float = gate.DEFAULT_BUDGET
    backend: Backend = "onnxruntime"
    strict: bool = False
    opset: int = 17
    tile: int | None = None  # None: the checkpoint's tile size
    #: Choose the context margin and the optical mask dilation by measured mIoU on validation scenes with
    #: holes (``runtime/edges.py``; on 8 held-out cloudy scenes, 3 seeds, it beat the best fixed margin by
    #: 0.31-0.35 mIoU and the measured one by 4.4-5.2: docs/RUNTIME.md). False: the measured margin.
    edge_selection: bool = True
    progress: bool = True
    #: Further checkpoints (the other ``--checkpoint`` options): per pattern, the one whose FP32 engine scores
    #: the best validation mIoU on the gate tiles serves it (``export/selection.py``).
    other_checkpoints: tuple[Path, ...] = ()
    #: mIoU points within which candidates tie; a tie goes to fewer GFLOPs (``selection.TIE_TOLERANCE``).
    tie_tolerance: float = TIE_TOLERANCE
    #: 4: engines return stride-4 logits (no final upsampling) and the runtime blends at stride 4 (issue
    #: 21: faster scenes, the same mIoU within 0.1); 1: engines end with the decoder's upsampling.
    logits_stride: int = 4

    @property
    def checkpoints(self) -> tuple[Path, ...]:
        """Every candidate checkpoint, the default first."""
        return (self.checkpoint, *self.other_checkpoints)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "other_checkpoints", tuple(Path(p) for p in self.other_checkpoints))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "precisions", tuple(self.precisions))
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise ConfigError(
                f"unknown precision {unknown[0] if unknown else ''!r}; choose {', '.join(PRECISIONS)}"
            )
        if self.int8_fallback is None:
            defaulted = not self.quantizer and default_quantizer(self.backend) != "ours"
            object.__setattr__(self, "int8_fallback", "ours" if defaulted else "")
        if not self.quantizer:
            object.__setattr__(self, "quantizer", default_quantizer(self.backend))
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"unknown --quantizer {self.quantizer!r}; choose {', '.join(QUANTIZERS)}")
        # only a value other than ours' default is refused, so that ``dataclasses.replace`` (which runs this
        # again on the resolved fields) keeps working
        custom_calibration = self.calib_method not in ("", DEFAULT_CALIBRATION_METHOD)
        custom_placement = self.placement not in ("", DEFAULT_PLACEMENT)
        if (
            "int8" in self.precisions
            and self.quantizer != "ours"
            and (custom_calibration or custom_placement)
        ):
            given = "--calib-method" if custom_calibration else "--int8-placement"
            raise ConfigError(
                f"{given} applies to --quantizer ours only; this build's quantizer is {self.quantizer}, "
                f"which calibrates and places Q/DQ its own way (pass --quantizer ours with {given})"
            )
        object.__setattr__(self, "calib_method", self.calib_method or DEFAULT_CALIBRATION_METHOD)
        object.__setattr__(self, "placement", self.placement or DEFAULT_PLACEMENT)
        if self.calib_method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"unknown --calib-method {self.calib_method!r}; choose {', '.join(CALIBRATION_METHODS)}"
            )
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"unknown INT8 placement {self.placement!r}; choose {', '.join(PLACEMENTS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown --backend {self.backend!r}; choose {', '.join(BACKENDS)}")
        refusal = tensorrt_refusal(self.quantizer) if "int8" in self.precisions else None
        if self.backend == "tensorrt" and refusal is not None:
            raise ConfigError(refusal)
        if self.gate_budget < 0:
            raise ConfigError(f"--gate-budget must be >= 0 mIoU points, got {self.gate_budget}")
        if self.tile is not None and (self.tile < 32 or self.tile % 32):
            raise ConfigError(f"--tile must be a positive multiple of 32, got {self.tile}")
        if self.calib_tiles < 1 or self.gate_tiles < 1:
            raise ConfigError("--calib-tiles and --gate-tiles must be at least 1")
        if self.control_tiles < 0 or self.max_float_layers < 0:
            raise ConfigError("--control-tiles and --max-float-layers must be >= 0 (0 turns control off)")
        if self.logits_stride not in LOGITS_STRIDES:
            raise ConfigError(f"--logits-stride must be 1 or 4, got {self.logits_stride}")
        if self.tie_tolerance < 0:
            raise ConfigError(f"--tie-tolerance must be >= 0 mIoU points, got {self.tie_tolerance}")


def tool_versions() -> dict[str, str]:
    """Versions of the packages that shape the artifacts (recorded in the manifest)."""
    versions = {}
    for package in ("stars-edge", "torch", "onnx", "onnxruntime", "onnxslim", "numpy", "tensorrt"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe_normalization(model: Any, meta: Any) -> str:
    """How this checkpoint's per-pattern decoder normalization was obtained (recorded per engine)."""
    mode = getattr(model.config, "pattern_norm", "shared")
    if len(model.patterns) == 1:
        return "single-pattern model: its own BatchNorm statistics"
    if getattr(model.config, "decoder", "shared") == "per_pattern":
        if meta.config and meta.config.get("decoder_statistics") == "reestimated":
            batches = meta.config.get("pattern_norm_batches", "?")
            return (
                f"one decoder per pattern; its BatchNorm statistics re-estimated in inference mode on "
                f"{batches} training batches"
            )
        return (
            "one decoder per pattern; its BatchNorm statistics from training (running averages of "
            "training-mode batches)"
        )
    if mode == "reestimate":
        batches = meta.config.get("pattern_norm_batches", "?") if meta.config else "?"
        return f"per-pattern statistics re-estimated in inference mode on {batches} training batches"
    if mode == "learned":
        return "per-pattern BatchNorm (statistics and affine) learned in training"
    return "one set of BatchNorm statistics shared by all patterns (ablation)"


def entry_options(options: BuildOptions, precision: str, tile: int) -> dict[str, Any]:
    """The options an artifact depends on; a change in any of them makes it out of date."""
    common: dict[str, Any] = {
        "opset": options.opset,
        "tile": tile,
        "gate_data": options.gate_data,
        "gate_tiles": options.gate_tiles,
        "gate_budget": options.gate_budget,
    }
    if options.logits_stride != 1:  # stride-1 artifacts keep the options they always had
        common["logits_stride"] = options.logits_stride
    if precision == "int8":
        common.update(
            quantizer=options.quantizer,
            calib_data=options.calib_data,
            calib_tiles=options.calib_tiles,
            control_tiles=options.control_tiles,
            max_float_layers=options.max_float_layers,
        )
        if options.quantizer == "ours":  # the vendors calibrate and place Q/DQ their own way
            common.update(calib_method=options.calib_method, placement=options.placement)
        if options.int8_fallback:  # what replaces a flagged graph (a default vendor quantizer only)
            common.update(int8_fallback=options.int8_fallback)
    return common


def selection_options(options: BuildOptions, chosen: str, candidates: Sequence[str]) -> dict[str, Any]:
    """What an artifact of a several-checkpoint build also depends on: the checkpoint chosen for its pattern,
    the candidate set (sha256s, in command-line order: the order breaks exact ties) and the tie tolerance.
    A one-checkpoint build records none of them (its options stay as they always were)."""
    return {
        "checkpoint_sha256": chosen,
        "candidates": list(candidates),
        "tie_tolerance": options.tie_tolerance,
    }
