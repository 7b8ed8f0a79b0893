"""Named training recipes: `TrainConfig` overrides, as plain data (importing this loads no torch).

`CATALOG_FINE_TUNE` is what "Fine-tune on this catalog" (the admin's training jobs),
`manage.py train_model` and `bench/fine_tune.py` train with unless told otherwise, starting
from `CATALOG_BASE`: the base's image trunk frozen and run once per image and view
(`embeddings.ml.feature_cache`: the centre crop and one augmented view), the text trunk
frozen and run once per text, then the image and text projections, the fusion module and
the temperature trained on those cached outputs; 64 neighbour pairs a step for image-text,
the first 16 of them fused for the neighbour and fused-category terms (the fusion
transformer is most of a step's time on cached features); a resumable state every 25 steps.
The image embedding gains a grid-token term (`TrainConfig.image_grid_head`), and pairs of
one product's variants align photo to photo (`TrainConfig.w_variant`).
The base's projections are pretrained: they move at `lr_pretrained`, a third of the fusion's
rate (the trainer's own 1e-5 default suits big CLIPs and barely moves them). Figures:
`bench/results/fine_tune.json`.
"""

from __future__ import annotations

from typing import Any

CATALOG_BASE = "default:v2"  # LiT-style: frozen pretrained trunks, so features cache

CATALOG_FINE_TUNE: dict[str, Any] = {
    "image_unfreeze_last_n": 0,
    # The photo's layout (its grid tokens) joins the image embedding: with the variant term
    # it is what finds a product's other colours (bench/results/relevance_fine_tuned.json)
    "image_grid_head": True,
    "feature_views": 2,
    "batch_pairs": 64,
    "fusion_pairs": 16,
    "lr_pretrained": 3e-4,
    "warmup_steps": 50,
    "checkpoint_every": 25,
    # One intra-op thread: a step on cached features is hundreds of small ops, and on a CPU
    # shared with other work each op split over 2 threads waits for whichever thread the OS
    # descheduled (6x slower a step at load 7). The caching phases use every core anyway,
    # one 1-thread ONNX Runtime batch per core.
    "threads": 1,
}
