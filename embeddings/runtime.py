"""The only door from Django code to the model package: encoders loaded on first use.

Importing this module is cheap (no torch): `embeddings.ml.loading` is imported inside
`encoder_for`, the first time a process needs to encode something. Workers pay that load
on their first batch. A shopper's query goes through `query_encoder_for`, which serves
from the version's ONNX export alone when it is there (`embeddings.ml.serving`: no torch,
open_clip or transformers in a web process, ever) and loads the full encoder otherwise
(which writes what the export lacks, so the next process serves from it). Encoders are
cached per model version for the life of the process.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from django.conf import settings

from embeddings.ml.errors import ModelLoadError

if TYPE_CHECKING:
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.serving import BatchEncoder, ServingEncoder
    from embeddings.models import EmbeddingModel

__all__ = [
    "ModelLoadError",
    "PhotoEncoding",
    "SceneVectors",
    "WeightsChangedError",
    "encode_photo_class_logits",
    "encode_query_image",
    "encode_query_photo",
    "encode_query_regions",
    "encode_query_text",
    "encoder_cached",
    "encoder_for",
    "encoder_load",
    "encoder_warm_in_background",
    "query_encoder_for",
    "query_regions_recipe",
]


class WeightsChangedError(ModelLoadError):
    """The files behind a registered version changed: its vectors would not match new ones."""


log = logging.getLogger(__name__)
# Keyed by version key, spec and checksum, not the key alone: a key can name other weights
# after a database is recreated (a test run, a restored backup) in a long-lived process.
_encoders: dict[tuple[str, str, str], Encoder] = {}
_served: dict[tuple[str, str, str], ServingEncoder] = {}  # from exports (`query_encoder_for`)
_lock = threading.Lock()  # one load at a time: a second thread waits for the first's result
_vectors_lock = threading.Lock()  # the query vector caches below


def encoder_load(spec: str) -> Encoder:
    """Return a freshly loaded encoder for `spec` (not cached; registration and benches).

    On a CPU it runs on ONNX Runtime when the model can be exported: the graphs are
    exported once per weights checksum into `ONNX_DIR` (the data directory).
    """
    from embeddings.ml.loading import load_encoder

    return load_encoder(spec, onnx_dir=onnx_dir())


def onnx_dir() -> Path:
    """Where exported ONNX graphs of the models live (one folder per weights checksum)."""
    return Path(settings.DATA_DIR) / "onnx"


def _cache_key(model: EmbeddingModel) -> tuple[str, str, str]:
    return (model.key, model.spec, model.weights_sha256)


def encoder_for(model: EmbeddingModel) -> Encoder:
    """Return the process-wide encoder of a model version, loading it on first use.

    Raises `ModelLoadError` if the spec cannot be loaded, and `WeightsChangedError` if the
    weights no longer match the checksum recorded at registration (a version's vectors must
    all come from the same weights).
    """
    # A version with no checksum yet is being prepared: load its files afresh, since an
    # encoder cached under the same key and spec may have come from other files.
    known = bool(model.weights_sha256)
    if known and (cached := _encoders.get(_cache_key(model))) is not None:
        return cached
    with _lock:
        if known and (cached := _encoders.get(_cache_key(model))) is not None:
            return cached
        encoder = encoder_load(model.spec)
        if known and encoder.weights_sha256 != model.weights_sha256:
            raise WeightsChangedError(
                f"{model.key}: the weights of {model.spec!r} changed since registration "
                f"(sha256 {encoder.weights_sha256[:12]}..., registered "
                f"{model.weights_sha256[:12]}...); register them as a new version"
            )
        _encoders[(model.key, model.spec, encoder.weights_sha256)] = encoder
        return encoder


def query_encoder_for(model: EmbeddingModel) -> BatchEncoder:
    """Return the process-wide encoder that answers `model`'s queries (photos, words,
    scenes): the full one when this process holds it, else one served from the version's
    ONNX export (`embeddings.ml.serving`), else the full one, loaded (`encoder_for`).

    The export folder is named by the checksum recorded at registration, so it holds
    exactly the weights the version's stored vectors came from; the processes that load
    from the weights files (workers) are the ones that notice files changed under it.
    """
    key = _cache_key(model)
    if (full := _encoders.get(key)) is not None:
        return full
    if (served := _served.get(key)) is not None:
        return served
    if model.weights_sha256:
        from embeddings.ml.serving import export_dir, serving_encoder_load

        with _lock:
            served = _served.get(key) or serving_encoder_load(
                export_dir(onnx_dir(), model.weights_sha256)
            )
            if served is not None and served.weights_sha256 == model.weights_sha256:
                _served[key] = served
                return served
    return encoder_for(model)


def encoder_cached(model: EmbeddingModel) -> bool:
    """True if this process already holds the encoder of this model version."""
    return _cache_key(model) in _encoders


def encoder_forget(model: EmbeddingModel) -> None:
    """Drop a cached encoder (a retired version), freeing its memory."""
    with _lock:
        encoders = [_encoders.pop(_cache_key(model), None), _served.pop(_cache_key(model), None)]
    for encoder in encoders:
        if encoder is not None:
            encoder.close()


def encoder_warm_in_background(model: EmbeddingModel) -> None:
    """Start loading `model`'s encoder in a daemon thread, unless this process has it.

    For callers that know a query is coming (a search page being rendered, a worker that
    just started): the shopper's first query then finds the model loaded instead of paying
    the cold start (loading a model takes seconds on a CPU).
    """
    key = _cache_key(model)
    if key in _encoders or key in _served or _lock.locked():
        return

    def load() -> None:
        try:
            query_encoder_for(model)
        except Exception:  # reported again, with its reason, by the query that needs it
            log.warning("could not pre-load the encoder of %s", model.key, exc_info=True)

    threading.Thread(target=load, name=f"vitrine-warm-{model.key}", daemon=True).start()


_QueryCache = OrderedDict[tuple[tuple[str, str, str], str], Any]


def _frozen(vector: np.ndarray) -> np.ndarray:
    """`vector` as float32, read-only: cached values are shared between requests."""
    out = np.asarray(vector, dtype=np.float32)
    out.setflags(write=False)
    return out


def _cached_query[T](
    cache: _QueryCache,
    limit: int,
    *,
    model: EmbeddingModel,
    query: str,
    compute: Callable[[], T],
) -> T:
    """`compute()`'s value for `query` (arrays in it read-only: it is shared), through
    `cache`: the least recently used go past `limit`. Keyed by the version and its
    checksum; a version being prepared has none yet and is never cached (its weights may
    still change)."""
    key = (_cache_key(model), query)
    if model.weights_sha256:
        with _vectors_lock:
            cached = cache.get(key)
            if cached is not None:
                cache.move_to_end(key)
                return cast(T, cached)
    value = compute()
    if model.weights_sha256:
        with _vectors_lock:
            cache[key] = value
            while len(cache) > limit:
                cache.popitem(last=False)
    return value


@dataclass(frozen=True)
class PhotoEncoding:
    """A shopper's photo as photo search reads it."""

    vector: np.ndarray  # (D,) float32, L2-normalised
    #: (C,) logits of the image trunk's own classes (`embeddings.ml.image_classes`), None
    #: when the version's trunk has no classifier
    class_logits: np.ndarray | None


