"""Complete the look's model weight, chosen on validation rooms cut from IKEA's training rooms.

Reuses the IKEA experiment's split and a checkpoint it trained (run the experiment of
reports/README.md first); encodes the catalog with that model, holds out 25% of the
*training* rooms (seeded), ranks their leave-one-out queries with
`embeddings.ml.look_ranking.look_order` over a graph of the remaining training rooms for
each model weight, and writes the grid, the co-occurrence baseline on the same queries and
the best weights to bench/results/complete_the_look_fit.json. The held-out rooms of the
split are read only afterwards, to record what each part of the chosen order does there.

    python bench/complete_the_look_fit.py --datasets ../shared/datasets \\
        --model checkpoint:.data/experiments/ikea/full --split .data/experiments/ikea/split.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--model", default="checkpoint:.data/experiments/ikea/full")
    parser.add_argument("--split", type=Path, default=Path(".data/experiments/ikea/split.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/complete_the_look_fit.json")
    )
    args = parser.parse_args()

    import numpy as np
    import torch

    from embeddings.ml.evaluation.catalog import as_catalog
    from embeddings.ml.evaluation.evaluate import encode_catalog
    from embeddings.ml.evaluation.experiment import LOOKBOOK_PREFIX, load_named_dataset
    from embeddings.ml.evaluation.look_fit import fit_look_ranking, heldout_orders
    from embeddings.ml.evaluation.splits import Split
    from embeddings.ml.loading import load_encoder
    from embeddings.ml.look_ranking import DEFAULT_LOOK_RANKING, LookRanking

    torch.set_num_threads(args.threads)
    dataset = load_named_dataset("ikea", args.datasets)
    catalog = as_catalog(dataset)
    split = Split.load(args.split)
    split.check(catalog)
    work = args.split.parent
    encoder = load_encoder(args.model, device="cpu", onnx_dir=work / "onnx")
    sha = str(getattr(encoder, "weights_sha256", "") or "?")[:16]
    # The catalog's fused vectors, kept beside the checkpoints (git-ignored) for re-runs.
    cache = work / f"fused-{sha}.npy"
    if cache.is_file():
        fused = np.load(cache)
    else:
        fused = encode_catalog(encoder, catalog).fused
        np.save(cache, fused)
    result = fit_look_ranking(
        fused,
        catalog,
        split,
        prefix=LOOKBOOK_PREFIX["ikea"],
        new_every=sorted({0, 10, DEFAULT_LOOK_RANKING.new_every}),
    )
    # After the choice, for the record: each part of the order on the held-out rooms.
    keep = DEFAULT_LOOK_RANKING.new_every
    heldout = heldout_orders(
        fused,
        catalog,
        split,
        {
            "count first, model within a count (the old order)": LookRanking(0.001, 0),
            "blend only": LookRanking(DEFAULT_LOOK_RANKING.model_weight, 0),
            "count first + kept places": LookRanking(0.001, keep),
            "blend + kept places (the app's)": DEFAULT_LOOK_RANKING,
        },
    )
    out = {
        "what": "complete the look recall@10 on validation rooms (25% of IKEA's training "
        "rooms, seed 0) over a graph of the other training rooms, per model weight",
        "command": "python bench/complete_the_look_fit.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "weights_sha256": sha,
        "split_fingerprint": split.fingerprint,
        "app_default": DEFAULT_LOOK_RANKING.__dict__,
        **result,
        "heldout_rooms_after_the_choice": heldout,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
