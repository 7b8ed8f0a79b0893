"""What a frozen packaged image trunk finds under other views of a catalog photo: the input
pipeline, and the tower (`--tower`), as levers on "photo -> colour variant".

v2's EfficientNet-Lite0 trunk (frozen, no head; `--tower lite1`/`lite2` for the larger
packaged ones, `embeddings.ml.packaged`) reads each H&M photo as

- ``crop:S``: the centre square, resized to S x S (today's pipeline, `decode_image`);
- ``squash:S``: the whole photo resized to S x S (aspect not kept);
- ``full:WxH``: the whole photo fitted into W x H, white around it (a CNN reads any size;
  H&M's photos are portrait, about 2:3, so the centre square drops their top and bottom).

For each view: colour variant@10 and photo -> same type P@10 over the whole H&M catalog
(held-out product codes as queries, `bench/relevance.py`'s split and metrics), and clothing
photo -> photo same label P@10 (held-out senders, the clothing photos read in the same view),
by the pooled vector and by the 3x3 grid tokens, with bootstrap CIs, and the image graph's
time an image (float ONNX Runtime, the machine's threads; compare views within one run).
With `--speed` (`--speed-only`: nothing else), also the graph alone on one thread, batch 32,
in float and in int8 (static QDQ, `embeddings.ml.onnx_int8`'s config, ranges measured on 128
clothing training photos in the same view), interleaved with lite0 at crop:160 (v2's trunk
and view) so that the ratio holds when other work loads the machine, and the int8 pooled
vectors' cosine to the float ones on 256 H&M photos.

    python bench/trunk_views.py --datasets ../shared/datasets \\
        --view crop:160 --view squash:160 --view full:160x240 --view full:128x192
    python bench/trunk_views.py --tower lite2 --view crop:260 --view full:224x336 --speed \\
        --out bench/results/trunk_views_towers.json

Figures go to `--out` (bench/results/trunk_views.json), by tower and view; a run adds to
what the file holds. The trunk alone, not the shipped model: the head of v2 keeps nearly
all of what the trunk's vectors find (README, "the frozen image trunk alone").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import relevance  # bench/relevance.py: the split, the data and the top-10 search

SPEED_BATCH = 32  # the encoder's batch (`embed_throughput`'s figures are at 32 too)
CALIBRATION_PHOTOS = 128  # as `python -m embeddings.ml int8-calibrate` draws them (seed 0)
COSINE_PHOTOS = 256
BASELINE_VIEW = "crop:160"  # v2's trunk reads the centre square at 160 px


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--tower", default="lite0", help="lite0, lite1, lite2 (packaged)")
    parser.add_argument("--view", action="append", default=None, help="crop:S, squash:S, full:WxH")
    parser.add_argument("--speed", action="store_true", help="1-thread float and int8 images/s")
    parser.add_argument("--speed-only", action="store_true", help="--speed, no relevance")
    parser.add_argument("--cache", type=Path, default=Path(".cache/trunk_views"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/trunk_views.json"))
    args = parser.parse_args()
    args.speed = args.speed or args.speed_only
    views = args.view or ["crop:160", "squash:160", "full:160x240", "full:128x192"]
    tower = args.tower if args.tower.startswith("efficientnet_") else f"efficientnet_{args.tower}"

    data = relevance._load(args.datasets)
    graph = _trunk_graph(tower, args.cache)
    session = _session(graph)
    command = (
        f"nice -n 10 python bench/trunk_views.py --tower {args.tower} "
        + " ".join(f"--view {v}" for v in views)
        + (" --speed-only" if args.speed_only else " --speed" if args.speed else "")
        + f" --out {args.out}"
    )
    if args.speed_only:
        for view in views:
            load_before = os.getloadavg()
            speed = _speed(graph, data, args.datasets, view, args.cache)
            print(f"{tower} {view:14s} " + json.dumps(speed), flush=True)
            row = {
                "speed_1_thread": speed,
                "speed_load_average": [list(load_before), list(os.getloadavg())],
                "speed_command": command,
            }
            _save(args.out, tower, view, row, int(data["hm_query"].sum()), None)
        return 0
    for view in views:
        load_before = os.getloadavg()
        pooled, grid, ms = _features(session, data["hm_files"], view)
        c_pooled, c_grid, _ = _features(session, data["c_files"], view)
        width, height = _size(view)
        row = {
            "pixels_vs_160_square": round(width * height / 160**2, 2),
            "graph_ms_per_image": round(ms, 2),
            "pooled": _metrics(data, _unit(pooled), _unit(c_pooled)),
            "grid": _metrics(data, _tokens(grid), _tokens(c_grid)),
        }
        del pooled, grid, c_pooled, c_grid
        if args.speed:
            row["speed_1_thread"] = _speed(graph, data, args.datasets, view, args.cache)
        row["load_average"] = [list(load_before), list(os.getloadavg())]
        print(
            f"{tower} {view:14s} x{row['pixels_vs_160_square']:.2f} px  {ms:5.2f} ms  "
            f"colour variant@10 pooled {row['pooled']['hm_colour_variant@10']['value']:.3f} "
            f"grid {row['grid']['hm_colour_variant@10']['value']:.3f}  same type P@10 "
            f"pooled {row['pooled']['hm_same_type_p@10']['value']:.3f} "
            f"grid {row['grid']['hm_same_type_p@10']['value']:.3f}  clothing P@10 "
            f"pooled {row['pooled']['clothing_category_p@10']['value']:.3f} "
            f"grid {row['grid']['clothing_category_p@10']['value']:.3f}  "
            + json.dumps(row.get("speed_1_thread", {})),
            flush=True,
        )
        # Written after each view: a long run stopped halfway keeps what it measured.
        _save(args.out, tower, view, row, int(data["hm_query"].sum()), command)
    return 0


def _save(out: Path, tower: str, view: str, row: dict, queries: int, command: str | None) -> None:
    """Add `row` under `tower` and `view` to the figures `out` holds, over what it held there
    (a file in another layout, or none, starts afresh); `command` None: a speed-only row."""
    held = json.loads(out.read_text()) if out.is_file() else {}
    if "towers" not in held:
        held = {"towers": {}}
    entry = held["towers"].setdefault(
        tower, {"about": f"{tower} (packaged), frozen, no head; float ONNX Runtime", "views": {}}
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stamp = {"command": command, "measured_at": now} if command else {"speed_measured_at": now}
    entry["views"][view] = {**entry["views"].get(view, {}), **row, **stamp}
    held["queries"] = queries
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(held, indent=2) + "\n")


def _size(view: str) -> tuple[int, int]:
    kind, _, size = view.partition(":")
    if kind == "full":
        width, _, height = size.partition("x")
        return int(width), int(height)
    return int(size), int(size)


def _trunk_graph(tower_name: str, cache: Path) -> Path:
    """Float ONNX graph of the packaged trunk with any input height and width, answering
    (pooled features, the last feature map); exported once per tower into `cache`."""
    import timm
    import torch

    from embeddings.ml.packaged import packaged_tower, tower_state

    tower = packaged_tower(tower_name)
    path = cache / f"{tower.name.removeprefix('efficientnet_')}_any_size.onnx"
    if path.is_file():
        return path
    trunk = timm.create_model(tower.timm_arch, pretrained=False, num_classes=0)
    trunk.load_state_dict(tower_state(tower, trunk))
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
    return path


def _session(graph: Path, threads: int | None = None):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


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


def _pixels(files: list[Path], view: str) -> np.ndarray:
    """Normalised pixels (B, 3, H, W) of `files` in `view` (ImageNet mean and std)."""
    from embeddings.ml.loading import IMAGENET_MEAN, IMAGENET_STD

    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    with ThreadPoolExecutor(2) as pool:
        decoded = list(pool.map(lambda f: _decode(f, view), files))
    return (np.stack(decoded).astype(np.float32) / 255.0 - mean) / std


def _features(session, files: list[Path], view: str) -> tuple[np.ndarray, np.ndarray, float]:  # type: ignore[no-untyped-def]
    """Pooled features (N, F), 3x3 grid tokens (N, 9, F) and the graph's ms an image.

    Photos are decoded a batch at a time: a whole catalog's pixels at 224 x 336 would hold
    several GB.
    """
    import torch

    pooled, grid, graph_s = [], [], 0.0
    session.run(None, {"x": _pixels(files[:1], view)})  # warm
    for start in range(0, len(files), 32):
        batch = _pixels(files[start : start + 32], view)
        began = time.perf_counter()
        p, fmap = session.run(None, {"x": batch})
        graph_s += time.perf_counter() - began
        pooled.append(p)
        tokens = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(fmap), (3, 3))
        grid.append(tokens.flatten(2).transpose(1, 2).numpy())
    return np.concatenate(pooled), np.concatenate(grid), 1000 * graph_s / len(files)


def _speed(graph: Path, data: dict, datasets: Path, view: str, cache: Path) -> dict:
    """The graph alone on one thread, batch 32, float and int8: images/s (best of 5 rounds
    over 4 batches of H&M photos), each round timing lite0 at crop:160 (the baseline) right
    after it; and the int8 pooled vectors' cosine to the float ones."""
    baseline = _trunk_graph("efficientnet_lite0", cache)
    arms = {
        "float": (graph, view),
        "int8": (_int8_graph(graph, datasets, view, cache), view),
        "baseline_float": (baseline, BASELINE_VIEW),
        "baseline_int8": (_int8_graph(baseline, datasets, BASELINE_VIEW, cache), BASELINE_VIEW),
    }
    pixels = {v: _pixels(data["hm_files"][:COSINE_PHOTOS], v) for v in {view, BASELINE_VIEW}}
    sessions = {name: _session(path, threads=1) for name, (path, _) in arms.items()}
    batches = {
        name: [pixels[v][s : s + SPEED_BATCH] for s in range(0, 4 * SPEED_BATCH, SPEED_BATCH)]
        for name, (_, v) in arms.items()
    }
    for name, session in sessions.items():
        session.run(None, {"x": batches[name][0]})  # warm
    best = dict.fromkeys(arms, float("inf"))
    for _ in range(5):
        for name, session in sessions.items():
            began = time.perf_counter()
            for batch in batches[name]:
                session.run(None, {"x": batch})
            best[name] = min(best[name], time.perf_counter() - began)
    out: dict = {"batch": SPEED_BATCH, "baseline": f"efficientnet_lite0 {BASELINE_VIEW}"}
    for name, seconds in best.items():
        out[f"{name}_images_per_s"] = round(4 * SPEED_BATCH / seconds, 1)
    out["int8_to_baseline_int8"] = round(best["baseline_int8"] / best["int8"], 3)
    out["int8_to_float"] = round(best["float"] / best["int8"], 2)
    pooled = {}
    for name in ("float", "int8"):
        parts = range(0, COSINE_PHOTOS, SPEED_BATCH)
        runs = [sessions[name].run(None, {"x": pixels[view][s : s + SPEED_BATCH]}) for s in parts]
        pooled[name] = np.concatenate([run[0] for run in runs])
    cos = (_unit(pooled["int8"]) * _unit(pooled["float"])).sum(1)
    out["int8_pooled_cosine_to_float"] = {
        "n": len(cos),
        "mean": round(float(cos.mean()), 4),
        "p01": round(float(np.quantile(cos, 0.01)), 4),
        "min": round(float(cos.min()), 4),
    }
    return out


