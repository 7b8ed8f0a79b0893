"""What a web process pays to answer queries: the full encoder vs serving from the export.

A web process answers a shopper's photo, words or scene with one model version. Two ways
to hold that model, each measured in its own fresh process, alternated over repeats:

- ``full``: what `embeddings.runtime.encoder_for` loads, `Encoder(load_model(spec),
  onnx_dir=...)`: the whole PyTorch model built (torch, open_clip, transformers, timm
  imported) and then run on ONNX Runtime;
- ``served``: what `runtime.query_encoder_for` loads once the export has its serving files,
  `embeddings.ml.serving.serving_encoder_load`: onnxruntime, numpy, PIL, tokenizers.

Each process first starts the web app (``django.setup()``, the URLconf, the WSGI
application), then loads the encoder and answers the same mixed queries: H&M product
names as text queries, H&M photos as photo queries (vector + class logits, as photo search
asks), and every tenth a scene query (`embeddings.ml.regions.scene_encode`). It reports
its resident memory after start-up, after the load and after the queries, the load time,
Python's object count, every garbage-collection pass during the queries (`gc.callbacks`),
one full collection at the end, and the queries' latencies.

Run (writes bench/results/serving_process.json)::

    nice -n 10 .venv/bin/python -m webapp.stack exec --throwaway -- \\
        .venv/bin/python bench/serving_process.py --queries 200 --repeats 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
HEAVY = ("torch", "open_clip", "transformers", "timm")


def _queries(datasets: Path, count: int) -> list[dict[str, str]]:
    """Mixed queries: texts and photos alternating, every tenth a scene (an H&M photo)."""
    with (datasets / "hm" / "articles.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    photos = sorted((datasets / "hm" / "images").glob("*.jpg"))
    out = []
    for i in range(count):
        row = rows[(i * 37) % len(rows)]
        if i % 10 == 9:
            out.append({"kind": "scene", "photo": str(photos[(i * 13) % len(photos)])})
        elif i % 2:
            out.append({"kind": "photo", "photo": str(photos[(i * 13) % len(photos)])})
        else:
            words = f"{row['colour_group_name']} {row['prod_name']}".lower()
            out.append({"kind": "text", "text": words})
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def child(mode: str, spec: str, onnx_dir: Path, queries_file: Path) -> dict[str, Any]:
    """One web process: start the app, load the encoder `mode`'s way, answer the queries."""
    import gc

    import django

    started = time.perf_counter()
    django.setup()
    from django.urls import get_resolver

    _ = get_resolver().url_patterns  # the URLconf imports every view module
    from webapp.wsgi import application  # noqa: F401  (what a web worker imports)

    app_seconds = time.perf_counter() - started
    rss_app = _rss_mb()
    objects_app = len(gc.get_objects())
    start = time.perf_counter()
    if mode == "full":
        from embeddings.ml.loading import load_encoder

        encoder: Any = load_encoder(spec, device="cpu", onnx_dir=onnx_dir)
    else:
        from embeddings.ml.serving import export_dir, serving_encoder_load

        encoder = serving_encoder_load(export_dir(onnx_dir, sha256_of_export(onnx_dir)))
        if encoder is None:
            raise SystemExit("the export has no serving files: run the full load first")
    load_seconds = time.perf_counter() - start
    from embeddings.ml.regions import scene_encode

    rss_loaded = _rss_mb()
    objects = len(gc.get_objects())
    queries = json.loads(queries_file.read_text())
    passes: list[tuple[int, float]] = []
    began: list[float] = []

    def timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began.append(time.perf_counter())
        elif began:
            passes.append((info["generation"], time.perf_counter() - began.pop()))

    latencies: dict[str, list[float]] = {"text": [], "photo": [], "scene": []}
    gc.callbacks.append(timer)
    for query in queries:
        t = time.perf_counter()
        if query["kind"] == "text":
            encoder.encode_texts([query["text"]])
        elif query["kind"] == "photo":
            encoder.encode_images([Path(query["photo"]).read_bytes()], classes=True)
        else:
            scene_encode(encoder, Path(query["photo"]).read_bytes())
        latencies[query["kind"]].append(time.perf_counter() - t)
    gc.callbacks.remove(timer)
    t = time.perf_counter()
    gc.collect()
    full_collect = time.perf_counter() - t
    rss_after = _rss_mb()

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "mode": mode,
        "backend": encoder.backend,
        "heavy_modules": [m for m in HEAVY if m in sys.modules],
        "modules": len(sys.modules),
        "app_start_s": round(app_seconds, 3),
        "encoder_load_s": round(load_seconds, 3),
        "rss_mb": {"app": rss_app, "loaded": rss_loaded, "after_queries": rss_after},
        "gc_objects_app": objects_app,
        "gc_objects_after_load": objects,
        "gc_passes_during_queries": {
            str(g): {
                "count": sum(1 for gen, _ in passes if gen == g),
                "max_ms": round(1000 * max((s for gen, s in passes if gen == g), default=0), 2),
                "total_ms": round(1000 * sum(s for gen, s in passes if gen == g), 2),
            }
            for g in (0, 1, 2)
        },
        "full_collection_ms": round(1000 * full_collect, 2),
        "latency_ms": {
            kind: {"n": len(v), "p50": ms(v, 0.5), "p95": ms(v, 0.95)}
            for kind, v in latencies.items()
        },
    }


