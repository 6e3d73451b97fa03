"""Several checkpoints, one manifest: per pattern, the checkpoint that scores best on held-out tiles.

``stars-edge build-engines --checkpoint a.pt --checkpoint b.pt`` exports every candidate's FP32 graph of a
pattern, scores it on the accuracy gate's held-out tiles (``export/tiles.py``: synthetic gate seeds or the
dataset's ``test``/``val`` split, never calibration or training data) and keeps the best
(``select``); that checkpoint's FP16/INT8/TensorRT engines are then built as for one checkpoint. The runtime
normalises with the manifest's specs and reads one class list, so candidates must agree on class names,
modalities, band counts and normalisation (``check_compatible``), and a candidate must not have been trained
on the scenes it is scored on (``held_out``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.tiles import GATE_SEED_BASE, SYNTHETIC
from stars_edge.errors import DataError, ExportError
from stars_edge.modalities import Pattern

#: mIoU points (percent) within which candidates count as tied; a tie goes to fewer GFLOPs for the pattern.
#:
#: Why 0.5: the score comes from the gate's held-out tiles (16 by default), and on such sets single engines
#: move by a few tenths of a point between tile sets (docs/EXPORT.md, quantizer study on 64 tiles), so a
#: smaller lead is not evidence that one checkpoint is better. It is half the gate's default budget
#: (``gate.DEFAULT_BUDGET``, 1.0 point): a precision may lose 1.0 point and still ship, so trading at most
#: 0.5 for a cheaper network stays well inside what the project already accepts. ``--tie-tolerance``
#: overrides it (0: strictly the best mIoU).
TIE_TOLERANCE = 0.5


@dataclass(frozen=True)
class Candidate:
    """One checkpoint offered for the manifest: the loaded model, its metadata and where it came from."""

    path: Path
    sha256: str
    model: Any  # stars_edge.models.STARSModel (torch, loaded by the builder)
    meta: Any  # stars_edge.checkpoint.CheckpointMeta
    normalization: str

    def describe(self) -> dict[str, Any]:
        """``path``, ``sha256``, ``method``, ``variant``: how the manifest names a checkpoint."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "method": self.meta.method,
            "variant": self.meta.variant,
        }

    @property
    def label(self) -> str:
        return f"{self.path.name} [{self.meta.method}, {self.sha256[:12]}]"


def check_compatible(first: Candidate, other: Candidate) -> None:
    """Refuse to mix checkpoints the one manifest cannot describe: one ``ExportError`` line naming both files.

    The manifest holds one class list, one ignore index and one normalisation spec per modality, which the
    runtime applies to every engine; a checkpoint that differs in any of them would get wrong inputs or
    labels.
    """
    a, b = first.meta, other.meta
    problem = None
    if tuple(a.class_names) != tuple(b.class_names):
        problem = f"class names differ ({', '.join(a.class_names)} vs {', '.join(b.class_names)})"
    elif a.ignore_index != b.ignore_index:
        problem = f"ignore index differs ({a.ignore_index} vs {b.ignore_index})"
    elif dict(a.in_channels) != dict(b.in_channels):
        problem = f"modalities/band counts differ ({_bands(a.in_channels)} vs {_bands(b.in_channels)})"
    else:
        for modality in a.in_channels:
            spec_a, spec_b = a.specs[modality].to_dict(), b.specs[modality].to_dict()
            if spec_a != spec_b:
                fields = [k for k in sorted(set(spec_a) | set(spec_b)) if spec_a.get(k) != spec_b.get(k)]
                problem = f"{modality} normalisation specs differ ({', '.join(fields)})"
                break
    if problem is not None:
        raise ExportError(
            f"cannot mix {first.path} and {other.path} in one manifest: {problem}; the runtime feeds every "
            "engine with one set of classes and specs, so build them into separate --out folders"
        )


def _bands(channels: Mapping[str, int]) -> str:
    return ", ".join(f"{m} {n}" for m, n in channels.items())


