"""The only door from Django code to the model package: encoders loaded on first use.

Importing this module is cheap (no torch): `embeddings.ml.loading` is imported inside
`encoder_for`, the first time a process needs to encode something. Web processes therefore
start without torch and pay the load once, on their first query; workers pay it on their
first batch. Encoders are cached per model version for the life of the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from embeddings.ml.errors import ModelLoadError

if TYPE_CHECKING:
    from embeddings.ml.encoder import Encoder
    from embeddings.models import EmbeddingModel

__all__ = [
    "ItemVectors",
    "ModelLoadError",
    "WeightsChangedError",
    "encode_items",
    "encode_query_image",
    "encode_query_text",
    "encoder_cached",
    "encoder_for",
    "encoder_load",
]


class WeightsChangedError(ModelLoadError):
    """The files behind a registered version changed: its vectors would not match new ones."""


_encoders: dict[str, Encoder] = {}
_lock = threading.Lock()  # one load at a time: a second thread waits for the first's result


def encoder_load(spec: str) -> Encoder:
    """Return a freshly loaded encoder for `spec` (not cached; registration and benches)."""
    from embeddings.ml.loading import load_encoder

    return load_encoder(spec)


def encoder_for(model: EmbeddingModel) -> Encoder:
    """Return the process-wide encoder of a model version, loading it on first use.

    Raises `ModelLoadError` if the spec cannot be loaded, and `WeightsChangedError` if the
    weights no longer match the checksum recorded at registration (a version's vectors must
    all come from the same weights).
    """
    cached = _encoders.get(model.key)
    if cached is not None:
        return cached
    with _lock:
        cached = _encoders.get(model.key)
        if cached is not None:
            return cached
        encoder = encoder_load(model.spec)
        if model.weights_sha256 and encoder.weights_sha256 != model.weights_sha256:
            raise WeightsChangedError(
                f"{model.key}: the weights of {model.spec!r} changed since registration "
                f"(sha256 {encoder.weights_sha256[:12]}..., registered "
                f"{model.weights_sha256[:12]}...); register them as a new version"
            )
        _encoders[model.key] = encoder
        return encoder


def encoder_cached(key: str) -> bool:
    """True if this process already holds the encoder of model version `key`."""
    return key in _encoders


def encoder_forget(key: str) -> None:
    """Drop a cached encoder (a retired version), freeing its memory."""
    with _lock:
        encoder = _encoders.pop(key, None)
    if encoder is not None:
        encoder.close()


def encode_query_image(image_bytes: bytes, *, model: EmbeddingModel) -> np.ndarray:
    """Return the image vector (D,) float32, L2-normalised, of a shopper's photo.

    Raises `ValueError` with the decoder's reason when the bytes are not a readable image.
    """
    result = encoder_for(model).encode_images([image_bytes])
    if result.failed:
        raise ValueError(f"unreadable image: {result.failed[0]}")
    return np.asarray(result.vectors[0], dtype=np.float32)


def encode_query_text(text: str, *, model: EmbeddingModel) -> np.ndarray:
    """Return the text vector (D,) float32, L2-normalised, of a shopper's words."""
    return np.asarray(encoder_for(model).encode_texts([text])[0], dtype=np.float32)


@dataclass
class ItemVectors:
    """Vectors of a batch of catalogue items, row i of each array = item `indices[i]`."""

    indices: list[int]  # items whose image decoded (image and fused rows are for these)
    image: np.ndarray  # (N_ok, D)
    fused: np.ndarray  # (N_ok, D)
    text: np.ndarray  # (N, D): every item has a text vector, even when its image failed
    failed: dict[int, str]  # item index -> why its image could not be encoded
    seconds: dict[str, float]  # time spent per kind (benchmarks and logs)


def encode_items(
    encoder: Encoder | Any, *, images: Sequence[bytes | str], texts: Sequence[str]
) -> ItemVectors:
    """Return image, text and fused vectors for catalogue items (one image + text each)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    image_result = encoder.encode_images(list(images))
    timings["image"] = time.perf_counter() - start
    start = time.perf_counter()
    text = encoder.encode_texts(list(texts))
    timings["text"] = time.perf_counter() - start
    ok = list(image_result.indices)
    start = time.perf_counter()
    if ok:
        fused_result = encoder.encode_items([images[i] for i in ok], [texts[i] for i in ok])
        fused = fused_result.vectors
        if fused_result.failed:  # decoded once, failed the second time: treat as failed
            raise ModelLoadError(f"image decoding is not deterministic: {fused_result.failed}")
    else:
        fused = np.zeros((0, encoder.dim), dtype=np.float32)
    timings["fused"] = time.perf_counter() - start
    return ItemVectors(
        indices=ok,
        image=image_result.vectors,
        fused=fused,
        text=text,
        failed=dict(image_result.failed),
        seconds=timings,
    )
