"""The FP32 step of a build: the candidate checkpoints, a pattern's FP32 export, and the choice among them.

``export_fp32`` writes one pattern's FP32 graph, checked against PyTorch before and after simplification.
With several checkpoints (``export/selection.py``), ``score_candidates`` exports every candidate's FP32 graph
of a pattern, scores it on the gate's held-out tiles and picks one; ``model_info`` is the manifest's model
section for the checkpoint(s) chosen so far. The builder (``export/build.py``) decides when each runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from export import gate
from export.build_options import describe_normalization
from export.onnx_export import check_parity, export_onnx, simplify_onnx
from export.selection import (
    Candidate,
    Score,
    check_compatible,
    mix_digest,
    mixed,
    pattern_gflops,
    select,
)
from export.tiles import TileSet
from stars_edge.errors import ConfigError, ExportError
from stars_edge.io import sha256_file
from stars_edge.manifest import ModelInfo
from stars_edge.modalities import Pattern

#: Worst FP32-vs-PyTorch difference accepted at export (logits); a bigger one means a broken export.
PARITY_TOLERANCE = 1e-3


def load_candidates(paths: Sequence[Path]) -> list[Candidate]:
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


def model_info(
    candidates: Sequence[Candidate], chosen: Mapping[Pattern, Candidate], patterns: Sequence[Pattern]
) -> ModelInfo:
    """The manifest's model section: the one checkpoint, or the mix chosen so far (see ``ModelInfo``).

    ``candidates[0]`` is the default: its metadata gives the classes every candidate shares.
    """
    default = candidates[0]
    meta = default.meta
    if len(candidates) == 1:
        return ModelInfo(
            variant=meta.variant,
            method=meta.method,
            checkpoint_sha256=default.sha256,
            classes=meta.classes,
            class_names=tuple(meta.class_names),
            ignore_index=meta.ignore_index,
        )
    used = [c for c in candidates if c in chosen.values()] or [default]
    digests = {pattern: c.sha256 for pattern, c in chosen.items()}
    listing = [
        {**c.describe(), "patterns": [p.name for p in patterns if chosen.get(p) is c]} for c in candidates
    ]
    return ModelInfo(
        variant=mixed([c.meta.variant for c in used]),
        method=mixed([c.meta.method for c in used]),
        checkpoint_sha256=used[0].sha256 if len(used) == 1 else mix_digest(digests),
        classes=meta.classes,
        class_names=tuple(meta.class_names),
        ignore_index=meta.ignore_index,
        checkpoints=tuple(listing),
    )


def chosen_record(candidate: Candidate, record: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's ``checkpoint`` record: the candidate and its own score in the selection ``record``."""
    mine = next(item for item in record["candidates"] if item["sha256"] == candidate.sha256)
    return {
        **candidate.describe(),
        "validation_miou": mine["validation_miou"],
        "gflops": mine["gflops"],
    }


def export_fp32(
    pattern: Pattern,
    target: Path,
    model: Any,
    bands: Mapping[str, int],
    opset: int,
    log: Callable[[str], None],
    logits_stride: int = 1,
) -> None:
    """``pattern``'s FP32 ONNX of ``model`` at ``target``, simplified; refused if it differs from PyTorch.
    ``logits_stride`` 4 exports the logits before the decoder's final upsampling."""
    from stars_edge.models import export_module

    module = export_module(model, pattern, logits_stride)
    export_onnx(module, pattern, bands, target, opset=opset)
    before = check_parity(module, target, pattern, bands)
    simplify_onnx(target)
    after = check_parity(module, target, pattern, bands)
    log(f"{pattern} fp32 onnx vs pytorch: exported {before}; simplified {after}")
    worst = max(before.max_abs_diff, after.max_abs_diff)
    if worst > PARITY_TOLERANCE:
        raise ExportError(
            f"{pattern}: ONNX differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE}); "
            "the export is wrong, try another --opset"
        )


def score_candidates(
    pattern: Pattern,
    candidates: Sequence[Candidate],
    tiles: TileSet,
    scratch: Path,
    bands: Mapping[str, int],
    tile: int,
    options: Any,
    log: Callable[[str], None],
) -> tuple[Candidate, dict[str, Any], Path]:
    """Export every candidate's FP32 graph of ``pattern`` into ``scratch``, score it on the gate ``tiles``,
    pick one (``export.selection.select``): the winner, the selection record and the winner's scored graph.

    ``options`` is the build's ``BuildOptions`` (gate budget, tie tolerance, opset).
    """
    meta = candidates[0].meta
    inputs = tiles.select(pattern.modalities)
    names, ignore = tuple(meta.class_names), meta.ignore_index
    scores, files = [], {}
    for index, candidate in enumerate(candidates):
        path = scratch / f"{pattern}.{index}.fp32.onnx"
        export_fp32(pattern, path, candidate.model, bands, options.opset, log, options.logits_stride)
        prediction = gate.predict(path, inputs)
        accuracy = gate.measure(
            prediction, prediction, tiles.labels, names, ignore, None, options.gate_budget
        )
        if accuracy["miou"] is None:
            raise ExportError(
                f"{pattern}: the gate tiles of {tiles.source} have no labels, so the checkpoints cannot "
                "be compared; give --gate-data labelled held-out scenes or one --checkpoint"
            )
        gflops = pattern_gflops(candidate.model, pattern, bands, tile)
        scores.append(Score(candidate, float(accuracy["miou"]), gflops))
        files[candidate.sha256] = path
    winner, record = select(scores, options.tie_tolerance)
    ranking = "; ".join(f"{s.candidate.label} {s.miou:.2f} mIoU {s.gflops:.4g} GFLOPs" for s in scores)
    log(f"{pattern}: chose {winner.candidate.label} ({record['reason']}); {ranking}")
    return winner.candidate, record, files[winner.candidate.sha256]
