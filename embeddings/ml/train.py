"""Fine-tune (or train) a PinCLIP model on a catalogue: `train(config, dataset, out_dir)`.

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
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embeddings.ml.data import ItemDataset
from embeddings.ml.images import decode_image, normalize_batch
from embeddings.ml.loading import (
    LoadedModel,
    load_model,
    save_checkpoint,
)
from embeddings.ml.losses import category_loss, clip_loss, neighbour_loss, share_mask
from embeddings.ml.model import FusionConfig, PinCLIP, TextTrunkOut

log = logging.getLogger(__name__)

REPORT_SECONDS = 2.0  # at most this long between two reports of a slow preparation phase

ProgressFn = Callable[[int, int, dict[str, float]], None]
ReportFn = Callable[[str], None]  # one human-readable line about what the run is doing now
StopFn = Callable[[], bool]  # polled after each step: True saves the state and stops


class TrainingStopped(Exception):
    """Raised when `should_stop` asked the run to stop; the resumable state is saved."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}; the train state is saved, resume continues")
        self.step = step


@dataclass
class TrainConfig:
    # -- model ---------------------------------------------------------------------------
    init: str = "new:resnet10t"  # a load_model spec, "new:<timm arch>" (scratch image
    #                              tower + pretrained MiniLM text tower from its pip package)
    #                              or "packaged:<tower>" (pretrained image tower, same text)
    image_size: int = 128  # "new:"/"packaged:" only: training/inference resolution
    embed_dim: int = 256  # "new:" only: joint space size (pgvector halfvec rows stay small)
    context_length: int = 32  # "new:" only: text tokens kept (catalogue titles are short)
    fusion: FusionConfig = field(default_factory=FusionConfig)  # "new:" only
    # -- what trains -------------------------------------------------------------------
    image_unfreeze_last_n: int | None = None  # None: whole image tower trains; 0: trunk
    #                                           frozen (projection still trains); n: last n
    text_unfreeze_last_n: int = 0  # 0: text trunk frozen and cached (projection trains);
    #                                n: last n transformer layers train; -1: all of it
    # -- objectives ----------------------------------------------------------------------
    w_clip: float = 1.0  # image-text InfoNCE weight
    w_neighbour: float = 0.5  # neighbour alignment weight (needs lookbooks)
    w_category: float = 0.5  # category head cross-entropy weight (needs categories)
    w_preserve: float = 0.0  # cached features only: keep the frozen trunk's image-image
    #                          neighbourhoods in the projected space (in-batch distillation),
    #                          so a projection trained on few labels does not forget what
    #                          the pretrained tower sees beyond them (colour, pattern, shape)
    walk_length: int = 1  # item->lookbook->item hops to reach a neighbour (1 = direct)
    unmasked_groups: str = "attr:,section:"  # comma-separated graph-group id prefixes that
    #   random walks go through but whose mates stay negatives: a shared colour or section
    #   says "related", not "goes together", and masking a 1,000-item group would leave few
    #   negatives. Every other group (lookbooks, variants, rooms) is masked from negatives.
    # -- optimisation ------------------------------------------------------------------
    epochs: float = 10.0  # passes over the training items (a pass = len(items) samples)
    max_steps: int | None = None  # overrides epochs when set (smoke runs, tests)
    batch_pairs: int = 64  # neighbour pairs per step: a step sees 2x this many items
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
    seed: int = 0  # everything random derives from (seed, step)
    # -- machinery ---------------------------------------------------------------------
    device: str | None = None  # None: CUDA if available, else CPU
    mixed_precision: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    checkpoint_every: int = 50  # optimiser steps between resumable train states
    resume: bool = True  # continue from out_dir/train_state/ if it is there
    decode_workers: int = 4  # threads decoding the image cache once at start
    save_dtype: str = "float32"  # dtype of shipped weights ("float16" halves the file)
    threads: int | None = None  # CPU threads for torch (None: leave torch's default)


