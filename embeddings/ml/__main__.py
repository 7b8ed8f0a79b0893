"""Command line: ``python -m embeddings.ml {train,train-default,int8-calibrate} ...``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embeddings.ml.data import load_dataset


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m embeddings.ml")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train/fine-tune on a dataset, write a checkpoint dir")
    t.add_argument(
        "--data",
        required=True,
        help="clothing:<dir> | hm:<dir> | ikea:<dir> | <dir with items.jsonl>",
    )
    t.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    t.add_argument(
        "--heldout",
        type=float,
        default=0.0,
        help="fraction of items held out as whole lookbooks for metrics",
    )
    t.add_argument(
        "--heldout-max-lookbook-share",
        type=float,
        default=0.05,
        help="lookbooks larger than this share of the items are never held out",
    )
    from embeddings.ml.train_config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        if f.name == "fusion":
            continue
        parsers: dict[str, Callable[[str], Any]] = {
            "int": int,
            "float": float,
            "str": str,
            "bool": _bool,
        }
        kind = parsers.get(str(f.type).split(" |")[0], str)
        t.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)

    d = sub.add_parser("train-default", help="train the bundled default model (clothing only)")
    d.add_argument("--data", required=True, type=Path, help="the clothing dataset directory")
    d.add_argument("--version", type=int, choices=(1, 2), default=2)
    d.add_argument(
        "--out", type=Path, default=None, help="default: the bundled folder of that version"
    )
    d.add_argument("--max-steps", type=int, default=None, help="smoke runs only")
    d.add_argument("--threads", type=int, default=None)

    c = sub.add_parser(
        "int8-calibrate",
        help="measure the int8 activation ranges of a model's image trunk (shipped file)",
    )
    c.add_argument("--data", required=True, type=Path, help="the clothing dataset directory")
    c.add_argument("--spec", default="default", help="a model on the trunk to calibrate")
    c.add_argument("--photos", type=int, default=128, help="training photos drawn (seed 0)")
    c.add_argument("--out", type=Path, default=None, help="default: the shipped file")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "int8-calibrate":
        return _int8_calibrate(args.data, args.spec, args.photos, args.out)
    if args.command == "train-default":
        from embeddings.ml.default_recipe import train_default

        overrides = {
            k: v
            for k, v in (("max_steps", args.max_steps), ("threads", args.threads))
            if v is not None
        }
        from embeddings.ml.loading import DEFAULT_MODEL_DIRS

        out = args.out or DEFAULT_MODEL_DIRS[f"v{args.version}"]
        train_default(args.data, out, version=args.version, **overrides)
        return 0

    from embeddings.ml.train import train

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name != "fusion" and getattr(args, f.name, None) is not None
    }
    config = TrainConfig(**overrides)
    ds = load_dataset(args.data)
    held = None
    if args.heldout > 0:
        ds, held = ds.split_by_lookbook(
            args.heldout, seed=config.seed, max_lookbook_share=args.heldout_max_lookbook_share
        )
    out = train(config, ds, args.out, eval_dataset=held)
    print(out)
    return 0


def _int8_calibrate(data: Path, spec: str, photos: int, out: Path | None) -> int:
    """Calibrate on training photos of the clothing set: never on the senders the default
    recipe holds out, so held-out figures of the int8 model stay held out."""
    import numpy as np

    from embeddings.ml.data import load_clothing
    from embeddings.ml.default_recipe import HOLDOUT_FRACTION, MAX_SENDER_SHARE
    from embeddings.ml.loading import load_model
    from embeddings.ml.onnx_int8 import CALIBRATION_DIR, int8_calibrate

    train, _ = load_clothing(data).split_by_lookbook(
        HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE
    )
    drawn = np.random.default_rng(0).choice(len(train.items), photos, replace=False)
    files = [train.image_file(train.items[i]) for i in sorted(drawn)]
    loaded = load_model(spec)
    package = loaded.config.get("image_trunk_package")
    out = out or CALIBRATION_DIR / f"{package}-{loaded.preprocess.image_size}.json"
    source = f"clothing (CC0): {photos} training photos drawn with seed 0"
    print(int8_calibrate(loaded, files, out, source))
    return 0


def _bool(v: str) -> bool:
    return v.lower() in ("1", "true", "yes", "on")


if __name__ == "__main__":
    sys.exit(main())
