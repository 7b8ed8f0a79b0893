"""Retrieval metrics on L2-normalised embeddings, as per-query arrays.

Every function here is pure numpy and returns one value per query, so that the caller can
average them, split them into cold/warm cells and bootstrap them (see ``bootstrap.py``).

Conventions:
- ``queries`` (Q, D) and ``gallery`` (N, D) are L2-normalised float32; the score of a pair is
  their dot product (cosine similarity).
- A rank is 1-based: rank 1 is the best-scored gallery item. Ties count against the target
  (an item scoring exactly as high as the target is ranked before it), so a constant model
  never looks good by accident.
- ``exclude`` lists, per query, gallery indices that must not be ranked (the query item itself,
  the context items of a lookbook); they are treated as absent from the gallery.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Rows of the score matrix computed at once: bounds memory at about CHUNK x N floats.
CHUNK = 512


def _masked_scores(
    queries: npt.NDArray[np.floating],
    gallery: npt.NDArray[np.floating],
    start: int,
    stop: int,
    exclude: Sequence[Sequence[int]] | None,
) -> npt.NDArray[np.float32]:
    scores = (queries[start:stop] @ gallery.T).astype(np.float32)  # (q, N)
    if exclude is not None:
        for row, q in enumerate(range(start, stop)):
            idx = list(exclude[q])
            if idx:
                scores[row, idx] = -np.inf
    return scores


def target_ranks(
    queries: npt.NDArray[np.floating],
    gallery: npt.NDArray[np.floating],
    targets: Sequence[int] | npt.NDArray[np.integer],
    exclude: Sequence[Sequence[int]] | None = None,
) -> IntArray:
    """Rank of each query's single target in the gallery.

    Returns an int array (Q,) of 1-based ranks: 1 + the number of non-excluded gallery items
    scoring at least as high as the target (other than the target itself).
    """
    targets_arr = np.asarray(targets, dtype=np.int64)
    if len(targets_arr) != len(queries):
        raise ValueError("one target per query is required")
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), CHUNK):
        stop = min(start + CHUNK, len(queries))
        scores = _masked_scores(queries, gallery, start, stop, exclude)
        rows = np.arange(stop - start)
        target_scores = scores[rows, targets_arr[start:stop]]
        if not np.all(np.isfinite(target_scores)):
            raise ValueError("a query's target is excluded from its gallery")
        ahead = (scores >= target_scores[:, None]).sum(axis=1) - 1  # minus the target itself
        ranks[start:stop] = ahead + 1
    return ranks


def top_k(
    queries: npt.NDArray[np.floating],
    gallery: npt.NDArray[np.floating],
    k: int,
    exclude: Sequence[Sequence[int]] | None = None,
) -> IntArray:
    """Indices of the k best-scored gallery items for each query, best first.

    Returns an int array (Q, k'), k' = min(k, N). Excluded items never appear unless fewer than
    k items remain (callers keep galleries much larger than k).
    """
    k_eff = min(k, len(gallery))
    out = np.empty((len(queries), k_eff), dtype=np.int64)
    for start in range(0, len(queries), CHUNK):
        stop = min(start + CHUNK, len(queries))
        scores = _masked_scores(queries, gallery, start, stop, exclude)
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]  # (q, k) unordered
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(ranks: npt.NDArray[np.integer], k: int) -> FloatArray:
    """Per-query hit (1.0 or 0.0): whether the single target is within the top k."""
    return (np.asarray(ranks) <= k).astype(np.float64)


def reciprocal_rank(ranks: npt.NDArray[np.integer]) -> FloatArray:
    """Per-query reciprocal rank 1/rank; its mean is the MRR."""
    return 1.0 / np.asarray(ranks, dtype=np.float64)


def ndcg_at_k(ranks: npt.NDArray[np.integer], k: int) -> FloatArray:
    """Per-query nDCG@k with one relevant item: 1/log2(rank + 1) within the top k, else 0.

    With a single relevant item the ideal DCG is 1, so no normalisation is needed.
    """
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)


def set_recall_at_k(
    topk: npt.NDArray[np.integer], relevant: Sequence[Sequence[int]], k: int
) -> FloatArray:
    """Per-query recall@k against a set of relevant items: |top k ∩ relevant| / |relevant|.

    Queries with an empty relevant set get NaN (the caller drops them).
    """
    out = np.empty(len(relevant), dtype=np.float64)
    for q, rel in enumerate(relevant):
        rel_set = set(int(i) for i in rel)
        if not rel_set:
            out[q] = np.nan
            continue
        hits = len(rel_set.intersection(int(i) for i in topk[q, :k]))
        out[q] = hits / len(rel_set)
    return out


def label_precision_at_k(
    topk: npt.NDArray[np.integer],
    gallery_labels: Sequence[str],
    query_labels: Sequence[str],
    k: int,
) -> FloatArray:
    """Per-query precision@k of labels: the share of the top k whose label equals the query's."""
    labels = np.asarray(gallery_labels, dtype=object)
    out = np.empty(len(query_labels), dtype=np.float64)
    for q, label in enumerate(query_labels):
        retrieved = labels[topk[q, :k]]
        out[q] = float(np.mean(retrieved == label)) if len(retrieved) else np.nan
    return out


def mean_of_normalised(vectors: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """The L2-normalised mean of a set of unit vectors (the query for a partial lookbook)."""
    mean = np.asarray(vectors, dtype=np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm == 0.0:
        return mean.astype(np.float32)
    return (mean / norm).astype(np.float32)
