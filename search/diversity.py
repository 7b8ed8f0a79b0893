"""Diversifying a ranking by maximal marginal relevance (MMR): pure numpy, no database."""

from __future__ import annotations

import numpy as np

#: MMR trade-off: 1.0 is pure relevance, 0.0 pure novelty.
MMR_LAMBDA = 0.7


def mmr_order(
    *, candidates: list[tuple[int, float]], vectors: dict[int, np.ndarray], limit: int
) -> list[tuple[int, float]]:
    """Re-rank by maximal marginal relevance: each pick trades relevance for looking
    unlike what was already picked. Candidates without a vector keep their relevance."""
    if len(candidates) <= 1:
        return candidates[:limit]
    relevance = np.array([score for _, score in candidates], dtype=np.float32)
    span = float(relevance.max() - relevance.min()) or 1.0
    relevance = (relevance - relevance.min()) / span  # comparable with cosine in [0, 1]
    dim = next((len(v) for v in vectors.values()), 0)
    matrix = np.zeros((len(candidates), max(dim, 1)), dtype=np.float32)
    for row, (pid, _) in enumerate(candidates):
        if pid in vectors:
            vector = vectors[pid]
            matrix[row] = vector / (np.linalg.norm(vector) or 1.0)
    similarity = matrix @ matrix.T  # (N, N) cosine between candidates
    chosen: list[int] = []
    redundancy = np.zeros(len(candidates), dtype=np.float32)
    remaining = np.ones(len(candidates), dtype=bool)
    for _ in range(min(limit, len(candidates))):
        scores = MMR_LAMBDA * relevance - (1 - MMR_LAMBDA) * redundancy
        scores[~remaining] = -np.inf
        pick = int(np.argmax(scores))
        chosen.append(pick)
        remaining[pick] = False
        redundancy = np.maximum(redundancy, similarity[pick])
    return [candidates[index] for index in chosen]
