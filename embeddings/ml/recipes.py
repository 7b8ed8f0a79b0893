"""Named training recipes: `TrainConfig` overrides, as plain data (importing this loads no torch).

`CATALOG_FINE_TUNE` is what "Fine-tune on this catalog" (the admin's training jobs) and
`bench/fine_tune.py` train with unless told otherwise: the base's image trunk frozen and
run once per image and view (`embeddings.ml.feature_cache`: the centre crop and one
augmented view), then the image and text projections, the fusion module and the
temperature trained on those cached features; 32 neighbour pairs a step; a resumable state
every 10 steps. Training the whole trunk of the bundled model took ~35 s a step on the
2-core development machine under load, and running the frozen trunk every step ~10 s;
on cached features a step runs no image tower at all.
"""

from __future__ import annotations

from typing import Any

CATALOG_FINE_TUNE: dict[str, Any] = {
    "image_unfreeze_last_n": 0,
    "feature_views": 2,
    "batch_pairs": 32,
    "checkpoint_every": 10,
}
