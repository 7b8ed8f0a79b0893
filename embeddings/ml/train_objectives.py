"""The training objectives: image-text InfoNCE, neighbour alignment over the lookbook graph,
image-image alignment of a product's variants, category cross-entropy, and preserving the
frozen trunk's neighbourhoods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from embeddings.ml.losses import (
    category_loss,
    clip_loss,
    masked_infonce,
    neighbour_loss,
    share_mask,
)
from embeddings.ml.model import PinCLIP
from embeddings.ml.train_config import TrainConfig, group_prefixes
from embeddings.ml.train_data import PairSampler


@dataclass(frozen=True)
class Objectives:
    """A run's weighted loss terms, with what they need of its items besides a step's vectors.

    Built once per run; called per micro-step with the step's vectors and the indices of its
    pairs (`a_idx[i]` and `b_idx[i]` are lookbook-mates, or any two items when none share one).
    """

    config: TrainConfig
    sampler: PairSampler
    ids: list[str]  # item ids, by item index
    labels: torch.Tensor  # (N,) category index of each item, -1 when it has none
    text_of: torch.Tensor  # (N,) index of each item's distinct text (same text: no negative)
    w_neighbour: float  # config.w_neighbour, or 0 when the graph has no pairs
    w_category: float  # config.w_category, or 0 when no item has a category
    w_variant: float  # config.w_variant, or 0 when the graph has no variant groups

    def __call__(
        self,
        out: dict[str, torch.Tensor],
        model: PinCLIP,
        head: nn.Linear,
        a_idx: list[int],
        b_idx: list[int],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The step's loss and each term's value (and the total, "loss")."""
        idx = a_idx + b_idx
        labels = self.labels[idx].to(out["image"].device)
        text_ids = self.text_of[idx]
        config, sampler, ids = self.config, self.sampler, self.ids
        w_neighbour, w_category = self.w_neighbour, self.w_category
        scale = model.logit_scale
        p = len(a_idx)
        same_text = (text_ids[:, None] == text_ids[None, :]).to(out["image"].device)  # (2P, 2P)
        loss = torch.zeros((), device=out["image"].device)
        parts: dict[str, float] = {}
        if config.w_clip:
            lc = clip_loss(out["image"], out["text"], scale, same_text)
            loss = loss + config.w_clip * lc
            parts["clip"] = float(lc.detach())
        # The fused rows are the first k pairs' (k = p unless `fusion_pairs` cut them).
        k = out["fused"].shape[0] // 2
        if w_neighbour:
            a_k, b_k = a_idx[:k], b_idx[:k]
            not_neg = share_mask(
                sampler.groups(a_k),
                sampler.groups(b_k),
                [ids[i] for i in a_k],
                [ids[i] for i in b_k],
            ).to(out["image"].device)  # (k, k)
            f, im, tx = out["fused"], out["image"], out["text"]
            ln = neighbour_loss(
                f[:k], im[p : p + k], tx[p : p + k], f[k:], im[:k], tx[:k], scale, not_neg
            )
            loss = loss + w_neighbour * ln
            parts["neighbour"] = float(ln.detach())
        if self.w_variant:
            lv = self._variant_loss(out["image"], scale, a_idx, b_idx)
            if lv is not None:
                loss = loss + self.w_variant * lv
                parts["variant"] = float(lv.detach())
        if w_category:
            fused_labels = torch.cat([labels[:k], labels[p : p + k]])
            lcat = (
                category_loss(head(out["image"]), labels)
                + category_loss(head(out["fused"]), fused_labels)
            ) / 2
            loss = loss + w_category * lcat
            parts["category"] = float(lcat.detach())
        if config.w_preserve and "trunk" in out:
            lp = preserve_loss(out["trunk"], out["image"])
            loss = loss + config.w_preserve * lp
            parts["preserve"] = float(lp.detach())
        parts["loss"] = float(loss.detach())
        return loss, parts

    def _variant_loss(
        self, image: torch.Tensor, scale: torch.Tensor, a_idx: list[int], b_idx: list[int]
    ) -> torch.Tensor | None:
        """Image-image InfoNCE over the step's pairs that are variants of one product.

        Rows i whose pair (a_i, b_i) share a variant group: a_i's photo must find b_i's among
        those rows' photos (and back). Other variants of the same product are masked from
        the negatives; None when fewer than two such pairs came up this step.
        """
        prefixes = group_prefixes(self.config.variant_groups)
        rows, variants = [], []
        for i, (a, b) in enumerate(zip(a_idx, b_idx, strict=True)):
            shared = self.sampler.groups_of(a) & self.sampler.groups_of(b)
            if product := {g for g in shared if g.startswith(prefixes)}:
                rows.append(i)
                variants.append(product)
        if len(rows) < 2:
            return None
        p = len(a_idx)
        ids = [self.ids[a_idx[i]] for i in rows]
        not_neg = share_mask(variants, variants, ids, ids).to(image.device)  # (R, R)
        image_a, image_b = image[rows], image[[p + i for i in rows]]
        return masked_infonce(scale.exp() * image_a @ image_b.T, not_neg)


def preserve_loss(
    teacher: torch.Tensor, student: torch.Tensor, t_teacher: float = 0.05, t_student: float = 0.05
) -> torch.Tensor:
    """KL from the teacher's in-batch neighbour distribution to the student's (self excluded).

    `teacher` (B, F) and `student` (B, D) are L2-normalised; each row's softmax over the
    other items' cosines is a soft ranking of its neighbours, which the student must keep.
    """
    b = teacher.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=teacher.device)
    t = (teacher @ teacher.T / t_teacher).masked_fill(eye, float("-inf"))  # (B, B)
    s = (student @ student.T / t_student).masked_fill(eye, float("-inf"))  # (B, B)
    p = F.softmax(t.float(), dim=-1)
    log_q = F.log_softmax(s.float(), dim=-1).masked_fill(eye, 0.0)
    log_p = torch.log(p.clamp_min(1e-12)).masked_fill(eye, 0.0)
    return (p * (log_p - log_q)).sum(-1).mean()
