"""Training objectives: image-text InfoNCE, neighbour alignment, category cross-entropy.

All contrastive losses use in-batch negatives with a mask of pairs that must NOT count as
negatives (same text; items sharing a lookbook): a masked pair is removed from the
softmax denominator instead of being pushed apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_infonce(logits: torch.Tensor, not_negative: torch.Tensor | None = None) -> torch.Tensor:
    """Return the symmetric InfoNCE loss for logits (N, N) whose positives are the diagonal.

    `not_negative` (N, N) bool: True where column j is not a negative for row i (and, read
    transposed, row i not a negative for column j). The diagonal is always kept.
    """
    n = logits.shape[0]
    labels = torch.arange(n, device=logits.device)
    if not_negative is not None:
        eye = torch.eye(n, dtype=torch.bool, device=logits.device)
        drop = not_negative & ~eye  # (N, N)
        logits = logits.masked_fill(drop, float("-inf"))
    # The same mask serves both directions: column-wise softmax reads logits.T.
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def clip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    not_negative: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return symmetric image-text InfoNCE for normalised (N, D) image and text vectors.

    `logit_scale` is the learned log temperature. Pass `not_negative` = "same text" so
    two photos of the same catalog text are not pushed apart.
    """
    logits = logit_scale.exp() * image @ text.T  # (N, N)
    return masked_infonce(logits, not_negative)


def neighbour_loss(
    fused_a: torch.Tensor,
    image_b: torch.Tensor,
    text_b: torch.Tensor,
    fused_b: torch.Tensor,
    image_a: torch.Tensor,
    text_a: torch.Tensor,
    logit_scale: torch.Tensor,
    not_negative: torch.Tensor,
) -> torch.Tensor:
    """Return neighbour alignment across fusion for P neighbour pairs (a_i, b_i).

    The fused vector of a_i must find the image and the text of b_i (and the fused vector
    of b_i those of a_i) among the batch. `not_negative` (P, P): True where a_i and b_j
    share a lookbook (or are the same item): such j is a positive in disguise, so it is
    removed from a_i's negatives instead of being pushed away.
    """
    scale = logit_scale.exp()
    losses = [
        masked_infonce(scale * fused_a @ image_b.T, not_negative),  # (P, P)
        masked_infonce(scale * fused_a @ text_b.T, not_negative),
        masked_infonce(scale * fused_b @ image_a.T, not_negative.T),
        masked_infonce(scale * fused_b @ text_a.T, not_negative.T),
    ]
    return torch.stack(losses).mean()


def category_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return cross-entropy over labelled rows (label -1 = unlabelled, ignored)."""
    if bool((labels >= 0).any()):
        return F.cross_entropy(logits, labels, ignore_index=-1)
    return logits.sum() * 0.0  # keeps the graph; no labelled row in this batch


def share_mask(
    groups_a: list[set[str]], groups_b: list[set[str]], ids_a: list[str], ids_b: list[str]
) -> torch.Tensor:
    """Return (len(a), len(b)) bool: True where a_i and b_j share a group or are one item."""
    return torch.tensor(
        [
            [ia == ib or bool(ga & gb) for gb, ib in zip(groups_b, ids_b, strict=True)]
            for ga, ia in zip(groups_a, ids_a, strict=True)
        ],
        dtype=torch.bool,
    )
