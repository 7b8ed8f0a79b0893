"""Shop the look with the scenes' windows by one encoding and the lookbook covers' windows
by another: what the web app would rank with if `WindowConfig.encoding` changed while the
covers' stored windows (`LookbookCoverVector.windows`) were made before the change.

Reads two caches of bench/shop_the_look.py (same spec, same product and whole-photo
vectors) and prints our ranking's figures on folds 1-4 with bootstrap CIs, and their paired
differences from the all-`--cover-cache` run, query by query.

    nice -n 10 .venv/bin/python bench/shop_the_look_mixed_covers.py \\
        --scene-cache .cache/stl-v2-fm480.npz --cover-cache .cache/stl-v2-crops.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shop_the_look as bench

np = bench.np  # numpy as the bench loads it: one BLAS thread, set before it loads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene-cache", type=Path, required=True)
    parser.add_argument("--cover-cache", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, default=bench.BASE_DIR.parent / "shared" / "datasets" / "ikea"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from embeddings.ml.evaluation.bootstrap import bootstrap_ci
    from search.scene_ranking import SceneWeights

    rooms = json.loads((args.data / "rooms.json").read_text())
    products = json.loads((args.data / "products.json").read_text())
    index = {p["id"]: i for i, p in enumerate(products)}
    folds = np.array_split(np.random.default_rng(args.seed).permutation(len(rooms)), bench.FOLDS)
    reported = [f for i, f in enumerate(folds) if i != bench.TUNING_FOLD]
    scene = dict(np.load(args.scene_cache, allow_pickle=False))
    covers = dict(np.load(args.cover_cache, allow_pickle=False))
    for key in ("products", "whole"):  # only the windows may differ
        np.testing.assert_allclose(scene[key], covers[key], atol=1e-6)
    weights = SceneWeights()
    base = bench.evaluate(covers, rooms, index, reported, weights)
    bench._regions_cache.clear()
    one_photo = bench.photo_windows

    def mixed(vectors: dict[str, Any], of: list[int]) -> tuple[np.ndarray, np.ndarray]:
        # `fold_queries` asks for one room's windows (the scene) or the lookbooks' (covers).
        return one_photo(vectors if len(of) == 1 else covers, of)

    bench.photo_windows = mixed
    got = bench.evaluate(scene, rooms, index, reported, weights)
    out: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "scene_windows": str(scene.get("regions", "crops")),
        "cover_windows": str(covers.get("regions", "crops")),
        "figures": {},
        "minus_cover_encoding_throughout": {},
    }
    for metric in bench.TARGETS:
        name = f"scene:{metric}"
        value = bootstrap_ci(got[name])
        diff = bootstrap_ci(np.subtract(got[name], base[name]))
        out["figures"][name] = value.to_dict()
        out["minus_cover_encoding_throughout"][name] = diff.to_dict()
        print(
            f"{name:24s} {value.value:.3f} [{value.ci_low:.3f}, {value.ci_high:.3f}]  minus "
            f"all by covers' encoding {diff.value:+.3f} [{diff.ci_low:+.3f}, {diff.ci_high:+.3f}]"
        )
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
