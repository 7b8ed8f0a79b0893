"""A run's optimiser (AdamW, parameter groups), learning-rate schedule, and its resumable
state on disk.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embeddings.ml.model import PinCLIP
from embeddings.ml.train_config import TrainConfig, is_fresh_init


def optimizer_make(model: PinCLIP, head: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with no decay on norms/biases/temperature; low LR for unfrozen text trunk and
    the image trunk's tuned last blocks."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    n = config.trunk_tune_blocks
    tail = tuple(model.trunk_tail_prefixes(n)) if n else ()
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
        if tail and name.startswith(tail):
            lr = config.lr_trunk
        no_decay = param.ndim < 2 or "logit_scale" in name or "bn" in name
        wd = 0.0 if no_decay else config.weight_decay
        groups.setdefault((lr, wd), []).append(param)
    params = [p for ps in groups.values() for p in ps]
    # One kernel per group instead of ~10 ops per tensor: on cached features a step is
    # small, and the per-tensor AdamW was 4-5% of it on a CPU.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in sorted(groups.items())],
        fused=fused or None,
    )


def lr_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def train_state_save(
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
        "config": config_dict(config),
    }
    tmp = state_dir / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(state_dir / "state.pt")


def train_state_load(
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


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)
