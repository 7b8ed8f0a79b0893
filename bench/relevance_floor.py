"""Can an image-similarity floor tell "no good match"? Best-match scores by kind of query.

Encodes a catalog's photos with a model, then photos of several kinds as queries, and
prints, for each kind, the distribution of the best cosine a query gets in the catalog
(what photo search's "no good match" is calibrated on, search/calibration.py). A floor
works when photos that should match (other shots of the catalog's kind of product,
shoppers' snapshots) score above photos that should not (other kinds of product, rooms,
flat colours, noise). Results go to bench/results/relevance_floor.json.

    .venv/bin/python bench/relevance_floor.py --spec default \\
        --catalog ../shared/datasets/hm/images --catalog-size 9000 \\
        --queries shoppers=../shared/datasets/clothing/images \\
        --queries furniture=../shared/datasets/ikea/products \\
        --queries rooms=../shared/datasets/ikea/rooms

No Django, no database: only the model package.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
RESULTS = BASE_DIR / "bench" / "results" / "relevance_floor.json"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
PERCENTILES = (5, 25, 50, 75, 95)


def photos(folder: Path, count: int, rng: random.Random) -> list[str]:
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    rng.shuffle(found)
    return [str(p) for p in found[:count]]


def synthetic_photos(count: int, seed: int) -> list[bytes]:
    """Flat colours and noise: what a floor must reject whatever the catalog."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [
        Image.new("RGB", (224, 224), tuple(int(x) for x in rng.integers(0, 256, 3)))
        for _ in range(count - count // 4)
    ]
    images += [
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
        for _ in range(count // 4)
    ]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def distribution(scores: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(scores),
        **{f"p{q}": round(float(np.percentile(scores, q)), 4) for q in PERCENTILES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="default")
    parser.add_argument("--catalog", type=Path, required=True, help="folder of catalog photos")
    parser.add_argument("--catalog-size", type=int, default=9000)
    parser.add_argument(
        "--queries",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="a kind of query photo (repeatable)",
    )
    parser.add_argument("--per-kind", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from embeddings.ml.loading import load_encoder

    started = time.time()
    rng = random.Random(args.seed)
    encoder = load_encoder(args.spec)
    # The catalog and the held-out photos of its own kind come from one shuffled folder.
    pool = photos(args.catalog, args.catalog_size + args.per_kind, rng)
    catalog = encoder.encode_images(pool[: args.catalog_size]).vectors
    query_sets: dict[str, Any] = {"held-out catalog photos": pool[args.catalog_size :]}
    for item in args.queries:
        name, _, folder = item.partition("=")
        query_sets[name] = photos(Path(folder), args.per_kind, rng)
    query_sets["flat colours and noise"] = synthetic_photos(40, args.seed)

    kinds: dict[str, Any] = {}
    for name, sources in query_sets.items():
        vectors = encoder.encode_images(sources).vectors
        best = (vectors @ catalog.T).max(axis=1)
        kinds[name] = distribution(best)
        print(f"{name:28s} best match {kinds[name]}", flush=True)
    report = {
        "spec": args.spec,
        "catalog": str(args.catalog),
        "catalog_size": len(catalog),
        "best_match_cosine_by_query_kind": kinds,
        "seconds": round(time.time() - started, 1),
        "command": "python bench/relevance_floor.py " + " ".join(sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
