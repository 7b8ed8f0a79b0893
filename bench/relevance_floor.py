"""Can photo search tell "no good match"? Best-match cosines and class-profile flags by kind.

Encodes a catalog's photos with a model, then photos of several kinds as queries, and
reports, for each kind:

1. the distribution of the best image cosine a query gets in the catalog (what photo
   search's cosine threshold is calibrated on): a floor works when photos that should
   match (other shots of the catalog's kind of product, shoppers' snapshots) score above
   photos that should not (other kinds of product, rooms, flat colours, noise);
2. with a model whose image trunk has its own classifier (`embeddings.ml.image_classes`),
   the share of each kind flagged "no good match" by the catalog's class profile (a class
   score or energy under its threshold), fitted as `search.calibration.image_class_fit`
   fits it (`class_profile_fit`, the same rates): profile and threshold photos from
   different product groups of the catalog (`--groups`: H&M's articles.csv, colour
   variants share a product code), synthetic unrelated photos to check it; with 95%
   bootstrap intervals, at the shipped temperature and others, and each reading alone.

With `--clothing`, the shoppers are the clothing set's senders the default model held out
of its training (`embeddings.ml.default_recipe`). Results go to
bench/results/relevance_floor.json.

    .venv/bin/python bench/relevance_floor.py --spec default \\
        --catalog ../shared/datasets/hm/images --catalog-size 9000 \\
        --groups ../shared/datasets/hm/articles.csv \\
        --clothing ../shared/datasets/clothing \\
        --queries furniture=../shared/datasets/ikea/products \\
        --queries rooms=../shared/datasets/ikea/rooms

No Django, no database: only the model package.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
RESULTS = BASE_DIR / "bench" / "results" / "relevance_floor.json"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
PERCENTILES = (5, 25, 50, 75, 95)
BOOTSTRAP = 2000
# As search.calibration fits photo search's class profile (that module needs Django).
GENUINE_FLAG_RATE = 0.02
UNRELATED_FLAG_RATE = 0.9
PROFILE_PHOTOS = 1000
PROFILE_FIT_PHOTOS = 500
UNRELATED_PHOTOS = 40


def photos(folder: Path, count: int, rng: random.Random) -> list[str]:
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    rng.shuffle(found)
    return [str(p) for p in found[:count]]


def bootstrap(flags: np.ndarray, seed: int) -> dict[str, float]:
    """Share flagged and its 95% bootstrap interval."""
    rng = np.random.default_rng(seed)
    means = flags[rng.integers(0, len(flags), size=(BOOTSTRAP, len(flags)))].mean(axis=1)
    return {
        "mean": round(float(flags.mean()), 4),
        "low": round(float(np.quantile(means, 0.025)), 4),
        "high": round(float(np.quantile(means, 0.975)), 4),
        "n": len(flags),
    }


def groups_of(csv_path: Path | None) -> dict[str, str]:
    """Photo stem -> product group (H&M's article_id -> product_code); {} without a file."""
    if csv_path is None:
        return {}
    with csv_path.open(newline="") as handle:
        return {row["article_id"].zfill(10): row["product_code"] for row in csv.DictReader(handle)}


def profile_split(
    sources: list[str], groups: dict[str, str], seed: int, sizes: tuple[int, int]
) -> tuple[list[int], list[int]]:
    """Rows of `sources` for the class profile and for its threshold, by whole groups drawn
    at random, two to the profile for one to the threshold (as the calibration splits)."""
    by_group: dict[str, list[int]] = {}
    for row, source in enumerate(sources):
        stem = Path(source).stem
        by_group.setdefault(groups.get(stem.zfill(10), stem), []).append(row)
    order = sorted(by_group)
    random.Random(seed).shuffle(order)
    profile: list[int] = []
    held: list[int] = []
    for key in order:
        if len(profile) < sizes[0] and len(profile) <= 2 * len(held):
            profile.extend(by_group[key])
        elif len(held) < sizes[1]:
            held.extend(by_group[key])
        elif len(profile) >= sizes[0]:
            break
    return profile[: sizes[0]], held[: sizes[1]]


def held_out_shoppers(clothing: Path) -> list[str]:
    """The clothing photos of the senders the default model never trained on."""
    from embeddings.ml.data import load_clothing
    from embeddings.ml.default_recipe import HOLDOUT_FRACTION, MAX_SENDER_SHARE

    _, held = load_clothing(clothing).split_by_lookbook(
        HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE
    )
    return [str(held.image_file(item)) for item in held.items]


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
    parser.add_argument("--groups", type=Path, help="H&M articles.csv: photos' product groups")
    parser.add_argument("--clothing", type=Path, help="the clothing set: held-out shoppers")
    parser.add_argument(
        "--queries",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="a kind of query photo (repeatable)",
    )
    parser.add_argument("--per-kind", type=int, default=300)
    parser.add_argument("--synthetic", type=int, default=200, help="fresh synthetic queries")
    parser.add_argument("--temperatures", default="1,2,3,4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from embeddings.ml.image_classes import (
        class_profile_fit,
        class_scores,
        energy,
        synthetic_photos,
        unrelated_flags,
    )
    from embeddings.ml.loading import load_encoder

    started = time.time()
    rng = random.Random(args.seed)
    encoder = load_encoder(args.spec, onnx_dir=Path(tempfile.mkdtemp(prefix="vitrine-floor-")))
    # The catalog and the held-out photos of its own kind come from one shuffled folder.
    pool = photos(args.catalog, args.catalog_size + args.per_kind, rng)
    encoded = encoder.encode_images(pool[: args.catalog_size], classes=True)
    catalog = encoded.vectors
    query_sets: dict[str, Any] = {"held-out catalog photos": pool[args.catalog_size :]}
    if args.clothing:
        shoppers = held_out_shoppers(args.clothing)
        query_sets["held-out shoppers"] = rng.sample(shoppers, min(args.per_kind, len(shoppers)))
    for item in args.queries:
        name, _, folder = item.partition("=")
        query_sets[name] = photos(Path(folder), args.per_kind, rng)
    # A seed of their own: the calibration checks its threshold on synthetic_photos(40, 0).
    query_sets["synthetic (noise, flat, gradients, stripes)"] = synthetic_photos(
        args.synthetic, seed=args.seed + 1000
    )
    queries = {name: encoder.encode_images(src, classes=True) for name, src in query_sets.items()}

    kinds: dict[str, Any] = {}
    for name, result in queries.items():
        best = (result.vectors @ catalog.T).max(axis=1)
        kinds[name] = distribution(best)
        print(f"{name:44s} best match {kinds[name]}", flush=True)
    report: dict[str, Any] = {
        "spec": args.spec,
        "backend": encoder.backend,
        "catalog": str(args.catalog),
        "catalog_size": len(catalog),
        "best_match_cosine_by_query_kind": kinds,
    }
    if encoded.class_logits is not None:
        ok = [pool[i] for i in encoded.indices]
        profile_rows, held_rows = profile_split(
            ok, groups_of(args.groups), args.seed, (PROFILE_PHOTOS, PROFILE_FIT_PHOTOS)
        )
        unrelated = encoder.encode_images(synthetic_photos(UNRELATED_PHOTOS, seed=args.seed),
                                          classes=True).class_logits  # fmt: skip
        assert unrelated is not None
        by_temperature: dict[str, Any] = {}
        for temperature in [float(t) for t in args.temperatures.split(",")]:
            fit = class_profile_fit(
                profile_logits=encoded.class_logits[profile_rows],
                held_logits=encoded.class_logits[held_rows], unrelated_logits=unrelated,
                genuine_flag_rate=GENUINE_FLAG_RATE, unrelated_flag_rate=UNRELATED_FLAG_RATE,
                temperature=temperature,
            )  # fmt: skip
            flagged, by_class_score, by_energy = {}, {}, {}
            for name, result in queries.items():
                logits = result.class_logits
                assert logits is not None
                flags = unrelated_flags(
                    logits, profile=fit.profile, threshold=fit.threshold,
                    energy_threshold=fit.energy_threshold, temperature=temperature,
                )  # fmt: skip
                flagged[name] = bootstrap(flags.astype(float), args.seed)
                score = class_scores(logits, fit.profile, temperature)
                by_class_score[name] = round(float(np.mean(score < fit.threshold)), 4)
                by_energy[name] = round(float(np.mean(energy(logits) < fit.energy_threshold)), 4)
            by_temperature[f"{temperature:g}"] = {
                "class_score_threshold": fit.threshold,
                "energy_threshold": fit.energy_threshold,
                "kept_by_the_calibration": fit.kept,
                "flagged_by_query_kind": flagged,
                "flagged_by_the_class_score_alone": by_class_score,
                "flagged_by_the_energy_alone": by_energy,
                "fit": {k: v for k, v in fit.report.items() if k != "top_classes"},
            }
            shares = ", ".join(f"{n} {f['mean']}" for n, f in flagged.items())
            print(f"temperature {temperature:g} (kept {fit.kept}): {shares}", flush=True)
        report["class_profile"] = {
            "profile_photos": len(profile_rows),
            "threshold_photos": len(held_rows),
            "by_temperature": by_temperature,
        }
    else:
        report["class_profile"] = "this model's image trunk has no classifier"
    report.update(
        seconds=round(time.time() - started, 1),
        command="python bench/relevance_floor.py " + " ".join(sys.argv[1:]),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
