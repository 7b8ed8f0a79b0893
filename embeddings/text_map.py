"""The text query map: a linear map from a version's text vectors to its fused vectors.

Pure numpy (no Django, no torch): the embeddings engine fits it on the catalog
(`embeddings.services.centroids.text_query_map_fit`), search applies it to every text query.
"""

from __future__ import annotations

import numpy as np

#: No map is fitted on fewer (text, fused) pairs than this or than the vector dimension
#: (see `enough_pairs`): text search then ranks by the words' own vector. On sampled H&M
#: catalogs even 30 pairs helped on average, but on a 30-product catalog of templated texts
#: the map memorised them (fit cosine 0.999) and sent "blue" to red products. Below a few
#: hundred products the HNSW index is all but exact anyway, which is what the map is for.
MIN_PAIRS = 20
#: Ridge strength per pair: weak, only to keep the solve well conditioned (on held-out H&M
#: words, 1e-4 ranked the asked product type best; stronger pulls towards the mean).
RIDGE = 1e-4


def pairs_needed(dimension: int) -> int:
    """How many (text, fused) pairs a map for vectors of `dimension` is fitted on at least."""
    return max(MIN_PAIRS, dimension)


def enough_pairs(count: int, dimension: int) -> bool:
    """True when `count` pairs are enough to fit a map for vectors of `dimension`."""
    return count >= pairs_needed(dimension)


def solve(text: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """Least-squares map from text vectors to their products' fused vectors.

    Returns float32 (D + 2, D): W (D, D), then the text mean and the fused mean, so that a
    query q maps to normalise((q - mean_text) @ W + mean_fused). This is unCLIP's "prior"
    (a text embedding -> the image embedding it describes) in its simplest, linear form,
    fitted on the retailer's own catalog. The means shift alone (the modality-gap fix it
    replaces) left a shopper's words in a region where no product vector lies, where
    HNSW's greedy walk stops early; mapped, they land among the products.
    """
    mean_text, mean_fused = text.mean(axis=0), fused.mean(axis=0)
    centred_text, centred_fused = text - mean_text, fused - mean_fused
    dim = text.shape[1]
    gram = centred_text.T.astype(np.float64) @ centred_text
    ridge = RIDGE * len(text) * np.eye(dim)
    weights = np.linalg.solve(gram + ridge, centred_text.T.astype(np.float64) @ centred_fused)
    return np.vstack([weights, mean_text, mean_fused]).astype(np.float32)


def apply(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Map text vectors (D,) or (N, D) with a `solve` matrix; L2-normalised."""
    weights, mean_text, mean_fused = matrix[:-2], matrix[-2], matrix[-1]
    mapped = (np.asarray(vectors, dtype=np.float32) - mean_text) @ weights + mean_fused
    norms = np.linalg.norm(mapped, axis=-1, keepdims=True)
    return (mapped / np.where(norms > 0, norms, 1.0)).astype(np.float32)
