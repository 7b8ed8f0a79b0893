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
   bootstrap intervals, at the shipped temperature and others, and each reading alone;
3. beside that rule, readings of the trunk's pooled features measured as candidates for the
   same flag: the mean cosine distance to the `KNN` nearest profile photos (a kNN
   distance), and the residual off the profile photos' first `PCA_DIMS` principal
   components (a PCA residual), each alone at the threshold passing 98% of the
   threshold photos, and each OR'd with the class rule with one rate shared by its three
   readings, chosen so that together they flag 2% of the threshold photos (`joint_fit`).
   The held-out catalog photos are of product codes the catalog lacks (`--groups`), so a
   colour variant never finds its twin. `ceiling_at_2pct_of_shoppers` is what each reading
   alone would flag of each kind at the threshold that flags 2% of the held-out shoppers:
   fitted on the evaluation set itself, a ceiling, never a rule;
4. with `--reverse-catalog`, the same with that folder (IKEA's products) as the catalog and
   its held-out products as the genuine photos: H&M's photos and the shoppers' snapshots
   are then the unrelated ones.

With `--clothing`, the shoppers are the clothing set's senders the default model held out
of its training (`embeddings.ml.default_recipe`). Results go to
bench/results/relevance_floor.json.

    .venv/bin/python bench/relevance_floor.py --spec default \\
        --catalog ../shared/datasets/hm/images --catalog-size 9000 \\
        --groups ../shared/datasets/hm/articles.csv \\
        --clothing ../shared/datasets/clothing \\
        --queries furniture=../shared/datasets/ikea/products \\
        --queries rooms=../shared/datasets/ikea/rooms \\
        --reverse-catalog ../shared/datasets/ikea/products

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
# The feature readings measured beside the class rule (see the docstring).
KNN = 10
PCA_DIMS = 16


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


def ikea_groups_of(folder: Path) -> dict[str, str]:
    """Photo stem -> product group of IKEA's products (products.json beside the folder):
    one name and type ("MALM Chest of 3 drawers"), so that its colours and sizes share one."""
    listing = folder.parent / f"{folder.name}.json"
    if not listing.exists():
        return {}
    return {p["id"]: f"{p['name']} {p['type']}" for p in json.loads(listing.read_text())}


def group_key(source: str, groups: dict[str, str]) -> str:
    stem = Path(source).stem
    return groups.get(stem.zfill(10), groups.get(stem, stem))


def held_out_codes(
    sources: list[str], groups: dict[str, str], count: int, rng: random.Random
) -> tuple[list[str], list[str]]:
    """(catalog, held out): whole product groups drawn at random until `count` photos are
    held out, so that no held-out photo has a colour variant in the catalog."""
    by_group: dict[str, list[str]] = {}
    for source in sources:
        by_group.setdefault(group_key(source, groups), []).append(source)
    order = sorted(by_group)
    rng.shuffle(order)
    held: list[str] = []
    catalog: list[str] = []
    for key in order:
        (held if len(held) < count else catalog).extend(by_group[key])
    return catalog, held[:count]


def profile_split(
    sources: list[str], groups: dict[str, str], seed: int, sizes: tuple[int, int]
) -> tuple[list[int], list[int]]:
    """Rows of `sources` for the class profile and for its threshold, by whole groups drawn
    at random, two to the profile for one to the threshold (as the calibration splits)."""
    by_group: dict[str, list[int]] = {}
    for row, source in enumerate(sources):
        by_group.setdefault(group_key(source, groups), []).append(row)
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


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def knn_distance(reference: np.ndarray, k: int = KNN) -> Any:
    """Pooled features (N, F) -> their mean cosine distance to the `k` nearest reference photos."""
    ref = _unit(reference)

    def reading(pooled: np.ndarray, _logits: Any = None) -> np.ndarray:
        out = np.empty(len(pooled))
        for start in range(0, len(pooled), 512):  # (512, N) cosines at a time
            sims = _unit(pooled[start : start + 512]) @ ref.T
            out[start : start + 512] = 1 - np.sort(sims, axis=1)[:, -k:].mean(axis=1)
        return out

    return reading


def pca_residual(reference: np.ndarray, dims: int = PCA_DIMS) -> Any:
    """Pooled features -> the squared norm of their unit vector's residual off the reference
    photos' first `dims` principal components (far from the catalog's main directions)."""
    ref = _unit(reference)
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    basis = vt[:dims]

    def reading(pooled: np.ndarray, _logits: Any = None) -> np.ndarray:
        centred = _unit(pooled) - mean
        out: np.ndarray = (centred**2).sum(axis=1) - ((centred @ basis.T) ** 2).sum(axis=1)
        return out

    return reading


def joint_fit(held: list[np.ndarray], budget: float) -> list[float]:
    """Thresholds for readings (higher: more unrelated) of the threshold photos, each at the
    same upper quantile, the largest rate at which together they flag at most `budget`."""
    low, high = 0.0, budget
    for _ in range(40):
        rate = (low + high) / 2
        cuts = [float(np.quantile(r, 1 - rate)) for r in held]
        union = np.any([r > c for r, c in zip(held, cuts, strict=True)], axis=0).mean()
        low, high = (rate, high) if union <= budget else (low, rate)
    return [float(np.quantile(r, 1 - low)) for r in held]


def distribution(scores: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(scores),
        **{f"p{q}": round(float(np.percentile(scores, q)), 4) for q in PERCENTILES},
    }


def rules_report(
    *,
    encoded: Any,
    sources: list[str],
    groups: dict[str, str],
    queries: dict[str, Any],
    unrelated_logits: np.ndarray,
    shoppers: str | None,
    seed: int,
) -> dict[str, Any]:
    """The class rule at the shipped temperature beside the pooled-feature readings (alone
    and OR'd with it, `joint_fit`) for one catalog, flags by query kind with 95% CIs."""
    from embeddings.ml.image_classes import TEMPERATURE, class_profile_fit, class_scores, energy

    profile_rows, held_rows = profile_split(
        sources, groups, seed, (PROFILE_PHOTOS, PROFILE_FIT_PHOTOS)
    )
    logits, pooled = encoded.class_logits, encoded.pooled
    fit = class_profile_fit(
        profile_logits=logits[profile_rows], held_logits=logits[held_rows],
        unrelated_logits=unrelated_logits, genuine_flag_rate=GENUINE_FLAG_RATE,
        unrelated_flag_rate=UNRELATED_FLAG_RATE,
    )  # fmt: skip
    # Every reading the higher the more unrelated, on the threshold photos and the queries.
    readings: dict[str, Any] = {
        "class score": lambda p, lg: -class_scores(lg, fit.profile, TEMPERATURE),
        "energy": lambda p, lg: -energy(lg),
        "knn distance": knn_distance(pooled[profile_rows]),
        "pca residual": pca_residual(pooled[profile_rows]),
    }
    held = {name: read(pooled[held_rows], logits[held_rows]) for name, read in readings.items()}
    by_kind = {
        kind: {name: read(r.pooled, r.class_logits) for name, read in readings.items()}
        for kind, r in queries.items()
    }
    class_cuts = [-fit.threshold, -fit.energy_threshold]

    def flags(names: list[str], cuts: list[float]) -> dict[str, Any]:
        return {
            kind: bootstrap(
                np.any([values[n] > c for n, c in zip(names, cuts, strict=True)], axis=0)
                .astype(float), seed,
            )
            for kind, values in by_kind.items()
        }  # fmt: skip

    rules: dict[str, Any] = {"class rule (today)": flags(["class score", "energy"], class_cuts)}
    for name in ("knn distance", "pca residual"):
        alone = float(np.quantile(held[name], 1 - GENUINE_FLAG_RATE))
        rules[f"{name} alone"] = flags([name], [alone])
        names = ["class score", "energy", name]
        rules[f"class rule or {name}"] = flags(
            names, joint_fit([held[n] for n in names], GENUINE_FLAG_RATE)
        )
    report: dict[str, Any] = {
        "profile_photos": len(profile_rows),
        "threshold_photos": len(held_rows),
        "class_rule_kept_by_the_calibration": fit.kept,
        "class_rule_fit": {k: v for k, v in fit.report.items() if k != "top_classes"},
        "knn": KNN,
        "pca_dims": PCA_DIMS,
        "flagged_by_rule": rules,
    }
    if shoppers in by_kind:
        report["ceiling_at_2pct_of_shoppers"] = {
            name: {
                kind: round(float(np.mean(values[name] > np.quantile(
                    by_kind[shoppers][name], 1 - GENUINE_FLAG_RATE))), 4)
                for kind, values in by_kind.items()
            }
            for name in readings
        }  # fmt: skip
    for name, by in rules.items():
        shares = ", ".join(f"{k[:22]} {f['mean']}" for k, f in by.items())
        print(f"  {name:34s} {shares}", flush=True)
    return report


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
    parser.add_argument(
        "--reverse-catalog", type=Path, help="IKEA's products folder: a catalog of furniture"
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
    # The held-out photos of the catalog's kind are of product codes the catalog lacks.
    groups = groups_of(args.groups)
    every = photos(args.catalog, 10**9, rng)
    catalog_sources, held_sources = held_out_codes(every, groups, args.per_kind, rng)
    catalog_sources = catalog_sources[: args.catalog_size]
    encoded = encoder.encode_images(catalog_sources, classes=True)
    catalog = encoded.vectors
    held_kind = "held-out catalog photos (other product codes)"
    shoppers_kind = "held-out shoppers"
    query_sets: dict[str, Any] = {held_kind: held_sources}
    if args.clothing:
        shoppers = held_out_shoppers(args.clothing)
        query_sets[shoppers_kind] = rng.sample(shoppers, min(args.per_kind, len(shoppers)))
    for item in args.queries:
        name, _, folder = item.partition("=")
        query_sets[name] = photos(Path(folder), args.per_kind, rng)
    # A seed of their own: the calibration checks its threshold on synthetic_photos(40, 0).
    synthetic_kind = "synthetic (noise, flat, gradients, stripes)"
    query_sets[synthetic_kind] = synthetic_photos(args.synthetic, seed=args.seed + 1000)
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
        ok = [catalog_sources[i] for i in encoded.indices]
        profile_rows, held_rows = profile_split(
            ok, groups, args.seed, (PROFILE_PHOTOS, PROFILE_FIT_PHOTOS)
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
        print(f"feature rules, catalog {args.catalog}:", flush=True)
        report["feature_rules"] = rules_report(
            encoded=encoded, sources=ok, groups=groups, queries=queries,
            unrelated_logits=unrelated, shoppers=shoppers_kind, seed=args.seed,
        )  # fmt: skip
        if args.reverse_catalog:
            # The other way round: a furniture catalog, its held-out products genuine, the
            # clothing catalog's held-out photos unrelated (IKEA's product photos are then
            # the catalog, so they are no query kind of their own).
            reverse_groups = ikea_groups_of(args.reverse_catalog)
            reverse_all = photos(args.reverse_catalog, 10**9, rng)
            reverse_sources, reverse_held = held_out_codes(
                reverse_all, reverse_groups, args.per_kind, rng
            )
            reverse = encoder.encode_images(reverse_sources, classes=True)
            its_own = {
                name for name, _, folder in (q.partition("=") for q in args.queries)
                if Path(folder).resolve() == args.reverse_catalog.resolve()
            }  # fmt: skip
            reverse_queries = {
                "held-out catalog products": encoder.encode_images(reverse_held, classes=True)
            } | {
                ("clothing catalog photos" if k == held_kind else k): r
                for k, r in queries.items()
                if k not in its_own
            }
            print(f"feature rules, catalog {args.reverse_catalog}:", flush=True)
            report["reverse"] = {
                "catalog": str(args.reverse_catalog),
                "catalog_size": len(reverse.vectors),
                **rules_report(
                    encoded=reverse, sources=[reverse_sources[i] for i in reverse.indices],
                    groups=reverse_groups, queries=reverse_queries, unrelated_logits=unrelated,
                    shoppers=None, seed=args.seed,  # shoppers are unrelated to furniture
                ),
            }  # fmt: skip
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
