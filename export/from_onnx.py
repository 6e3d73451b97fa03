"""TensorRT engines on the target, from an exported folder's ONNX files: no checkpoint, no PyTorch.

The design builds TensorRT engines where they run (an engine is tied to its TensorRT version and GPU), so a
Jetson or a GPU server needs only the exported folder, onnx, onnxruntime and TensorRT:

    stars-edge build-engines --from-onnx engines/ --backend tensorrt

For every ONNX entry of the manifest (FP32, FP16, INT8) it builds a strongly typed engine (INT8 on an FP16
base, see ``export.tensorrt_build``), then gates it: where the runtime's TensorRT backend can run here, the
engine itself is measured on the same held-out tiles as its ONNX source, against the FP32 ONNX reference;
otherwise the source's verdict is carried over and marked ``measured_on``. Either way a ``flagged`` source
stays flagged. The same functions serve ``build_engines --backend tensorrt`` after the ONNX export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export import gate
from export.quantizers import tensorrt_refusal
from export.report import BuildReport
from export.tensorrt_build import (
    TensorRTTarget,
    build_tensorrt_engine,
    engine_file_name,
    fp16_base_graph,
    tensorrt_status,
    timing_cache_name,
)
from export.tiles import SYNTHETIC, TileSet, load_tiles
from stars_edge.errors import BackendUnavailableError, ConfigError
from stars_edge.io import sha256_file
from stars_edge.manifest import (
    MANIFEST_NAME,
    EngineAccuracy,
    EngineEntry,
    Manifest,
    load_manifest,
    save_manifest,
)

Log = Callable[[str], None]


def require_tensorrt() -> TensorRTTarget:
    """The TensorRT target of this machine, or BackendUnavailableError saying why there is none."""
    target, reason = tensorrt_status()
    if target is None:
        raise BackendUnavailableError(
            f"--backend tensorrt cannot build engines here: {reason}; run it on the target GPU with the "
            "tensorrt extra installed (`pip install stars-edge[tensorrt]`), or use --backend onnxruntime"
        )
    return target


class GateTiles:
    """Held-out tiles per (source, count, tile), loaded once and shared by every engine."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._cache: dict[tuple[str, int, int], TileSet] = {}

    def get(self, options: dict[str, Any], tile: int) -> TileSet:
        key = (str(options.get("gate_data", SYNTHETIC)), int(options.get("gate_tiles", 16)), tile)
        if key not in self._cache:
            self._cache[key] = load_tiles(key[0], self.manifest.modalities, key[1], tile, "gate")
        return self._cache[key]


def _carried(source: EngineEntry) -> EngineAccuracy:
    """The ONNX source's accuracy, marked as measured on the source (TensorRT could not run here)."""
    if source.accuracy is None:
        return EngineAccuracy(
            miou=None, per_class_iou={}, agreement_with_fp32=None, miou_drop=None, gate="not_measured"
        )
    carried = EngineAccuracy(**source.accuracy)
    carried["measured_on"] = source.path
    return carried


def _measure_engine(
    engine_path: Path, source: EngineEntry, manifest: Manifest, tiles: GateTiles, tile: int
) -> EngineAccuracy:
    """Gate the TensorRT engine itself: same tiles, same FP32 ONNX reference, same budget as its source."""
    from runtime.backends import TensorRTBackend
    from runtime.upsampling import input_resolution

    options = dict(source.options)
    tileset = tiles.get(options, tile)
    inputs = tileset.select(source.pattern.modalities)
    fp32 = manifest.select(source.pattern, "fp32", "onnxruntime")
    reference = gate.predict(manifest.engine_path(fp32), inputs)
    names, ignore = manifest.model.class_names, manifest.model.ignore_index
    budget = float(options.get("gate_budget", gate.DEFAULT_BUDGET))
    fp32_accuracy = gate.measure(reference, reference, tileset.labels, names, ignore, None, budget)
    backend = TensorRTBackend(engine_path)
    try:
        logits = backend.run(inputs)
    finally:
        backend.close()
    logits = input_resolution(logits, next(iter(inputs.values())).shape[-2:])
    prediction = gate.Predictions(logits.argmax(axis=1).astype("uint8"))
    return gate.measure(
        prediction,
        reference,
        tileset.labels,
        names,
        ignore,
        fp32_accuracy["miou"],
        budget,
        reference_per_class=fp32_accuracy["per_class_iou"],
    )


