"""``build_engines``: checkpoint -> one engine per pattern and precision -> accuracy gate -> manifest.json.

Per pattern: export FP32 ONNX (checked against PyTorch), simplify, then FP16 (casts inside, float32 IO) and
INT8 (Q/DQ, calibrated on that pattern's inputs), each measured by the accuracy gate on held-out tiles, and
optionally TensorRT engines built from those ONNX files. FP32 is always built and recorded: it is the source
of the other precisions, the gate's reference and the runtime's fallback.

Several checkpoints (``--checkpoint a.pt --checkpoint b.pt``): per pattern, every candidate's FP32 graph is
scored on the gate's held-out tiles and the best (ties within ``--tie-tolerance`` to fewer GFLOPs) serves
that pattern; its FP16/INT8/TensorRT engines follow as for one checkpoint (``export/selection.py``).

Re-running skips every artifact that is up to date: same checkpoint hash (and, with several, the same
candidate set), same options, file present with the recorded sha256. The manifest is saved after every
pattern, so an interrupted build resumes.

The steps live beside this orchestration: ``build_fp32.py`` (candidates, FP32 export, checkpoint choice),
``build_precisions.py`` (calibration tiles, FP16, INT8, the gate's measurement), ``build_measurements.py``
(context margin, input contract, edge selection).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from export import gate
from export.build_fp32 import (
    chosen_record,
    export_fp32,
    load_candidates,
    model_info,
    score_candidates,
)
from export.build_measurements import choose_edges, input_contract
from export.build_options import DEFAULT_TILE, BuildOptions, entry_options, selection_options, tool_versions
from export.build_precisions import (
    load_calibration_tiles,
    measure_accuracy,
    quantize_pattern,
    write_fp16,
)
from export.context_margin import measure_manifest_margin
from export.quantizers import require_quantizer
from export.report import BuildReport
from export.selection import Candidate, held_out
from export.tiles import TileSet, load_tiles
from stars_edge.errors import ManifestError
from stars_edge.io import atomic_path, ensure_writable_dir, sha256_file
from stars_edge.manifest import (
    MANIFEST_NAME,
    PRECISIONS,
    EngineAccuracy,
    EngineEntry,
    Manifest,
    ModelInfo,
    engine_inputs,
    load_manifest,
    save_manifest,
)
from stars_edge.modalities import Pattern, parse_patterns

__all__ = ["BuildOptions", "BuildReport", "build_engines"]


class _Builder:
    """One build: holds the model(s), the tiles (loaded lazily, once) and the manifest being written.

    With several checkpoints, ``candidates[0]`` is the default: its metadata gives the tile size, and the
    classes, specs and band counts every candidate shares (``check_compatible``).
    """

    def __init__(self, options: BuildOptions, log: Callable[[str], None]) -> None:
        self.options = options
        self.log = log
        self.out = ensure_writable_dir(options.out)
        self.candidates = load_candidates(options.checkpoints)
        self.multi = len(self.candidates) > 1
        default = self.candidates[0]
        self.meta = default.meta
        self.checkpoint_sha256 = default.sha256
        self.tile = options.tile or self.meta.tile_size or DEFAULT_TILE
        self.bands = dict(self.meta.in_channels)
        self.specs = {m: self.meta.specs[m] for m in self.bands}
        self.patterns = parse_patterns(options.patterns, available=tuple(self.bands))
        #: The checkpoint serving each pattern and the record of how it was chosen (several checkpoints).
        self.chosen: dict[Pattern, tuple[Candidate, dict[str, Any], dict[str, Any]]] = {}
        self.previous = self._previous_manifest()
        self.manifest = Manifest(
            model=self._model_info(),
            modalities=self.specs,
            tile_size=self.tile,
            tools=tool_versions(),
            logits_stride=options.logits_stride,
        )
        self.report = BuildReport(self.out / MANIFEST_NAME, self.manifest)
        self._gate_tiles: TileSet | None = None
        self._calib_tiles: TileSet | None = None
        self._control_tiles: TileSet | None = None
        self._scratch: Path | None = None
        #: Scored FP32 graphs of the chosen candidates, moved into place instead of exporting again.
        self._scored: dict[Pattern, Path] = {}
        if self.multi:
            for candidate in self.candidates:
                verified, line = held_out(candidate, options.gate_data, options.gate_tiles, self.tile)
                self.log(f"selection: {line}")
                if not verified:
                    self.report.notes.append(f"selection: {line}")

    def _model_info(self) -> ModelInfo:
        """The manifest's model section: the one checkpoint, or the mix chosen so far (see ``ModelInfo``)."""
        chosen = {pattern: item[0] for pattern, item in self.chosen.items()}
        return model_info(self.candidates, chosen, self.patterns)

    def _candidate(self, pattern: Pattern) -> Candidate:
        """The checkpoint serving ``pattern`` (the only one, or the one selection chose)."""
        return self.chosen[pattern][0] if pattern in self.chosen else self.candidates[0]

    def _options(
        self, pattern: Pattern, precision: str, candidate: Candidate | None = None
    ) -> dict[str, Any]:
        """What ``pattern``'s ``precision`` artifact depends on (a change makes it out of date)."""
        candidate = candidate or self._candidate(pattern)
        options = {
            **entry_options(self.options, precision, self.tile),
            "normalization": candidate.normalization,
        }
        if self.multi:
            shas = [c.sha256 for c in self.candidates]
            options.update(selection_options(self.options, candidate.sha256, shas))
        return options

    # ------------------------------------------------------------------ reuse
    def _previous_manifest(self) -> Manifest | None:
        if not (self.out / MANIFEST_NAME).is_file():
            return None
        try:
            previous = load_manifest(self.out, verify=False)
        except ManifestError as exc:
            self.log(f"ignoring unreadable previous manifest: {exc}")
            return None
        if self.multi:  # every entry's options name its checkpoint and the candidate set
            return previous
        return previous if previous.model.checkpoint_sha256 == self.checkpoint_sha256 else None

    def _reusable(
        self, pattern: Pattern, precision: str, backend: str, options: dict[str, Any]
    ) -> EngineEntry | None:
        if self.previous is None:
            return None
        for entry in self.previous.find(pattern, precision, backend):
            path = self.out / entry.path
            if dict(entry.options) == options and path.is_file() and sha256_file(path) == entry.sha256:
                return entry
        return None

    # ------------------------------------------------------------------ tiles
    @property
    def gate_tiles(self) -> TileSet:
        if self._gate_tiles is None:
            self._gate_tiles = load_tiles(
                self.options.gate_data, self.specs, self.options.gate_tiles, self.tile, "gate"
            )
        return self._gate_tiles

    @property
    def calib_tiles(self) -> TileSet:
        if self._calib_tiles is None:
            self._load_calibration_source()
        assert self._calib_tiles is not None
        return self._calib_tiles

    @property
    def control_tiles(self) -> TileSet | None:
        """Tiles after the calibration tiles in the same source (None when accuracy control is off)."""
        if self._calib_tiles is None:
            self._load_calibration_source()
        return self._control_tiles

    def _load_calibration_source(self) -> None:
        """Calibration tiles, then control tiles from the same source (``load_calibration_tiles``)."""
        self._calib_tiles, self._control_tiles = load_calibration_tiles(
            self.options,
            self.specs,
            self.tile,
            lambda: self.gate_tiles,
            self.meta.ignore_index,
            self.report.notes,
        )

    # ------------------------------------------------------------------ building
    def run(self) -> BuildReport:
        precisions = tuple(p for p in PRECISIONS if p == "fp32" or p in self.options.precisions)
        jobs = [(pattern, precision) for pattern in self.patterns for precision in precisions]
        trt_target = None
        if self.options.backend == "tensorrt":
            from export.from_onnx import require_tensorrt

            trt_target = require_tensorrt()  # asked for and absent: an error before anything is built
        if "int8" in precisions and self.options.quantizer != "ours":
            require_quantizer(self.options.quantizer)  # same: NNCF or ModelOpt's venv missing
        progress = tqdm(jobs, desc="build engines", unit="engine", disable=not self.options.progress)
        reference: dict[Pattern, gate.Predictions] = {}
        try:
            for pattern, precision in progress:
                progress.set_postfix_str(f"{pattern} {precision}")
                if self.multi and precision == "fp32":
                    self._select(pattern)
                entry = self._onnx_entry(pattern, precision, reference)
                if entry is not None and trt_target is not None:
                    self._tensorrt_entry(entry, trt_target)
                if precision == precisions[-1]:
                    save_manifest(self.manifest, self.out)
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
        # The margin must hold for every shipped engine: the largest over the FP32 engines, whichever
        # checkpoint each came from (export/context_margin.py, docs/RUNTIME.md).
        self.manifest.context_margin = measure_manifest_margin(self.manifest, self.log)
        self.manifest.input_contract = input_contract(
            self.options.calib_data, self.specs, self.tile, self.log
        )
        save_manifest(self.manifest, self.out)
        choose_edges(self.manifest, self.out, self.options, self.patterns, self.specs, self.tile, self.log)
        return self.report

    # ------------------------------------------------------------------ selection
    def _select(self, pattern: Pattern) -> None:
        """Choose ``pattern``'s checkpoint: reuse an up-to-date choice, else score every candidate's FP32."""
        reused = self._previous_selection(pattern)
        if reused is not None:
            candidate, record = reused
            self.log(f"{pattern}: {candidate.label} still chosen (same candidates and options)")
        else:
            candidate, record = self._score(pattern)
        self.chosen[pattern] = (candidate, chosen_record(candidate, record), record)
        self.manifest.model = self._model_info()
        self.report.selections[pattern.name] = record

    def _previous_selection(self, pattern: Pattern) -> tuple[Candidate, dict[str, Any]] | None:
        """The previous build's choice for ``pattern`` when its FP32 entry is up to date for the same
        candidate set and options (paths refreshed: a moved checkpoint keeps its sha256)."""
        if self.previous is None:
            return None
        by_sha = {c.sha256: c for c in self.candidates}
        for entry in self.previous.find(pattern, "fp32", "onnxruntime"):
            candidate = by_sha.get(str(entry.options.get("checkpoint_sha256")))
            if candidate is None or not entry.selection:
                continue
            if self._reusable(pattern, "fp32", "onnxruntime", self._options(pattern, "fp32", candidate)):
                record = dict(entry.selection)
                record["candidates"] = [
                    {**item, "path": str(by_sha[item["sha256"]].path)} for item in record["candidates"]
                ]
                return candidate, record
        return None

    def _score(self, pattern: Pattern) -> tuple[Candidate, dict[str, Any]]:
        """Export every candidate's FP32 graph of ``pattern``, score it on the gate tiles, pick one."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="stars-select-"))
        candidate, record, scored = score_candidates(
            pattern,
            self.candidates,
            self.gate_tiles,
            self._scratch,
            self.bands,
            self.tile,
            self.options,
            self.log,
        )
        self._scored[pattern] = scored
        return candidate, record

    def _record(self, entry: EngineEntry, reused: bool) -> None:
        self.manifest.add(entry)
        label = entry.describe()
        (self.report.skipped if reused else self.report.built).append(label)
        if entry.gate == "flagged":
            self.report.flagged.append(label)
        elif entry.gate == "not_measured":
            self.report.not_measured.append(label)

    def _onnx_entry(
        self, pattern: Pattern, precision: str, reference: dict[Pattern, gate.Predictions]
    ) -> EngineEntry | None:
        options = self._options(pattern, precision)
        reused = self._reusable(pattern, precision, "onnxruntime", options)
        if reused is not None:
            reused = self._with_selection(reused)
            self._record(reused, reused=True)
            return reused
        name = f"{pattern}.{precision}.onnx"
        try:
            entry = self._build_onnx(pattern, precision, name, options, reference)
        except _Refused:
            return None
        self._record(entry, reused=False)
        return entry

    def _build_onnx(
        self,
        pattern: Pattern,
        precision: str,
        name: str,
        options: dict[str, Any],
        reference: dict[Pattern, gate.Predictions],
    ) -> EngineEntry:
        """Write the candidate beside its final name; it replaces the final file only if the gate lets it."""
        quantization: dict[str, Any] = {}
        with atomic_path(self.out / name) as candidate:
            if precision == "fp32":
                scored = self._scored.pop(pattern, None)
                if scored is not None:  # selection exported and checked it already
                    shutil.move(scored, candidate)
                else:
                    model = self._candidate(pattern).model
                    export_fp32(
                        pattern, candidate, model, self.bands, self.options.opset, self.log,
                        self.options.logits_stride,
                    )  # fmt: skip
            else:
                source = self.out / f"{pattern}.fp32.onnx"
                if precision == "fp16":
                    write_fp16(source, candidate)
                else:
                    quantization = quantize_pattern(
                        pattern, source, candidate, self.options, self.calib_tiles, self.control_tiles,
                        self.meta.classes, self.meta.ignore_index, self.log,
                    )  # fmt: skip
            accuracy = self._measure(pattern, precision, candidate, reference)
            if precision == "int8" and accuracy["gate"] == "flagged" and self.options.int8_fallback:
                accuracy, quantization = self._int8_fallback(
                    pattern, candidate, accuracy, quantization, reference
                )
            if accuracy["gate"] == "flagged" and self.options.strict:
                label = f"{pattern} {precision}/onnxruntime"
                self.report.refused.append(label)
                self.log(
                    f"refused {label}: mIoU drop {accuracy['miou_drop']:.2f} > "
                    f"budget {self.options.gate_budget} (--strict)"
                )
                raise _Refused
            entry = EngineEntry(
                pattern=pattern,
                precision=precision,  # type: ignore[arg-type]
                backend="onnxruntime",
                path=name,
                sha256=sha256_file(candidate),
                inputs=engine_inputs(pattern, self.specs),
                tile_size=self.tile,
                accuracy=accuracy,
                options=options,
                quantization=quantization,
            )
            return self._with_selection(entry)

    def _int8_fallback(
        self,
        pattern: Pattern,
        candidate: Path,
        accuracy: EngineAccuracy,
        quantization: dict[str, Any],
        reference: dict[Pattern, gate.Predictions],
    ) -> tuple[EngineAccuracy, dict[str, Any]]:
        """The default quantizer's INT8 graph was flagged: quantize with ``int8_fallback`` (ours) and keep
        it in ``candidate`` when the gate passes it, or when it loses less; the record says what replaced
        what."""
        requested, fallback = self.options.quantizer, str(self.options.int8_fallback)
        options = dataclasses.replace(self.options, quantizer=fallback, int8_fallback="")
        source = self.out / f"{pattern}.fp32.onnx"
        other = candidate.with_name(f"{candidate.name}.{fallback}")
        try:
            other_quantization = quantize_pattern(
                pattern, source, other, options, self.calib_tiles, self.control_tiles, self.meta.classes,
                self.meta.ignore_index, self.log,
            )  # fmt: skip
            other_accuracy = self._measure(pattern, "int8", other, reference)
            passes = other_accuracy["gate"] != "flagged"
            if not passes and (other_accuracy["miou_drop"] or 0.0) >= (accuracy["miou_drop"] or 0.0):
                self.log(
                    f"{pattern} int8: {fallback}'s graph is flagged too and loses more; {requested}'s kept"
                )
                return accuracy, quantization
            os.replace(other, candidate)
        finally:
            other.unlink(missing_ok=True)
        reason = (
            f"the gate flagged {requested}'s INT8 (mIoU drop {accuracy['miou_drop']:.2f}, budget "
            f"{self.options.gate_budget}); {fallback} {'passes' if passes else 'loses less'}"
        )
        self.log(f"{pattern} int8: {reason}")
        self.report.notes.append(f"{pattern} int8: {reason}")
        return other_accuracy, {
            **other_quantization,
            "quantizer": fallback,
            "fallback_from": requested,
            "fallback_reason": reason,
        }

    def _with_selection(self, entry: EngineEntry) -> EngineEntry:
        """``entry`` naming its checkpoint and the candidates it beat (several checkpoints only)."""
        if entry.pattern not in self.chosen:
            return entry
        _, chosen, record = self.chosen[entry.pattern]
        return dataclasses.replace(entry, checkpoint=chosen, selection=record)

    def _measure(
        self, pattern: Pattern, precision: str, path: Path, reference: dict[Pattern, gate.Predictions]
    ) -> EngineAccuracy:
        return measure_accuracy(
            pattern, precision, path, self.out / f"{pattern}.fp32.onnx", reference, self.gate_tiles,
            tuple(self.meta.class_names), self.meta.ignore_index, self.options.gate_budget, self.log,
        )  # fmt: skip

    def _tensorrt_entry(self, source: EngineEntry, target: Any) -> None:
        from export.from_onnx import GateTiles, tensorrt_entry

        entry, reused = tensorrt_entry(
            source, self.out, self.manifest, target, self.previous, GateTiles(self.manifest), self.log
        )
        self._record(self._with_selection(entry), reused=reused)


class _Refused(Exception):
    """Internal: a --strict refusal unwinds the candidate's atomic write (never moved in place)."""


def build_engines(
    options: BuildOptions | None = None, log: Callable[[str], None] | None = None, **fields: Any
) -> BuildReport:
    """Build every requested engine, gate it, and write ``manifest.json``; the one function the CLI calls.

    Pass a ``BuildOptions``, or its fields as keywords (``build_engines(checkpoint=..., out=..., tile=256)``),
    or both (keywords override). ``log`` gets one line per event (default: printed above the progress bar).
    """
    if options is None:
        options = BuildOptions(**fields)
    elif fields:
        options = dataclasses.replace(options, **fields)
    return _Builder(options, log or tqdm.write).run()
