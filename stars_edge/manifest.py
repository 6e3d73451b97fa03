"""The engine manifest: what the exporter built and what the runtime may load (torch-free).

``manifest.json`` lies next to the engine files. It records the model (checkpoint hash, classes, modality
normalisation, tile size), one entry per engine (pattern, precision, backend, file, sha256, inputs, accuracy
measured at export and the gate's verdict) and the tool versions. ``load_manifest`` refuses a manifest
whose files are missing or altered, so a runtime never runs an engine that is not the one that was measured.

A manifest may mix engines from several checkpoints (one per pattern, chosen by validation mIoU:
``export/selection.py``); then every entry names its checkpoint and the candidates it beat, and
``model.checkpoints`` lists them all. These fields are optional: manifests without them (older ones, and
every one-checkpoint build) read as before, so the schema version stays 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast, get_args

from stars_edge.contract import ModalityContract, contract_from_spec, contracts_from_dict
from stars_edge.errors import ConfigError, ManifestError
from stars_edge.io import ensure_writable_dir, sha256_file, write_json_atomic
from stars_edge.modalities import ALL_PATTERNS, MODALITIES, ModalitySpec, Pattern

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
    #: control-tile mIoU drops before/after (export/accuracy_control.py); empty otherwise.
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


_PRECISION_PREFERENCE: dict[str, int] = {p: i for i, p in enumerate(PRECISIONS)}
_BACKEND_PREFERENCE: dict[str, int] = {b: i for i, b in enumerate(BACKENDS)}


@dataclass
class Manifest:
    """All engines of one build (one checkpoint, or a per-pattern choice among several that agree on classes,
    bands and normalisation). ``root`` is the folder the entries' paths are relative to."""

    model: ModelInfo
    modalities: dict[str, ModalitySpec]
    tile_size: int
    engines: list[EngineEntry] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION
    root: Path | None = field(default=None, compare=False)
    #: Pixels around an invalid region that a fill value can influence through the engines' receptive
    #: field (measured at export by ``export.context_margin``); None in manifests written before it.
    context_margin: int | None = None
    #: What each modality's bands must look like (units, training quantiles: ``stars_edge.contract``);
    #: empty in manifests written before it, where ``contract`` falls back to the normalisation.
    input_contract: dict[str, ModalityContract] = field(default_factory=dict)
    #: Pixels each modality's holes grow by at run time (``runtime.scheduling.read_dilated``); empty = none.
    mask_dilation: dict[str, int] = field(default_factory=dict)
    #: How ``context_margin`` and ``mask_dilation`` were chosen (``runtime.edges.EdgeChoice.to_dict``).
    edge_choice: dict[str, Any] | None = None

    def contract(self, modality: str) -> ModalityContract:
        """One modality's input contract: recorded at export, else approximated from its normalisation."""
        recorded = self.input_contract.get(modality)
        return recorded if recorded is not None else contract_from_spec(self.modalities[modality])

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise ManifestError(
                f"manifest lists unknown modality {unknown[0]!r}; valid: {', '.join(MODALITIES)}"
            )
        for entry in self.engines:
            self._check_entry(entry)

    def _check_entry(self, entry: EngineEntry) -> None:
        for item in entry.inputs:
            spec = self.modalities.get(item["name"])
            if spec is None:
                raise ManifestError(
                    f"engine {entry.path} takes {item['name']!r}, which the manifest has no spec for"
                )
            if spec.bands != item["bands"]:
                raise ManifestError(
                    f"engine {entry.path} takes {item['bands']} {item['name']} bands, spec has {spec.bands}"
                )

    def add(self, entry: EngineEntry) -> None:
        """Add or replace the entry for ``(pattern, precision, backend)``."""
        self._check_entry(entry)
        self.engines = [
            e
            for e in self.engines
            if (e.pattern, e.precision, e.backend) != (entry.pattern, entry.precision, entry.backend)
        ]
        self.engines.append(entry)
        self.engines.sort(key=_entry_order)

    @property
    def patterns(self) -> tuple[Pattern, ...]:
        """Patterns with at least one engine, in the manifest order (``ALL_PATTERNS``)."""
        present = {e.pattern for e in self.engines}
        return tuple(p for p in ALL_PATTERNS if p in present)

    def find(
        self, pattern: Pattern | str, precision: str | None = None, backend: str | None = None
    ) -> list[EngineEntry]:
        """Entries for ``pattern`` matching the optional precision/backend, best first (see ``select``)."""
        wanted = Pattern.parse(pattern) if isinstance(pattern, str) else pattern
        matches = [
            e
            for e in self.engines
            if e.pattern == wanted
            and (precision is None or e.precision == precision)
            and (backend is None or e.backend == backend)
        ]
        return sorted(matches, key=_preference)

    def select(
        self, pattern: Pattern | str, precision: str | None = None, backend: str | None = None
    ) -> EngineEntry:
        """The engine for ``pattern``; raises ``ManifestError`` listing what exists when there is none.

        When several match, an engine the gate did not flag wins, then fp32 > fp16 > int8, then
        onnxruntime > tensorrt; pass ``precision``/``backend`` to choose explicitly.
        """
        if precision is not None and precision not in PRECISIONS:
            raise ManifestError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if backend is not None and backend not in BACKENDS:
            raise ManifestError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        matches = self.find(pattern, precision, backend)
        if matches:
            return matches[0]
        wanted = Pattern.parse(pattern) if isinstance(pattern, str) else pattern
        request = " ".join(
            part for part in (str(wanted), precision or "", f"on {backend}" if backend else "") if part
        )
        raise ManifestError(
            f"{self._location()} has no engine for {request}; available: {self.describe_engines()}; "
            "rebuild with `stars-edge build-engines` for that pattern/precision/backend"
        )

    def describe_engines(self) -> str:
        """``pattern (precision/backend, ...)`` for every pattern, for error messages and logs."""
        if not self.engines:
            return "none"
        groups: dict[Pattern, list[str]] = {}
        for entry in sorted(self.engines, key=_entry_order):
            groups.setdefault(entry.pattern, []).append(f"{entry.precision}/{entry.backend}")
        return "; ".join(f"{pattern} ({', '.join(kinds)})" for pattern, kinds in groups.items())

    def engine_path(self, entry: EngineEntry) -> Path:
        """Absolute path of an entry's file (the manifest must have been loaded or saved)."""
        if self.root is None:
            raise ManifestError("manifest has no folder yet; save_manifest or load_manifest it first")
        return self.root / entry.path

    def verify(self) -> None:
        """Check that every engine file exists and hashes to its recorded sha256."""
        for entry in self.engines:
            path = self.engine_path(entry)
            if not path.is_file():
                raise ManifestError(
                    f"{self._location()}: engine file {path} is missing; rebuild: `stars-edge build-engines`"
                )
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise ManifestError(
                    f"{self._location()}: {path} has sha256 {digest[:12]}... but the manifest records "
                    f"{entry.sha256[:12]}...; the file was altered, rebuild with `stars-edge build-engines`"
                )

    def _location(self) -> str:
        return str(self.root / MANIFEST_NAME) if self.root is not None else "manifest"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "model": self.model.to_dict(),
            "modalities": {name: spec.to_dict() for name, spec in self.modalities.items()},
            "tile_size": int(self.tile_size),
            "engines": [entry.to_dict() for entry in sorted(self.engines, key=_entry_order)],
            "tools": dict(self.tools),
            **({"context_margin": int(self.context_margin)} if self.context_margin is not None else {}),
            **(
                {"input_contract": {m: c.to_dict() for m, c in self.input_contract.items()}}
                if self.input_contract
                else {}
            ),
            **({"mask_dilation": dict(self.mask_dilation)} if self.mask_dilation else {}),
            **({"edge_choice": dict(self.edge_choice)} if self.edge_choice else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], root: Path | None = None) -> Manifest:
        where = str(root / MANIFEST_NAME) if root is not None else "manifest"
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{where} has schema version {version!r}, this stars-edge reads version {SCHEMA_VERSION}; "
                "rebuild the engines with this version's `stars-edge build-engines`"
            )
        try:
            modalities = {
                str(name): ModalitySpec.from_dict(spec) for name, spec in data["modalities"].items()
            }
            return cls(
                schema_version=SCHEMA_VERSION,
                created=str(data.get("created", "")),
                model=ModelInfo.from_dict(data["model"]),
                modalities={m: modalities[m] for m in MODALITIES if m in modalities},
                tile_size=int(data["tile_size"]),
                engines=[EngineEntry.from_dict(item) for item in data.get("engines", [])],
                tools={str(k): str(v) for k, v in data.get("tools", {}).items()},
                root=root,
                context_margin=None if data.get("context_margin") is None else int(data["context_margin"]),
                input_contract=contracts_from_dict(data.get("input_contract", {})),
                mask_dilation={str(k): int(v) for k, v in data.get("mask_dilation", {}).items()},
                edge_choice=dict(data["edge_choice"]) if data.get("edge_choice") else None,
            )
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
            raise ManifestError(
                f"{where} is malformed ({exc}); rebuild it with `stars-edge build-engines`"
            ) from exc