def tensorrt_entry(
    source: EngineEntry,
    folder: Path,
    manifest: Manifest,
    target: TensorRTTarget,
    previous: Manifest | None,
    tiles: GateTiles,
    log: Log,
) -> tuple[EngineEntry, bool]:
    """The TensorRT entry built from ONNX entry ``source`` (reused when up to date); ``(entry, reused)``."""
    from runtime.backends import TensorRTBackend

    tile = source.tile_size
    options = {
        **dict(source.options),
        "source_sha256": source.sha256,
        "fp16_base": source.precision == "int8",
    }
    name = engine_file_name(source.pattern, source.precision, target)
    if previous is not None:
        for entry in previous.find(source.pattern, source.precision, "tensorrt"):
            path = folder / entry.path
            if (
                entry.path == name
                and dict(entry.options) == options
                and path.is_file()
                and sha256_file(path) == entry.sha256
            ):
                return entry, True
    onnx_path = folder / source.path
    if source.precision == "int8":
        onnx_path = fp16_base_graph(onnx_path, folder / f"{source.pattern}.int8.fp16base.onnx")
    bands = {item["name"]: int(item["bands"]) for item in source.inputs}
    path = build_tensorrt_engine(onnx_path, folder / name, bands, tile, folder / timing_cache_name(target))
    if TensorRTBackend.is_available():
        accuracy = _measure_engine(path, source, manifest, tiles, tile)
    else:
        accuracy = _carried(source)
        log(f"{source.pattern} {source.precision}/tensorrt: gate verdict carried from {source.path}")
    entry = dataclasses.replace(
        source,
        backend="tensorrt",
        path=name,
        sha256=sha256_file(path),
        accuracy=accuracy,
        tensorrt_version=target.version,
        compute_capability=target.compute_capability,
        options=options,
    )
    return entry, False


def build_engines_from_onnx(
    folder: str | Path, backend: str = "tensorrt", strict: bool = False, log: Log | None = None
) -> BuildReport:
    """TensorRT engines for every ONNX entry of the manifest in ``folder``; updates ``manifest.json``."""
    if backend != "tensorrt":
        raise ConfigError(
            f"--from-onnx builds TensorRT engines from ONNX files; --backend {backend} needs nothing built "
            "(the ONNX files are its engines), use --backend tensorrt"
        )
    log = log or print
    folder = Path(folder)
    manifest = load_manifest(folder)  # verifies every file's sha256
    target = require_tensorrt()
    report = BuildReport(folder / MANIFEST_NAME, manifest)
    tiles = GateTiles(manifest)
    sources = [e for e in manifest.engines if e.backend == "onnxruntime" and e.path.endswith(".onnx")]
    if not sources:
        raise ConfigError(
            f"{folder / MANIFEST_NAME} lists no ONNX engines; export them with build-engines first"
        )
    for source in sources:
        refusal = tensorrt_refusal(source.int8_quantizer or "ours")
        if source.precision == "int8" and refusal is not None:
            report.notes.append(f"{source.describe()}: no TensorRT engine; {refusal}")
            continue
        entry, reused = tensorrt_entry(source, folder, manifest, target, manifest, tiles, log)
        label = entry.describe()
        if entry.gate == "flagged" and strict and not reused:
            (folder / entry.path).unlink(missing_ok=True)
            report.refused.append(label)
            log(f"refused {label}: the accuracy gate flags it (--strict)")
            continue
        manifest.add(entry)
        (report.skipped if reused else report.built).append(label)
        if entry.gate == "flagged":
            report.flagged.append(label)
        elif entry.gate == "not_measured":
            report.not_measured.append(label)
        save_manifest(manifest, folder)
    return report
