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
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
from tqdm import tqdm

from export import gate
from export.accuracy_control import CONTROL_MARGIN, MIN_CONTROL_TILES, ControlTiles, control_int8
from export.build_options import (
    DEFAULT_TILE,
    BuildOptions,
    describe_normalization,
    entry_options,
    selection_options,
    tool_versions,
)
from export.context_margin import measure_manifest_margin
from export.fp16 import convert_to_fp16
from export.onnx_export import check_parity, export_onnx, simplify_onnx
from export.quantize import tensorrt_legality_problems
from export.quantizers import quantize_with, require_quantizer, tensorrt_refusal
from export.report import BuildReport
from export.selection import (
    Candidate,
    Score,
    check_compatible,
    held_out,
    mix_digest,
    mixed,
    pattern_gflops,
    select,
)
from export.tiles import (
    EDGE_SEED_BASE,
    SYNTHETIC,
    TileSet,
    check_disjoint,
    hole_scenes,
    load_tiles,
    sample_physical,
)
from stars_edge.contract import ModalityContract, contract_disagrees, contract_from_values
from stars_edge.errors import ConfigError, ExportError, ManifestError
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
from stars_edge.modalities import Pattern, all_patterns, parse_patterns

__all__ = ["BuildOptions", "BuildReport", "build_engines"]

#: Worst FP32-vs-PyTorch difference accepted at export (logits); a bigger one means a broken export.
PARITY_TOLERANCE = 1e-3


def _load_candidates(paths: Sequence[Path]) -> list[Candidate]:
    """Every checkpoint, loaded once; duplicates and checkpoints the manifest cannot mix are refused."""
    from stars_edge.checkpoint import load_checkpoint

    candidates: list[Candidate] = []
    for path in paths:
        model, meta = load_checkpoint(path)
        model.eval()
        candidate = Candidate(path, sha256_file(path), model, meta, describe_normalization(model, meta))
        same = next((c for c in candidates if c.sha256 == candidate.sha256), None)
        if same is not None:
            raise ConfigError(
                f"--checkpoint {path} and {same.path} are the same checkpoint (sha256 "
                f"{candidate.sha256[:12]}...); give each candidate once"
            )
        if candidates:
            check_compatible(candidates[0], candidate)
        candidates.append(candidate)
    return candidates