def sha256_of_export(onnx_dir: Path) -> str:
    """The weights checksum of the one export under `onnx_dir` (the bench makes one)."""
    (folder,) = [p for p in onnx_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return folder.name.rsplit(".", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="default")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--datasets", type=Path, default=BASE_DIR.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "bench/results/serving_process.json")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "ONNX_DIR", "QUERIES"))
    args = parser.parse_args()
    if args.child:
        mode, onnx_dir, queries_file = args.child
        print(json.dumps(child(mode, args.spec, Path(onnx_dir), Path(queries_file))))
        return

    env = {**os.environ, "VITRINE_TORCH_THREADS": str(args.threads)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vitrine-serving-") as tmp:
        work = Path(tmp)
        queries_file = work / "queries.json"
        queries_file.write_text(json.dumps(_queries(args.datasets, args.queries)))
        onnx_dir = work / "onnx"

        def run(mode: str) -> dict[str, Any]:
            out = subprocess.run(
                [sys.executable, __file__, "--spec", args.spec, "--child", mode,
                 str(onnx_dir), str(queries_file)],
                env=env, cwd=BASE_DIR, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            return result

        run("full")  # exports the graphs and writes the serving files: not counted
        for _ in range(args.repeats):
            runs.extend([run("full"), run("served")])

    def median(mode: str, *path: str) -> float:
        values = []
        for r in runs:
            if r["mode"] == mode:
                v: Any = r
                for key in path:
                    v = v[key]
                values.append(v)
        return round(statistics.median(values), 3)

    figures = [
        "app_start_s",
        "encoder_load_s",
        "gc_objects_app",
        "gc_objects_after_load",
        "full_collection_ms",
    ]
    summary = {
        mode: {
            **{f: median(mode, f) for f in figures},
            "rss_mb_loaded": median(mode, "rss_mb", "loaded"),
            "rss_mb_after_queries": median(mode, "rss_mb", "after_queries"),
            "gen2_passes": median(mode, "gc_passes_during_queries", "2", "count"),
            "gen2_max_ms": median(mode, "gc_passes_during_queries", "2", "max_ms"),
            "gc_total_ms": round(
                statistics.median(
                    sum(p["total_ms"] for p in r["gc_passes_during_queries"].values())
                    for r in runs
                    if r["mode"] == mode
                ),
                2,
            ),
            **{
                f"{kind}_p50_ms": median(mode, "latency_ms", kind, "p50")
                for kind in ("text", "photo", "scene")
            },
            **{
                f"{kind}_p95_ms": median(mode, "latency_ms", kind, "p95")
                for kind in ("text", "photo", "scene")
            },
        }
        for mode in ("full", "served")
    }
    result = {
        "bench": "serving_process",
        "spec": args.spec,
        "queries": args.queries,
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_end": os.getloadavg(),
        },
        "summary_median": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
