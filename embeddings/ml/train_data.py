"""What a training run reads: decoded images (or cached frozen-tower features), augmentation,
the frozen text trunk's outputs, and the sampler of lookbook-mate pairs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embeddings.ml.images import decode_image
from embeddings.ml.loading import (
    LoadedModel,
)
from embeddings.ml.model import PinCLIP, TextTrunkOut
from embeddings.ml.packaged import TUNED_KEY
from embeddings.ml.train_config import REPORT_SECONDS, ReportFn, TrainConfig

log = logging.getLogger(__name__)


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
            # catalog's minute of decoding is never silent.
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

    def has_groups(self, prefixes: tuple[str, ...]) -> bool:
        """Whether any group (of two or more items) is named with one of `prefixes`."""
        return bool(prefixes) and any(g.startswith(prefixes) for g in self.lookbooks)

    def groups_of(self, i: int) -> set[str]:
        """Return every group item `i` belongs to, masked or not."""
        return set(self.of_item[i])

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
    batch: int = 64,
    report: ReportFn | None = None,
    onnx: bool | None = None,
) -> TextTrunkOut:
    """Run the frozen text trunk once per text; return stacked trunk outputs (U, ...).

    Texts run in batches of similar length, each cut after its longest text's last real
    token (a catalog mixes 3-word titles with 32-token descriptions). `onnx`: run the
    trunk on ONNX Runtime, one 1-thread batch per core (None: on a CPU, for a Hugging Face
    trunk, when onnxruntime is installed); its outputs agree with PyTorch's to float
    rounding. `report(line)` every few seconds: a 10k catalog's texts take minutes on a CPU.
    """
    tokens = tokenizer(texts)  # (U, T)
    if onnx is None:
        onnx = (
            device.type == "cpu"
            and model.hf_text
            and importlib.util.find_spec("onnxruntime") is not None
        )
    runner: Callable[[torch.Tensor], TextTrunkOut]
    if onnx:
        from embeddings.ml.onnx_runtime import OrtTextTrunk

        runner, runners = OrtTextTrunk(model), os.cpu_count() or 1
    else:

        def runner(t: torch.Tensor) -> TextTrunkOut:
            out = model.text_trunk(model.without_padding(t.to(device)))
            states = torch.zeros(*t.shape, out.states.shape[-1], dtype=out.states.dtype)
            states[:, : out.states.shape[1]] = out.states.cpu()  # padding columns: zeros
            return TextTrunkOut(out.pooled.cpu(), states, t != model.pad_id)

        runners = 1  # PyTorch splits each op over its own threads

    lengths = (tokens != model.pad_id).sum(1)
    order = torch.argsort(lengths, stable=True)  # similar lengths batch together
    starts = range(0, len(texts), batch)
    pooled = torch.zeros(len(texts), 0)
    states = torch.zeros(0, dtype=torch.float16)
    masks = torch.zeros(tokens.shape, dtype=torch.bool)
    last, done = time.monotonic(), 0

    def one(s: int) -> tuple[torch.Tensor, TextTrunkOut]:
        rows = order[s : s + batch]
        return rows, runner(tokens[rows])

    with ThreadPoolExecutor(runners) as pool:
        for rows, out in pool.map(one, starts):  # in order, `runners` batches at a time
            if not states.numel():
                pooled = torch.zeros(len(texts), out.pooled.shape[-1])
                states = torch.zeros(*tokens.shape, out.states.shape[-1], dtype=torch.float16)
            pooled[rows] = out.pooled.float()
            states[rows] = out.states.to(torch.float16)  # fp16: halves the cache
            masks[rows] = out.mask
            done += len(rows)
            if report and time.monotonic() - last >= REPORT_SECONDS:
                report(f"caching the frozen text trunk: {done}/{len(texts)}")
                last = time.monotonic()
    return TextTrunkOut(pooled, states, masks)


def text_cache_load(
    config: TrainConfig,
    loaded: LoadedModel,
    texts: list[str],
    device: torch.device,
    report: ReportFn | None = None,
) -> TextTrunkOut:
    """`build_text_cache`, kept in `config.feature_cache_dir` when set (a 10k catalog's texts
    take minutes through MiniLM on a CPU; a repeated or resumed fine-tune reads them back).

    The key is the model's weights checksum (the frozen trunk is part of it), its tokenizer
    settings and the texts themselves.
    """
    path = None
    if config.feature_cache_dir and loaded.weights_sha256:
        h = hashlib.sha256(f"vitrine-text-trunk/1\0{loaded.weights_sha256}\0".encode())
        h.update(json.dumps(loaded.config.get("tokenizer", {}), sort_keys=True).encode())
        for t in texts:
            h.update(t.encode() + b"\0")
        path = Path(config.feature_cache_dir) / f"text-{h.hexdigest()[:32]}.pt"
        if path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                if report:
                    report(f"read the frozen text trunk's outputs from the cache ({path.name})")
                return TextTrunkOut(data["pooled"], data["states"], data["mask"])
            except Exception as exc:  # a torn or foreign file: compute it again
                log.warning("ignoring unreadable text cache %s: %s", path, exc)
    out = build_text_cache(loaded.model, loaded.tokenizer, texts, device, report=report)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")  # temp file + rename: never a torn cache
        torch.save({"pooled": out.pooled, "states": out.states, "mask": out.mask}, tmp)
        tmp.replace(path)
    return out


def features_wanted(config: TrainConfig, model: PinCLIP) -> bool:
    if config.trunk_tune_blocks and config.feature_views <= 0:
        raise ValueError("trunk_tune_blocks trains on cached features: set feature_views")
    if config.feature_views <= 0:
        return False
    if config.image_unfreeze_last_n != 0 or not model.has_image_trunk:
        raise ValueError(
            "feature_views needs a frozen timm image trunk: set image_unfreeze_last_n=0 "
            "(or feature_views=0 to run the tower every step)"
        )
    return True


def tower_features_load(
    config: TrainConfig, loaded: LoadedModel, files: list[Path], report: ReportFn | None
) -> Any:
    from embeddings.ml.feature_cache import Augmentation, tower_features

    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        if report and time.monotonic() - last[0] >= REPORT_SECONDS:
            report(f"caching frozen image features: {done}/{total} images")
            last[0] = time.monotonic()

    # The trunk is frozen: what identifies its features is the trunk's own weights, the
    # package's file unless an earlier training tuned some of its blocks.
    package = None if loaded.config.get(TUNED_KEY) else loaded.config.get("image_trunk_package")
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
        tail_blocks=config.trunk_tune_blocks,
    )


def forward_cached_features(
    model: PinCLIP,
    features: Any,
    idx: list[int],
    rng: np.random.Generator,
    text_in: torch.Tensor | TextTrunkOut,
    device: torch.device,
    fusion_pairs: int | None = None,
) -> dict[str, torch.Tensor]:
    """`forward_all` for a step's items from one randomly drawn cached view of each.

    `idx` is a step's anchors then their neighbours (P each). With `fusion_pairs` k < P,
    only the first k pairs are fused: "fused" is (2k, D), rows [a_0..a_k-1, b_0..b_k-1].
    Features holding what enters the trunk's tuned last blocks (`head_input`) run them.
    """
    views = torch.from_numpy(rng.integers(features.views, size=len(idx)))
    rows = torch.tensor(idx)
    if features.head_input is not None:
        x = features.head_input[rows, views].to(device).float()  # (2P, C, h, w)
        x = x.contiguous(memory_format=torch.channels_last)
        pooled, tokens = model.image_trunk_tail(x, features.tail_blocks)
    else:
        pooled = features.pooled[rows, views].to(device).float()  # (2P, F)
        tokens = features.tokens[rows, views].to(device).float()  # (2P, G, C)
    trunk = text_in if isinstance(text_in, TextTrunkOut) else model.text_trunk(text_in)
    p = len(idx) // 2
    fuse_rows = None
    if fusion_pairs is not None and fusion_pairs < p:
        k = max(1, fusion_pairs)
        fuse_rows = torch.cat([torch.arange(k), torch.arange(p, p + k)]).to(device)
    out = model.forward_from_features(
        model.image_features_from_trunk(pooled, tokens), tokens, trunk, fuse_rows
    )
    out["trunk"] = F.normalize(pooled, dim=-1)  # (2P, F): what w_preserve distils from
    return out
