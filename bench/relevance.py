"""Relevance of a model beside the 16x24-thumbnail baseline and the previous default.

Tasks (cosine ranking over L2-normalised vectors, 95% bootstrap CIs over queries):

- ``hm_colour_variant@10``: an H&M catalog photo of a held-out product code finds another
  colour variant (same ``product_code``) in its top 10, over the WHOLE H&M catalog.
- ``hm_same_type_p@10``: same queries, precision@10 of the same ``product_type_name``.
- ``snapshot_to_hm_type_p@10``: a shopper's snapshot from the held-out clothing senders,
  against the whole H&M catalog: precision@10 of an H&M product type that the snapshot's
  label maps to (`LABEL_TO_HM_TYPES`; labels with no H&M counterpart are not asked).
- ``similar_items_same_type_p@10``: a held-out H&M article's similar items, ranked as the
  selector ranks them (its fused and text vectors, `search.similar_items`), precision@10 of
  the same product type; ``similar_items_fused_only_...`` by the fused vector alone.
- ``clothing_category_p@10``: a held-out clothing photo against the other held-out photos:
  precision@10 of the same label.

Held-out parts: H&M product codes are split by code (seed 13, 30% held out; the default
models never train on H&M at all, and fine-tuned models must train on the other 70%);
clothing senders as the default recipe holds them out.

The ranking is the one the search selectors run (cosine over the version's stored vectors,
exact here instead of pgvector's HNSW: recall@10 of the index is measured ≥ 0.999 by
bench/search_latency.py). Vectors are cached in .cache/relevance/ by spec and weights.

    python bench/relevance.py --datasets ../shared/datasets --spec default --spec default:v1

``--spec float:default`` measures the default model with its image graph in float on ONNX
Runtime, beside ``default`` (int8 where shipped calibration holds: `embeddings.ml.onnx_int8`).

``--spec trunk:default`` (``grid:default``) measures the default model's frozen image
trunk alone, by its pooled vector (its 3x3 grid tokens): the ceiling of a head trained
without retail photos of colour variants.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embeddings.ml.evaluation.splits import HM_HELDOUT_CODE_FRACTION

THUMBNAIL = "thumbnail16x24"
# "trunk:<spec>" / "grid:<spec>": the model's frozen image trunk alone, by its pooled vector
# or its grid tokens (each token normalised, flattened): what any head on it starts from.
TRUNK, GRID = "trunk:", "grid:"
FLOAT = "float:"  # "float:<spec>": the model with its ONNX image graph in float, not int8
# A clothing label -> the H&M product types that answer it. Labels with no clear H&M
# counterpart ("Other", "Not sure", "Skip", "Body", "Undershirt") are not asked.
LABEL_TO_HM_TYPES: dict[str, set[str]] = {
    "T-Shirt": {"T-shirt"},
    "Longsleeve": {"Top", "T-shirt", "Sweater"},
    "Pants": {"Trousers", "Leggings/Tights"},
    "Shoes": {
        "Sneakers",
        "Boots",
        "Heeled sandals",
        "Sandals",
        "Ballerinas",
        "Flat shoe",
        "Pumps",
        "Wedge",
        "Other shoe",
        "Flip flop",
        "Slippers",
        "Bootie",
    },
    "Shirt": {"Shirt", "Blouse"},
    "Dress": {"Dress"},
    "Outwear": {"Jacket", "Coat", "Outdoor Waistcoat"},
    "Shorts": {"Shorts"},
    "Hat": {"Hat/beanie", "Cap/peaked", "Hat/brim", "Beanie"},
    "Skirt": {"Skirt"},
    "Polo": {"Polo shirt"},
    "Blazer": {"Blazer"},
    "Hoodie": {"Hoodie", "Sweater"},
    "Top": {"Top", "Vest top", "Blouse"},
    "Blouse": {"Blouse", "Shirt", "Top"},
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--spec", action="append", default=None, help="model specs to compare")
    parser.add_argument("--out", type=Path, default=Path("bench/results/relevance.json"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/relevance"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    specs = args.spec or ["default", "default:v1"]

    data = _load(args.datasets)
    results: dict[str, dict] = {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for name in [THUMBNAIL, *specs]:
        t0 = time.time()
        vectors[name] = _vectors(name, data, args.cache, args.threads)
        results[name] = _evaluate(data, vectors[name])
        results[name]["seconds"] = round(time.time() - t0, 1)
        print(json.dumps({name: results[name]}), flush=True)
    for name in specs:  # "X" beside "float:X": how close X's (int8) vectors stay to float
        if FLOAT + name in vectors:
            results[name]["image_cosine_to_float"] = _cosines(vectors[name], vectors[FLOAT + name])
            print(json.dumps({name: results[name]["image_cosine_to_float"]}), flush=True)
    _print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "label_to_hm_types": {k: sorted(v) for k, v in LABEL_TO_HM_TYPES.items()},
                "holdout_codes_fraction": HM_HELDOUT_CODE_FRACTION,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


# ---- data --------------------------------------------------------------------------------
def _load(root: Path) -> dict:
    from embeddings.ml.data import load_clothing
    from embeddings.ml.default_recipe import HOLDOUT_FRACTION, MAX_SENDER_SHARE
    from embeddings.ml.evaluation.splits import hm_heldout_codes

    rows = list(csv.DictReader((root / "hm" / "articles.csv").open(newline="")))
    held_codes = hm_heldout_codes(r["product_code"] for r in rows)
    hm_files = [root / "hm" / "images" / f"{r['article_id']}.jpg" for r in rows]
    hm_texts = [
        f"{r['prod_name']}. {r['product_type_name']}, {r['colour_group_name']}. "
        f"{r['detail_desc']}".strip()
        for r in rows
    ]
    clothing = load_clothing(root / "clothing")
    _, held = clothing.split_by_lookbook(
        HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE
    )
    return {
        "hm_files": hm_files,
        "hm_texts": hm_texts,
        "hm_code": np.array([r["product_code"] for r in rows]),
        "hm_type": np.array([r["product_type_name"] for r in rows]),
        "hm_query": np.array([r["product_code"] in held_codes for r in rows]),
        "c_files": [held.image_file(it) for it in held.items],
        "c_label": [it.category for it in held.items],
    }


# ---- vectors -------------------------------------------------------------------------------
def _vectors(name: str, data: dict, cache: Path, threads: int) -> dict[str, np.ndarray]:
    key = hashlib.sha256(name.encode()).hexdigest()[:12]
    if name == THUMBNAIL:
        return {
            "hm_image": _thumbnails(data["hm_files"]),
            "c_image": _thumbnails(data["c_files"]),
            "hm_item": _thumbnails(data["hm_files"]),  # the baseline has no text
        }
    import os

    os.environ.setdefault("VITRINE_TORCH_THREADS", str(threads))
    if name.startswith((TRUNK, GRID)):
        return _trunk_vectors(name, data, cache)
    from embeddings.ml.loading import load_encoder

    spec = name.removeprefix(FLOAT)
    encoder = load_encoder(
        spec, device="cpu", onnx_dir=cache / "onnx", int8=False if name != spec else None
    )
    # The backend is part of the key: int8 and float vectors of one model differ slightly,
    # and so do the int8 graphs of CPUs with and without 8-bit dot products.
    key = f"{key}-{encoder.weights_sha256[:16]}-{encoder.backend}"
    if encoder.backend == "onnxruntime-int8":
        from embeddings.ml.onnx_int8 import int8_kernels

        key += f"-{int8_kernels()}"
    path = cache / f"{key}-with-text.npz"
    if path.is_file():
        return dict(np.load(path))
    out = {}
    for part, files in (("hm_image", data["hm_files"]), ("c_image", data["c_files"])):
        res = encoder.encode_images(files)
        if res.failed:
            raise SystemExit(f"{name}: {len(res.failed)} images failed, e.g. {res.failed}")
        out[part] = res.vectors
    res = encoder.encode_items(data["hm_files"], data["hm_texts"])
    out["hm_item"] = res.vectors
    out["hm_text"] = encoder.encode_texts(data["hm_texts"])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def _trunk_vectors(name: str, data: dict, cache: Path) -> dict[str, np.ndarray]:
    """The frozen trunk's own image vectors (no head, no text: item = image)."""
    from embeddings.ml.feature_cache import Augmentation, tower_features
    from embeddings.ml.loading import load_model

    prefix, spec = name.split(":", 1)
    loaded = load_model(spec)
    out = {}
    for part, files in (("hm_image", data["hm_files"]), ("c_image", data["c_files"])):
        feats = tower_features(
            model=loaded.model,
            preprocess=loaded.preprocess,
            tower_id=loaded.weights_sha256,
            files=files,
            augmentation=Augmentation(views=1),
            cache_dir=cache / "features",
        )
        if feats.failed:
            raise SystemExit(f"{name}: {len(feats.failed)} images failed")
        if prefix + ":" == TRUNK:
            m = feats.pooled[:, 0].float().numpy()
        else:
            tokens = feats.tokens[:, 0].float().numpy()  # (N, G, C)
            tokens /= np.maximum(np.linalg.norm(tokens, axis=-1, keepdims=True), 1e-9)
            m = tokens.reshape(len(tokens), -1)
        out[part] = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    out["hm_item"] = out["hm_image"]
    return out