def _int8_graph(graph: Path, datasets: Path, view: str, cache: Path) -> Path:
    """The int8 graph of `graph` as the project quantizes its image trunk (static QDQ,
    `onnx_int8.QUANT_CONFIG`: stem, first block and MatMuls float), calibrated on clothing
    training photos in `view`; cached by graph and view."""
    import tempfile

    from onnxruntime.quantization import quantize_static

    from embeddings.ml.data import load_clothing
    from embeddings.ml.default_recipe import HOLDOUT_FRACTION, MAX_SENDER_SHARE
    from embeddings.ml.onnx_int8 import QUANT_CONFIG, _prepared, _quantize_kwargs, int8_kernels

    kernels = int8_kernels()
    if kernels is None:
        raise SystemExit("this CPU has no int8 kernels worth measuring")
    out = cache / f"{graph.stem}.int8-{view.replace(':', '-')}-{kernels}.onnx"
    if out.is_file():
        return out
    train, _ = load_clothing(datasets / "clothing").split_by_lookbook(
        HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE
    )
    drawn = np.random.default_rng(0).choice(len(train.items), CALIBRATION_PHOTOS, replace=False)
    files = [train.image_file(train.items[i]) for i in sorted(drawn)]

    class Reader:
        def __init__(self) -> None:
            self._batches = iter(range(0, len(files), 16))

        def get_next(self) -> dict | None:
            start = next(self._batches, None)
            return None if start is None else {"x": _pixels(files[start : start + 16], view)}

    import onnx

    with tempfile.TemporaryDirectory(prefix="trunk-views-int8-") as tmp:
        prepared = _prepared(graph, Path(tmp))
        # This graph's node names put the blocks under "/blocks/" ("/blocks/blocks.0/...")
        # where the model's image graph starts at "/blocks.0/": match the parts anywhere.
        prefixes = QUANT_CONFIG["float_node_prefixes"]
        nodes = onnx.load(str(prepared), load_external_data=False).graph.node
        keep = [
            n.name
            for n in nodes
            if any(p in n.name for p in prefixes) or n.op_type in QUANT_CONFIG["float_op_types"]
        ]
        if not all(any(p in k for k in keep) for p in prefixes):
            raise SystemExit(f"{graph}: no nodes named {prefixes}: cannot keep them in float")
        quantize_static(
            str(prepared), str(out), Reader(), **_quantize_kwargs(keep, kernels=kernels)
        )
    return out


def _unit(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-9)


def _tokens(grid: np.ndarray) -> np.ndarray:
    """One vector of the 9 unit grid tokens side by side, unit length (grid-token search)."""
    return _unit(_unit(grid).reshape(len(grid), -1))


def _metrics(data: dict, vectors: np.ndarray, clothing: np.ndarray) -> dict:
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
    # As bench/relevance.py reads it: a labelled held-out clothing photo against the others.
    labelled = np.array([i for i, lab in enumerate(data["c_label"]) if lab is not None])
    labels = np.array([lab or "" for lab in data["c_label"]])
    top = relevance._top10(clothing[labelled], clothing, exclude=labelled)
    category = [float((labels[t] == labels[i]).mean()) for i, t in zip(labelled, top, strict=True)]
    return {
        "hm_colour_variant@10": bootstrap_ci(np.array(colour)).to_dict(),
        "hm_same_type_p@10": bootstrap_ci(np.array(same_type)).to_dict(),
        "clothing_category_p@10": bootstrap_ci(np.array(category)).to_dict(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
