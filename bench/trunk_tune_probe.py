"""Probe (issue 15's decision gate): does training the image trunk's last block lift colour
variant@10 over the frozen trunk, same recipe, steps and seed?

Today's catalog fine-tune (`embeddings.ml.recipes.CATALOG_FINE_TUNE`) trains on cached
outputs of the frozen EfficientNet-Lite0 trunk: its pooled vector and 3x3 grid tokens. Here
the cache holds what enters the trunk's last stage instead (`blocks[6]`, 192 channels at
5x5 for 160 px), once per photo and view, and the run either

- (a) `frozen`: runs the frozen last stage on it (the very features today's recipe caches:
  the trunk's output is unchanged by where the cache cuts it), or
- (b) `tuned`: trains `blocks[6]` + `conv_head`/`bn2` with the heads, at `--trunk-lr`
  (BatchNorm statistics frozen: eval mode; their scale and shift train).

Everything else is the real training loop (`embeddings.ml.train.run_training`) with the
recipe's config; the probe swaps in its own feature loading, forward and trainable set.
Scored like `bench/relevance.py` (its `_evaluate`: held-out product codes, whole H&M
catalog, image vectors, bootstrap CIs), on image vectors made from each photo's centre view
(the cache's decode-and-crop, not the encoder's: the same for both arms).

    nice -n 10 .venv/bin/python bench/trunk_tune_probe.py --arm frozen --steps 1000
    nice -n 10 .venv/bin/python bench/trunk_tune_probe.py --arm tuned --steps 1000

Scratch code for a go/no-go decision, not the product path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(BASE_DIR / "bench"))


def block_inputs(
    loaded: Any, files: list[Path], views: int, crop_scale: float, seed: int, cache: Path
) -> Any:
    """What enters blocks[6], per photo and view (the product's feature cache, tail_blocks=1)."""
    from embeddings.ml.feature_cache import Augmentation, tower_features

    feats = tower_features(
        model=loaded.model,
        preprocess=loaded.preprocess,
        tower_id=loaded.weights_sha256,
        files=files,
        augmentation=Augmentation(views=views, crop_scale=crop_scale, seed=seed),
        cache_dir=cache,
        tail_blocks=1,
    )
    return SimpleNamespace(block=feats.head_input, ok=feats.ok, failed=feats.failed)


def main() -> int:
    from fine_tune import heldout_items
    from relevance import _evaluate, _load

    from embeddings.ml import train as train_mod
    from embeddings.ml.data import load_dataset
    from embeddings.ml.loading import load_model
    from embeddings.ml.recipes import CATALOG_BASE, CATALOG_FINE_TUNE
    from embeddings.ml.train_config import TrainConfig

    p = argparse.ArgumentParser()
    p.add_argument("--arm", choices=["frozen", "tuned"], required=True)
    p.add_argument("--datasets", type=Path, default=BASE_DIR.parent / "shared/datasets")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--trunk-lr", type=float, default=1e-4)
    p.add_argument("--cache", type=Path, default=BASE_DIR / ".cache/trunk-probe")
    p.add_argument("--results", type=Path, default=BASE_DIR / "bench/results/trunk_tune_probe.json")
    p.add_argument("--prepare-only", action="store_true")
    args = p.parse_args()

    t0 = time.time()
    config = replace(
        TrainConfig(init=CATALOG_BASE),
        **{
            **CATALOG_FINE_TUNE,
            "max_steps": args.steps,
            "feature_cache_dir": str(args.cache),
            "checkpoint_every": 10**9,
        },
    )
    hm = args.datasets / "hm"
    dataset = load_dataset(f"hm:{hm}")
    held = heldout_items(f"hm:{hm}")
    train_set = dataset.subset([it.item_id for it in dataset.items if it.item_id not in held])
    rel = _load(args.datasets)
    loaded = load_model(CATALOG_BASE)
    all_blocks = block_inputs(
        loaded, rel["hm_files"], config.feature_views, config.crop_scale, config.seed, args.cache
    )
    c_blocks = block_inputs(loaded, rel["c_files"], 1, config.crop_scale, config.seed, args.cache)
    assert not all_blocks.failed and not c_blocks.failed
    print(f"block inputs ready at {time.time() - t0:.0f}s", flush=True)
    if args.prepare_only:
        return 0
    row_of = {str(f): i for i, f in enumerate(rel["hm_files"])}
    train_rows = torch.tensor([row_of[str(train_set.image_file(it))] for it in train_set.items])
    blocks = all_blocks.block[train_rows]  # (N_train, V, 192, 5, 5) float16
    tuned = args.arm == "tuned"

    from embeddings.ml.feature_cache import TowerFeatures

    empty = torch.zeros(0)
    if tuned:
        features = TowerFeatures(
            empty,
            empty,
            list(range(len(train_rows))),
            {},
            "probe",
            True,
            head_input=blocks,
            tail_blocks=1,
        )
        config = replace(config, trunk_tune_blocks=1, lr_trunk=args.trunk_lr)
    else:
        with torch.no_grad():
            model0 = loaded.model.eval()
            frozen = [
                model0.image_trunk_tail(blocks[:, v].float(), 1) for v in range(blocks.shape[1])
            ]
        features = TowerFeatures(
            torch.stack([f[0] for f in frozen], 1).half(),
            torch.stack([f[1] for f in frozen], 1).half(),
            list(range(len(train_rows))),
            {},
            "probe",
            True,
        )
    train_mod.tower_features_load = lambda *a, **k: features
    captured: dict[str, Any] = {}
    save = train_mod.save_checkpoint

    def save_probe(
        model: Any,
        cfg: dict[str, Any],
        out_dir: Path,
        card: str,
        dtype: torch.dtype = torch.float32,
    ) -> Path:
        captured.update(m=model)
        return save(model, cfg, out_dir, card, dtype)

    train_mod.save_checkpoint = save_probe
    step_cpu: dict[int, float] = {}

    def progress(step: int, total: int, losses: dict[str, float]) -> None:
        step_cpu[step] = time.process_time()
        if step % 100 == 0 or step == 1:
            print(f"[{time.time() - t0:.0f}s] step {step}/{total} {losses}", flush=True)

    # A run at another trunk rate gets its own folder (a saved train state would resume).
    out_dir = args.cache / f"ckpt-{args.arm}"
    if tuned and args.trunk_lr != 1e-4:
        out_dir = out_dir.with_name(f"{out_dir.name}-lr{args.trunk_lr:g}")
    res = train_mod.run_training(
        config, train_set, out_dir, progress=progress, report=lambda line: print(line, flush=True)
    )
    model = captured["m"].eval()

    @torch.no_grad()
    def vectors(b: torch.Tensor) -> np.ndarray:
        outs = []
        for s in range(0, len(b), 256):
            pooled, tokens = model.image_trunk_tail(b[s : s + 256].float(), 1)
            outs.append(F.normalize(model.image_features_from_trunk(pooled, tokens), dim=-1))
        return torch.cat(outs).numpy()

    vec = {"hm_image": vectors(all_blocks.block[:, 0]), "c_image": vectors(c_blocks.block[:, 0])}
    vec["hm_item"] = vec["hm_image"]
    figures = _evaluate(rel, vec)
    cpu = step_cpu[max(step_cpu)] - step_cpu[min(step_cpu)]
    entry = {
        "arm": args.arm,
        "steps": res.steps,
        "trunk_lr": args.trunk_lr if tuned else None,
        "cpu_ms_per_step": round(1000 * cpu / max(1, res.steps - 1), 1),
        "seconds_total": round(time.time() - t0, 1),
        "load_average_at_end": os.getloadavg(),
        "final_losses": {k: round(v, 4) for k, v in res.last_losses.items()},
        "metrics": {
            k: figures[k]
            for k in (
                "hm_colour_variant@10",
                "hm_same_type_p@10",
                "snapshot_to_hm_type_p@10",
                "clothing_category_p@10",
            )
        },
        "command": "nice -n 10 .venv/bin/python bench/trunk_tune_probe.py "
        + " ".join(sys.argv[1:]),
    }
    np.savez(args.cache / f"vectors-{args.arm}-{args.steps}.npz", hm_image=vec["hm_image"])
    print(json.dumps(entry), flush=True)
    old = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results = {**old, "what": WHAT, "runs": [*old.get("runs", []), entry]}
    other = args.cache / f"vectors-{'frozen' if tuned else 'tuned'}-{args.steps}.npz"
    if other.is_file():  # both arms at these steps: their paired difference
        arms = {args.arm: vec["hm_image"], other.stem.split("-")[1]: np.load(other)["hm_image"]}
        results["paired"] = paired_difference(rel, arms["tuned"], arms["frozen"])
        print(json.dumps(results["paired"]), flush=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    return 0


WHAT = "colour variant@10 after the catalog fine-tune: frozen trunk vs its last block tuned"


def paired_difference(rel: dict[str, Any], tuned: np.ndarray, frozen: np.ndarray) -> dict:
    """hm_colour_variant@10 per held-out query, tuned minus frozen, on the same queries
    (`bench/relevance.py`'s queries and ranking), with a bootstrap CI."""
    from relevance import _top10

    q = np.flatnonzero(rel["hm_query"])
    code = rel["hm_code"]
    variants = dict(zip(*np.unique(code, return_counts=True), strict=True))
    asked = [i for i in q if variants[code[i]] >= 2]
    hits = {}
    for name, v in (("tuned", tuned), ("frozen", frozen)):
        top = _top10(v[q], v, exclude=q)
        found = {i: (code[t] == code[i]).any() for i, t in zip(q, top, strict=True)}
        hits[name] = np.array([float(found[i]) for i in asked])
    d = hits["tuned"] - hits["frozen"]
    means = d[np.random.default_rng(0).integers(0, len(d), (2000, len(d)))].mean(1)
    return {
        "what": "tuned minus frozen, same queries, 2,000 bootstrap resamples (seed 0)",
        "value": round(float(d.mean()), 4),
        "ci_low": round(float(np.quantile(means, 0.025)), 4),
        "ci_high": round(float(np.quantile(means, 0.975)), 4),
        "n": len(d),
        "queries_gained": int((d > 0).sum()),
        "queries_lost": int((d < 0).sum()),
    }


if __name__ == "__main__":
    sys.exit(main())
