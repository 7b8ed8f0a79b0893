"""How long a catalog fine-tune takes on this machine: a ~10k-product catalog, thousands of steps.

The recipe is the admin's "Fine-tune on this catalog" (`embeddings.ml.recipes`: base
`CATALOG_BASE`, overrides `CATALOG_FINE_TUNE`): the base's frozen image trunk run once per
image and view (the frozen-tower feature cache, on ONNX Runtime on a CPU) and its frozen
text trunk once per text, then the projections, the fusion module and the temperature
trained on those cached outputs with the full objective (image-text, neighbour alignment
over the graph, category). The catalog is H&M (9,538 articles; colour variants and
sections as the graph): with `--heldout relevance` (default) without the product codes
`bench/relevance.py` holds out, so the checkpoint can be scored there
(`python bench/relevance.py --spec checkpoint:<out>`); with `--heldout none` all of it.

Run (writes bench/results/fine_tune.json; framework-free, no database needed)::

    nice -n 10 .venv/bin/python bench/fine_tune.py --data hm:../shared/datasets/hm \
        --heldout none --steps 2000

The figure is the wall-clock time of the whole call, data loading and feature caching
included, with the phase times beside it, and the CPU time of each (the wall time on a
machine shared with other work depends on the others' load; the load averages are kept).
Earlier runs stay in the file under "earlier". `--cache-dir <dir>` twice times a repeated
fine-tune of the same catalog, which reads the frozen trunks' outputs back.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def _override(item: str) -> tuple[str, object]:
    """("field", value) of a --set FIELD=JSON argument."""
    field, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--set {item}: expected FIELD=JSON")
    try:
        return field, json.loads(value)
    except ValueError as exc:
        raise SystemExit(f"--set {item}: {exc}") from exc


def heldout_items(data: str) -> set[str]:
    """H&M article ids of the product codes `bench/relevance.py` holds out (its split, one
    definition: `hm_heldout_codes`), so that the fine-tuned checkpoint can be scored there
    on products it never saw; nothing for other data."""
    kind, _, path = data.partition(":")
    if kind != "hm":
        return set()
    from embeddings.ml.evaluation.splits import hm_heldout_codes

    rows = list(csv.DictReader((Path(path) / "articles.csv").open(newline="")))
    held = hm_heldout_codes(r["product_code"] for r in rows)
    return {r["article_id"] for r in rows if r["product_code"] in held}


def earlier_runs(results: Path) -> list[dict[str, object]]:
    """The runs `results` holds (its latest first), so a new run keeps the old figures."""
    if not results.is_file():
        return []
    latest = json.loads(results.read_text())
    earlier = latest.pop("earlier", [])
    # The phase boundaries only, not the progress lines within them: the file stays short.
    phases = latest["phases"]
    latest["phases"] = [p for p in phases if not re.search(r"\d/\d", p[-1])] + phases[-1:]
    return [latest, *earlier]


def main() -> int:
    from embeddings.ml.recipes import CATALOG_BASE, CATALOG_FINE_TUNE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="hm:<dir> | ikea:<dir> | <jsonl dir>")
    parser.add_argument("--base", default=CATALOG_BASE, help="the model spec fine-tuned")
    parser.add_argument(
        "--heldout",
        choices=["relevance", "none"],
        default="relevance",
        help="hm: leave out bench/relevance.py's held-out product codes (the checkpoint is "
        "then scored there), or train on every article (the catalog-size timing)",
    )
    parser.add_argument("--fusion-pairs", type=int, default=CATALOG_FINE_TUNE["fusion_pairs"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--feature-views", type=int, default=CATALOG_FINE_TUNE["feature_views"])
    parser.add_argument("--threads", type=int, default=CATALOG_FINE_TUNE["threads"])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the frozen trunks' outputs are kept (default: a new temporary folder, "
        "so they are computed; a folder of an earlier run times a repeated fine-tune)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="a TrainConfig field over the recipe, for ablations: --set w_variant=0, "
        "--set image_grid_head=true",
    )
    parser.add_argument("--out", type=Path, default=None, help="checkpoint dir (default: tmp)")
    parser.add_argument("--results", type=Path, default=BASE_DIR / "bench/results/fine_tune.json")
    args = parser.parse_args()

    from dataclasses import replace

    from embeddings.ml.data import load_dataset
    from embeddings.ml.train import run_training
    from embeddings.ml.train_config import TrainConfig

    started = time.monotonic()
    load_at_start = os.getloadavg()
    phases: list[tuple[float, float, str]] = []

    def report(line: str) -> None:
        # CPU seconds beside wall seconds: on a machine shared with other work the wall
        # time says as much about the others as about this run; the CPU time does not.
        at, cpu = time.monotonic() - started, time.process_time()
        phases.append((round(at, 1), round(cpu, 1), line))
        print(f"[{at:7.1f}s, cpu {cpu:7.1f}s] {line}", flush=True)

    report(f"loading {args.data}")
    dataset = load_dataset(args.data)
    held = heldout_items(args.data) if args.heldout == "relevance" else set()
    train_set = dataset.subset([it.item_id for it in dataset.items if it.item_id not in held])
    report(f"{len(train_set)} training items ({len(held)} held out by product code)")
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="vitrine-features-"))
    config = replace(
        TrainConfig(init=args.base),
        **{
            **CATALOG_FINE_TUNE,
            "max_steps": args.steps,
            "feature_views": args.feature_views,
            "fusion_pairs": args.fusion_pairs,
            "feature_cache_dir": str(cache),
            "checkpoint_every": 500,
            "threads": args.threads,
            **dict(_override(item) for item in args.set),
        },
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="vitrine-fine-tune-"))
    step_times: dict[int, float] = {}
    step_cpu: dict[int, float] = {}

    def progress(step: int, total: int, losses: dict[str, float]) -> None:
        step_times[step] = time.monotonic() - started
        step_cpu[step] = time.process_time()
        if step in (1, total) or step % 250 == 0:
            report(f"step {step}/{total}: loss {losses.get('loss', float('nan')):.3f}")

    result = run_training(config, train_set, out, progress=progress, report=report)
    seconds, cpu_seconds = time.monotonic() - started, time.process_time()
    first = min(step_times.values())
    first_cpu, last_cpu = step_cpu[min(step_cpu)], step_cpu[max(step_cpu)]
    figures = {
        "what": "catalog fine-tune, whole call (data, feature cache, steps, save)",
        "dataset": args.data.partition(":")[0],
        "n_train_items": result.n_train_items,
        "steps": result.steps,
        "seconds_total": round(seconds, 1),
        "seconds_before_first_step": round(first, 1),
        "steps_per_second": round((result.steps - 1) / max(1e-9, seconds - first), 2),
        "cpu_seconds_total": round(cpu_seconds, 1),
        "cpu_seconds_before_first_step": round(first_cpu, 1),
        "cpu_ms_per_step": round(1000 * (last_cpu - first_cpu) / max(1, result.steps - 1), 1),
        "cache_dir_given": args.cache_dir is not None,
        "final_losses": {k: round(v, 4) for k, v in result.last_losses.items()},
        "config": {k: v for k, v in config.__dict__.items() if k != "fusion"},
        "phases": phases,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "command": "nice -n 10 .venv/bin/python bench/fine_tune.py " + " ".join(sys.argv[1:]),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    figures["earlier"] = earlier_runs(args.results)
    args.results.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("n_train_items", "steps", "seconds_total")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
