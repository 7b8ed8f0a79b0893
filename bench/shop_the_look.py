"""Shop the look on IKEA rooms held out from the lookbooks: recall@10/@50, auto-tag
precision@5 and the region + matching latency, beside the baselines, with bootstrap CIs.

The rooms are dealt into 5 folds by a seeded shuffle. Fold 0 is for tuning only
(`--tune` searches the `SceneWeights` grid on it); the figures are reported over folds
1-4: each fold's room photos are the queries while every other room is a lookbook (its
cover photo, its products and its room type), so no query's own products are in the graph.
The catalog is every IKEA product. Ranking is `search.scene_ranking.scene_rank`, the
code the web app runs; region proposals and crops are `embeddings.ml.regions`.

    nice -n 10 .venv/bin/python bench/shop_the_look.py --spec default:v2 \\
        --data ../shared/datasets/ikea --cache .cache/stl-v2-ort.npz

Baselines: random; the room type's popularity, twice: told the query's true room type (an
oracle: the products most frequent in the lookbooks of that type) and with the type guessed
from the photo as our ranking guesses it (the nearest covers' vote); the whole photo as one
query (today's photo search); regions alone. Encoding is `embeddings.ml.regions.scene_encode`
on the encoder the web app loads on a CPU (ONNX Runtime, graphs exported under --onnx-dir),
and the ranking gets the same 50 matches per window, 32 nearest covers and nearest cover
windows (`search.scene_ranking.cover_windows_nearest`) as the web app. `--regions` picks how the
windows become vectors (`WindowConfig.encoding`: "crops", each window cropped and encoded,
the web app's default, or "featuremap", one trunk pass over the scene at `--map-side`); each
has its own --cache. The latency is per
photo on one thread, as CPU time (what the process spent, so it holds when other work
shares the cores) beside wall-clock time, with the load average.
Results go to bench/results/shop_the_look.json. No Django, no database: only the model
package.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# One BLAS thread, set before numpy loads, as a web process runs (webapp/wsgi.py): on loaded
# cores OpenBLAS's own threads spin for the small products of a photo's windows (averaging
# a scene's feature-map cells: 11 ms CPU with its default threads, 0.3 ms with one).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
RESULTS = BASE_DIR / "bench" / "results" / "shop_the_look.json"
FOLDS = 5
TUNING_FOLD = 0
TARGETS = {"recall@10": 0.20, "recall@50": 0.40, "tag_precision@5": 0.40}


def load_encoder(spec: str, onnx_dir: Path) -> Any:
    """The encoder the web app would run `spec` on here (`embeddings.runtime.encoder_load`):
    ONNX Runtime on a CPU, its int8 image graph where the CPU has 8-bit dot products, its
    graphs exported under `onnx_dir`."""
    from embeddings.ml.loading import load_encoder as load

    return load(spec, onnx_dir=onnx_dir)


def window_config(encoding: str, map_side: int, scales: str | None) -> Any:
    """The windows and how they are encoded: the web app's, but for `encoding`, `map_side`
    and `scales` ("0.5,0.75"; None: the app's) (`WindowConfig`)."""
    from embeddings.ml.regions import WindowConfig

    config = WindowConfig(encoding=encoding, map_short_side=map_side)  # type: ignore[arg-type]
    if scales:
        config = replace(config, scales=tuple(float(x) for x in scales.split(",")))
    return config


def window_encoding_name(windows: Any) -> str:
    """What a cache's windows were made by: "crops" or "featuremap@<scene's shorter side>",
    then the window scales where they are not the app's ("crops/0.5,0.75")."""
    from embeddings.ml.regions import WindowConfig

    name = "crops" if windows.encoding == "crops" else f"featuremap@{windows.map_short_side}"
    if windows.scales != WindowConfig().scales:
        name += "/" + ",".join(f"{x:g}" for x in windows.scales)
    return name


def encode(
    spec: str, data: Path, cache: Path | None, onnx_dir: Path, config: Any
) -> dict[str, Any]:
    """Vectors of every product photo, room photo and room window (cached per spec and
    window encoding), and the encoder backend that made them."""
    from embeddings.ml.data import load_ikea
    from embeddings.ml.regions import scene_encode

    made_by = window_encoding_name(config)
    if cache and cache.exists():
        cached = dict(np.load(cache, allow_pickle=False))
        cached.setdefault("regions", np.array("crops"))  # caches from before featuremap
        if str(cached["regions"]) != made_by:
            raise SystemExit(f"{cache} holds windows by {cached['regions']}, not {made_by}")
        return cached
    ds = load_ikea(data)
    encoder = load_encoder(spec, onnx_dir)
    products = encoder.encode_images([ds.image_file(item) for item in ds.items])
    if products.failed:
        example = next(iter(products.failed.values()))
        raise SystemExit(f"{len(products.failed)} product photos failed, e.g. {example}")
    whole, windows, owner = [], [], []
    for index, query in enumerate(ds.queries):
        scene = scene_encode(encoder, Path(query.image_path).read_bytes(), config=config)
        whole.append(scene.whole)
        windows.append(scene.regions)
        owner.extend([index] * len(scene.boxes))
    out = {
        "products": products.vectors,
        "whole": np.stack(whole),
        "windows": np.concatenate(windows),
        "owner": np.array(owner),
        "backend": np.array(encoder.backend),
        "regions": np.array(made_by),
    }
    if config.encoding == "featuremap" and not encoder.has_scene_cells:
        raise SystemExit("this encoder has no scene graph: the windows were cropped")
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **out)
    return out