def _cosines(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per photo set, the cosine of each photo's image vector in `a` to the one in `b`."""
    out = {}
    for part, photos in (("hm_image", "hm_photos"), ("c_image", "clothing_heldout_photos")):
        cos = (a[part] * b[part]).sum(1)  # both L2-normalised
        out[photos] = {
            "n": len(cos),
            "mean": round(float(cos.mean()), 4),
            "p01": round(float(np.quantile(cos, 0.01)), 4),
            "min": round(float(cos.min()), 4),
        }
    return out


def _thumbnails(files: list[Path]) -> np.ndarray:
    """16x24 RGB thumbnails, centred per image, as unit vectors: the trivial baseline."""
    from PIL import Image

    rows = []
    for f in files:
        with Image.open(f) as img:
            small = img.convert("RGB").resize((16, 24), Image.Resampling.BILINEAR)
        v = np.asarray(small, dtype=np.float32).ravel() / 255.0
        rows.append(v - v.mean())
    m = np.stack(rows)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)


# ---- metrics -------------------------------------------------------------------------------
def _evaluate(data: dict, vec: dict[str, np.ndarray]) -> dict:
    from embeddings.ml.evaluation.bootstrap import bootstrap_ci

    q = np.flatnonzero(data["hm_query"])
    code, ptype = data["hm_code"], data["hm_type"]
    variants = {c: n for c, n in zip(*np.unique(code, return_counts=True), strict=True)}
    top = _top10(vec["hm_image"][q], vec["hm_image"], exclude=q)
    colour = [
        float((code[t] == code[i]).any())
        for i, t in zip(q, top, strict=True)
        if variants[code[i]] >= 2
    ]
    same_type = [float((ptype[t] == ptype[i]).mean()) for i, t in zip(q, top, strict=True)]

    top = _top10(vec["hm_item"][q], vec["hm_item"], exclude=q)
    fused_only = [float((ptype[t] == ptype[i]).mean()) for i, t in zip(q, top, strict=True)]
    queries, catalog = _similar_items_space(vec)
    top = _top10(queries[q], catalog, exclude=q)
    similar = [float((ptype[t] == ptype[i]).mean()) for i, t in zip(q, top, strict=True)]

    asked = [i for i, lab in enumerate(data["c_label"]) if lab in LABEL_TO_HM_TYPES]
    top = _top10(vec["c_image"][asked], vec["hm_image"])
    snapshot = [
        float(np.mean([ptype[j] in LABEL_TO_HM_TYPES[data["c_label"][i]] for j in t]))
        for i, t in zip(asked, top, strict=True)
    ]
    labelled = [i for i, lab in enumerate(data["c_label"]) if lab is not None]
    labels = np.array([data["c_label"][i] or "" for i in range(len(data["c_label"]))])
    top = _top10(vec["c_image"][labelled], vec["c_image"], exclude=np.array(labelled))
    category = [float((labels[t] == labels[i]).mean()) for i, t in zip(labelled, top, strict=True)]
    figures = {
        "hm_colour_variant@10": colour,
        "hm_same_type_p@10": same_type,
        "snapshot_to_hm_type_p@10": snapshot,
        "similar_items_same_type_p@10": similar,
        "similar_items_fused_only_same_type_p@10": fused_only,
        "clothing_category_p@10": category,
    }
    return {k: bootstrap_ci(np.array(v)).to_dict() for k, v in figures.items()}


