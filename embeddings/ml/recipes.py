"""Named training recipes: `TrainConfig` overrides, as plain data (importing this loads no torch).

`CATALOG_FINE_TUNE` is what "Fine-tune on this catalog" (the admin's training jobs) and
`bench/fine_tune.py` train with unless told otherwise: the base's image trunk frozen (the
image and text projections, the fusion module and the temperature train), 32 neighbour
pairs a step, a resumable state every 10 steps. Training the whole trunk of the bundled
model took ~35 s a step on the 2-core development machine under load; with the trunk frozen
a step is one forward pass of 64 images through it.
"""

from __future__ import annotations

from typing import Any

CATALOG_FINE_TUNE: dict[str, Any] = {
    "image_unfreeze_last_n": 0,
    "batch_pairs": 32,
    "checkpoint_every": 10,
}
