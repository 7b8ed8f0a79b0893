"""A training run's configuration (one field a reason) and the hooks a run reports through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from embeddings.ml.model import FusionConfig

REPORT_SECONDS = 2.0  # at most this long between two reports of a slow preparation phase

ProgressFn = Callable[[int, int, dict[str, float]], None]
ReportFn = Callable[[str], None]  # one human-readable line about what the run is doing now
StopFn = Callable[[], bool]  # polled after each step: True saves the state and stops


@dataclass
class TrainConfig:
    # -- model ---------------------------------------------------------------------------
    init: str = "new:resnet10t"  # a load_model spec, "new:<timm arch>" (scratch image
    #                              tower + pretrained MiniLM text tower from its pip package)
    #                              or "packaged:<tower>" (pretrained image tower, same text)
    image_size: int = 128  # "new:"/"packaged:" only: training/inference resolution
    embed_dim: int = 256  # "new:" only: joint space size (pgvector halfvec rows stay small)
    context_length: int = 32  # "new:" only: text tokens kept (catalog titles are short)
    fusion: FusionConfig = field(default_factory=FusionConfig)  # "new:" only
    # -- what trains -------------------------------------------------------------------
    image_unfreeze_last_n: int | None = None  # None: whole image tower trains; 0: trunk
    #                                           frozen (projection still trains); n: last n
    image_grid_head: bool = False  # give the image embedding a grid-token term if the
    #                                init has none (`FusionConfig.image_reads_grid`)
    text_unfreeze_last_n: int = 0  # 0: text trunk frozen and cached (projection trains);
    #                                n: last n transformer layers train; -1: all of it
    train_fusion: bool = True  # False: the fusion module keeps the base's weights (ablation)
    # -- objectives ----------------------------------------------------------------------
    w_clip: float = 1.0  # image-text InfoNCE weight
    w_neighbour: float = 0.5  # neighbour alignment weight (needs lookbooks)
    w_category: float = 0.5  # category head cross-entropy weight (needs categories)
    w_preserve: float = 0.0  # cached features only: keep the frozen trunk's image-image
    #                          neighbourhoods in the projected space (in-batch distillation),
    #                          so a projection trained on few labels does not forget what
    #                          the pretrained tower sees beyond them (colour, pattern, shape)
    w_variant: float = 1.0  # image-image InfoNCE over pairs of one product's variants (they
    #                          share a `variant_groups` group): a photo must find its product
    #                          in another colour among the batch's photos. Neighbour alignment
    #                          reaches only the fused vector, and a photo query has no text
    variant_groups: str = "variant:,product:"  # graph-group id prefixes whose members are one
    #   product's variants: the catalog's group id ("variant:"), H&M's product code ("product:")
    walk_length: int = 1  # item->lookbook->item hops to reach a neighbour (1 = direct)
    unmasked_groups: str = "attr:,section:"  # comma-separated graph-group id prefixes that
    #   random walks go through but whose mates stay negatives: a shared colour or section
    #   says "related", not "goes together", and masking a 1,000-item group would leave few
    #   negatives. Every other group (lookbooks, variants, rooms) is masked from negatives.
    # -- optimisation ------------------------------------------------------------------
    epochs: float = 10.0  # passes over the training items (a pass = len(items) samples)
    max_steps: int | None = None  # overrides epochs when set (smoke runs, tests)
    batch_pairs: int = 64  # neighbour pairs per step: a step sees 2x this many items
    fusion_pairs: int | None = None  # cached features only: fuse just the first this many
    #   pairs of a step (the fused terms see a sub-batch; image-text sees all). On cached
    #   features the fusion transformer is most of a step's time, so this is the step's
    #   main cost knob. None: fuse every pair
    grad_accum: int = 1  # micro-batches per optimiser step (bigger effective batch)
    lr: float = 1e-3  # peak AdamW learning rate (scratch towers like it high)
    lr_pretrained: float = 1e-5  # learning rate for pretrained trunks that are unfrozen
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on norms/biases)
    warmup_steps: int = 30  # linear warm-up, then cosine decay to 0
    grad_clip: float = 1.0  # max global gradient norm
    crop_scale: float = 0.55  # random-resized-crop minimum area fraction (augmentation)
    feature_views: int = 0  # >0 with a frozen timm image trunk (image_unfreeze_last_n=0):
    #                         run the trunk once per image and view (centre + augmented) and
    #                         train on those cached features (embeddings.ml.feature_cache)
    feature_cache_dir: str | None = None  # where cached features persist across runs
    trunk_tune_blocks: int = 0  # >0 with feature_views: the frozen trunk's features cap
    #   photo-to-photo retrieval (a held-out colour variant in the top 10), so the trunk's
    #   last this many blocks and its head convolution train too, on cached activations
    #   entering them (a few tens of MFLOPs a photo), at lr_trunk; saved in the checkpoint
    lr_trunk: float = 1e-4  # learning rate of the tuned trunk blocks (trunk_tune_blocks)
    seed: int = 0  # everything random derives from (seed, step)
    # -- machinery ---------------------------------------------------------------------
    device: str | None = None  # None: CUDA if available, else CPU
    mixed_precision: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    checkpoint_every: int = 50  # optimiser steps between resumable train states
    resume: bool = True  # continue from out_dir/train_state/ if it is there
    decode_workers: int = 4  # threads decoding the image cache once at start
    save_dtype: str = "float32"  # dtype of shipped weights ("float16" halves the file)
    threads: int | None = None  # CPU threads for torch (None: leave torch's default)


def group_prefixes(field_value: str) -> tuple[str, ...]:
    """The graph-group id prefixes a comma-separated field names (`unmasked_groups`,
    `variant_groups`)."""
    return tuple(prefix for prefix in field_value.split(",") if prefix)


def is_fresh_init(init: str) -> bool:
    """Whether `init` builds new projections ("new:" scratch tower, "packaged:" pretrained)."""
    return init.startswith(("new:", "packaged:"))
