"""Fine-tune (or train) a PinCLIP model on a catalog: `train(config, dataset, out_dir)`.

Objectives (each weighted in `TrainConfig`, weight 0 switches it off):
1. symmetric image-text InfoNCE with the backbone's learned temperature;
2. neighbour alignment: pairs of items sharing a lookbook (drawn by short random walks
   item -> lookbook -> item), fused vector of one vs image and text vectors of the other,
   in-batch negatives with lookbook-mates masked out;
3. category cross-entropy from a linear head on image and fused vectors.

Every random choice of step `s` is drawn from generators seeded with (seed, s), so a run
resumed from a checkpoint takes exactly the steps the uninterrupted run would have.
Images are decoded once into an in-memory uint8 cache at a little over the training
resolution (random crops + flips are taken from it), and a frozen text trunk is run once
per distinct text: this is what makes CPU training of the default model fit in minutes.

Beside it: the configuration (`train_config`), the training data (`train_data`), the
objectives (`train_objectives`), the optimiser and the resumable state (`train_state`),
the model card (`model_card`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embeddings.ml.data import ItemDataset
from embeddings.ml.images import normalize_batch
from embeddings.ml.loading import (
    LoadedModel,
    load_model,
    save_checkpoint,
)
from embeddings.ml.model import PinCLIP, TextTrunkOut
from embeddings.ml.model_card import render_model_card
from embeddings.ml.packaged import TUNED_KEY
from embeddings.ml.train_config import (
    ProgressFn,
    ReportFn,
    StopFn,
    TrainConfig,
    group_prefixes,
    is_fresh_init,
)
from embeddings.ml.train_data import (
    ImageCache,
    PairSampler,
    augment,
    features_wanted,
    forward_cached_features,
    text_cache_load,
    tower_features_load,
)
from embeddings.ml.train_objectives import Objectives
from embeddings.ml.train_state import (
    config_dict,
    lr_schedule,
    optimizer_make,
    train_state_load,
    train_state_save,
)

log = logging.getLogger(__name__)


class TrainingStopped(Exception):
    """Raised when `should_stop` asked the run to stop; the resumable state is saved."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}; the train state is saved, resume continues")
        self.step = step


@dataclass
class TrainResult:
    """What a finished run returns besides its checkpoint directory."""

    out_dir: Path  # the checkpoint directory (config.json, model.safetensors, MODEL_CARD.md)
    steps: int  # optimiser steps taken in total
    seconds: float  # wall-clock time of this call (resumed runs count only their part)
    last_losses: dict[str, float]  # mean losses of the last 10 steps
    n_train_items: int  # items that decoded and were trained on


def new_model(config: TrainConfig) -> LoadedModel:
    """Return a fresh model: a timm image tower + the pretrained MiniLM text tower.

    "new:<timm arch>": the image tower is randomly initialised; "packaged:<tower>": it holds
    the pretrained weights of a pip-packaged checkpoint (`embeddings.ml.packaged`).
    """
    from embeddings.ml.loading import build_new_model
    from embeddings.ml.packaged import packaged_tower

    package = None
    if config.init.startswith("packaged:"):
        package = config.init.removeprefix("packaged:").partition("@")[0]
        arch = packaged_tower(package).timm_arch
    else:
        arch = config.init.removeprefix("new:")
    return build_new_model(
        image_arch=arch,
        image_size=config.image_size,
        embed_dim=config.embed_dim,
        context_length=config.context_length,
        fusion=config.fusion,
        seed=config.seed,
        spec=config.init,
        image_trunk_package=package,
    )


