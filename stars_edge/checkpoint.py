"""STARS checkpoints: weights plus everything needed to rebuild and feed the model without the training code.

A checkpoint is one ``torch.save`` file holding plain data only (it loads with ``weights_only=True``):
``{"format", "version", "meta", "model_state", "training_state"}``. ``meta`` carries the variant, method,
band layout, classes, normalisation specs and tile size, so export and evaluation need nothing else.
``training_state`` (optimizer, scheduler, RNG states) is present in training checkpoints for ``--resume``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stars_edge.errors import CheckpointError, StarsEdgeError
from stars_edge.io import atomic_path
from stars_edge.modalities import IGNORE_INDEX, MODALITIES, ModalitySpec, specs_from_dicts
from stars_edge.models import STARSModel, create_model

FORMAT = "stars-edge-checkpoint"
VERSION = 1


@dataclass
class CheckpointMeta:
    """What a checkpoint's model is and what it expects as input."""

    variant: str
    method: str
    in_channels: dict[str, int]
    classes: int
    class_names: tuple[str, ...]
    specs: dict[str, ModalitySpec]
    tile_size: int
    ignore_index: int = IGNORE_INDEX
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "method": self.method,
            "in_channels": dict(self.in_channels),
            "classes": int(self.classes),
            "class_names": list(self.class_names),
            "specs": [spec.to_dict() for spec in self.specs.values()],
            "tile_size": int(self.tile_size),
            "ignore_index": int(self.ignore_index),
            "model_kwargs": dict(self.model_kwargs),
            "step": int(self.step),
            "config": dict(self.config),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointMeta:
        return cls(
            variant=str(data["variant"]),
            method=str(data["method"]),
            in_channels={m: int(data["in_channels"][m]) for m in MODALITIES if m in data["in_channels"]},
            classes=int(data["classes"]),
            class_names=tuple(str(n) for n in data["class_names"]),
            specs=specs_from_dicts(data["specs"]),
            tile_size=int(data["tile_size"]),
            ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
            model_kwargs=dict(data.get("model_kwargs", {})),
            step=int(data.get("step", 0)),
            config=dict(data.get("config", {})),
        )


def build_model(meta: CheckpointMeta) -> STARSModel:
    """A freshly initialised model with the checkpoint's architecture."""
    return create_model(meta.variant, meta.in_channels, meta.classes, meta.method, **meta.model_kwargs)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: STARSModel,
    meta: CheckpointMeta,
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (a crash never leaves a truncated file under the final name).

    The model's own architecture (``model.config``) is recorded in ``model_kwargs`` whatever the caller
    passed, so the file rebuilds the same model after a default changes (issue 22 changed
    ``translation_scales``).
    """
    path = Path(path)
    recorded = {**meta.to_dict(), "model_kwargs": {**meta.model_kwargs, **model.config.to_dict()}}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "meta": recorded,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if training_state is not None:
        payload["training_state"] = dict(training_state)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint payload, validated (``CheckpointError`` when missing, corrupt or foreign)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the .pt file written by training")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}); it may be truncated"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a stars-edge checkpoint; pass a file written by python -m training.train"
        )
    if int(payload.get("version", -1)) > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; upgrade stars-edge to read it"
        )
    return payload


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[STARSModel, CheckpointMeta]:
    """Rebuild the model (eval mode) and its metadata from a checkpoint file."""
    payload = read_checkpoint(path)
    try:
        meta = CheckpointMeta.from_dict(payload["meta"])
    except (KeyError, TypeError, ValueError, StarsEdgeError) as exc:
        raise CheckpointError(
            f"{path}: invalid checkpoint metadata ({exc}); re-save it with this version"
        ) from exc
    model = build_model(meta)
    load_model_state(model, payload["model_state"], path)
    model.eval()
    return model, meta


def load_model_state(
    model: STARSModel, state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]
) -> None:
    """Load weights, turning architecture mismatches into one readable ``CheckpointError``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong_shape:
        detail = (
            (missing and f"missing {missing[0]}")
            or (unexpected and f"unexpected {unexpected[0]}")
            or (
                f"shape of {wrong_shape[0]}: checkpoint {tuple(state[wrong_shape[0]].shape)} vs model "
                f"{tuple(own[wrong_shape[0]].shape)}"
            )
        )
        raise CheckpointError(
            f"{path} does not match the requested model ({detail}; {len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(wrong_shape)} reshaped); use the same variant, method and band layout"
        )
    model.load_state_dict(state)


def check_compatible(
    meta: CheckpointMeta,
    path: str | os.PathLike[str],
    *,
    variant: str | None = None,
    method: str | None = None,
    in_channels: Mapping[str, int] | None = None,
    classes: int | None = None,
) -> None:
    """Raise ``CheckpointError`` when a checkpoint was made for another variant, method, bands or classes."""
    checks = [
        ("variant", variant, meta.variant),
        ("method", method, meta.method),
        ("band layout", dict(in_channels) if in_channels is not None else None, meta.in_channels),
        ("classes", classes, meta.classes),
    ]
    for label, wanted, found in checks:
        if wanted is not None and wanted != found:
            raise CheckpointError(
                f"{path} was trained with {label} {found}, not {wanted}; start a new run or match the config"
            )


def replace_meta(meta: CheckpointMeta, **changes: Any) -> CheckpointMeta:
    """A copy of ``meta`` with some fields changed (e.g. ``step``)."""
    return dataclasses.replace(meta, **changes)