def _similar_items_space(vec: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Query and catalog rows whose dot product is the similar-items selector's score: the
    weighted mean of the fused and text cosines (`search.similar_items`)."""
    from search.similar_items import SIMILAR_ITEMS_WEIGHTS

    if "hm_text" not in vec:  # the baselines have no text: their item vector alone
        return vec["hm_item"], vec["hm_item"]
    parts = {"fused": vec["hm_item"], "text": vec["hm_text"]}
    total = sum(SIMILAR_ITEMS_WEIGHTS.values())
    queries = np.concatenate([w / total * parts[k] for k, w in SIMILAR_ITEMS_WEIGHTS.items()], 1)
    return queries, np.concatenate([parts[k] for k in SIMILAR_ITEMS_WEIGHTS], 1)


def _top10(queries: np.ndarray, catalog: np.ndarray, exclude: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    """Indices (Q, 10) of each query's 10 nearest catalog rows; a query never finds itself."""
    out = []
    for s in range(0, len(queries), 512):
        sims = queries[s : s + 512] @ catalog.T  # (q, N)
        if exclude is not None:
            rows = np.arange(sims.shape[0])
            sims[rows, exclude[s : s + 512]] = -np.inf
        part = np.argpartition(-sims, 10, axis=1)[:, :10]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def _print_table(results: dict[str, dict]) -> None:
    names = list(results)
    metrics = [k for k in results[names[0]] if k not in ("seconds", "image_cosine_to_float")]
    print("| metric | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for m in metrics:
        cells = []
        for n in names:
            v = results[n][m]
            cells.append(f"{v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
        print(f"| {m} (n={results[names[0]][m]['n']}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
