"""Framework-free model package: loading, the PinCLIP model, encoders, training.

Nothing here imports Django. torch is imported lazily: `import embeddings.ml` is cheap, and
the heavy modules load on first attribute access (`embeddings.ml.load_encoder`).

Example::

    from embeddings.ml.loading import load_encoder

    encoder = load_encoder("default")
    result = encoder.encode_images(["shoe.jpg"])
    result.vectors.shape  # (1, encoder.dim), float32, L2-normalised
"""

from __future__ import annotations

import importlib
from typing import Any

from embeddings.ml.errors import DatasetError, ModelLoadError

# The bundled default models: version -> folder under embeddings/. The spec "default" loads
# DEFAULT_MODEL_VERSION; "default:v1" names one explicitly (registry rows keep naming the
# weights their vectors came from). Here, not in loading.py, so Django code reads them
# without importing torch.
DEFAULT_MODEL_FOLDERS = {"v1": "default_model", "v2": "default_model_v2"}
DEFAULT_MODEL_VERSION = "v2"  # fresh installs; older installs get it beside v1

# Public name -> module that defines it; imported on first use so torch loads only then.
_LAZY = {
    "load_encoder": "embeddings.ml.loading",
    "load_model": "embeddings.ml.loading",
    "Encoder": "embeddings.ml.encoder",
    "EncodeResult": "embeddings.ml.serving",  # torch-free, like the serving encoder
    "ServingEncoder": "embeddings.ml.serving",
    "serving_encoder_load": "embeddings.ml.serving",
    "Item": "embeddings.ml.data",
    "ItemDataset": "embeddings.ml.data",
    "TrainConfig": "embeddings.ml.train_config",
    "train": "embeddings.ml.train",
}

__all__ = [
    "DEFAULT_MODEL_FOLDERS",
    "DEFAULT_MODEL_VERSION",
    "DatasetError",
    "ModelLoadError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embeddings.ml' has no attribute {name!r}")