@dataclass
class TrainResult:
    """What a finished run returns besides its checkpoint directory."""

    out_dir: Path  # the checkpoint directory (config.json, model.safetensors, MODEL_CARD.md)
    steps: int  # optimiser steps taken in total
    seconds: float  # wall-clock time of this call (resumed runs count only their part)
    last_losses: dict[str, float]  # mean losses of the last 10 steps
    n_train_items: int  # items that decoded and were trained on


# ---- model construction ------------------------------------------------------------------
def is_fresh_init(init: str) -> bool:
    """Whether `init` builds new projections ("new:" scratch tower, "packaged:" pretrained)."""
    return init.startswith(("new:", "packaged:"))


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


# ---- data: image cache, text cache, batch sampling --------------------------------------
class ImageCache:
    """All training images decoded once to uint8 (N, 3, C, C), C a bit over the crop size."""

    def __init__(
        self, files: list[Path], size: int, workers: int, report: ReportFn | None = None
    ) -> None:
        self.size = size
        results: list[np.ndarray | None] = []
        last = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            # map() yields in order as decoding goes: report every few seconds, so a 10k
            # catalogue's minute of decoding is never silent.
            for result in pool.map(self._decode, files):
                results.append(result)
                if report and time.monotonic() - last >= REPORT_SECONDS:
                    report(f"decoding images: {len(results)}/{len(files)}")
                    last = time.monotonic()
        self.ok = [i for i, r in enumerate(results) if r is not None]
        self.failed = {i: str(files[i]) for i, r in enumerate(results) if r is None}
        ok_arrays = [r for r in results if r is not None]
        self.pixels = torch.from_numpy(np.stack(ok_arrays)) if ok_arrays else torch.zeros(0)

    def _decode(self, path: Path) -> np.ndarray | None:
        try:
            return decode_image(path, self.size)
        except Exception as exc:  # a broken file is skipped, not fatal
            log.warning("skipping unreadable image %s: %s", path, exc)
            return None


def augment(
    pixels: torch.Tensor, out_size: int, gen: torch.Generator, min_scale: float
) -> torch.Tensor:
    """Return random-resized-crop + flip of uint8 (B, 3, C, C) as uint8 (B, 3, S, S)."""
    b, _, c, _ = pixels.shape
    out = torch.empty(b, 3, out_size, out_size, dtype=torch.uint8)
    scales = torch.empty(b).uniform_(min_scale, 1.0, generator=gen)
    for i in range(b):
        side = max(8, int(c * math.sqrt(float(scales[i]))))
        top = int(torch.randint(0, c - side + 1, (1,), generator=gen))
        left = int(torch.randint(0, c - side + 1, (1,), generator=gen))
        crop = pixels[i : i + 1, :, top : top + side, left : left + side].float()
        crop = F.interpolate(crop, size=(out_size, out_size), mode="bilinear", antialias=True)
        if bool(torch.rand(1, generator=gen) < 0.5):
            crop = crop.flip(-1)
        out[i] = crop[0].round().clamp(0, 255).to(torch.uint8)
    return out


def center(pixels: torch.Tensor, out_size: int) -> torch.Tensor:
    """Return the centre crop (B, 3, S, S) of uint8 (B, 3, C, C)."""
    c = pixels.shape[-1]
    o = (c - out_size) // 2
    return pixels[:, :, o : o + out_size, o : o + out_size]