#: Photo queries kept per process, by the photo's checksum: a shopper narrowing the
#: results of one photo (each filter click is a new request) pays for the encoder once.
IMAGE_QUERY_CACHE_SIZE = 256
_image_queries: _QueryCache = OrderedDict()


def encode_query_photo(image_bytes: bytes, *, model: EmbeddingModel) -> PhotoEncoding:
    """Return the image vector and class logits of a shopper's photo (one pass).

    Recently encoded photos (the same bytes) come from a least-recently-used cache.
    Raises `ValueError` with the decoder's reason when the bytes are not a readable image
    (failures are not cached).
    """

    def encode() -> PhotoEncoding:
        result = query_encoder_for(model).encode_images([image_bytes], classes=True)
        if result.failed:
            raise ValueError(f"unreadable image: {result.failed[0]}")
        logits = None if result.class_logits is None else _frozen(result.class_logits[0])
        return PhotoEncoding(_frozen(result.vectors[0]), logits)

    return _cached_query(
        _image_queries,
        IMAGE_QUERY_CACHE_SIZE,
        model=model,
        query=hashlib.sha256(image_bytes).hexdigest(),
        compute=encode,
    )


def encode_query_image(image_bytes: bytes, *, model: EmbeddingModel) -> np.ndarray:
    """Return the image vector (D,) float32, L2-normalised, of a shopper's photo
    (`encode_query_photo`'s vector)."""
    return encode_query_photo(image_bytes, model=model).vector


def encode_photo_class_logits(
    photos: Sequence[bytes | str], *, model: EmbeddingModel
) -> np.ndarray | None:
    """Class logits (N_ok, C) of photos by the version's trunk classifier (rows of
    unreadable photos left out), or None when it has none (the search calibration reads
    the catalog's photos with it)."""
    return encoder_for(model).encode_images(photos, classes=True).class_logits


#: Text query vectors kept per process (1 KiB each at 256 dimensions): shoppers' queries
#: repeat ("black dress", a brand), and a repeat then skips the text tower entirely.
TEXT_QUERY_CACHE_SIZE = 4096
_text_vectors: _QueryCache = OrderedDict()


def encode_query_text(text: str, *, model: EmbeddingModel) -> np.ndarray:
    """Return the text vector (D,) float32, L2-normalised, of a shopper's words.

    Recently asked words (runs of whitespace collapsed) come from a least-recently-used
    cache.
    """
    words = " ".join(text.split())
    return _cached_query(
        _text_vectors,
        TEXT_QUERY_CACHE_SIZE,
        model=model,
        query=words,
        compute=lambda: _frozen(query_encoder_for(model).encode_texts([words])[0]),
    )


@dataclass(frozen=True)
class SceneVectors:
    """A scene photo's candidate item regions and their vectors, and the whole photo's."""

    boxes: list[tuple[float, float, float, float]]  # left, top, right, bottom, fractions 0..1
    regions: np.ndarray  # (len(boxes), D) float32, L2-normalised, row i = boxes[i]
    whole: np.ndarray  # (D,) the whole photo, as `encode_query_image` would give it
    recipe: str  # how `regions` were made (`embeddings.ml.regions.windows_recipe`)


def encode_query_regions(image_bytes: bytes, *, model: EmbeddingModel) -> SceneVectors:
    """Return the candidate item regions of a scene photo (`embeddings.ml.regions`) with
    their image vectors by `model`, and the whole photo's vector; one encoder batch.

    Raises `ValueError` when the bytes are not a readable image.
    """
    from embeddings.ml.regions import scene_encode

    scene = scene_encode(query_encoder_for(model), image_bytes)
    return SceneVectors(
        boxes=[b.as_tuple() for b in scene.boxes],
        regions=scene.regions,
        whole=scene.whole,
        recipe=scene.recipe,
    )


def query_regions_recipe(*, model: EmbeddingModel) -> str:
    """How `encode_query_regions` makes `model`'s window vectors in this process now
    (`embeddings.ml.regions.windows_recipe`): windows of another recipe are not comparable
    with its windows, so stored ones of another recipe are stale."""
    from embeddings.ml.regions import scene_recipe

    return scene_recipe(query_encoder_for(model))