def region_matches(window_vectors: np.ndarray, products: np.ndarray, spread: Any) -> list[Any]:
    """Each window's `MATCHES_PER_REGION` nearest products and its cosines' spread over the
    catalogue, as `search.looks.selectors` hands them to the ranking."""
    from search.scene_ranking import MATCHES_PER_REGION, RegionMatches

    sims = window_vectors @ products.T  # (W, P)
    top = np.argsort(-sims, axis=1)[:, :MATCHES_PER_REGION]
    means, stds = spread.of(window_vectors)
    return [
        RegionMatches(
            box=(0, 0, 1, 1),
            matches=[(int(p), float(sims[w, p])) for p in top[w]],
            catalogue_mean=float(means[w]),
            catalogue_std=float(stds[w]),
        )
        for w in range(len(window_vectors))
    ]


@dataclass(frozen=True)
class Query:
    """A held-out room as the ranking sees it, and what it truly holds."""

    room: int
    truth: set[int]
    regions: list[Any]  # RegionMatches, as the web app gets them from pgvector
    neighbours: list[Any]  # LookbookNeighbour: the nearest covers among the other folds
    graph: Any  # LookbookGraph of the other folds' rooms
    lookbooks: list[int]
    cover_windows: list[Any]  # CoverWindowMatches: each window's nearest lookbook windows


