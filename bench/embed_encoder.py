"""Encoder-only benchmark: `Encoder.encode_images` vs a plain one-image-at-a-time loop.

    python bench/embed_encoder.py [--dataset DIR] [--model default] [--n 512] [--threads 2]

Both sides use the same model (`--model`, a load_encoder spec) and the same H&M photos
(`--dataset`, else `$VITRINE_DATASETS`, else ../shared/datasets). The plain loop is what
open_clip's README does: PIL open, open_clip's own preprocessing transform, one
`encode_image` call per photo under no_grad. The Encoder batches, decodes in threads ahead
of the model (with JPEG draft decoding), runs under inference_mode with NHWC layout.

Also measures single-photo query latency (bytes in, vector out: what a shopper's upload
costs) on a clothing photo and on a synthetic 12-megapixel phone photo.

Writes bench/results/embed_encoder.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=None, help="datasets root")
    parser.add_argument("--model", default="default", help="load_encoder spec")
    parser.add_argument("--n", type=int, default=512, help="photos for the Encoder run")
    parser.add_argument("--n-plain", type=int, default=256, help="photos for the plain loop")
    parser.add_argument("--threads", type=int, default=2, help="torch + decode threads")
    parser.add_argument(
        "--query-threads",
        type=int,
        default=1,
        help="torch threads for the single-photo latency (a web worker serves one query per "
        "thread; on a busy 2-core box one thread avoids OpenMP contention)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/embed_encoder.json")
    args = parser.parse_args()

    root = args.dataset or Path(os.environ.get("VITRINE_DATASETS", ROOT.parent / "shared/datasets"))
    hm = sorted((root / "hm" / "images").glob("*.jpg"))
    if not hm:
        sys.exit(f"no H&M photos under {root / 'hm' / 'images'} (pass --dataset)")
    os.environ["VITRINE_TORCH_THREADS"] = str(args.threads)

    import numpy as np
    import open_clip
    import torch
    from PIL import Image

    from embeddings.ml.loading import load_encoder

    load_at_start = os.getloadavg()[0]  # the box is shared: say how busy it was
    torch.set_num_threads(args.threads)
    enc = load_encoder(args.model, device="cpu")
    enc.workers = args.threads
    photos = [str(p) for p in hm[: args.n]]

    # -- plain loop: one photo at a time, open_clip's transform ---------------------------
    pre = enc.preprocess
    transform = open_clip.image_transform(
        pre.image_size, is_train=False, mean=pre.mean, std=pre.std
    )
    visual: Any = enc.model.backbone.visual
    plain_photos = photos[: args.n_plain]

    def plain(path: str) -> np.ndarray:
        with torch.no_grad():
            x = transform(Image.open(path).convert("RGB")).unsqueeze(0)
            v = torch.nn.functional.normalize(visual(x), dim=-1)
        return v[0].numpy()

    for p in plain_photos[:5]:
        plain(p)  # warm-up
    t = time.perf_counter()
    plain_vecs = np.stack([plain(p) for p in plain_photos])
    plain_s = time.perf_counter() - t

    # -- Encoder ------------------------------------------------------------------------
    enc.encode_images(photos[:64])  # warm-up (threads, allocator)
    t = time.perf_counter()
    res = enc.encode_images(photos)
    enc_s = time.perf_counter() - t
    assert not res.failed, res.failed
    # Same model, slightly different resize path (draft + one resize vs torchvision):
    agreement = float(np.mean(np.sum(res.vectors[: len(plain_vecs)] * plain_vecs, axis=1)))

    # -- single-photo query latency -----------------------------------------------------
    clothing = sorted((root / "clothing" / "images").glob("*.jpg"))[:1]
    query_sources = {"clothing_photo": (clothing[0].read_bytes() if clothing else None)}
    big = Image.open(hm[0]).convert("RGB").resize((3000, 4000))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    query_sources["phone_photo_12mp"] = buf.getvalue()
    latency = {}
    torch.set_num_threads(args.query_threads)
    for name, data in query_sources.items():
        if data is None:
            continue
        for _ in range(5):
            enc.encode_images([data])
        times = []
        for _ in range(30):
            t = time.perf_counter()
            enc.encode_images([data])
            times.append((time.perf_counter() - t) * 1000)
        latency[name] = {
            "median_ms": round(statistics.median(times), 1),
            "p90_ms": round(sorted(times)[int(0.9 * len(times)) - 1], 1),
            "bytes": len(data),
        }

    figures = {
        "model": args.model,
        "weights_sha256": enc.weights_sha256,
        "image_size": pre.image_size,
        "threads": args.threads,
        "query_threads": args.query_threads,
        "load_average_at_start": load_at_start,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0],
        "plain_loop": {
            "images": len(plain_photos),
            "seconds": round(plain_s, 2),
            "images_per_s": round(len(plain_photos) / plain_s, 1),
        },
        "encoder": {
            "images": len(photos),
            "seconds": round(enc_s, 2),
            "images_per_s": round(len(photos) / enc_s, 1),
            "batch_size": enc.batch_size,
        },
        "speedup": round((len(photos) / enc_s) / (len(plain_photos) / plain_s), 2),
        "mean_cosine_encoder_vs_plain": round(agreement, 4),
        "query_latency": latency,
        "command": "python bench/embed_encoder.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