def held_out(candidate: Candidate, gate_data: str, gate_tiles: int, tile: int) -> tuple[bool, str]:
    """Check that the gate's tiles are not ``candidate``'s training scenes: ``(verified, what was checked)``.

    Selection scores every candidate on the gate's tiles, so those must be held out from *each* candidate's
    training, not only from calibration (``tiles.check_disjoint``). What a checkpoint trained on comes from
    its saved training config (``meta.config``: ``data``, ``synthetic_seed``/``synthetic_train_scenes`` or
    ``train_split``). Synthetic gate tiles come from seeds ``GATE_SEED_BASE`` on: refused when the training
    seeds overlap them. A dataset gate reads ``test``, else ``val``: refused when any of its scenes' files is
    a training scene's file. Raises ``ExportError``; a checkpoint without a training config (or whose data
    folder is not here) cannot be checked: ``verified`` is False and the line says so.
    """
    config = dict(candidate.meta.config or {})
    data = config.get("data")
    if data is None:
        return (
            False,
            f"{candidate.label}: no training config in the checkpoint; held-out gate tiles not verified",
        )
    if str(gate_data) == SYNTHETIC:
        if str(data) != SYNTHETIC:
            return True, f"{candidate.label}: trained on {data}, scored on synthetic gate scenes"
        side = max(tile, 256)
        scenes = math.ceil(gate_tiles / max(1, (side // tile) ** 2))
        first, count = int(config.get("synthetic_seed", 0)), int(config.get("synthetic_train_scenes", 0))
        if first < GATE_SEED_BASE + scenes and first + count > GATE_SEED_BASE:
            raise ExportError(
                f"{candidate.path} was trained on synthetic seeds {first}..{first + count - 1}, which "
                f"include the gate's seeds {GATE_SEED_BASE}..{GATE_SEED_BASE + scenes - 1}; it cannot be "
                "scored on them: give --gate-data a held-out dataset split or retrain with other seeds"
            )
        return True, f"{candidate.label}: training seeds {first}..{first + count - 1} are not gate seeds"
    if str(data) == SYNTHETIC:
        return True, f"{candidate.label}: trained on in-memory synthetic scenes, scored on {gate_data}"
    train = _scene_files(Path(str(data)), (str(config.get("train_split", "train")),), config)
    if train is None:
        return False, f"{candidate.label}: training data {data} is not here; held-out gate tiles not verified"
    gate = _scene_files(Path(gate_data), ("test", "val"), {})
    if gate is None:
        return False, f"{candidate.label}: {gate_data} has no test/val split to compare"
    shared = sorted(train & gate)
    if shared:
        raise ExportError(
            f"{candidate.path} was trained on {len(shared)} file(s) that --gate-data {gate_data} scores on "
            f"(e.g. {shared[0]}); give --gate-data a split this checkpoint did not train on"
        )
    return True, f"{candidate.label}: {data} training scenes and {gate_data} gate scenes share no file"


def _scene_files(root: Path, splits: Sequence[str], config: Mapping[str, Any]) -> set[str] | None:
    """Resolved image/label paths of the first of ``splits`` that ``root`` has (None: not readable here)."""
    from stars_edge.data.loaders import list_scene_sources

    if not root.exists():
        return None
    fmt = str(config.get("dataset_format", "auto"))
    for split in splits:
        try:
            sources = list_scene_sources(root, split, fmt)
        except DataError:
            continue
        files: set[str] = set()
        for source in sources:
            paths = [*source.images.values(), source.label]
            files.update(str(Path(p).resolve()) for p in paths if p is not None)
        return files
    return None


def pattern_gflops(model: Any, pattern: Pattern, bands: Mapping[str, int], tile: int) -> float:
    """GFLOPs of ``model``'s network for ``pattern`` on one ``tile`` x ``tile`` tile (2 per multiply-add).

    Counted by PyTorch's ``FlopCounterMode`` on the same per-pattern module that is exported: absent branches
    are not counted, a method that translates missing modalities pays for its translators.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stars_edge.models import export_module

    module = export_module(model, pattern)
    inputs = [torch.zeros(1, bands[m], tile, tile) for m in pattern]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return round(counter.get_total_flops() / 1e9, 6)


@dataclass(frozen=True)
class Score:
    """One candidate's FP32 engine for one pattern: validation mIoU on the gate tiles, and its GFLOPs."""

    candidate: Candidate
    miou: float
    gflops: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.candidate.describe(), "validation_miou": self.miou, "gflops": self.gflops}


def select(scores: Sequence[Score], tolerance: float = TIE_TOLERANCE) -> tuple[Score, dict[str, Any]]:
    """The winning score and the record the manifest keeps of the choice.

    The best validation mIoU wins; candidates within ``tolerance`` points of it are tied, and a tie goes to
    the fewest GFLOPs for this pattern, then the higher mIoU, then the earlier checkpoint on the command line.
    """
    if not scores:
        raise ExportError("no candidate checkpoint to choose from")
    best = max(score.miou for score in scores)
    tied = [s for s in scores if s.miou >= best - tolerance]
    order = {id(s): i for i, s in enumerate(scores)}
    winner = min(tied, key=lambda s: (s.gflops, -s.miou, order[id(s)]))
    leader = max(scores, key=lambda s: (s.miou, -order[id(s)]))
    if winner is leader and len(tied) == 1:
        reason = "best validation mIoU"
    elif winner is leader:
        reason = f"best validation mIoU; {len(tied) - 1} other(s) within {tolerance} cost no fewer GFLOPs"
    else:
        reason = (
            f"within {tolerance} mIoU of the best ({leader.candidate.path.name} {leader.miou:.2f}) with "
            f"fewer GFLOPs ({winner.gflops:.4g} vs {leader.gflops:.4g})"
        )
    record = {
        "rule": "best validation mIoU on the gate tiles; ties within tie_tolerance go to fewer GFLOPs",
        "tie_tolerance": tolerance,
        "chosen": winner.candidate.sha256,
        "reason": reason,
        "candidates": [score.to_dict() for score in scores],
    }
    return winner, record


def mix_digest(chosen: Mapping[Pattern, str]) -> str:
    """Identity of a mix: sha256 of ``pattern=checkpoint_sha256`` lines, in pattern order."""
    lines = "\n".join(f"{pattern}={chosen[pattern]}" for pattern in sorted(chosen, key=lambda p: p.index))
    return hashlib.sha256(lines.encode()).hexdigest()


def mixed(values: Sequence[str]) -> str:
    """The common value, or ``mixed(a,b)`` listing the distinct ones in first-seen order."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else f"mixed({','.join(distinct)})"