def _set_trainable(model: PinCLIP, config: TrainConfig, exclude: list[str]) -> None:
    """Apply the per-tower freeze options (projections and fusion always train)."""
    if exclude and config.text_unfreeze_last_n != 0:
        raise ValueError(
            "this model's text trunk is loaded from a pip package and not saved: "
            "train it frozen (text_unfreeze_last_n=0)"
        )
    backbone: Any = model.backbone
    for p in model.parameters():
        p.requires_grad = True
    if config.image_unfreeze_last_n is not None:
        backbone.lock_image_tower(unlocked_groups=config.image_unfreeze_last_n)
    n = config.text_unfreeze_last_n
    if n >= 0 and model.hf_text:
        # open_clip's HF lock does not know BERT's layer names; do it directly.
        trunk = backbone.text.transformer
        for p in trunk.parameters():
            p.requires_grad = False
        layers = getattr(getattr(trunk, "encoder", trunk), "layer", [])
        for layer in list(layers)[len(layers) - n :] if n else []:
            for p in layer.parameters():
                p.requires_grad = True
    elif n >= 0:
        backbone.lock_text_tower(unlocked_layers=n)
    if not config.train_fusion:
        for p in model.fusion.parameters():
            p.requires_grad = False
    if config.trunk_tune_blocks:
        tail = tuple(model.trunk_tail_prefixes(config.trunk_tune_blocks))
        for name, p in model.named_parameters():
            if name.startswith(tail):
                p.requires_grad = True


def train(
    config: TrainConfig,
    dataset: ItemDataset,
    out_dir: Path,
    progress: ProgressFn | None = None,
    eval_dataset: ItemDataset | None = None,
    card_extra: str = "",
    report: ReportFn | None = None,
    should_stop: StopFn | None = None,
) -> Path:
    """Train on `dataset`, write a checkpoint directory to `out_dir`, return its path.

    `progress(step, total_steps, losses)` is called after each optimiser step (the Django
    command uses it for its own progress output); `report(line)` at each preparation phase
    (loading, decoding, text caching, evaluation, saving) and every few seconds inside a
    slow one. When `should_stop()` returns True after a step, the resumable state is saved
    and `TrainingStopped` is raised: the same call later continues from that step. With
    `eval_dataset`, held-out metrics are computed at the end and written into config.json
    and MODEL_CARD.md.
    """
    return run_training(
        config, dataset, out_dir, progress, eval_dataset, card_extra, report, should_stop
    ).out_dir


def run_training(
    config: TrainConfig,
    dataset: ItemDataset,
    out_dir: Path,
    progress: ProgressFn | None = None,
    eval_dataset: ItemDataset | None = None,
    card_extra: str = "",
    report: ReportFn | None = None,
    should_stop: StopFn | None = None,
) -> TrainResult:
    """`train`, returning a `TrainResult` (steps, time, last losses) as well."""
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run(
            config, dataset, out_dir, progress, eval_dataset, card_extra, report, should_stop
        )
    finally:  # the caller's own work (an experiment's evaluation) keeps its threads
        torch.set_num_threads(threads)


