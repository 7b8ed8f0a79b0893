"""How fast the embedding engine turns catalog photos into stored vectors.

Three figures on the same model, in the same run, on the H&M product photos:

- ``encoder``: the engine's encoder alone (`Encoder.encode_images` on JPEG files: threaded
  decode a few batches ahead of a batched, channels-last forward pass);
- ``end_to_end``: the production path, `embeddings.services.vectors.products_embed` in batches of
  64 products: JPEG bytes read from disk -> image, text and fused vectors -> upserted as
  halfvec rows and committed in Postgres (needs a database: run inside the stack);
- ``plain_loop``: what a developer writes first with open_clip: one image at a time,
  PIL open + open_clip's eval transform + `model.encode_image` under `torch.no_grad()`,
  on the very same model weights.

``--backends`` instead compares, in one run: the default (v2) on ONNX Runtime with its
image graph in int8 (the CPU default, `embeddings.ml.onnx_int8`) and in float, on PyTorch
eager, and the previous default (v1), on images/s, one photo / one text query -> vector and
model load time, with the ratios (bench/results/embed_backends.json)::

    .venv/bin/python bench/embed_throughput.py --backends --threads 1 --n 256

Run (writes bench/results/embed_throughput.json)::

    .venv/bin/python -m webapp.stack exec --throwaway -- \\
        .venv/bin/python bench/embed_throughput.py --images ../shared/datasets/hm/images

Without ``embeddings/default_model/`` weights the bench builds the default architecture
(resnet10t 128 px + MiniLM, 256-d) with random weights: speed does not depend on the values
of the weights, and the results file says which it was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def _images(args: argparse.Namespace) -> list[Path]:
    folder = (
        args.images
        or Path(os.environ.get("VITRINE_DATASETS", BASE_DIR.parent / "shared" / "datasets"))
        / "hm"
        / "images"
    )
    paths = sorted(Path(folder).glob("*.jpg"))
    if len(paths) < args.n:
        raise SystemExit(f"need {args.n} JPEGs in {folder}, found {len(paths)} (see --images)")
    return paths[: args.n]


def _spec(workdir: Path) -> tuple[str, str]:
    """Return (spec, description) of the model to measure."""
    if (BASE_DIR / "embeddings" / "default_model_v2" / "model.safetensors").is_file():
        return "default", "bundled default model (trained weights)"
    from embeddings.ml.loading import save_checkpoint
    from embeddings.ml.train import new_model
    from embeddings.ml.train_config import TrainConfig

    loaded = new_model(TrainConfig())  # the default recipe's architecture
    out = save_checkpoint(loaded.model, loaded.config, workdir / "default-arch", "bench\n")
    return (
        f"checkpoint:{out}",
        "default architecture (timm resnet10t 128 px + MiniLM-L6 text, 256-d), random "
        "weights: embeddings/default_model/ was not installed when this ran",
    )


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def _phone_photo(path: Path) -> bytes:
    """A 12-megapixel JPEG (3000 x 4000) made from a catalog photo: what a phone uploads."""
    import io

    from PIL import Image

    with Image.open(path) as image:
        big = image.convert("RGB").resize((3000, 4000))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bench_query(encoder: Any, paths: list[Path], imported: float, loaded: float) -> dict[str, Any]:
    """One shopper photo / one text query at a time, as the web process encodes them; and
    a phone's 12-megapixel photo (decoded in JPEG draft mode at a fraction of its size)."""
    photos = [p.read_bytes() for p in paths[:40]]
    phone = _phone_photo(paths[0])
    encoder.encode_images([photos[0]])
    encoder.encode_images([phone])
    encoder.encode_texts(["warm-up"])
    image_ms, phone_ms, text_ms = [], [], []
    for photo in photos:
        start = time.perf_counter()
        encoder.encode_images([photo])
        image_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        encoder.encode_images([phone])
        phone_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        encoder.encode_texts(["black wool coat with a hood"])
        text_ms.append(1000 * (time.perf_counter() - start))
    return {
        "cold_import_torch_and_model_package_s": round(imported, 2),
        "cold_model_load_s": round(loaded, 2),
        "image_query_ms_median": round(statistics.median(image_ms), 1),
        "image_query_ms_p90": round(sorted(image_ms)[int(0.9 * len(image_ms))], 1),
        "phone_photo_12mp_query_ms_median": round(statistics.median(phone_ms), 1),
        "phone_photo_12mp_bytes": len(phone),
        "text_query_ms_median": round(statistics.median(text_ms), 1),
        "queries": len(photos),
    }


