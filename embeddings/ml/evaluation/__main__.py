"""Command line: ``python -m embeddings.ml.evaluation {split,evaluate,experiment,default-model}``.

Examples (run from the repository root; datasets from --data-root, else $VITRINE_DATASETS,
else ../shared/datasets)::

    python -m embeddings.ml.evaluation split --dataset ikea --out .data/experiments/ikea/split.json
    python -m embeddings.ml.evaluation evaluate --dataset ikea --model default \\
        --split .data/experiments/ikea/split.json --out /tmp/ikea-default.json
    python -m embeddings.ml.evaluation experiment --dataset ikea --out reports/ikea
    python -m embeddings.ml.evaluation default-model --out reports/default_model
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from embeddings.ml.evaluation.evaluate import EvalConfig


def _command_line(argv: list[str]) -> str:
    return "python -m embeddings.ml.evaluation " + " ".join(shlex.quote(a) for a in argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m embeddings.ml.evaluation")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, dataset: bool = True) -> None:
        if dataset:
            p.add_argument("--dataset", required=True, choices=["clothing", "hm", "ikea"])
        p.add_argument("--data-root", help="directory holding the datasets")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2, help="torch CPU threads")

    s = sub.add_parser("split", help="make and save a cold/warm split")
    common(s)
    s.add_argument("--out", type=Path, required=True, help="split JSON to write")
    s.add_argument("--cold-fraction", type=float, default=0.2)
    s.add_argument("--heldout-lookbook-fraction", type=float, default=0.25)

    e = sub.add_parser("evaluate", help="evaluate one model spec on a saved split")
    common(e)
    e.add_argument("--model", required=True, help="load_encoder spec, e.g. default")
    e.add_argument("--split", type=Path, required=True)
    e.add_argument("--out", type=Path, help="write the result JSON here (else stdout)")

    x = sub.add_parser("experiment", help="split + train two variants + evaluate three")
    common(x)
    x.add_argument("--out", type=Path, required=True, help="report directory")
    x.add_argument("--work-dir", type=Path, help="split + checkpoints (default .data/...)")
    x.add_argument("--base", default="default:v2", help="spec every variant starts from")
    x.add_argument("--epochs", type=float, default=10.0)
    x.add_argument("--max-steps", type=int, default=None, help="smoke runs only")
    x.add_argument("--cold-fraction", type=float, default=0.2)
    x.add_argument("--heldout-lookbook-fraction", type=float, default=0.25)
    x.add_argument("--lr", type=float, default=1e-3, help="fusion module and category head")
    x.add_argument("--lr-pretrained", type=float, default=3e-4, help="the base's towers")
    x.add_argument("--batch-pairs", type=int, default=64)
    x.add_argument("--fusion-pairs", type=int, default=16, help="pairs of a step fused")
    x.add_argument("--feature-views", type=int, default=2, help="cached views per photo")
    x.add_argument("--ablations", action="store_true", help="also train without each component")
    x.add_argument("--w-neighbour", type=float, default=0.5)
    x.add_argument("--w-category", type=float, default=0.5)
    x.add_argument("--max-queries", type=int, default=EvalConfig.max_queries_per_cell)
    x.add_argument("--retrain", action="store_true", help="ignore existing checkpoints")
    x.add_argument(
        "--sample-items", type=int, default=None, help="use a seeded sample of the catalog"
    )

    d = sub.add_parser("default-model", help="report on the bundled default model (clothing)")
    common(d, dataset=False)
    d.add_argument("--out", type=Path, default=Path("reports/default_model"))

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from embeddings.ml.evaluation.experiment import datasets_root

    root = datasets_root(args.data_root)
    if args.command == "split":
        from embeddings.ml.evaluation.catalog import as_catalog
        from embeddings.ml.evaluation.experiment import LOOKBOOK_PREFIX, load_named_dataset
        from embeddings.ml.evaluation.splits import make_split

        catalog = as_catalog(load_named_dataset(args.dataset, root))
        split = make_split(
            catalog,
            args.seed,
            cold_fraction=args.cold_fraction,
            heldout_lookbook_fraction=args.heldout_lookbook_fraction,
            lookbook_prefix=LOOKBOOK_PREFIX.get(args.dataset, ""),
        )
        print(split.save(args.out))
        return 0

    if args.command == "evaluate":
        import torch

        from embeddings.ml.evaluation.evaluate import evaluate
        from embeddings.ml.evaluation.experiment import load_named_dataset
        from embeddings.ml.evaluation.splits import Split
        from embeddings.ml.loading import load_encoder

        torch.set_num_threads(args.threads)
        dataset = load_named_dataset(args.dataset, root)
        split = Split.load(args.split)
        encoder = load_encoder(args.model, device="cpu")
        result = evaluate(
            encoder, dataset, split, EvalConfig(seed=args.seed), model_name=args.model
        )
        text = json.dumps(result.to_dict(), indent=1)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        else:
            print(text)
        return 0

    if args.command == "experiment":
        from embeddings.ml.evaluation.experiment import ExperimentConfig, run_experiment

        cfg = ExperimentConfig(
            dataset=args.dataset,
            data_root=root,
            out=args.out,
            work_dir=args.work_dir or Path(".data/experiments") / args.dataset,
            base=args.base,
            seed=args.seed,
            epochs=args.epochs,
            max_steps=args.max_steps,
            threads=args.threads,
            cold_fraction=args.cold_fraction,
            heldout_lookbook_fraction=args.heldout_lookbook_fraction,
            lr=args.lr,
            lr_pretrained=args.lr_pretrained,
            batch_pairs=args.batch_pairs,
            fusion_pairs=args.fusion_pairs,
            feature_views=args.feature_views,
            ablations=args.ablations,
            w_neighbour=args.w_neighbour,
            w_category=args.w_category,
            reuse_checkpoints=not args.retrain,
            sample_items=args.sample_items,
            eval=EvalConfig(seed=args.seed, max_queries_per_cell=args.max_queries),
            command=_command_line(argv),
        )
        print(run_experiment(cfg))
        return 0

    from embeddings.ml.evaluation.experiment import run_default_model_report

    print(run_default_model_report(root, args.out, _command_line(argv), threads=args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