def _run(
    config: TrainConfig,
    dataset: ItemDataset,
    out_dir: Path,
    progress: ProgressFn | None,
    eval_dataset: ItemDataset | None,
    card_extra: str,
    report: ReportFn | None,
    should_stop: StopFn | None,
) -> TrainResult:
    t0 = time.time()
    say: ReportFn = report or (lambda line: log.info("%s", line))
    out_dir = Path(out_dir)
    state_dir = out_dir / "train_state"
    _seed_all(config.seed)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = torch.bfloat16 if (device.type == "cuda" and config.mixed_precision) else None

    say(f"loading model {config.init} on {device.type}")
    loaded = new_model(config) if is_fresh_init(config.init) else load_model(config.init)
    model, preprocess = loaded.model, loaded.preprocess
    exclude = list(loaded.config.get("weights_exclude_prefixes", []))
    if config.image_grid_head and model.grid_head is None:
        if model.has_image_trunk:
            model.add_grid_head()
        else:  # open_clip's own towers expose no grid tokens to a head: train without it
            say("this image tower has no grid tokens for the image embedding: not added")
    _set_trainable(model, config, exclude)
    model.to(device)
    # NHWC: oneDNN (CPU) and cuDNN (bf16) convolutions are faster; no-op for ViT blocks.
    model.backbone.visual.to(memory_format=torch.channels_last)

    # Data: decode once (or run the frozen trunk once); drop items whose image cannot be read.
    items = dataset.items
    files = [dataset.image_file(it) for it in items]
    if features_wanted(config, model):
        say(f"caching frozen image features: {len(items)} images x {config.feature_views} views")
        features = tower_features_load(config, loaded, files, say)
        if features.from_cache:
            say(f"read the frozen image features from the cache ({features.key})")
        images = None
        failed = features.failed
        items = [items[i] for i in features.ok]
    else:
        features = None
        cache_size = round(preprocess.image_size * 1.14)
        say(f"decoding {len(items)} images at {cache_size} px")
        images = ImageCache(files, cache_size, config.decode_workers, report)
        failed = images.failed
        items = [items[i] for i in images.ok]
    if failed:
        say(f"skipped {len(failed)} unreadable images")
    if len(items) < 2:
        raise ValueError(f"only {len(items)} readable images: too few to train on")
    ids = [it.item_id for it in items]
    unmasked = group_prefixes(config.unmasked_groups)
    sampler = PairSampler(ids, dataset.lookbooks, config.walk_length, unmasked)
    categories = sorted({it.category for it in items if it.category is not None})
    cat_index = {c: i for i, c in enumerate(categories)}
    labels = torch.tensor([cat_index.get(it.category, -1) if it.category else -1 for it in items])
    texts = sorted({it.text for it in items})
    text_pos = {t: i for i, t in enumerate(texts)}
    text_of = torch.tensor([text_pos[it.text] for it in items])  # item -> distinct text index
    text_frozen = config.text_unfreeze_last_n == 0
    model.eval()
    if text_frozen:
        say(f"caching the frozen text trunk's output for {len(texts)} distinct texts")
    text_cache = text_cache_load(config, loaded, texts, device, say) if text_frozen else None
    objectives = Objectives(
        config=config,
        sampler=sampler,
        ids=ids,
        labels=labels,
        text_of=text_of,
        w_neighbour=config.w_neighbour if sampler.has_pairs else 0.0,
        w_category=config.w_category if categories else 0.0,
        w_variant=(
            config.w_variant if sampler.has_groups(group_prefixes(config.variant_groups)) else 0.0
        ),
    )

    head = nn.Linear(model.embed_dim, max(1, len(categories))).to(device)
    optimizer = optimizer_make(model, head, config)
    steps_per_epoch = max(1, len(items) // (2 * config.batch_pairs * config.grad_accum))
    total = config.max_steps or max(1, int(config.epochs * steps_per_epoch))
    schedule = lr_schedule(config.warmup_steps, total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    step = 0
    if config.resume and (state_dir / "state.pt").is_file():
        step = train_state_load(state_dir, model, head, optimizer, scheduler)
        say(f"resumed from the saved train state at step {step}")
    say(
        f"training {total} steps on {len(items)} items, {len(sampler.lookbooks)} graph "
        f"groups, {len(categories)} categories"
    )

    from tqdm import tqdm

    history: list[dict[str, float]] = []
    bar = tqdm(total=total, initial=step, desc="train", unit="step", mininterval=5)
    # Once, not every step: walking the 27M-parameter model's modules cost ~8% of a step on
    # cached features. Nothing inside the loop switches a mode.
    model.train()
    if text_frozen:
        # Frozen trunk: no dropout, so the cached outputs are what it would compute.
        text_tower = getattr(model.backbone, "text", None) or model.backbone.transformer
        text_tower.eval()
    if config.trunk_tune_blocks:
        # The tuned blocks keep the trunk's BatchNorm statistics (their scale and shift
        # train): the cached activations entering them were made with those statistics.
        model.backbone.visual.trunk.eval()
    while step < total:
        optimizer.zero_grad(set_to_none=True)
        figures: dict[str, float] = {}
        for micro in range(config.grad_accum):
            torch.manual_seed(config.seed * 1_000_003 + step * 101 + micro)  # dropout
            rng = np.random.default_rng([config.seed, step, micro])
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 101 + micro)
            a_idx, b_idx = sampler.sample(rng, config.batch_pairs)
            idx = a_idx + b_idx
            if images is not None:
                pix = augment(images.pixels[idx], preprocess.image_size, gen, config.crop_scale)
                x = normalize_batch(pix.to(device), preprocess)  # (2P, 3, S, S)
                x = x.contiguous(memory_format=torch.channels_last)
            if text_cache is not None:
                t = text_of[idx]
                text_in: torch.Tensor | TextTrunkOut = TextTrunkOut(
                    text_cache.pooled[t].to(device),
                    text_cache.states[t].to(device).float(),
                    text_cache.mask[t].to(device),
                )
            else:
                text_in = loaded.tokenizer([items[i].text for i in idx]).to(device)
            with torch.autocast(device.type, dtype=amp) if amp else _null():
                if features is not None:
                    out = forward_cached_features(
                        model, features, idx, rng, text_in, device, config.fusion_pairs
                    )
                else:
                    out = model.forward_all(x, text_in)  # each (2P, D)
                loss, parts = objectives(out, model, head, a_idx, b_idx)
            (loss / config.grad_accum).backward()
            for k, v in parts.items():
                figures[k] = figures.get(k, 0.0) + v / config.grad_accum
        nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], config.grad_clip
        )
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP's cap: temperature >= 0.01
        step += 1
        figures["temp"] = float(1 / model.logit_scale.detach().exp())
        history.append(figures)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in figures.items()}, refresh=False)
        if step % config.checkpoint_every == 0 or step == total:
            train_state_save(state_dir, step, model, head, optimizer, scheduler, config)
        if progress:
            progress(step, total, figures)
        if should_stop is not None and step < total and should_stop():
            train_state_save(state_dir, step, model, head, optimizer, scheduler, config)
            bar.close()
            raise TrainingStopped(step)
    bar.close()

    model.eval()
    last = {k: float(np.mean([h[k] for h in history[-10:]])) for k in (history or [{}])[-1]}
    info: dict[str, Any] = {
        "dataset": dataset.name,
        "dataset_licence": dataset.licence,
        "n_train_items": len(items),
        "n_lookbooks": len(sampler.lookbooks),
        "categories": categories,
        "steps": step,
        "train_seconds_this_call": round(time.time() - t0, 1),
        "train_config": config_dict(config),
        "final_losses": last,
    }
    metrics: dict[str, Any] = {}
    if eval_dataset is not None:
        from embeddings.ml.quickeval import quick_metrics

        say(f"evaluating on {len(eval_dataset.items)} held-out items")
        info["n_heldout_items"] = len(eval_dataset.items)
        info["n_heldout_lookbooks"] = len(eval_dataset.lookbooks)

        metrics = quick_metrics(_as_loaded(loaded, model), eval_dataset)
        info["heldout_metrics"] = metrics
    cfg = dict(loaded.config)
    cfg["fusion"] = model.fusion_cfg.to_dict()  # what training added (a grid head) included
    if config.trunk_tune_blocks:  # saved over the packaged trunk's weights
        tuned = model.trunk_tail_prefixes(config.trunk_tune_blocks)
        cfg[TUNED_KEY] = sorted({*cfg.get(TUNED_KEY, []), *tuned})
    cfg["training"] = info
    cfg.pop("source_spec", None)
    if not is_fresh_init(config.init):
        cfg["training"]["init_spec"] = config.init
    model.cpu()
    say(f"saving the checkpoint to {out_dir}")
    card = render_model_card(cfg, card_extra)
    save_checkpoint(model, cfg, out_dir, card, dtype=getattr(torch, config.save_dtype))
    return TrainResult(out_dir, step, time.time() - t0, last, len(items))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _null() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _as_loaded(loaded: LoadedModel, model: PinCLIP) -> LoadedModel:
    loaded.model = model
    return loaded
