"""Frozen image-tower features, computed once and reused for many epochs (LiT-style training).

With the image trunk frozen, everything training needs from an image is what the trunk
hands to the rest of the model: its pooled features (what the image projection reads) and
the grid tokens (what the fusion reads). `tower_features` computes those for any list of
image files, for a plain centre crop and for a number of augmented views (random resized
crop + flip), and stores them on disk keyed by everything that determines them: the
tower's weights checksum, the input size and normalisation, the grid, the augmentation and
the files themselves (path, size, modification time). A second call with the same inputs
loads the file instead of running the tower.

Example::

    loaded = load_model("packaged:efficientnet_lite0@160")
    feats = tower_features(
        model=loaded.model, preprocess=loaded.preprocess, tower_id=loaded.weights_sha256,
        files=paths, augmentation=Augmentation(views=4), cache_dir=Path(".cache/features"),
    )
    feats.pooled.shape  # (len(feats.ok), 4, F) float16: view 0 is the centre crop
    feats.tokens.shape  # (len(feats.ok), 4, grid * grid, C) float16

With ``tail_blocks=n`` the trunk's last n blocks are left to the training, which tunes them:
the cache then holds what enters them instead (`TowerFeatures.head_input`, (N, V, C, h, w)),
and a step runs them (`PinCLIP.image_trunk_tail`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from embeddings.ml.images import PreprocessConfig, decode_image, normalize_batch
from embeddings.ml.model import PinCLIP

log = logging.getLogger(__name__)

CACHE_FORMAT = "vitrine-tower-features/1"
# Images are decoded a little larger than the input so augmented crops have room to move.
DECODE_MARGIN = 1.14
CHUNK = 256  # images decoded at once: bounds memory for any catalog size

ProgressFn = Callable[[int, int], None]  # (images done, images total)
# Normalised pixels (B, 3, S, S) -> the trunk's (pooled (B, F), grid tokens (B, G, C)), or
# with tail blocks left out, (what enters them (B, C, h, w),).
TrunkFn = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Augmentation:
    """Which views of each image are computed. View 0 is always the plain centre crop."""

    views: int = 1  # views per image, the centre crop included
    crop_scale: float = 0.55  # random-resized-crop minimum area fraction of the other views
    seed: int = 0  # views of a chunk of images are drawn from (seed, chunk, view): stable


@dataclass
class TowerFeatures:
    """Trunk outputs of the images that decoded, view by view."""

    pooled: torch.Tensor  # (N_ok, V, F) float16, the trunk's pooled features (empty when
    #                       the tail blocks are left out: `head_input` instead)
    tokens: torch.Tensor  # (N_ok, V, G, C) float16, the fusion's grid tokens (same)
    ok: list[int] = field(default_factory=list)  # input index of each row
    failed: dict[int, str] = field(default_factory=dict)  # input index -> reason
    key: str = ""  # the cache key these were stored (or found) under
    from_cache: bool = False  # read from the cache directory, the trunk did not run
    head_input: torch.Tensor | None = None  # (N_ok, V, C, h, w) float16 with `tail_blocks`:
    #                                         what enters the trunk's last blocks
    tail_blocks: int = 0  # how many of the trunk's last blocks `head_input` enters

    @property
    def views(self) -> int:
        """Views per image."""
        return (self.head_input if self.head_input is not None else self.pooled).shape[1]


def tower_features(
    *,
    model: PinCLIP,
    preprocess: PreprocessConfig,
    tower_id: str,
    files: Sequence[Path],
    augmentation: Augmentation,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    workers: int = 4,
    progress: ProgressFn | None = None,
    onnx: bool | None = None,
    tail_blocks: int = 0,
) -> TowerFeatures:
    """Return the frozen trunk's features of `files`, from `cache_dir` when already there.

    `tower_id` must identify the trunk's weights (e.g. `LoadedModel.weights_sha256`).
    Unreadable images are left out and listed in `failed`, never fatal. `onnx`: run the
    trunk on ONNX Runtime (None: on a CPU model, when onnxruntime is installed); the
    features agree with PyTorch's to float rounding, so both share one cache entry.
    `tail_blocks`: leave the trunk's last this many blocks (and its head convolution) out:
    the features are then what enters them (`head_input`).
    """
    if not model.has_image_trunk:
        raise ValueError("tower features need a timm image trunk (model.has_image_trunk)")
    key = cache_key(
        tower_id=tower_id,
        preprocess=preprocess,
        grid=model.fusion_cfg.grid,
        augmentation=augmentation,
        files=files,
        tail_blocks=tail_blocks,
    )
    path = cache_dir / f"{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return replace(_read(path, key), tail_blocks=tail_blocks)
        except Exception as exc:  # a torn or foreign file: recompute it
            log.warning("ignoring unreadable feature cache %s: %s", path, exc)
    device = next(model.parameters()).device
    if onnx is None:
        onnx = device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None

    def eager(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if tail_blocks:
            return (model.image_trunk_head_input(x.to(device), tail_blocks),)
        return model.image_trunk_features(x.to(device))

    runner: TrunkFn = eager
    runners = 1  # batches run at once: PyTorch splits each op over its own threads
    if onnx:
        from embeddings.ml.onnx_runtime import OrtTrunk

        runner = OrtTrunk(model, preprocess.image_size, tail_blocks)
        runners = os.cpu_count() or 1  # one 1-thread batch per core (see OrtTrunk)
    feats = _compute(
        model, runner, preprocess, files, augmentation, batch_size, workers, runners, progress
    )
    feats.key = key
    feats.tail_blocks = tail_blocks
    if path is not None:
        _write(path, feats)
    return feats


def cache_key(
    *,
    tower_id: str,
    preprocess: PreprocessConfig,
    grid: int,
    augmentation: Augmentation,
    files: Sequence[Path],
    tail_blocks: int = 0,
) -> str:
    """Return the hex key of a feature set: everything that changes the features is in it."""
    h = hashlib.sha256()
    head = {
        "format": CACHE_FORMAT,
        "tower": tower_id,
        "preprocess": preprocess.to_dict(),
        "grid": grid,
        "augmentation": asdict(augmentation),
        # Only when set: the keys of the features every earlier run cached stay valid.
        **({"tail_blocks": tail_blocks} if tail_blocks else {}),
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for f in files:
        try:
            st = Path(f).stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()[:32]


@torch.no_grad()
def _compute(
    model: PinCLIP,
    runner: TrunkFn,
    preprocess: PreprocessConfig,
    files: Sequence[Path],
    augmentation: Augmentation,
    batch_size: int,
    workers: int,
    runners: int,
    progress: ProgressFn | None,
) -> TowerFeatures:
    from embeddings.ml.train_data import augment, center

    was_training = model.training
    model.eval()
    size = preprocess.image_size
    decode_size = round(size * DECODE_MARGIN)
    parts: list[list[torch.Tensor]] = []  # per output of the runner: (n, V, ...) per chunk
    ok: list[int] = []
    failed: dict[int, str] = {}

    def decode(i: int) -> np.ndarray | None:
        try:
            return decode_image(files[i], decode_size, preprocess.resize_mode)
        except Exception as exc:  # a broken file is skipped, not fatal
            failed[i] = f"{type(exc).__name__}: {exc}"
            return None

    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(runners) as run_pool:
        for start in range(0, len(files), CHUNK):
            idx = list(range(start, min(start + CHUNK, len(files))))
            decoded = list(pool.map(decode, idx))
            good = [i for i, a in zip(idx, decoded, strict=True) if a is not None]
            if not good:
                continue
            pixels = torch.from_numpy(np.stack([a for a in decoded if a is not None]))
            views: list[tuple[torch.Tensor, ...]] = []
            for v in range(augmentation.views):
                if v == 0:
                    view = center(pixels, size)
                else:
                    gen = torch.Generator().manual_seed(
                        augmentation.seed * 1_000_003 + start * 101 + v
                    )
                    view = augment(pixels, size, gen, augmentation.crop_scale)
                views.append(_run_trunk(runner, run_pool, preprocess, view, batch_size))
            outputs = [torch.stack(out, dim=1) for out in zip(*views, strict=True)]  # (n, V, ..)
            parts = (
                [[*p, o] for p, o in zip(parts, outputs, strict=True)]
                if parts
                else [[o] for o in outputs]
            )
            ok.extend(good)
            if progress:
                progress(idx[-1] + 1, len(files))
    model.train(was_training)
    empty = torch.zeros(0)
    if not ok:
        return TowerFeatures(empty, empty, [], failed)
    stacked = [torch.cat(p) for p in parts]
    if len(stacked) == 1:  # what enters the tail blocks
        return TowerFeatures(empty, empty, ok, failed, head_input=stacked[0])
    return TowerFeatures(stacked[0], stacked[1], ok, failed)


def _run_trunk(
    runner: TrunkFn,
    pool: ThreadPoolExecutor,
    preprocess: PreprocessConfig,
    pixels: torch.Tensor,
    batch_size: int,
) -> tuple[torch.Tensor, ...]:
    def one(s: int) -> tuple[torch.Tensor, ...]:
        x = normalize_batch(pixels[s : s + batch_size], preprocess)  # (b, 3, S, S)
        x = x.contiguous(memory_format=torch.channels_last)
        return tuple(out.to(torch.float16).cpu() for out in runner(x))

    # map() keeps the batches' order whichever thread ran each.
    batches = zip(*pool.map(one, range(0, len(pixels), batch_size)), strict=True)
    return tuple(torch.cat(out) for out in batches)


def _write(path: Path, feats: TowerFeatures) -> None:
    """Write atomically (temp file + rename): a killed run never leaves a torn cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "format": CACHE_FORMAT,
            "pooled": feats.pooled,
            "tokens": feats.tokens,
            "head_input": feats.head_input,
            "ok": feats.ok,
            "failed": {str(k): v for k, v in feats.failed.items()},
        },
        tmp,
    )
    tmp.replace(path)


def _read(path: Path, key: str) -> TowerFeatures:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != CACHE_FORMAT:
        raise ValueError(f"not a {CACHE_FORMAT} file")
    failed = {int(k): str(v) for k, v in data["failed"].items()}
    return TowerFeatures(
        data["pooled"], data["tokens"], list(data["ok"]), failed, key, True, data.get("head_input")
    )
