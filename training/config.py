"""The training configuration: one flat, typed dataclass (YAML file + CLI flag overrides)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stars_edge.errors import ConfigError
from stars_edge.modalities import MODALITIES
from stars_edge.models import MODEL_REGISTRY
from stars_edge.models.methods import get_method

#: TrainConfig fields that override the variant's ModelConfig when set (``None`` keeps the variant default).
MODEL_OVERRIDE_KEYS: tuple[str, ...] = (
    "encoder",
    "specific_width",
    "specific_depth",
    "decoder_channels",
    "psa_dim",
    "psa_scale",
    "translator_kernel",
    "translator_reduction",
    "translator_depth",
    "translation_scales",
    "translation_target",
    "pattern_norm",
    "trunk_norm",
    "decoder",
)


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved into every checkpoint."""

    # model
    variant: str = "edge"
    method: str = "stars"
    modalities: tuple[str, ...] = MODALITIES
    encoder: str | None = None
    specific_width: float | None = None
    specific_depth: int | None = None
    decoder_channels: int | None = None
    psa_dim: int | None = None
    psa_scale: int | None = None
    translator_kernel: int | None = None
    translator_reduction: int | None = None
    translator_depth: int | None = None
    translation_scales: tuple[int, ...] | None = None
    translation_target: Literal["fused", "specific"] | None = None
    pattern_norm: Literal["reestimate", "learned", "shared"] | None = None
    trunk_norm: Literal["shared", "modality"] | None = None
    decoder: Literal["shared", "per_pattern"] | None = "per_pattern"
    pattern_norm_batches: int = 16
    # data
    data: str = "synthetic"
    dataset_format: str = "auto"
    train_split: str = "train"
    val_split: str = "val"
    synthetic_size: int = 256
    synthetic_train_scenes: int = 4
    synthetic_val_scenes: int = 1
    synthetic_seed: int = 0
    synthetic_unlabelled_scenes: int = 0
    synthetic_optical_bands: int = 4
    synthetic_train_cloud_cover: float = 0.0
    synthetic_train_sar_gap: float = 0.0
    synthetic_train_dsm_voids: float = 0.0
    optical_bands: int | None = None
    sar_bands: int | None = None
    dsm_bands: int | None = None
    tile_size: int = 128
    batch_size: int = 8
    augment: bool = True
    # optimisation
    steps: int = 300
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    warmup_steps: int = 10
    grad_clip: float = 5.0
    # losses
    seg_weight: float = 1.0
    dice_weight: float = 0.0
    lambda_tr: float = 2.0
    translation_distance: Literal["standardized", "cosine", "mse", "l1"] = "standardized"
    lambda_psa: float = 1.0
    psa_pixels_per_class: int = 32
    psa_temperature: float = 0.2
    psa_views: Literal["real", "real+translated"] = "real"
    psa_modalities: tuple[str, ...] | None = None
    lambda_shaspec_align: float = 0.1
    lambda_shaspec_domain: float = 0.1
    pattern_schedule: Literal["all", "draw"] = "all"
    subset_weight: float = 1.0
    lambda_distill: float = 0.0  # measured: distillation from the full pattern costs 1.4 mIoU (docs/MODEL.md)
    distill_temperature: float = 2.0
    full_pattern_prob: float = 0.25
    # run
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    output_dir: Path = Path("runs/stars")
    resume: Path | None = None
    checkpoint_every: int = 100
    keep_checkpoints: bool = False
    val_every: int = 100
    log_every: int = 10
    val_patterns: str = "all"
    val_batch_size: int = 8
    diagnostics: bool = True
    # speed (training/speed.py); the defaults are the bit-stable fp32 path
    channels_last: bool = False
    autocast: str = "none"

    def __post_init__(self) -> None:
        if self.variant not in MODEL_REGISTRY:
            raise ConfigError(
                f"unknown variant {self.variant!r}; valid variants: {', '.join(MODEL_REGISTRY)}"
            )
        spec = get_method(self.method)
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ConfigError(f"modalities must be a non-empty subset of {', '.join(MODALITIES)}")
        if spec.single_modality and len(self.modalities) != 1:
            raise ConfigError(
                "method single_modality trains one model per modality: set modalities to one of "
                f"{', '.join(MODALITIES)} (e.g. --modalities sar)"
            )
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "tile_size": self.tile_size,
            "psa_pixels_per_class": self.psa_pixels_per_class,
            "log_every": self.log_every,
            "checkpoint_every": self.checkpoint_every,
            "val_every": self.val_every,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        if self.tile_size % 32:
            raise ConfigError(f"tile_size must be a multiple of 32, got {self.tile_size}")
        if self.lr <= 0 or self.psa_temperature <= 0 or self.distill_temperature <= 0:
            raise ConfigError("lr, psa_temperature and distill_temperature must be positive")
        if self.psa_modalities is not None:
            unknown_psa = [m for m in self.psa_modalities if m not in self.modalities]
            if unknown_psa or len(self.psa_modalities) < 2:
                raise ConfigError(
                    f"psa_modalities must name at least two of the trained modalities "
                    f"({', '.join(self.modalities)}), got {', '.join(self.psa_modalities)}"
                )
        if self.subset_weight < 0 or self.lambda_distill < 0:
            raise ConfigError("subset_weight and lambda_distill must be >= 0")
        if self.synthetic_unlabelled_scenes < 0:
            raise ConfigError(
                f"synthetic_unlabelled_scenes must be >= 0, got {self.synthetic_unlabelled_scenes}"
            )
        if self.synthetic_unlabelled_scenes and self.data != "synthetic":
            raise ConfigError(
                "synthetic_unlabelled_scenes needs data: synthetic (a dataset folder has no unlabelled split "
                "yet); set it to 0"
            )
        holes = self.synthetic_train_holes()
        for key, fraction in holes.items():
            if not 0.0 <= fraction < 1.0:
                raise ConfigError(f"synthetic_train_{key} must be within [0, 1), got {fraction}")
        if self.trains_on_holes() and self.data != "synthetic":
            raise ConfigError(
                "synthetic_train_cloud_cover, synthetic_train_sar_gap and synthetic_train_dsm_voids need "
                "data: synthetic (a dataset folder brings its own holes); set them to 0"
            )
        if self.pattern_norm_batches < 0:
            raise ConfigError(f"pattern_norm_batches must be >= 0, got {self.pattern_norm_batches}")
        if not 0.0 <= self.full_pattern_prob <= 1.0:
            raise ConfigError(f"full_pattern_prob must be in [0, 1], got {self.full_pattern_prob}")
        if self.decoder == "per_pattern" and self.pattern_schedule == "draw":
            raise ConfigError(
                "decoder: per_pattern (the default) needs pattern_schedule: all (with draw, each step "
                "trains one drawn pattern's decoder and the others see a fraction of the steps); set "
                "decoder: shared or pattern_schedule: all"
            )
        from training.speed import check_speed_options

        check_speed_options(self)

    def psa_view_modalities(self) -> tuple[str, ...]:
        """The modalities whose real features are PSA views (``psa_modalities`` or the default rule)."""
        if self.psa_modalities is not None:
            return tuple(m for m in self.modalities if m in self.psa_modalities)
        others = tuple(m for m in self.modalities if m != "dsm")
        return others if len(others) >= 2 else self.modalities

    def synthetic_train_holes(self) -> dict[str, float]:
        """The holes of the synthetic training scenes, as ``SyntheticConfig`` fields (0 = none)."""
        return {
            "cloud_cover": self.synthetic_train_cloud_cover,
            "sar_gap": self.synthetic_train_sar_gap,
            "dsm_voids": self.synthetic_train_dsm_voids,
        }

    def trains_on_holes(self) -> bool:
        """Whether training scenes have holes, and so the translation and PSA losses skip invalid pixels.

        Off (the default), the losses ignore the validity masks: the clean-scene path stays bit-identical.
        """
        return any(value > 0 for value in self.synthetic_train_holes().values())

    def model_overrides(self) -> dict[str, Any]:
        """The ModelConfig fields this config sets explicitly."""
        return {k: getattr(self, k) for k in MODEL_OVERRIDE_KEYS if getattr(self, k) is not None}

    def expected_bands(self) -> dict[str, int]:
        """Band counts the config insists on (empty: take them from the data)."""
        given = {"optical": self.optical_bands, "sar": self.sar_bands, "dsm": self.dsm_bands}
        return {m: int(v) for m, v in given.items() if v is not None and m in self.modalities}