class _Builder:
    """One build: holds the model(s), the tiles (loaded lazily, once) and the manifest being written.

    With several checkpoints, ``candidates[0]`` is the default: its metadata gives the tile size, and the
    classes, specs and band counts every candidate shares (``check_compatible``).
    """

    def __init__(self, options: BuildOptions, log: Callable[[str], None]) -> None:
        self.options = options
        self.log = log
        self.out = ensure_writable_dir(options.out)
        self.candidates = _load_candidates(options.checkpoints)
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
        default = self.candidates[0]
        if not self.multi:
            return ModelInfo(
                variant=self.meta.variant,
                method=self.meta.method,
                checkpoint_sha256=self.checkpoint_sha256,
                classes=self.meta.classes,
                class_names=tuple(self.meta.class_names),
                ignore_index=self.meta.ignore_index,
            )
        chosen = {pattern: item[0] for pattern, item in self.chosen.items()}
        used = [c for c in self.candidates if c in chosen.values()] or [default]
        digests = {pattern: c.sha256 for pattern, c in chosen.items()}
        listing = [
            {**c.describe(), "patterns": [p.name for p in self.patterns if chosen.get(p) is c]}
            for c in self.candidates
        ]
        return ModelInfo(
            variant=mixed([c.meta.variant for c in used]),
            method=mixed([c.meta.method for c in used]),
            checkpoint_sha256=used[0].sha256 if len(used) == 1 else mix_digest(digests),
            classes=self.meta.classes,
            class_names=tuple(self.meta.class_names),
            ignore_index=self.meta.ignore_index,
            checkpoints=tuple(listing),
        )

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
        """Calibration tiles, then control tiles from the same source. Accuracy control is off (no control
        tiles) when asked (``--control-tiles 0`` or ``--max-float-layers 0``), and off with a note when the
        source has fewer than ``MIN_CONTROL_TILES`` beyond the calibration tiles or they carry no labels."""
        calibration = self.options.calib_tiles
        control = self.options.control_tiles if self.options.max_float_layers else 0
        tiles = load_tiles(
            self.options.calib_data, self.specs, calibration + control, self.tile, "calibration", calibration
        )
        self._calib_tiles = tiles.subset(slice(0, calibration))
        check_disjoint(self._calib_tiles, self.gate_tiles)
        if not control:
            return
        rest = tiles.subset(slice(calibration, None))
        if len(rest) < MIN_CONTROL_TILES:
            self.report.notes.append(
                f"INT8 accuracy control off: {tiles.source} has {len(rest)} tile(s) beyond the {calibration} "
                f"calibration tiles, {MIN_CONTROL_TILES} needed (lower --calib-tiles or give more data)"
            )
        elif not (rest.labels != self.meta.ignore_index).any():
            self.report.notes.append(
                f"INT8 accuracy control off: the control tiles of {tiles.source} have no labels"
            )
        else:
            self._control_tiles = rest
            check_disjoint(rest, self.gate_tiles)

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
        self.manifest.input_contract = self._input_contract()
        save_manifest(self.manifest, self.out)
        self._choose_edges()
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
        mine = next(item for item in record["candidates"] if item["sha256"] == candidate.sha256)
        chosen = {
            **candidate.describe(),
            "validation_miou": mine["validation_miou"],
            "gflops": mine["gflops"],
        }
        self.chosen[pattern] = (candidate, chosen, record)
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
        tiles = self.gate_tiles
        inputs = tiles.select(pattern.modalities)
        names, ignore = tuple(self.meta.class_names), self.meta.ignore_index
        scores, files = [], {}
        for index, candidate in enumerate(self.candidates):
            path = self._scratch / f"{pattern}.{index}.fp32.onnx"
            self._export_fp32(pattern, path, candidate.model)
            prediction = gate.predict(path, inputs)
            accuracy = gate.measure(
                prediction, prediction, tiles.labels, names, ignore, None, self.options.gate_budget
            )
            if accuracy["miou"] is None:
                raise ExportError(
                    f"{pattern}: the gate tiles of {tiles.source} have no labels, so the checkpoints cannot "
                    "be compared; give --gate-data labelled held-out scenes or one --checkpoint"
                )
            gflops = pattern_gflops(candidate.model, pattern, self.bands, self.tile)
            scores.append(Score(candidate, float(accuracy["miou"]), gflops))
            files[candidate.sha256] = path
        winner, record = select(scores, self.options.tie_tolerance)
        self._scored[pattern] = files[winner.candidate.sha256]
        ranking = "; ".join(f"{s.candidate.label} {s.miou:.2f} mIoU {s.gflops:.4g} GFLOPs" for s in scores)
        self.log(f"{pattern}: chose {winner.candidate.label} ({record['reason']}); {ranking}")
        return winner.candidate, record

    def _choose_edges(self) -> None:
        """Context margin and optical mask dilation by measured mIoU on synthetic validation scenes with
        clouds and SAR gaps, run through the runtime itself (``runtime/edges.py``)."""
        measured = self.manifest.context_margin or 0
        reason = None
        if not self.options.edge_selection:
            reason = "off (--no-edge-selection)"
        elif str(self.options.gate_data) != SYNTHETIC:
            source = self.options.gate_data
            reason = f"needs labelled scenes with holes; only the synthetic source has them, not {source}"
        elif set(self.patterns) != set(all_patterns(tuple(self.bands))):
            reason = "needs an FP32 engine for every pattern (--patterns all)"
        elif "optical" not in self.bands or len(self.bands) < 2:
            reason = "needs optical and a second modality"
        if reason is not None:
            self.log(f"cloud edges: measured margin {measured} px kept, no dilation; edge selection {reason}")
            return
        from runtime.edges import HoleScene, choose_edges

        scenes = [HoleScene(i, c, lab) for i, c, lab in hole_scenes(self.specs, size=max(512, self.tile))]
        choice = choose_edges(
            self.out,
            scenes,
            measured,
            f"{len(scenes)} synthetic scenes with clouds and SAR gaps (seeds from {EDGE_SEED_BASE})",
            tile=self.tile,
            log=self.log,
        )
        self.manifest.context_margin = choice.context_margin
        self.manifest.mask_dilation = dict(choice.mask_dilation)
        self.manifest.edge_choice = choice.to_dict()
        save_manifest(self.manifest, self.out)

    def _input_contract(self) -> dict[str, ModalityContract]:
        """Units and training quantiles per band (``stars_edge.contract``), from the calibration source.

        A source whose medians sit far from the checkpoint's normalisation is not the training
        distribution (e.g. the synthetic default for a model trained on real data): then the runtime
        falls back to the normalisation, and the log says so.
        """
        values, source = sample_physical(self.options.calib_data, self.specs, self.tile)
        contracts: dict[str, ModalityContract] = {}
        for modality, spec in self.specs.items():
            contract = contract_from_values(spec, values[modality], source, minimum=1)
            off = contract_disagrees(contract, spec)
            if off is not None:
                self.log(
                    f"input contract: {modality} of {source} does not look like the training data "
                    f"({off}); the runtime checks {modality} against the normalisation only"
                )
                continue
            contracts[modality] = contract
        return contracts

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
                    self._export_fp32(pattern, candidate, self._candidate(pattern).model)
            else:
                source = self.out / f"{pattern}.fp32.onnx"
                if precision == "fp16":
                    onnx.save(convert_to_fp16(onnx.load(str(source))), str(candidate))
                else:
                    quantization = self._quantize(pattern, source, candidate)
            accuracy = self._measure(pattern, precision, candidate, reference)
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

    def _with_selection(self, entry: EngineEntry) -> EngineEntry:
        """``entry`` naming its checkpoint and the candidates it beat (several checkpoints only)."""
        if entry.pattern not in self.chosen:
            return entry
        _, chosen, record = self.chosen[entry.pattern]
        return dataclasses.replace(entry, checkpoint=chosen, selection=record)

    def _quantize(self, pattern: Pattern, source: Path, target: Path) -> dict[str, Any]:
        """INT8 graph of ``pattern``; with control tiles, its costliest layers stay float."""
        inputs = self.calib_tiles.select(pattern.modalities)
        control = self.control_tiles
        with tempfile.TemporaryDirectory(prefix="stars-int8-") as scratch:
            ranges = Path(scratch) / "ranges.json"

            def quantize(float_nodes: Sequence[str], path: Path) -> Path:
                return quantize_with(
                    self.options.quantizer, source, path, inputs, float_nodes, self.options.calib_method,
                    self.options.placement, ranges_cache=ranges,
                )  # fmt: skip

            if control is None:
                quantize((), target)
                return self._tensorrt_check(pattern, target)
            tiles = ControlTiles(
                control.select(pattern.modalities), control.labels, self.meta.classes, self.meta.ignore_index
            )
            result = control_int8(
                quantize, source, target, tiles, self.options.gate_budget * CONTROL_MARGIN,
                self.options.max_float_layers, progress=lambda line: self.log(f"{pattern} int8: {line}"),
            )  # fmt: skip
        if result.float_layers:
            self.log(
                f"{pattern} int8: {len(result.float_layers)} layer(s) kept float; control-tile mIoU drop "
                f"{result.drop_before:.2f} -> {result.drop_after:.2f}"
            )
        return {**result.to_dict(), **self._tensorrt_check(pattern, target)}

    def _tensorrt_check(self, pattern: Pattern, path: Path) -> dict[str, Any]:
        """Vendor INT8 graphs against TensorRT's Q/DQ rules (ours checks its own while quantizing).

        ModelOpt's must pass (it is TensorRT's quantizer); NNCF's uint8 activations cannot, which is recorded
        in the entry's ``quantization`` (``--backend tensorrt`` refuses ``--quantizer nncf`` up front).
        """
        if self.options.quantizer == "ours":
            return {}
        problems = tensorrt_legality_problems(onnx.load(str(path)))
        if not problems:
            return {}
        if tensorrt_refusal(self.options.quantizer) is None:
            raise ExportError(
                f"{pattern}: the {self.options.quantizer} INT8 graph is not TensorRT-legal: "
                f"{'; '.join(problems[:3])}"
            )
        return {"tensorrt_legal": False, "tensorrt_problems": [*problems[:3], f"({len(problems)} in all)"]}

    def _export_fp32(self, pattern: Pattern, target: Path, model: Any) -> None:
        from stars_edge.models import export_module

        module = export_module(model, pattern)
        export_onnx(module, pattern, self.bands, target, opset=self.options.opset)
        before = check_parity(module, target, pattern, self.bands)
        simplify_onnx(target)
        after = check_parity(module, target, pattern, self.bands)
        self.log(f"{pattern} fp32 onnx vs pytorch: exported {before}; simplified {after}")
        worst = max(before.max_abs_diff, after.max_abs_diff)
        if worst > PARITY_TOLERANCE:
            raise ExportError(
                f"{pattern}: ONNX differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE}); "
                "the export is wrong, try another --opset"
            )

    def _measure(
        self, pattern: Pattern, precision: str, path: Path, reference: dict[Pattern, gate.Predictions]
    ) -> EngineAccuracy:
        tiles = self.gate_tiles
        inputs = tiles.select(pattern.modalities)
        if pattern not in reference:
            source = path if precision == "fp32" else self.out / f"{pattern}.fp32.onnx"
            reference[pattern] = gate.predict(source, inputs)
        names, ignore = tuple(self.meta.class_names), self.meta.ignore_index
        fp32_accuracy = gate.measure(
            reference[pattern],
            reference[pattern],
            tiles.labels,
            names,
            ignore,
            None,
            self.options.gate_budget,
        )
        if precision == "fp32":
            return EngineAccuracy(**{**fp32_accuracy, "miou_drop": 0.0, "gate": "pass"})
        prediction, reason = gate.try_predict(path, inputs)
        if prediction is None:
            self.log(
                f"{pattern} {precision}: not measured, ONNX Runtime cannot run it on this CPU ({reason})"
            )
        accuracy = gate.measure(
            prediction,
            reference[pattern],
            tiles.labels,
            names,
            ignore,
            fp32_accuracy["miou"],
            self.options.gate_budget,
            reference_per_class=fp32_accuracy["per_class_iou"],
        )
        return gate.with_openvino(  # OpenVINO runs these files on CPUs: gate what will run
            accuracy, path, inputs, reference[pattern], tiles.labels, names, ignore, fp32_accuracy,
            self.options.gate_budget,
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