def bench_encoder(encoder: Any, paths: list[Path], repeats: int) -> dict[str, Any]:
    encoder.encode_images([str(p) for p in paths[:64]])  # warm-up: threads, allocator
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = encoder.encode_images([str(p) for p in paths])
        runs.append(time.perf_counter() - start)
        assert not result.failed, result.failed
    return {
        "images": len(paths),
        "seconds": [round(s, 3) for s in runs],
        "images_per_s": _rate(len(paths), statistics.median(runs)),
        "batch_size": encoder.batch_size,
    }


def bench_breakdown(encoder: Any, paths: list[Path]) -> dict[str, float]:
    """Where an image's time goes on one thread: JPEG decode + resize, then (ONNX Runtime
    encoders) the image graph alone on the decoded, normalised batch of 32."""
    import numpy as np

    from embeddings.ml.images import decode_image

    pre = encoder.preprocess
    runs, arrays = [], []
    for _ in range(2):  # the first warms the file cache
        start = time.perf_counter()
        arrays = [decode_image(p, pre.image_size, pre.resize_mode) for p in paths]
        runs.append(time.perf_counter() - start)
    out = {"decode_ms_per_image": round(1000 * runs[-1] / len(paths), 2)}
    if encoder.ort is not None:
        mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(pre.std, dtype=np.float32).reshape(1, 3, 1, 1)
        pixels = (np.stack(arrays).astype(np.float32) / 255.0 - mean) / std  # (N, 3, S, S)
        encoder.ort.image(pixels[:32])
        start = time.perf_counter()
        for first in range(0, len(pixels), 32):
            encoder.ort.image(pixels[first : first + 32])
        seconds = time.perf_counter() - start
        out["image_graph_ms_per_image"] = round(1000 * seconds / len(pixels), 2)
    return out


def bench_plain_loop(encoder: Any, paths: list[Path], repeats: int) -> dict[str, Any]:
    import open_clip
    import torch
    from PIL import Image

    pre = encoder.preprocess
    transform = open_clip.image_transform(
        pre.image_size,
        is_train=False,
        mean=pre.mean,
        std=pre.std,
        resize_mode="squash" if pre.resize_mode == "squash" else "shortest",
    )
    # The same weights, as plain open_clip code would hold them: contiguous, NCHW.
    model = encoder.model.backbone.to(memory_format=torch.contiguous_format).eval()

    def one(path: Path) -> Any:
        image = transform(Image.open(path).convert("RGB")).unsqueeze(0)
        with torch.no_grad():
            return model.encode_image(image, normalize=True)

    for path in paths[:16]:
        one(path)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            one(path)
        runs.append(time.perf_counter() - start)
    encoder.model.backbone.visual.to(memory_format=torch.channels_last)  # as the engine had it
    return {
        "images": len(paths),
        "seconds": [round(s, 3) for s in runs],
        "images_per_s": _rate(len(paths), statistics.median(runs)),
        "batch_size": 1,
    }


