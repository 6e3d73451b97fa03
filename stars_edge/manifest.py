"""The engine manifest: what the exporter built and what the runtime may load (torch-free).

``manifest.json`` lies next to the engine files. It records the model (checkpoint hash, classes, modality
normalisation, tile size), one entry per engine (pattern, precision, backend, file, sha256, inputs, accuracy
measured at export and the gate's verdict) and the tool versions. ``load_manifest`` refuses a manifest
whose files are missing or altered, so a runtime never runs an engine that is not the one that was measured.

A manifest may mix engines from several checkpoints (one per pattern, chosen by validation mIoU:
``export/selection.py``); then every entry names its checkpoint and the candidates it beat, and
``model.checkpoints`` lists them all. These fields are optional: manifests without them (older ones, and
every one-checkpoint build) read as before, so the schema version stays 1.

One engine's entry and the model section are in ``stars_edge/manifest_entries.py`` (importable from here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stars_edge.contract import ModalityContract, contract_from_spec, contracts_from_dict
from stars_edge.errors import ConfigError, ManifestError
from stars_edge.io import ensure_writable_dir, sha256_file, write_json_atomic
from stars_edge.manifest_entries import (
    BACKENDS,
    GATE_VERDICTS,
    LOGITS_STRIDES,
    MANIFEST_NAME,
    OUTPUT_NAME,
    PRECISIONS,
    SCHEMA_VERSION,
    Backend,
    EngineAccuracy,
    EngineEntry,
    EngineInput,
    GateVerdict,
    ModelInfo,
    Precision,
    engine_inputs,
    parse_precisions,
)
from stars_edge.modalities import ALL_PATTERNS, MODALITIES, ModalitySpec, Pattern

__all__ = [
    "BACKENDS",
    "GATE_VERDICTS",
    "LOGITS_STRIDES",
    "MANIFEST_NAME",
    "OUTPUT_NAME",
    "PRECISIONS",
    "SCHEMA_VERSION",
    "Backend",
    "EngineAccuracy",
    "EngineEntry",
    "EngineInput",
    "GateVerdict",
    "Manifest",
    "ModelInfo",
    "Precision",
    "engine_inputs",
    "load_manifest",
    "manifest_file",
    "parse_precisions",
    "save_manifest",
]

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
    #: Output stride of every engine's logits: 1 (full resolution, also when absent: older manifests) or 4
    #: (``build-engines --logits-stride 4``: the runtime blends at stride 4 and upsamples, issue 21).
    logits_stride: int = 1

    def contract(self, modality: str) -> ModalityContract:
        """One modality's input contract: recorded at export, else approximated from its normalisation."""
        recorded = self.input_contract.get(modality)
        return recorded if recorded is not None else contract_from_spec(self.modalities[modality])

    def __post_init__(self) -> None:
        if self.logits_stride not in LOGITS_STRIDES:
            raise ManifestError(
                f"logits_stride {self.logits_stride!r} is not one of {', '.join(map(str, LOGITS_STRIDES))}"
            )
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
            **({"logits_stride": int(self.logits_stride)} if self.logits_stride != 1 else {}),
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
                logits_stride=int(data.get("logits_stride", 1)),
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