def photo_windows(vectors: dict[str, Any], rooms: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The windows and the whole photo of each of `rooms`, and the room each row is of."""
    windows, owner = vectors["windows"], vectors["owner"]
    rows = [np.concatenate([windows[owner == r], vectors["whole"][r][None]]) for r in rooms]
    return np.concatenate(rows), np.repeat(rooms, [len(r) for r in rows])


_regions_cache: dict[int, list[Any]] = {}


def fold_queries(
    vectors: dict[str, Any], rooms: list[dict[str, Any]], members: list[list[int]], fold: Any
) -> list[Query]:
    """The rooms of `fold` as queries; every other room is a lookbook."""
    from search.scene_ranking import (
        LOOKALIKE_CANDIDATES,
        CatalogueCosines,
        LookbookGraph,
        LookbookNeighbour,
        cover_windows_nearest,
    )

    P, whole, windows, owner = (vectors[k] for k in ("products", "whole", "windows", "owner"))
    held_out = set(int(q) for q in fold)
    lookbooks = [i for i in range(len(rooms)) if i not in held_out]
    graph = LookbookGraph(
        members={i: members[i] for i in lookbooks},
        kinds={i: rooms[i]["room_type"] for i in lookbooks},
    )
    out = []
    spread = None
    covers, cover_owner = photo_windows(vectors, lookbooks)
    for q in sorted(held_out):
        if not members[q]:
            continue
        if q not in _regions_cache:
            spread = spread or CatalogueCosines.from_vectors(P)
            _regions_cache[q] = region_matches(windows[owner == q], P, spread)
        # The web app reads the LOOKALIKE_CANDIDATES nearest covers: so does the bench.
        sims = whole[lookbooks] @ whole[q]
        nearest = np.argsort(-sims, kind="stable")[:LOOKALIKE_CANDIDATES]
        neighbours = [LookbookNeighbour(lookbooks[j], float(sims[j])) for j in nearest]
        scene, _ = photo_windows(vectors, [q])
        cover_windows = cover_windows_nearest(scene, covers, cover_owner)
        out.append(
            Query(
                q, set(members[q]), _regions_cache[q], neighbours, graph, lookbooks, cover_windows
            )
        )
    return out


def room_members(rooms: list[dict[str, Any]], product_index: dict[str, int]) -> list[list[int]]:
    return [[product_index[p] for p in r["products"] if p in product_index] for r in rooms]


def scores(ranking: list[int], truth: set[int]) -> dict[str, float]:
    # tag_precision@5 is of the first five tags a shoppable post is given: the tagger
    # (`search.posts.services.post_tag`) suggests this ranking's first products, in order.
    return {
        "recall@10": len(truth.intersection(ranking[:10])) / len(truth),
        "recall@50": len(truth.intersection(ranking[:50])) / len(truth),
        "tag_precision@5": len(truth.intersection(ranking[:5])) / 5,
    }


def evaluate(
    vectors: dict[str, Any],
    rooms: list[dict[str, Any]],
    product_index: dict[str, int],
    folds: list[np.ndarray],
    weights: Any,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Per-query metrics of our ranking and the baselines over `folds`."""
    from search.scene_ranking import LookbookGraph, kind_vote, scene_evidence, scene_rank

    rng = np.random.default_rng(seed)
    P, whole = vectors["products"], vectors["whole"]
    members = room_members(rooms, product_index)
    out: dict[str, list[float]] = {}

    def record(name: str, ranking: list[int], truth: set[int]) -> None:
        for metric, value in scores(ranking, truth).items():
            out.setdefault(f"{name}:{metric}", []).append(value)

    def popular(kind: str, lookbooks: list[int]) -> list[int]:
        counts: Counter[int] = Counter()
        for i in lookbooks:
            if rooms[i]["room_type"] == kind:
                counts.update(members[i])
        noise = rng.random(len(P))  # ties among equally frequent products, at random
        return sorted(range(len(P)), key=lambda p: (-counts[p], noise[p]))

    for fold in folds:
        for query in fold_queries(vectors, rooms, members, fold):
            q, truth = query.room, query.truth
            ranked, _ = scene_rank(
                regions=query.regions,
                neighbours=query.neighbours,
                graph=query.graph,
                weights=weights,
                cover_windows=query.cover_windows,
            )
            record("scene", [r.product_id for r in ranked], truth)
            # The two kNN-over-rooms legs alone: the nearest covers by the whole photo vote
            # their products (look-alikes), and the scene's windows vote through the nearest
            # cover windows. Products no room votes for follow at random.
            noise = rng.random(len(P))
            for name, leg in (
                ("rooms_by_whole_photo", "lookalike"),
                ("rooms_by_windows", "cover_windows"),
            ):
                alone = scene_evidence(
                    regions=[],
                    neighbours=query.neighbours,
                    graph=query.graph,
                    weights=weights,
                    cover_windows=query.cover_windows,
                )
                votes = getattr(alone, leg)
                ranking = sorted(range(len(P)), key=lambda p: (-votes.get(p, 0.0), noise[p]))
                record(name, ranking, truth)
            only_regions, _ = scene_rank(
                regions=query.regions,
                neighbours=[],
                graph=LookbookGraph(members={}),
                weights=replace(weights, graph=0.0),
            )
            record("regions_only", [r.product_id for r in only_regions], truth)
            record("whole_photo", list(np.argsort(-(P @ whole[q]))), truth)
            # The popularity baseline told the held-out room's true room type (an oracle),
            # and the honest one, which guesses it from the photo as our ranking does.
            told = popular(rooms[q]["room_type"], query.lookbooks)
            record("room_type_popularity_told", told, truth)
            guess = kind_vote(
                query.neighbours,
                query.graph,
                count=weights.kind_count,
                temperature=weights.kind_temperature,
            )
            record("room_type_popularity_guessed", popular(guess.kind, query.lookbooks), truth)
            out.setdefault("room_type_guessed_right", []).append(
                float(guess.kind == rooms[q]["room_type"])
            )
            record("random", list(rng.permutation(len(P))), truth)
    return out


#: The tuning grid: how the evidence is read, then how much each kind counts.
READING_GRID: dict[str, list[float]] = {
    "region_z_floor": [2.0, 3.0, 4.0],
    "region_z_span": [0.5, 1.0],
    "region_rank_constant": [5.0, 20.0],
    "cover_window_count": [3, 10],
    "cover_window_temperature": [0.05, 0.2, 1.0],
}
MIX_GRID: dict[str, list[float]] = {
    "lookalike": [0.0, 0.5, 1.0],
    "context": [0.0, 0.5, 1.0, 2.0],
    "graph": [0.0, 0.5],
    "cover_windows": [0.0, 0.5, 1.0, 2.0],
}


def tune(
    vectors: dict[str, Any],
    rooms: list[dict[str, Any]],
    product_index: dict[str, int],
    fold: np.ndarray,
) -> Any:
    """The `SceneWeights` with the best recall@10 + recall@50 on `fold` (region weight 1).

    The evidence of each query is gathered once per reading of the grid
    (`scene_evidence`, laid out by `evidence_table`) and weighed for every mix
    (`scene_order`): the order `scene_rank` gives.
    """
    from search.scene_ranking import SceneWeights, evidence_table, scene_evidence, scene_order

    queries = fold_queries(vectors, rooms, room_members(rooms, product_index), fold)
    best, best_value = SceneWeights(), -1.0
    for reading in itertools.product(*READING_GRID.values()):
        base = SceneWeights(**dict(zip(READING_GRID, reading, strict=True)))
        tables = [
            evidence_table(
                scene_evidence(
                    regions=q.regions,
                    neighbours=q.neighbours,
                    graph=q.graph,
                    weights=base,
                    cover_windows=q.cover_windows,
                )
            )
            for q in queries
        ]
        for mix in itertools.product(*MIX_GRID.values()):
            weights = replace(base, region=1.0, **dict(zip(MIX_GRID, mix, strict=True)))
            value = 0.0
            for q, table in zip(queries, tables, strict=True):
                ranking = table.product_ids[scene_order(table, weights)[:50]].tolist()
                got = scores(ranking, q.truth)
                value += got["recall@10"] + got["recall@50"]
            value /= len(queries)
            if value > best_value:
                best, best_value = weights, value
    print(
        f"tuned on fold {TUNING_FOLD} ({len(fold)} rooms): {best} (recall@10+@50 {best_value:.3f})"
    )
    return best


def latency(
    spec: str,
    data: Path,
    vectors: dict[str, Any],
    graph: Any,
    weights: Any,
    photos: int,
    onnx_dir: Path,
    config: Any,
) -> dict[str, Any]:
    """Seconds per photo for proposals + crops + encoding + matching + ranking, on one
    thread: the CPU time the process spends on it (every thread of it counted, so the
    figure holds when other work shares the cores) beside the wall-clock time.

    The ranking gets every room as a lookbook (`graph`, covers `vectors["whole"]` and every
    room's windows), as a deployment with all of them published would.
    """
    # One thread for the encoder (ONNX Runtime's intra-op threads, or torch's): a web
    # worker answers a photo on one core.
    os.environ["VITRINE_TORCH_THREADS"] = "1"
    from embeddings.ml.data import load_ikea
    from embeddings.ml.regions import scene_encode
    from search.scene_ranking import (
        LOOKALIKE_CANDIDATES,
        CatalogueCosines,
        LookbookNeighbour,
        cover_windows_nearest,
        scene_rank,
    )

    products, covers = vectors["products"], vectors["whole"]
    cover_windows, cover_owner = photo_windows(vectors, list(range(len(covers))))
    spread = CatalogueCosines.from_vectors(products)
    encoder = load_encoder(spec, onnx_dir)
    if config.encoding == "featuremap" and not encoder.has_scene_cells:
        raise SystemExit("this encoder has no scene graph: it would time crops")
    if "backend" in vectors and str(vectors["backend"]) != encoder.backend:
        raise SystemExit(
            f"the cached vectors are by {vectors['backend']}, this encoder runs on "
            f"{encoder.backend}: encode again (another --cache)"
        )
    ds = load_ikea(data)
    paths = [q.image_path for q in ds.queries[:photos]]
    encoder.encode_images([paths[0]])  # warm
    stages = ("propose_crop_encode", "match_rank", "total")
    wall: dict[str, list[float]] = {k: [] for k in stages}
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    windows = []
    load_before = os.getloadavg()
    for path in paths:
        raw = Path(path).read_bytes()
        t0, c0 = time.perf_counter(), time.process_time()
        scene = scene_encode(encoder, raw, config=config)
        t1, c1 = time.perf_counter(), time.process_time()
        sims = covers @ scene.whole
        nearest = np.argsort(-sims)[:LOOKALIKE_CANDIDATES]
        scene_windows = np.concatenate([scene.regions, scene.whole[None]])
        scene_rank(
            regions=region_matches(scene.regions, products, spread),
            neighbours=[LookbookNeighbour(int(i), float(sims[i])) for i in nearest],
            graph=graph,
            weights=weights,
            cover_windows=cover_windows_nearest(scene_windows, cover_windows, cover_owner),
        )
        t2, c2 = time.perf_counter(), time.process_time()
        windows.append(len(scene.boxes))
        spans = zip(stages, (t1 - t0, t2 - t1, t2 - t0), (c1 - c0, c2 - c1, c2 - c0), strict=True)
        for key, seconds, cpu_seconds in spans:
            wall[key].append(seconds)
            cpu[key].append(cpu_seconds)
    return {
        "photos": len(paths),
        "threads": 1,
        "backend": encoder.backend,
        "regions": window_encoding_name(config),
        "windows_per_photo_median": float(np.median(windows)),
        **{f"{k}_cpu_median_s": float(np.median(v)) for k, v in cpu.items()},
        "total_cpu_p95_s": float(np.percentile(cpu["total"], 95)),
        **{f"{k}_wall_median_s": float(np.median(v)) for k, v in wall.items()},
        "total_wall_p95_s": float(np.percentile(wall["total"], 95)),
        "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="default")
    parser.add_argument(
        "--data", type=Path, default=BASE_DIR.parent / "shared" / "datasets" / "ikea"
    )
    parser.add_argument("--cache", type=Path, help="npz file for the encoded vectors")
    parser.add_argument(
        "--onnx-dir",
        type=Path,
        default=BASE_DIR / ".cache" / "onnx",
        help="where the model's ONNX graphs are exported (the app's is in its data directory)",
    )
    parser.add_argument("--tune", action="store_true", help="search the weights on fold 0")
    parser.add_argument("--latency-photos", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--regions",
        choices=["featuremap", "crops"],
        default="crops",
        help="windows averaged from one trunk pass over the scene, or cropped and encoded",
    )
    parser.add_argument(
        "--map-side", type=int, default=480, help="the scene's shorter side for featuremap"
    )
    parser.add_argument(
        "--scales", help="window sides as fractions of the photo's shorter side: 0.5,0.75"
    )
    parser.add_argument(
        "--baseline-cache",
        type=Path,
        help="vectors (a --cache of another run) to compare with, query by query: the "
        "paired differences of our ranking's figures, with bootstrap CIs",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the figures go")
    args = parser.parse_args()
    args.data = args.data.resolve()

    from embeddings.ml.evaluation.bootstrap import bootstrap_ci
    from search.scene_ranking import LookbookGraph, SceneWeights

    rooms = json.loads((args.data / "rooms.json").read_text())
    products = json.loads((args.data / "products.json").read_text())
    product_index = {p["id"]: i for i, p in enumerate(products)}
    folds = np.array_split(np.random.default_rng(args.seed).permutation(len(rooms)), FOLDS)
    windows = window_config(args.regions, args.map_side, args.scales)
    vectors = encode(args.spec, args.data, args.cache, args.onnx_dir, windows)
    weights = (
        tune(vectors, rooms, product_index, folds[TUNING_FOLD]) if args.tune else SceneWeights()
    )
    reported = [f for i, f in enumerate(folds) if i != TUNING_FOLD]
    metrics = evaluate(vectors, rooms, product_index, reported, weights)
    figures = {name: bootstrap_ci(values).to_dict() for name, values in sorted(metrics.items())}
    paired = {}
    if args.baseline_cache:
        # The same rooms in the same order: each query's figure minus the baseline's.
        baseline = dict(np.load(args.baseline_cache, allow_pickle=False))
        _regions_cache.clear()  # it holds this run's windows' matches
        theirs = evaluate(baseline, rooms, product_index, reported, weights)
        _regions_cache.clear()
        for metric in TARGETS:
            name = f"scene:{metric}"
            diff = np.subtract(metrics[name], theirs[name])
            paired[name] = bootstrap_ci(diff).to_dict()
            low, high = paired[name]["ci_low"], paired[name]["ci_high"]
            print(
                f"minus baseline {name:26s} {paired[name]['value']:+.3f}  [{low:+.3f}, {high:+.3f}]"
            )
    for name, value in figures.items():
        low, high = value["ci_low"], value["ci_high"]
        print(f"{name:40s} {value['value']:.3f}  [{low:.3f}, {high:.3f}]  n={value['n']}")
    members = room_members(rooms, product_index)
    every_room = LookbookGraph(
        members=dict(enumerate(members)), kinds={i: r["room_type"] for i, r in enumerate(rooms)}
    )
    timing = (
        {}
        if args.latency_photos == 0
        else latency(
            args.spec,
            args.data,
            vectors,
            every_room,
            weights,
            args.latency_photos,
            args.onnx_dir,
            windows,
        )
    )
    print("latency", timing)
    result = {
        "command": " ".join(sys.argv),
        "spec": args.spec,
        "backend": str(vectors.get("backend", "torch")),
        "regions": str(vectors["regions"]),
        "weights": asdict(weights),
        "split": f"{len(rooms)} rooms in {FOLDS} folds (seed {args.seed}); "
        f"fold {TUNING_FOLD} tunes, the others are reported",
        "catalog_products": len(products),
        "figures": figures,
        "minus_baseline": {
            "baseline": str(args.baseline_cache),
            "baseline_regions": str(baseline.get("regions", "crops")),
            "paired": paired,
        }
        if args.baseline_cache
        else None,
        "targets": {
            k: {"target": v, "met": figures[f"scene:{k}"]["value"] >= v} for k, v in TARGETS.items()
        },
        "latency": timing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
