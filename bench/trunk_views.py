"""What the frozen image trunk finds under other views of a catalog photo: the input pipeline
as a lever on "photo -> colour variant", at equal and at larger pixel budgets.

v2's EfficientNet-Lite0 trunk (frozen, no head) reads each H&M photo as

- ``crop:S``: the centre square, resized to S x S (today's pipeline, `decode_image`);
- ``squash:S``: the whole photo resized to S x S (aspect not kept);
- ``full:WxH``: the whole photo fitted into W x H, white around it (a CNN reads any size;
  H&M's photos are portrait, about 2:3, so the centre square drops their top and bottom).

For each view: colour variant@10 and photo -> same type P@10 over the whole H&M catalog
(held-out product codes as queries, `bench/relevance.py`'s split and metrics) by the pooled
vector and by the 3x3 grid tokens, with bootstrap CIs, and the image graph's time an image
(float ONNX Runtime, the machine's threads; compare views within one run).

    python bench/trunk_views.py --datasets ../shared/datasets \\
        --view crop:160 --view squash:160 --view full:160x240 --view full:128x192

Figures go to bench/results/trunk_views.json. The trunk alone, not the shipped model: the
head of v2 keeps nearly all of what the trunk's vectors find (README, "the frozen image
trunk alone").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import relevance  # bench/relevance.py: the split, the data and the top-10 search


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--view", action="append", default=None, help="crop:S, squash:S, full:WxH")
    parser.add_argument("--cache", type=Path, default=Path(".cache/trunk_views"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/trunk_views.json"))
    args = parser.parse_args()
    views = args.view or ["crop:160", "squash:160", "full:160x240", "full:128x192"]

    data = relevance._load(args.datasets)
    session = _trunk_session(args.cache)
    results = {}
    for view in views:
        pooled, grid, ms = _features(session, data["hm_files"], view)
        width, height = _size(view)
        results[view] = {
            "pixels_vs_160_square": round(width * height / 160**2, 2),
            "graph_ms_per_image": round(ms, 2),
            "pooled": _metrics(data, _unit(pooled)),
            "grid": _metrics(data, _unit(_unit(grid).reshape(len(grid), -1))),
        }
        row = results[view]
        print(
            f"{view:14s} x{row['pixels_vs_160_square']:.2f} px  {ms:5.2f} ms  colour variant@10 "
            f"pooled {row['pooled']['hm_colour_variant@10']['value']:.3f} "
            f"grid {row['grid']['hm_colour_variant@10']['value']:.3f}  same type P@10 "
            f"pooled {row['pooled']['hm_same_type_p@10']['value']:.3f} "
            f"grid {row['grid']['hm_same_type_p@10']['value']:.3f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "tower": "efficientnet_lite0 (packaged), frozen, no head; float ONNX Runtime",
                "views": results,
                "queries": int(data["hm_query"].sum()),
                "command": "python bench/trunk_views.py " + " ".join(f"--view {v}" for v in views),
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    return 0


def _size(view: str) -> tuple[int, int]:
    kind, _, size = view.partition(":")
    if kind == "full":
        width, _, height = size.partition("x")
        return int(width), int(height)
    return int(size), int(size)


def _trunk_session(cache: Path):  # type: ignore[no-untyped-def]
    """ONNX Runtime session of the packaged lite0 trunk with any input height and width,
    answering (pooled features, the last feature map)."""
    import onnxruntime as ort
    import timm
    import torch

    from embeddings.ml.packaged import packaged_tower, tower_state

    path = cache / "lite0_any_size.onnx"
    if not path.is_file():
        trunk = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
        trunk.load_state_dict(tower_state(packaged_tower("efficientnet_lite0"), trunk))
        trunk.eval()

        class Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.trunk = trunk  # a submodule, so tracing reads its weights as parameters

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                fmap = self.trunk.forward_features(x)
                return fmap.mean((2, 3)), fmap

        cache.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(
            Graph(), (torch.randn(2, 3, 160, 160),), str(path), input_names=["x"],
            output_names=["pooled", "fmap"], opset_version=17, dynamo=False,
            dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "pooled": {0: "b"},
                          "fmap": {0: "b", 2: "fh", 3: "fw"}},
        )  # fmt: skip
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _decode(path: Path, view: str) -> np.ndarray:
    from PIL import Image, ImageOps

    kind = view.partition(":")[0]
    width, height = _size(view)
    with Image.open(path) as img:
        img.draft("RGB", (width, height))
        img = img.convert("RGB")
        w, h = img.size
        if kind == "crop":
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize(
                (width, height), Image.Resampling.BICUBIC
            )
        elif kind == "squash":
            img = img.resize((width, height), Image.Resampling.BICUBIC)
        elif kind == "full":
            img = ImageOps.pad(img, (width, height), Image.Resampling.BICUBIC, color="white")
        else:
            raise SystemExit(f"unknown view {view!r}: crop:S, squash:S or full:WxH")
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _features(session, files: list[Path], view: str) -> tuple[np.ndarray, np.ndarray, float]:  # type: ignore[no-untyped-def]
    """Pooled features (N, 1280), 3x3 grid tokens (N, 9, 1280) and the graph's ms an image."""
    import torch

    from embeddings.ml.loading import IMAGENET_MEAN, IMAGENET_STD

    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    with ThreadPoolExecutor(2) as pool:
        pixels = list(pool.map(lambda f: _decode(f, view), files))
    pooled, grid, graph_s = [], [], 0.0
    session.run(None, {"x": (pixels[0][None].astype(np.float32) / 255.0 - mean) / std})  # warm
    for start in range(0, len(pixels), 32):
        batch = (np.stack(pixels[start : start + 32]).astype(np.float32) / 255.0 - mean) / std
        began = time.perf_counter()
        p, fmap = session.run(None, {"x": batch})
        graph_s += time.perf_counter() - began
        pooled.append(p)
        tokens = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(fmap), (3, 3))
        grid.append(tokens.flatten(2).transpose(1, 2).numpy())
    return np.concatenate(pooled), np.concatenate(grid), 1000 * graph_s / len(pixels)


def _unit(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-9)


def _metrics(data: dict, vectors: np.ndarray) -> dict:
    from embeddings.ml.evaluation.bootstrap import bootstrap_ci

    q = np.flatnonzero(data["hm_query"])
    code, ptype = data["hm_code"], data["hm_type"]
    variants = dict(zip(*np.unique(code, return_counts=True), strict=True))
    top = relevance._top10(vectors[q], vectors, exclude=q)
    colour = [
        float((code[t] == code[i]).any())
        for i, t in zip(q, top, strict=True)
        if variants[code[i]] >= 2
    ]
    same_type = [float((ptype[t] == ptype[i]).mean()) for i, t in zip(q, top, strict=True)]
    return {
        "hm_colour_variant@10": bootstrap_ci(np.array(colour)).to_dict(),
        "hm_same_type_p@10": bootstrap_ci(np.array(same_type)).to_dict(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
