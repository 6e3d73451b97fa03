"""The parts of the engine manifest (torch-free): the schema constants, one engine's entry (``EngineEntry``:
pattern, precision, backend, file, sha256, inputs, accuracy at export, gate verdict, where it came from) and
the model section (``ModelInfo``). ``stars_edge/manifest.py`` holds them together (``Manifest``), reads and
writes ``manifest.json``; every name here is importable from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast, get_args

from stars_edge.errors import ConfigError, ManifestError
from stars_edge.modalities import ModalitySpec, Pattern

#: Bumped whenever a field changes meaning or a required field is added; readers refuse other versions.
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

Precision = Literal["fp32", "fp16", "int8"]
Backend = Literal["onnxruntime", "tensorrt"]
GateVerdict = Literal["pass", "flagged", "not_measured"]

PRECISIONS: tuple[Precision, ...] = get_args(Precision)
BACKENDS: tuple[Backend, ...] = get_args(Backend)
GATE_VERDICTS: tuple[GateVerdict, ...] = get_args(GateVerdict)
OUTPUT_NAME = "logits"
#: Output strides of an engine's logits (``Manifest.logits_stride``): full resolution, or a quarter of it.
LOGITS_STRIDES = (1, 4)


class EngineInput(TypedDict):
    """One named engine input: the modality and its band count (``float32 (N, bands, H, W)``, normalised)."""

    name: str
    bands: int


class EngineAccuracy(TypedDict):
    """Accuracy measured at export on held-out tiles; mIoU/IoU in percent, agreement in percent of pixels.

    ``miou``/``per_class_iou``/``agreement_with_fp32``/``miou_drop`` are None when not measured.
    """

    miou: float | None
    per_class_iou: dict[str, float | None]
    agreement_with_fp32: float | None
    miou_drop: float | None
    gate: GateVerdict
    #: Classes whose IoU fell more than the per-class budget (a minority class vanishing behind a good mean).
    flagged_classes: NotRequired[list[str]]
    #: Where the verdict came from when not measured on this engine (the ONNX a TensorRT engine came from).
    measured_on: NotRequired[str]
    #: The same measurement per CPU backend that runs this file (ONNX Runtime emulates Q/DQ in float, OpenVINO
    #: runs integer kernels: they differ); the top-level fields are the worse of them.
    by_backend: NotRequired[dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class EngineEntry:
    """One engine file: which pattern and precision it serves, on which backend, and how good it measured."""

    pattern: Pattern
    precision: Precision
    backend: Backend
    path: str
    sha256: str
    inputs: tuple[EngineInput, ...]
    tile_size: int
    output: str = OUTPUT_NAME
    accuracy: EngineAccuracy | None = None
    tensorrt_version: str | None = None
    compute_capability: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    #: How an INT8 graph was made beyond its options: the layers accuracy control kept float and the
    #: control-tile mIoU drops before/after (export/accuracy_control.py), and, when the gate flagged the
    #: default quantizer's graph and ours replaced it, ``quantizer``, ``fallback_from`` and
    #: ``fallback_reason``; empty otherwise.
    quantization: Mapping[str, Any] = field(default_factory=dict)
    #: The checkpoint this engine comes from when the build mixed several (``path``, ``sha256``, ``method``,
    #: ``variant``, ``validation_miou``, ``gflops``); empty for a one-checkpoint build (see ``model``).
    checkpoint: Mapping[str, Any] = field(default_factory=dict)
    #: Why that checkpoint serves this pattern: every candidate's validation mIoU and GFLOPs, the tie
    #: tolerance and the reason (``export.selection.select``); empty for a one-checkpoint build.
    selection: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ManifestError(
                f"engine {self.path}: precision {self.precision!r} is not one of {PRECISIONS}"
            )
        if self.backend not in BACKENDS:
            raise ManifestError(f"engine {self.path}: backend {self.backend!r} is not one of {BACKENDS}")
        if Path(self.path).is_absolute() or ".." in Path(self.path).parts:
            raise ManifestError(f"engine path {self.path!r} must be relative to the manifest folder")
        names = tuple(item["name"] for item in self.inputs)
        if names != self.pattern.modalities:
            raise ManifestError(
                f"engine {self.path}: inputs {names} do not match pattern {self.pattern} "
                f"(expected {self.pattern.modalities} in canonical order)"
            )
        if self.accuracy is not None and self.accuracy.get("gate") not in GATE_VERDICTS:
            raise ManifestError(f"engine {self.path}: gate must be one of {GATE_VERDICTS}")

    @property
    def gate(self) -> GateVerdict:
        """The accuracy gate's verdict; ``not_measured`` when no accuracy was recorded."""
        return self.accuracy["gate"] if self.accuracy is not None else "not_measured"

    @property
    def int8_quantizer(self) -> str | None:
        """Who wrote this INT8 graph (``ours``, ``nncf``, ``modelopt``): the gate's fallback when it replaced
        the requested quantizer's graph, else the build option; None for other precisions."""
        if self.precision != "int8":
            return None
        return str(self.quantization.get("quantizer") or self.options.get("quantizer") or "ours")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(item["name"] for item in self.inputs)

    def describe(self) -> str:
        """Short human label, e.g. ``optical+sar int8/onnxruntime``."""
        return f"{self.pattern} {self.precision}/{self.backend}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "pattern": self.pattern.name,
            "precision": self.precision,
            "backend": self.backend,
            "path": self.path,
            "sha256": self.sha256,
            "inputs": [{"name": item["name"], "bands": int(item["bands"])} for item in self.inputs],
            "output": self.output,
            "tile_size": int(self.tile_size),
            "accuracy": dict(self.accuracy) if self.accuracy is not None else None,
            "options": dict(self.options),
        }
        if self.quantization:
            data["quantization"] = dict(self.quantization)
        if self.checkpoint:
            data["checkpoint"] = dict(self.checkpoint)
        if self.selection:
            data["selection"] = dict(self.selection)
        if self.backend == "tensorrt":
            data["tensorrt_version"] = self.tensorrt_version
            data["compute_capability"] = self.compute_capability
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineEntry:
        try:
            accuracy = data.get("accuracy")
            return cls(
                pattern=Pattern.parse(str(data["pattern"])),
                precision=cast(Precision, data["precision"]),
                backend=cast(Backend, data["backend"]),
                path=str(data["path"]),
                sha256=str(data["sha256"]),
                inputs=tuple(
                    EngineInput(name=str(item["name"]), bands=int(item["bands"])) for item in data["inputs"]
                ),
                output=str(data.get("output", OUTPUT_NAME)),
                tile_size=int(data["tile_size"]),
                accuracy=cast(EngineAccuracy, dict(accuracy)) if accuracy is not None else None,
                tensorrt_version=data.get("tensorrt_version"),
                compute_capability=data.get("compute_capability"),
                options=dict(data.get("options", {})),
                quantization=dict(data.get("quantization", {})),
                checkpoint=dict(data.get("checkpoint") or {}),
                selection=dict(data.get("selection") or {}),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ManifestError(f"invalid engine entry {dict(data)!r}: {exc}") from exc


@dataclass(frozen=True)
class ModelInfo:
    """What the engines compute: which checkpoint, which classes, which label value is ignored.

    When the engines come from several checkpoints, ``checkpoints`` lists every candidate (``path``,
    ``sha256``, ``method``, ``variant``, ``patterns`` it serves), ``variant``/``method`` are the common value
    or ``mixed(a,b)``, and ``checkpoint_sha256`` identifies the mix: the one checkpoint's hash when one
    serves every engine, else the sha256 of the ``pattern=sha256`` lines (``export.selection.mix_digest``).
    """

    variant: str
    method: str
    checkpoint_sha256: str
    classes: int
    class_names: tuple[str, ...]
    ignore_index: int = 255
    checkpoints: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "variant": self.variant,
            "method": self.method,
            "checkpoint_sha256": self.checkpoint_sha256,
            "classes": int(self.classes),
            "class_names": list(self.class_names),
            "ignore_index": int(self.ignore_index),
        }
        if self.checkpoints:
            data["checkpoints"] = [dict(item) for item in self.checkpoints]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        try:
            return cls(
                variant=str(data["variant"]),
                method=str(data["method"]),
                checkpoint_sha256=str(data["checkpoint_sha256"]),
                classes=int(data["classes"]),
                class_names=tuple(str(n) for n in data["class_names"]),
                ignore_index=int(data.get("ignore_index", 255)),
                checkpoints=tuple(dict(item) for item in data.get("checkpoints") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"invalid model section {dict(data)!r}: {exc}") from exc


def engine_inputs(pattern: Pattern, specs: Mapping[str, ModalitySpec]) -> tuple[EngineInput, ...]:
    """The named inputs of ``pattern``'s engine, from the modality specs (band counts)."""
    missing = [m for m in pattern if m not in specs]
    if missing:
        raise ManifestError(f"pattern {pattern} needs specs for {', '.join(missing)}")
    return tuple(EngineInput(name=m, bands=specs[m].bands) for m in pattern)


def parse_precisions(text: str | Sequence[str]) -> tuple[Precision, ...]:
    """Parse ``"fp32,int8"`` into precisions in canonical order, refusing unknown names."""
    items = [text] if isinstance(text, str) else list(text)
    tokens = [t.strip().lower() for item in items for t in item.replace(",", " ").split() if t.strip()]
    unknown = [t for t in tokens if t not in PRECISIONS]
    if unknown or not tokens:
        raise ConfigError(
            f"unknown precision {unknown[0] if unknown else ''!r}; choose from {', '.join(PRECISIONS)}"
        )
    return tuple(p for p in PRECISIONS if p in tokens)