class PairSampler:
    """Draw a step's items: P anchors and one lookbook neighbour each (or 2P at random)."""

    def __init__(
        self,
        ids: list[str],
        lookbooks: dict[str, list[str]],
        walk_length: int,
        unmasked_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.ids = ids
        self.unmasked_prefixes = unmasked_prefixes
        pos = {item_id: i for i, item_id in enumerate(ids)}
        self.lookbooks = {lb: [pos[i] for i in m if i in pos] for lb, m in lookbooks.items()}
        self.lookbooks = {lb: m for lb, m in self.lookbooks.items() if len(m) >= 2}
        self.of_item: list[list[str]] = [[] for _ in ids]
        for lb, members in sorted(self.lookbooks.items()):
            for i in members:
                self.of_item[i].append(lb)
        self.anchors = [i for i in range(len(ids)) if self.of_item[i]]
        self.walk_length = walk_length

    @property
    def has_pairs(self) -> bool:
        return bool(self.anchors)

    def groups(self, idx: list[int]) -> list[set[str]]:
        """Return each item's groups whose mates are masked from its negatives."""
        return [
            {g for g in self.of_item[i] if not g.startswith(self.unmasked_prefixes)} for i in idx
        ]

    def sample(self, rng: np.random.Generator, pairs: int) -> tuple[list[int], list[int]]:
        """Return (anchors, neighbours) item indices, P each."""
        if not self.has_pairs:
            idx = rng.choice(len(self.ids), size=min(2 * pairs, len(self.ids)), replace=False)
            half = len(idx) // 2
            return idx[:half].tolist(), idx[half : 2 * half].tolist()
        anchors = rng.choice(self.anchors, size=pairs, replace=len(self.anchors) < pairs)
        neighbours = []
        for a in anchors.tolist():
            cur = a
            for _ in range(self.walk_length):  # item -> lookbook -> another item
                lbs = self.of_item[cur]
                members = self.lookbooks[lbs[int(rng.integers(len(lbs)))]]
                nxt = members[int(rng.integers(len(members) - 1))]
                cur = nxt if nxt != cur else members[-1]
            neighbours.append(cur if cur != a else self._any_other(a, rng))
        return anchors.tolist(), neighbours

    def _any_other(self, a: int, rng: np.random.Generator) -> int:
        members = self.lookbooks[self.of_item[a][0]]
        others = [m for m in members if m != a]
        return others[int(rng.integers(len(others)))]


@torch.no_grad()
def build_text_cache(
    model: PinCLIP,
    tokenizer: Callable[[list[str]], torch.Tensor],
    texts: list[str],
    device: torch.device,
    batch: int = 128,
) -> TextTrunkOut:
    """Run the frozen text trunk once per text; return stacked trunk outputs (U, ...)."""
    pooled, states, masks = [], [], []
    for s in range(0, len(texts), batch):
        tokens = tokenizer(texts[s : s + batch]).to(device)
        out = model.text_trunk(tokens)
        pooled.append(out.pooled.float().cpu())
        states.append(out.states.to(torch.float16).cpu())  # fp16: halves the cache
        masks.append(out.mask.cpu())
    return TextTrunkOut(torch.cat(pooled), torch.cat(states), torch.cat(masks))


# ---- the training loop -------------------------------------------------------------------
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
    t0 = time.time()
    say: ReportFn = report or (lambda line: log.info("%s", line))
    out_dir = Path(out_dir)
    state_dir = out_dir / "train_state"
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed_all(config.seed)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = torch.bfloat16 if (device.type == "cuda" and config.mixed_precision) else None

    say(f"loading model {config.init} on {device.type}")
    loaded = new_model(config) if is_fresh_init(config.init) else load_model(config.init)
    model, preprocess = loaded.model, loaded.preprocess
    exclude = list(loaded.config.get("weights_exclude_prefixes", []))
    _set_trainable(model, config, exclude)
    model.to(device)
    # NHWC: oneDNN (CPU) and cuDNN (bf16) convolutions are faster; no-op for ViT blocks.
    model.backbone.visual.to(memory_format=torch.channels_last)

    # Data: decode once (or run the frozen trunk once); drop items whose image cannot be read.
    items = dataset.items
    files = [dataset.image_file(it) for it in items]
    if _use_features(config, model):
        say(f"caching frozen image features: {len(items)} images x {config.feature_views} views")
        features = _tower_features(config, loaded, files, say)
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
    unmasked = tuple(p for p in config.unmasked_groups.split(",") if p)
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
    text_cache = build_text_cache(model, loaded.tokenizer, texts, device) if text_frozen else None
    w_neighbour = config.w_neighbour if sampler.has_pairs else 0.0
    w_category = config.w_category if categories else 0.0

    head = nn.Linear(model.embed_dim, max(1, len(categories))).to(device)
    optimizer = _make_optimizer(model, head, config)
    steps_per_epoch = max(1, len(items) // (2 * config.batch_pairs * config.grad_accum))
    total = config.max_steps or max(1, int(config.epochs * steps_per_epoch))
    schedule = _lr_lambda(config.warmup_steps, total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    step = 0
    if config.resume and (state_dir / "state.pt").is_file():
        step = _load_state(state_dir, model, head, optimizer, scheduler)
        say(f"resumed from the saved train state at step {step}")
    say(
        f"training {total} steps on {len(items)} items, {len(sampler.lookbooks)} graph "
        f"groups, {len(categories)} categories"
    )

    from tqdm import tqdm

    history: list[dict[str, float]] = []
    bar = tqdm(total=total, initial=step, desc="train", unit="step", mininterval=5)
    while step < total:
        model.train()
        if text_frozen:
            # Frozen trunk: no dropout, so the cached outputs are what it would compute.
            text_tower = getattr(model.backbone, "text", None) or model.backbone.transformer
            text_tower.eval()
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
                    out = _forward_features(model, features, idx, rng, text_in, device)
                else:
                    out = model.forward_all(x, text_in)  # each (2P, D)
                loss, parts = _objectives(
                    out,
                    model,
                    head,
                    labels[idx].to(device),
                    text_of[idx],
                    sampler,
                    a_idx,
                    b_idx,
                    ids,
                    config,
                    w_neighbour,
                    w_category,
                )
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
            _save_state(state_dir, step, model, head, optimizer, scheduler, config)
        if progress:
            progress(step, total, figures)
        if should_stop is not None and step < total and should_stop():
            _save_state(state_dir, step, model, head, optimizer, scheduler, config)
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
        "train_config": _config_dict(config),
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
    cfg["training"] = info
    cfg.pop("source_spec", None)
    if not is_fresh_init(config.init):
        cfg["training"]["init_spec"] = config.init
    model.cpu()
    say(f"saving the checkpoint to {out_dir}")
    card = render_model_card(cfg, card_extra)
    save_checkpoint(model, cfg, out_dir, card, dtype=getattr(torch, config.save_dtype))
    return TrainResult(out_dir, step, time.time() - t0, last, len(items))


def _use_features(config: TrainConfig, model: PinCLIP) -> bool:
    if config.feature_views <= 0:
        return False
    if config.image_unfreeze_last_n != 0 or not model.has_image_trunk:
        raise ValueError(
            "feature_views needs a frozen timm image trunk: set image_unfreeze_last_n=0 "
            "(or feature_views=0 to run the tower every step)"
        )
    return True


def _tower_features(
    config: TrainConfig, loaded: LoadedModel, files: list[Path], report: ReportFn | None
) -> Any:
    from embeddings.ml.feature_cache import Augmentation, tower_features

    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        if report and time.monotonic() - last[0] >= REPORT_SECONDS:
            report(f"caching frozen image features: {done}/{total} images")
            last[0] = time.monotonic()

    package = loaded.config.get("image_trunk_package")
    # The trunk is frozen: what identifies its features is the trunk's own weights.
    tower_id = f"package:{package}" if package else loaded.weights_sha256
    if package:
        from embeddings.ml.packaged import packaged_tower

        tower_id += ":" + packaged_tower(package).sha256
    log.info(
        "computing frozen image features: %d images x %d views", len(files), config.feature_views
    )
    return tower_features(
        model=loaded.model,
        preprocess=loaded.preprocess,
        tower_id=tower_id,
        files=files,
        augmentation=Augmentation(
            views=config.feature_views, crop_scale=config.crop_scale, seed=config.seed
        ),
        cache_dir=Path(config.feature_cache_dir) if config.feature_cache_dir else None,
        workers=config.decode_workers,
        progress=progress,
    )


def _forward_features(
    model: PinCLIP,
    features: Any,
    idx: list[int],
    rng: np.random.Generator,
    text_in: torch.Tensor | TextTrunkOut,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """`forward_all` for a step's items from one randomly drawn cached view of each."""
    views = torch.from_numpy(rng.integers(features.pooled.shape[1], size=len(idx)))
    rows = torch.tensor(idx)
    pooled = features.pooled[rows, views].to(device).float()  # (2P, F)
    tokens = features.tokens[rows, views].to(device).float()  # (2P, G, C)
    trunk = text_in if isinstance(text_in, TextTrunkOut) else model.text_trunk(text_in)
    out = model.forward_from_features(model.image_features_from_trunk(pooled), tokens, trunk)
    out["trunk"] = F.normalize(pooled, dim=-1)  # (2P, F): what w_preserve distils from
    return out


def _objectives(
    out: dict[str, torch.Tensor],
    model: PinCLIP,
    head: nn.Linear,
    labels: torch.Tensor,
    text_ids: torch.Tensor,
    sampler: PairSampler,
    a_idx: list[int],
    b_idx: list[int],
    ids: list[str],
    config: TrainConfig,
    w_neighbour: float,
    w_category: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    scale = model.logit_scale
    p = len(a_idx)
    same_text = (text_ids[:, None] == text_ids[None, :]).to(out["image"].device)  # (2P, 2P)
    loss = torch.zeros((), device=out["image"].device)
    parts: dict[str, float] = {}
    if config.w_clip:
        lc = clip_loss(out["image"], out["text"], scale, same_text)
        loss = loss + config.w_clip * lc
        parts["clip"] = float(lc.detach())
    if w_neighbour:
        not_neg = share_mask(
            sampler.groups(a_idx),
            sampler.groups(b_idx),
            [ids[i] for i in a_idx],
            [ids[i] for i in b_idx],
        ).to(out["image"].device)  # (P, P)
        f, im, tx = out["fused"], out["image"], out["text"]
        ln = neighbour_loss(f[:p], im[p:], tx[p:], f[p:], im[:p], tx[:p], scale, not_neg)
        loss = loss + w_neighbour * ln
        parts["neighbour"] = float(ln.detach())
    if w_category:
        lcat = (
            category_loss(head(out["image"]), labels) + category_loss(head(out["fused"]), labels)
        ) / 2
        loss = loss + w_category * lcat
        parts["category"] = float(lcat.detach())
    if config.w_preserve and "trunk" in out:
        lp = preserve_loss(out["trunk"], out["image"])
        loss = loss + config.w_preserve * lp
        parts["preserve"] = float(lp.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


def preserve_loss(
    teacher: torch.Tensor, student: torch.Tensor, t_teacher: float = 0.05, t_student: float = 0.05
) -> torch.Tensor:
    """KL from the teacher's in-batch neighbour distribution to the student's (self excluded).

    `teacher` (B, F) and `student` (B, D) are L2-normalised; each row's softmax over the
    other items' cosines is a soft ranking of its neighbours, which the student must keep.
    """
    b = teacher.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=teacher.device)
    t = (teacher @ teacher.T / t_teacher).masked_fill(eye, float("-inf"))  # (B, B)
    s = (student @ student.T / t_student).masked_fill(eye, float("-inf"))  # (B, B)
    p = F.softmax(t.float(), dim=-1)
    log_q = F.log_softmax(s.float(), dim=-1).masked_fill(eye, 0.0)
    log_p = torch.log(p.clamp_min(1e-12)).masked_fill(eye, 0.0)
    return (p * (log_p - log_q)).sum(-1).mean()


def _make_optimizer(model: PinCLIP, head: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with no decay on norms/biases/temperature; low LR for unfrozen text trunk."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    named = [*model.named_parameters(), *(("head." + n, p) for n, p in head.named_parameters())]
    for name, param in named:
        if not param.requires_grad:
            continue
        # Pretrained trunks move slowly; scratch towers, projections and fusion move fast.
        pretrained = name.startswith("backbone.") and (
            not is_fresh_init(config.init)
            or name.startswith(("backbone.text.transformer.", "backbone.visual.trunk."))
        )
        if config.init.startswith("new:") and name.startswith("backbone.visual.trunk."):
            pretrained = False  # a scratch tower moves fast
        lr = config.lr_pretrained if pretrained else config.lr
        no_decay = param.ndim < 2 or "logit_scale" in name or "bn" in name
        wd = 0.0 if no_decay else config.weight_decay
        groups.setdefault((lr, wd), []).append(param)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in sorted(groups.items())]
    )


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _save_state(
    state_dir: Path,
    step: int,
    model: PinCLIP,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
) -> None:
    """Write a resumable train state atomically (write to a temp file, then rename)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = {
        "step": step,
        # Trainable weights + all buffers (BatchNorm statistics move during training).
        "model": {
            k: v
            for k, v in model.state_dict().items()
            if k in trainable or not k.startswith("backbone.text.transformer.")
        },
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        "config": _config_dict(config),
    }
    tmp = state_dir / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(state_dir / "state.pt")


def _load_state(
    state_dir: Path,
    model: PinCLIP,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> int:
    state = torch.load(state_dir / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"], strict=False)
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return int(state["step"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _null() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)


def _as_loaded(loaded: LoadedModel, model: PinCLIP) -> LoadedModel:
    loaded.model = model
    return loaded


def render_model_card(cfg: dict[str, Any], extra: str = "") -> str:
    """Return MODEL_CARD.md text for a checkpoint config (`extra` first, then details)."""
    tr = cfg.get("training", {})
    oc = cfg["open_clip_model_cfg"]
    losses = {k: round(v, 3) for k, v in tr.get("final_losses", {}).items()}
    lines = ["# Vitrine PinCLIP checkpoint", ""]
    if extra:
        lines += [extra.strip(), ""]
    lines += [
        "## Model",
        f"- Image tower: `{oc['vision_cfg'].get('timm_model_name') or 'open_clip ViT'}` at "
        f"{cfg['preprocess']['image_size']} px; text tower: "
        f"`{oc['text_cfg'].get('hf_model_name') or 'open_clip TextTransformer'}`; "
        f"embedding dimension {oc['embed_dim']}; hybrid fusion {cfg['fusion']}.",
        f"- Weights not in model.safetensors (loaded from their package): "
        f"{cfg.get('weights_exclude_prefixes') or 'none'}.",
        "",
        "## Data",
        f"- Dataset `{tr.get('dataset')}` ({tr.get('dataset_licence')}): "
        f"{tr.get('n_train_items')} training items, {tr.get('n_lookbooks')} lookbooks, "
        f"{len(tr.get('categories', []))} categories.",
        "",
        "## Recipe",
        f"- {tr.get('steps')} optimiser steps in {tr.get('train_seconds_this_call')} s "
        f"(whole call: data decoding, training, held-out evaluation); final losses {losses}.",
        "- Training config:",
        "",
        "```json",
        json.dumps(tr.get("train_config", {}), indent=2, sort_keys=True),
        "```",
    ]
    if tr.get("heldout_metrics"):
        from embeddings.ml import quickeval

        lines += [
            "",
            "## Held-out metrics",
            "",
            "```json",
            json.dumps(tr["heldout_metrics"], indent=2, sort_keys=True),
            "```",
            "",
            "Definitions (`embeddings/ml/quickeval.py`):",
            "",
            *(f"    {ln}" for ln in (quickeval.__doc__ or "").strip().splitlines()),
        ]
    return "\n".join(lines) + "\n"
