"""Per-kind centroids of a version's stored vectors and its text query map (the modality gap)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.db import connection
from django.utils import timezone

from embeddings import text_map
from embeddings.models import EmbeddingModel, ProductEmbedding, TextQueryMap
from embeddings.sql import halfvec_from_send

log = logging.getLogger(__name__)

#: Refit when a version's fused vector count moved by more than this share.
CENTROIDS_STALE_SHARE = 0.1


def _fused_count(*, model: EmbeddingModel) -> int:
    return ProductEmbedding.objects.filter(model=model, kind=ProductEmbedding.Kind.FUSED).count()


def embedding_model_centroids_update(*, model: EmbeddingModel) -> dict[str, Any]:
    """Store the mean stored vector of each kind of `model` in `model.centroids`, and fit
    its text query map; return the centroids (with the map's stamp when one was fitted).

    Text vectors of a CLIP-style model sit in another region of the sphere than image and
    fused vectors (the modality gap); search sends a text query through the map so the
    HNSW graph of the fused vectors can navigate towards its neighbours. The means show how
    wide the gap is (and were the first correction: a shift by their difference).
    """
    with connection.cursor() as cursor:
        # Averaged as single precision (vector), not halfvec, for an exact enough sum.
        cursor.execute(
            "SELECT kind, count(*), avg(vector::vector)::text FROM embeddings_productembedding "
            "WHERE model_id = %s GROUP BY kind",
            [model.pk],
        )
        rows = cursor.fetchall()
    centroids: dict[str, Any] = {
        kind: [float(x) for x in mean.strip("[]").split(",")] for kind, _count, mean in rows
    }
    centroids["count"] = next((int(n) for kind, n, _ in rows if kind == "fused"), 0)
    centroids["computed_at"] = timezone.now().isoformat()
    fitted = text_query_map_fit(model=model)
    if fitted is not None:
        # Search keys its in-process copy of the map on this stamp (see selectors).
        centroids["text_query_map"] = fitted.fitted_at.isoformat()
    EmbeddingModel.objects.filter(pk=model.pk).update(centroids=centroids)
    model.centroids = centroids
    return centroids


#: At most this many (text, fused) pairs are fitted on: a uniform sample of larger catalogs.
TEXT_MAP_SAMPLE = 50_000


def _pairs_text_fused(*, model: EmbeddingModel, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sampled product's text and fused vectors of `model`, as two (N, D) arrays."""
    with connection.cursor() as cursor:
        # Ordered by a hash of the id: a stable sample spread over the whole catalog.
        cursor.execute(
            "SELECT halfvec_send(t.vector), halfvec_send(f.vector) "
            "FROM embeddings_productembedding t JOIN embeddings_productembedding f "
            "ON f.product_id = t.product_id AND f.model_id = t.model_id AND f.kind = 'fused' "
            "WHERE t.model_id = %s AND t.kind = 'text' "
            "ORDER BY hashint8(t.product_id), t.product_id LIMIT %s",
            [model.pk, limit],
        )
        rows = cursor.fetchall()
    if not rows:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)

    text = np.stack([halfvec_from_send(r[0]) for r in rows])
    return text, np.stack([halfvec_from_send(r[1]) for r in rows])


def text_query_map_fit(*, model: EmbeddingModel) -> TextQueryMap | None:
    """Fit and store `model`'s text query map on its catalog; None while too few products
    have both vectors (`text_map.enough_pairs`)."""
    text, fused = _pairs_text_fused(model=model, limit=TEXT_MAP_SAMPLE)
    if not text_map.enough_pairs(len(text), int(model.dimension or 0)):
        TextQueryMap.objects.filter(model=model).delete()
        return None
    matrix = text_map.solve(text, fused)
    fit_cosine = float((text_map.apply(matrix, text) * fused).sum(axis=1).mean())
    stored, _ = TextQueryMap.objects.update_or_create(
        model=model,
        defaults={
            "matrix": matrix.astype("<f4").tobytes(),
            "pairs": len(text),
            "fit_cosine": round(fit_cosine, 4),
            "fitted_at": timezone.now(),
        },
    )
    log.info("text query map of %s: %d pairs, fit cosine %.3f", model.key, len(text), fit_cosine)
    return stored


def embedding_model_centroids_refresh(*, model: EmbeddingModel) -> bool:
    """Recompute the centroids when missing or when the vector count moved; True if it did."""
    count = _fused_count(model=model)
    stored = int((model.centroids or {}).get("count", 0))
    if count == 0 or (stored and abs(count - stored) <= CENTROIDS_STALE_SHARE * stored):
        return False
    embedding_model_centroids_update(model=model)
    return True