def _entry_order(entry: EngineEntry) -> tuple[int, int, int]:
    return (
        ALL_PATTERNS.index(entry.pattern),
        _PRECISION_PREFERENCE[entry.precision],
        _BACKEND_PREFERENCE[entry.backend],
    )


def _preference(entry: EngineEntry) -> tuple[int, int, int]:
    return (
        1 if entry.gate == "flagged" else 0,
        _PRECISION_PREFERENCE[entry.precision],
        _BACKEND_PREFERENCE[entry.backend],
    )


def manifest_file(folder_or_file: str | Path) -> Path:
    """``folder/manifest.json`` for a folder, the path itself for a file."""
    path = Path(folder_or_file)
    return path / MANIFEST_NAME if path.is_dir() or path.suffix != ".json" else path


def save_manifest(manifest: Manifest, folder: str | Path) -> Path:
    """Write ``folder/manifest.json`` atomically and make ``folder`` the manifest's root."""
    root = ensure_writable_dir(folder)
    manifest.root = root
    return write_json_atomic(root / MANIFEST_NAME, manifest.to_dict())


def load_manifest(folder_or_file: str | Path, verify: bool = True) -> Manifest:
    """Read a manifest (folder or file); with ``verify`` every engine file must exist with its sha256."""
    path = manifest_file(folder_or_file)
    if not path.is_file():
        raise ManifestError(
            f"{path} does not exist; build engines first with `stars-edge build-engines --out DIR`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(
            f"{path} is not readable JSON ({exc}); rebuild it with `stars-edge build-engines`"
        ) from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a JSON object; rebuild it with `stars-edge build-engines`")
    manifest = Manifest.from_dict(data, root=path.parent.resolve())
    if verify:
        manifest.verify()
    return manifest


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
