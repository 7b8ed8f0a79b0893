"""Which packaged image tower, at which input size: frozen features, accuracy against speed.

For each candidate (tower, input size) the pretrained trunk's pooled features, with no
training at all, are measured on
- held-out clothing senders (the default recipe's split): image -> image category P@10;
- held-out H&M product codes (a seeded sample of codes with 2+ colour variants, the whole
  sample as catalog): photo -> a colour variant in the top 10;
and the trunk's PyTorch eager speed on one thread (images/s, batch 32).
Figures with bootstrap 95% CIs go to bench/results/tower_choice.json.

    python bench/tower_choice.py --datasets ../shared/datasets
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CANDIDATES = [
    ("efficientnet_lite0", 160),
    ("efficientnet_lite0", 192),
    ("efficientnet_lite0", 224),
    ("efficientnet_lite1", 240),
    ("efficientnet_lite2", 260),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--hm-codes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench/results/tower_choice.json"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/features"))
    args = parser.parse_args()

    import torch

    from embeddings.ml.data import load_clothing
    from embeddings.ml.default_recipe import HOLDOUT_FRACTION, MAX_SENDER_SHARE
    from embeddings.ml.evaluation.bootstrap import bootstrap_ci
    from embeddings.ml.feature_cache import Augmentation, tower_features
    from embeddings.ml.loading import load_model

    torch.set_num_threads(1)
    clothing = load_clothing(args.datasets / "clothing")
    _, held = clothing.split_by_lookbook(
        HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE
    )
    c_files = [held.image_file(it) for it in held.items]
    c_labels = [it.category for it in held.items]
    hm_files, hm_codes = _hm_sample(args.datasets / "hm", args.hm_codes)

    results = []
    for tower, size in CANDIDATES:
        loaded = load_model(f"packaged:{tower}@{size}")
        feats = {}
        for name, files in (("clothing", c_files), ("hm", hm_files)):
            f = tower_features(
                model=loaded.model,
                preprocess=loaded.preprocess,
                tower_id=f"{tower}@{size}",
                files=files,
                augmentation=Augmentation(views=1),
                cache_dir=args.cache,
            )
            v = f.pooled[:, 0].float().numpy()
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            feats[name] = (v, f.ok)
        v, ok = feats["clothing"]
        labels = [c_labels[i] for i in ok]
        cat = _precision_at_10(v, labels)
        v, ok = feats["hm"]
        codes = [hm_codes[i] for i in ok]
        colour = _hit_at_10(v, codes)
        speed = _speed(loaded.model, size)
        row = {
            "tower": tower,
            "image_size": size,
            "clothing_category_p@10": bootstrap_ci(np.array(cat)).to_dict(),
            "hm_colour_variant_hit@10": bootstrap_ci(np.array(colour)).to_dict(),
            "eager_images_per_s_1_thread": round(speed, 1),
        }
        print(json.dumps(row))
        results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"candidates": results}, indent=2) + "\n")
    return 0


def _hm_sample(root: Path, n_codes: int) -> tuple[list[Path], list[str]]:
    by_code: dict[str, list[str]] = defaultdict(list)
    with (root / "articles.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            by_code[row["product_code"]].append(row["article_id"])
    codes = sorted(c for c, arts in by_code.items() if len(arts) >= 2)
    random.Random(13).shuffle(codes)
    files, labels = [], []
    for code in codes[:n_codes]:
        for art in by_code[code]:
            files.append(root / "images" / f"{art}.jpg")
            labels.append(code)
    return files, labels


def _precision_at_10(v: np.ndarray, labels: list) -> list[float]:
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :10]
    return [
        float(np.mean([labels[j] == labels[i] for j in top[i]]))
        for i in range(len(labels))
        if labels[i] is not None
    ]


def _hit_at_10(v: np.ndarray, codes: list[str]) -> list[float]:
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :10]
    return [float(any(codes[j] == codes[i] for j in top[i])) for i in range(len(codes))]


def _speed(model, size: int) -> float:
    import torch

    x = torch.randn(32, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        model.image_trunk_features(x)
        t = time.perf_counter()
        model.image_trunk_features(x)
        return 32 / (time.perf_counter() - t)


if __name__ == "__main__":
    sys.exit(main())
