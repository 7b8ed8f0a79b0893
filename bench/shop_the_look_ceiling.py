"""How far voting lookbooks' products can go on the held-out IKEA rooms, whatever the photo
model: the kNN-over-rooms ceiling, beside the share of a room's products that any other
room holds at all. Same split as `bench/shop_the_look.py` (5 seeded folds; figures over
folds 1-4, every other room a lookbook). No model, no vectors: the rooms' product lists.

    python bench/shop_the_look_ceiling.py --data ../shared/datasets/ikea

Ceiling = each lookbook weighted by its true Jaccard overlap with the held-out room's
products (an oracle no photo gives), its products ranked by the summed weights. The
scene ranking's lookbook legs (`search.scene_ranking`: cover windows, look-alikes, kind
popularity) are estimates of that weighting; regions are the only way to a product no
lookbook holds. Results go to bench/results/shop_the_look_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
RESULTS = BASE_DIR / "bench" / "results" / "shop_the_look_ceiling.json"
FOLDS, TUNING_FOLD = 5, 0  # as bench/shop_the_look.py


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=BASE_DIR.parent / "shared" / "datasets" / "ikea"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from embeddings.ml.evaluation.bootstrap import bootstrap_ci

    rooms = json.loads((args.data / "rooms.json").read_text())
    products = json.loads((args.data / "products.json").read_text())
    index = {p["id"]: i for i, p in enumerate(products)}
    holds = np.zeros((len(rooms), len(products)))  # (R, P) room holds product
    for r, room in enumerate(rooms):
        holds[r, [index[p] for p in room["products"] if p in index]] = 1
    folds = np.array_split(np.random.default_rng(args.seed).permutation(len(rooms)), FOLDS)
    metrics: dict[str, list[float]] = {}
    for fold in (f for i, f in enumerate(folds) if i != TUNING_FOLD):
        lookbooks = np.array([r for r in range(len(rooms)) if r not in set(fold.tolist())])
        seen = holds[lookbooks].max(axis=0)
        for q in fold:
            truth = holds[q]
            if not truth.any():
                continue
            overlap = holds[lookbooks] @ truth
            jaccard = overlap / (holds[lookbooks].sum(axis=1) + truth.sum() - overlap)
            # ties (products of no weighted lookbook) broken by lookbook frequency, then id
            score = jaccard @ holds[lookbooks] + 1e-9 * holds[lookbooks].sum(axis=0)
            ranking = np.argsort(-score, kind="stable")
            n = truth.sum()
            for name, value in {
                "held_by_some_lookbook": float((truth * seen).sum() / n),
                "oracle_rooms:recall@10": float(truth[ranking[:10]].sum() / n),
                "oracle_rooms:recall@50": float(truth[ranking[:50]].sum() / n),
                "oracle_rooms:tag_precision@5": float(truth[ranking[:5]].sum() / 5),
            }.items():
                metrics.setdefault(name, []).append(value)
    figures = {name: bootstrap_ci(values).to_dict() for name, values in sorted(metrics.items())}
    for name, value in figures.items():
        low, high = value["ci_low"], value["ci_high"]
        print(f"{name:32s} {value['value']:.3f}  [{low:.3f}, {high:.3f}]  n={value['n']}")
    result = {"command": " ".join(sys.argv), "split": f"seed {args.seed}", "figures": figures}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