#: One line of help per TrainConfig field (shown by ``python -m training.train --help``).
FIELD_HELP: dict[str, str] = {
    "variant": "model variant from stars_edge.models.MODEL_REGISTRY (tiny, edge, resnet18, resnet50)",
    "method": "stars, an ablation (stars_no_stopgrad, stars_no_psa, stars_psa_uniform) or a baseline "
    "(zero_fill_dropout, shaspec, single_modality)",
    "modalities": "modalities to train on, e.g. 'optical sar dsm' (one modality for single_modality)",
    "encoder": "override the variant's shared encoder (registry name or timm:<name>)",
    "specific_width": "override the width multiplier of the modality-specific branch",
    "specific_depth": "override the blocks per stage of the modality-specific branch",
    "decoder_channels": "override the FPN decoder width",
    "psa_dim": "override the PSA projection dimension",
    "psa_scale": "override the PSA feature scale (0 = stride 4, 1 = stride 8)",
    "translator_kernel": "override the translator conv kernel (1 or 3)",
    "translator_reduction": "override the translator hidden-width reduction (hidden = C / reduction)",
    "translator_depth": "override the translator's 3x3 layers before its 1x1 output",
    "translation_scales": "override the scales translated (0..3 = stride 4..32); others are zero-filled",
    "translation_target": "what translators predict: fused (a missing modality's whole features) or specific "
    "(its specific part; the present modalities' shared features fill the shared part)",
    "pattern_norm": "decoder normalization per pattern: reestimate (after training, on training batches), "
    "learned (one BatchNorm per pattern in training) or shared (one set for all patterns: the ablation)",
    "trunk_norm": "shared trunk normalization: shared (one BatchNorm for the mixture of modalities, the "
    "default) or modality (one BatchNorm per modality, the convolutions still shared)",
    "decoder": "per_pattern (one decoder per availability pattern, the default: +1.3 mean mIoU for every "
    "method in the accuracy study, and each exported engine holds only its own, so inference costs the "
    "same) or shared (one decoder for every pattern; needed by pattern_schedule: draw)",
    "pattern_norm_batches": "training batches used to re-estimate per-pattern statistics (end of training "
    "and before each validation)",
    "data": "'synthetic' (scenes generated in memory) or a dataset folder",
    "dataset_format": "dataset folder layout passed to open_dataset (auto detects)",
    "train_split": "dataset split used for training",
    "val_split": "dataset split used for validation",
    "synthetic_size": "side of each synthetic scene in pixels",
    "synthetic_train_scenes": "number of synthetic training scenes",
    "synthetic_val_scenes": "number of synthetic validation scenes (seeds disjoint from training)",
    "synthetic_seed": "first seed of the synthetic training scenes",
    "synthetic_unlabelled_scenes": "extra synthetic training scenes without labels (seeds after the "
    "labelled ones): methods with a translation loss also train it on a batch of their tiles each step "
    "(the low-label study); the other methods ignore them",
    "synthetic_optical_bands": "optical bands the synthetic generator renders (4 = blue, green, red, nir)",
    "synthetic_train_cloud_cover": "fraction of each synthetic training (and unlabelled) scene's optical "
    "covered by clouds, rendered like the test scenes' (thin edges stay valid, cast shadows); clouded "
    "pixels are zero inputs, the segmentation keeps its labels there, the translation and PSA losses skip "
    "them. 0 (default): clean scenes; validation scenes stay clean. A pilot (docs/MODEL.md) traded clean "
    "optical-alone accuracy for cloudy-scene accuracy: an option to measure, not a default",
    "synthetic_train_sar_gap": "fraction of each synthetic training scene's width lost as a missing SAR "
    "swath (masked like clouds; 0 = none)",
    "synthetic_train_dsm_voids": "fraction of each synthetic training scene lost to DSM voids (masked like "
    "clouds; 0 = none)",
    "optical_bands": "expected optical band count (error if the data differs); unset = take it from the data",
    "sar_bands": "expected SAR band count (error if the data differs)",
    "dsm_bands": "expected DSM band count (error if the data differs)",
    "tile_size": "training tile side in pixels (multiple of 32)",
    "batch_size": "tiles per step and per process",
    "augment": "random crops, flips and 90-degree rotations of training tiles (true/false)",
    "steps": "optimisation steps",
    "lr": "peak AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "schedule": "learning-rate decay: poly, cosine or constant",
    "warmup_steps": "linear warm-up steps",
    "grad_clip": "gradient-norm clip (0 disables)",
    "seg_weight": "weight of the segmentation loss",
    "dice_weight": "weight of the soft Dice term added to cross-entropy",
    "lambda_tr": "weight of the translation loss",
    "translation_distance": "translation distance: standardized (per-channel standardized squared error, "
    "scale-sensitive), cosine, mse or l1",
    "lambda_psa": "weight of the PSA cross-modal contrastive loss",
    "psa_pixels_per_class": "PSA: pixels sampled per class present in a batch (K)",
    "psa_temperature": "PSA: contrastive temperature",
    "psa_views": "PSA views: real (each present modality) or real+translated (adds translated features)",
    "psa_modalities": "modalities whose real features are PSA views (unset: every modality but dsm when two "
    "others are trained: height alone cannot tell most classes apart, measured in docs/MODEL.md)",
    "lambda_shaspec_align": "ShaSpec: weight of the L1 shared-feature alignment",
    "lambda_shaspec_domain": "ShaSpec: weight of the modality classification of specific features",
    "pattern_schedule": "all: supervise the full pattern and every proper subset each step; draw: the full "
    "pattern and one drawn pattern (the old schedule)",
    "subset_weight": "weight of each proper subset's segmentation loss",
    "lambda_distill": "weight of the distillation from the full pattern's logits to each subset's (0: off, "
    "the default; on, it cost every pattern 0.5-2.1 mIoU in the accuracy study)",
    "distill_temperature": "temperature of that distillation",
    "full_pattern_prob": "schedule draw: probability of drawing the full pattern (else a proper subset)",
    "seed": "random seed (model init, batches, patterns, sampling)",
    "threads": "torch intra-op threads (0 = torch default)",
    "device": "auto, cpu or cuda",
    "output_dir": "folder for checkpoint.pt and log.jsonl",
    "resume": "checkpoint.pt to continue from (exactly: weights, optimizer, scheduler, step, RNG)",
    "checkpoint_every": "write the checkpoint every N steps (and at the end)",
    "keep_checkpoints": "also keep every periodic checkpoint as checkpoint-<step>.pt",
    "val_every": "validate every N steps (and at the end)",
    "log_every": "log losses and collapse diagnostics every N steps",
    "val_patterns": "patterns to validate: all, or e.g. 'optical+sar sar'",
    "val_batch_size": "tiles per validation batch",
    "diagnostics": "log collapse diagnostics (feature std, effective rank)",
    "channels_last": "train with channels-last tensors (oneDNN's fast convolution layout; true/false)",
    "autocast": "forward/loss precision: none (fp32, bit-stable) or bf16 (autocast; avx512_bf16/AMX CPUs)",
}