def bench_end_to_end(spec: str, encoder: Any, paths: list[Path], repeats: int) -> dict[str, Any]:
    """products_embed over stored products whose images are these JPEGs, committed."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    django.setup()
    from django.core.files.base import ContentFile
    from django.core.management import call_command

    from catalog.models import Product, ProductImage
    from embeddings import runtime
    from embeddings.models import EmbeddingModel, ProductEmbedding
    from embeddings.services.queue import BATCH_SIZE
    from embeddings.services.registry import embedding_model_prepare, embedding_model_register
    from embeddings.services.vectors import products_embed

    call_command("migrate", verbosity=0)
    model = EmbeddingModel.objects.filter(key="bench").first()
    if model is None:
        model = embedding_model_register(spec=spec, key="bench")
    runtime._encoders[runtime._cache_key(model)] = encoder  # the one loaded above: no second load
    model = embedding_model_prepare(model=model)
    articles = _articles(paths[0].parent.parent / "articles.csv")
    ids = []
    for path in paths:
        row = articles.get(path.stem, {})
        product, _ = Product.objects.get_or_create(
            sku=f"bench-{path.stem}",
            defaults={
                "title": row.get("prod_name") or f"Article {path.stem}",
                "description": row.get("detail_desc", ""),
                "category": row.get("product_type_name", ""),
                "attributes": {"colour": row.get("colour_group_name", "")},
                "content_hash": path.stem,
            },
        )
        if not product.images.exists():
            image = ProductImage(product=product, status=ProductImage.Status.READY)
            image.image.save(f"bench/{path.name}", ContentFile(path.read_bytes()), save=False)
            image.save()
        ids.append(product.pk)
    runs, kinds_seconds = [], []
    for _ in range(repeats):
        ProductEmbedding.objects.filter(model=model).delete()
        start = time.perf_counter()
        kinds: dict[str, float] = {}
        for first in range(0, len(ids), BATCH_SIZE):
            result = products_embed(product_ids=ids[first : first + BATCH_SIZE], model=model)
            for kind, seconds in result.seconds.items():
                kinds[kind] = kinds.get(kind, 0.0) + seconds
        runs.append(time.perf_counter() - start)
        kinds_seconds.append(kinds)
        stored = ProductEmbedding.objects.filter(model=model).count()
        assert stored == 3 * len(ids), stored
    best = runs.index(statistics.median(runs)) if len(runs) % 2 else 0
    all_kinds = {
        "what": "production path: products_embed, image + text + fused vectors per product",
        "images": len(ids),
        "seconds": [round(s, 3) for s in runs],
        "images_per_s": _rate(len(ids), statistics.median(runs)),
        "vectors_per_product": 3,
        "batch_size": BATCH_SIZE,
        "encode_seconds": {k: round(v, 3) for k, v in kinds_seconds[best].items()},
    }
    # The same comparison the plain loop makes: image vectors only, through the same
    # reads and the same upsert, committed per batch of 64.
    from embeddings.services.vectors import _vectors_write

    image_runs = []
    for _ in range(repeats):
        ProductEmbedding.objects.filter(model=model).delete()
        start = time.perf_counter()
        for first in range(0, len(ids), BATCH_SIZE):
            batch = list(
                Product.objects.filter(id__in=ids[first : first + BATCH_SIZE])
                .prefetch_related("images")
                .order_by("id")
            )
            photos = [p.images.all()[0].image.path for p in batch]
            result = encoder.encode_images(photos)
            rows = [(batch[i].pk, "image", result.vectors[r]) for r, i in enumerate(result.indices)]
            hashes = {p.pk: p.content_hash for p in batch}
            _vectors_write(model=model, rows=rows, hashes=hashes, image_failed=[])
        image_runs.append(time.perf_counter() - start)
        assert ProductEmbedding.objects.filter(model=model).count() == len(ids)
    image_only = {
        "what": "JPEG files -> image vectors -> upserted and committed, batches of 64",
        "images": len(ids),
        "seconds": [round(s, 3) for s in image_runs],
        "images_per_s": _rate(len(ids), statistics.median(image_runs)),
    }
    return {"image_vectors": image_only, "all_kinds": all_kinds}


def bench_backends(paths: list[Path], repeats: int, onnx_dir: Path) -> dict[str, Any]:
    """The default on ONNX Runtime (int8 and float image graph) and on PyTorch eager, and
    the previous default, in one run: load time (export and quantization excluded: they
    happen once per weights, before), images/s of the encoder, one photo and one text query
    -> vector; and the ratios between them."""
    from embeddings.ml.loading import load_encoder
    from embeddings.ml.onnx_int8 import int8_kernels

    load_encoder("default", device="cpu", onnx_dir=onnx_dir, int8=True)  # once, untimed
    runs: dict[str, Any] = {"cpu_int8_kernels": int8_kernels()}
    for name, spec, folder, int8 in (
        ("default_v2_onnxruntime_int8", "default", onnx_dir, True),
        ("default_v2_onnxruntime_float", "default", onnx_dir, False),
        ("default_v2_torch_eager", "default", None, None),
        ("default_v1_torch_eager", "default:v1", None, None),
        ("default_v1_onnxruntime", "default:v1", onnx_dir, None),
    ):
        started = time.perf_counter()
        encoder = load_encoder(spec, device="cpu", onnx_dir=folder, int8=int8)
        loaded = time.perf_counter() - started
        figures = {
            "backend": encoder.backend,
            "model_load_s": round(loaded, 2),
            **bench_encoder(encoder, paths, repeats),
            **bench_breakdown(encoder, paths),
            **{
                k: v
                for k, v in bench_query(encoder, paths, 0.0, loaded).items()
                if k.endswith("_median")
            },
        }
        encoder.close()
        runs[name] = figures
        print(name, figures, flush=True)
    rates = {name: run["images_per_s"] for name, run in runs.items() if isinstance(run, dict)}
    runs["ratios"] = {
        f"{new}_to_{old}": round(rates[f"default_{new}"] / rates[f"default_{old}"], 2)
        for new, old in (
            ("v2_onnxruntime_int8", "v2_onnxruntime_float"),  # the default before int8
            ("v2_onnxruntime_int8", "v2_torch_eager"),
            ("v2_onnxruntime_int8", "v1_torch_eager"),
            ("v2_onnxruntime_float", "v2_torch_eager"),
            ("v2_onnxruntime_float", "v1_torch_eager"),
        )
    }
    return runs


def _articles(path: Path) -> dict[str, dict[str, str]]:
    """H&M article rows by id, so products carry the text an import would give them."""
    if not path.is_file():
        return {}
    import csv

    with path.open(newline="") as handle:
        return {row["article_id"]: row for row in csv.DictReader(handle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="folder of JPEGs (default: H&M images)")
    parser.add_argument("--n", type=int, default=512, help="images per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--spec", help="model spec (default: the bundled default model)")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("VITRINE_TORCH_THREADS", "0")) or os.cpu_count() or 1,
        help="torch threads for every figure (the stack's worker uses cores / concurrency)",
    )
    parser.add_argument("--no-db", action="store_true", help="skip the end-to-end figure")
    parser.add_argument(
        "--backends",
        action="store_true",
        help="only compare the new default on ONNX Runtime / PyTorch and the previous one",
    )
    parser.add_argument(
        "--out", type=Path, default=BASE_DIR / "bench" / "results" / "embed_throughput.json"
    )
    args = parser.parse_args()
    paths = _images(args)

    os.environ["VITRINE_TORCH_THREADS"] = str(args.threads)  # the Encoder reads it
    started = time.perf_counter()
    import torch

    from embeddings.ml.loading import load_encoder

    imported = time.perf_counter() - started
    if args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            figures = {
                "threads": args.threads,
                "images": len(paths),
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                "cold_import_torch_and_model_package_s": round(imported, 2),
                **bench_backends(paths, args.repeats, Path(tmp) / "onnx"),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            }
        out = args.out.with_name("embed_backends.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures["ratios"]), "->", out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        spec, described = (args.spec, args.spec) if args.spec else _spec(Path(tmp))
        started = time.perf_counter()
        onnx_dir = Path(tmp) / "onnx"
        if spec == "default":  # export once before timing the load, as a warm install has
            from embeddings.ml.onnx_runtime import onnx_export

            onnx_export(load_encoder(spec, device="cpu").loaded, onnx_dir)
        started = time.perf_counter()
        encoder = load_encoder(spec, onnx_dir=onnx_dir)
        loaded = time.perf_counter() - started
        figures: dict[str, Any] = {
            "model": described,
            "spec": spec if not spec.startswith("checkpoint:/tmp") else "default architecture",
            "dimension": encoder.dim,
            "image_size": encoder.preprocess.image_size,
            "dataset": f"H&M product photos ({paths[0].parent})",
            "device": str(encoder.device),
            "gpu": "none: this machine has no GPU (CPU-only figures)",
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__,
        }
        figures["query"] = bench_query(encoder, paths, imported, loaded)
        print("query", figures["query"], flush=True)
        figures["encoder"] = bench_encoder(encoder, paths, args.repeats)
        print("encoder", figures["encoder"], flush=True)
        figures["plain_loop"] = bench_plain_loop(encoder, paths, args.repeats)
        print("plain loop", figures["plain_loop"], flush=True)
        if not args.no_db:
            end_to_end = bench_end_to_end(spec, encoder, paths, args.repeats)
            figures["end_to_end"] = end_to_end["image_vectors"]
            figures["end_to_end_all_kinds"] = end_to_end["all_kinds"]
            print("end to end", end_to_end, flush=True)
        plain = figures["plain_loop"]["images_per_s"]
        figures["speedup_vs_plain_loop"] = {
            name: round(figures[name]["images_per_s"] / plain, 2)
            for name in ("encoder", "end_to_end", "end_to_end_all_kinds")
            if name in figures
        }
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures["speedup_vs_plain_loop"]), "->", args.out)


if __name__ == "__main__":
    main()
