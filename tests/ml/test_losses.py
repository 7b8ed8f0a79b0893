"""Loss masking: items that share a lookbook (or a text) are never counted as negatives."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from embeddings.ml.losses import clip_loss, masked_infonce, neighbour_loss, share_mask


def test_masked_pair_leaves_the_softmax_denominator() -> None:
    logits = torch.tensor([[2.0, 5.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.2, 1.0]])
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True  # items 0 and 1 share a lookbook
    loss = masked_infonce(logits, mask)
    # By hand: row 0 sees only columns 0 and 2; column 0 sees only rows 0 and 2.
    row = [
        -2.0 + math.log(math.exp(2.0) + math.exp(0.0)),
        -3.0 + math.log(math.exp(3.0) + math.exp(0.5)),
        -1.0 + math.log(math.exp(0.0) + math.exp(0.2) + math.exp(1.0)),
    ]
    col = [
        -2.0 + math.log(math.exp(2.0) + math.exp(0.0)),
        -3.0 + math.log(math.exp(3.0) + math.exp(0.2)),
        -1.0 + math.log(math.exp(0.0) + math.exp(0.5) + math.exp(1.0)),
    ]
    assert loss.item() == pytest_approx((sum(row) / 3 + sum(col) / 3) / 2)


def pytest_approx(x: float) -> object:
    import pytest

    return pytest.approx(x, rel=1e-5)


def test_unmasked_infonce_is_plain_cross_entropy_both_ways() -> None:
    logits = torch.randn(5, 5)
    expected = (
        F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))
    ) / 2
    assert masked_infonce(logits).item() == pytest_approx(expected.item())


def test_lookbook_mate_is_not_pushed_away_by_neighbour_loss() -> None:
    eye = torch.eye(4, 8)
    # Every pair (a_i, b_i) is perfectly aligned; b_2's image also looks like a_0 (they
    # share lookbook "lb1", e.g. two items of one board photographed on one backdrop).
    image_b = eye.clone()
    image_b[2] = F.normalize(eye[0] + eye[2], dim=-1)
    not_neg = share_mask(
        [{"lb1"}, {"x"}, {"y"}, {"z"}],
        [{"p"}, {"q"}, {"lb1"}, {"r"}],
        ["a0", "a1", "a2", "a3"],
        ["b0", "b1", "b2", "b3"],
    )
    assert not_neg.nonzero().tolist() == [[0, 2]]
    image_b.requires_grad_()
    scale = torch.tensor(math.log(10.0))
    masked = neighbour_loss(eye, image_b, eye, eye, eye, eye, scale, not_neg)
    unmasked = neighbour_loss(eye, image_b, eye, eye, eye, eye, scale, torch.zeros(4, 4).bool())
    assert masked.item() < unmasked.item()
    # With the mask, b_2's image gets no gradient towards or away from a_0: only from its
    # own positive a_2 and the true negatives a_1, a_3, whose directions are e_1, e_2, e_3.
    masked.backward()
    assert image_b.grad is not None
    assert abs(image_b.grad[2, 0].item()) < 1e-7


def test_identical_texts_are_not_negatives_in_clip_loss() -> None:
    img = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    txt = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    scale = torch.tensor(math.log(20.0))
    same_text = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    unmasked = clip_loss(img, txt, scale)
    masked = clip_loss(img, txt, scale, same_text)
    # Two photos of one text: unmasked, each is "wrong" half the time; masked, both right.
    assert unmasked.item() > 0.4
    assert masked.item() < 1e-3


def test_only_pairs_of_one_products_variants_align_their_photos() -> None:
    from embeddings.ml.train_config import TrainConfig
    from embeddings.ml.train_data import PairSampler
    from embeddings.ml.train_objectives import Objectives

    ids = ["p1-red", "p1-blue", "sofa", "lamp", "p2-red", "p2-blue"]
    groups = {
        "product:1": ["p1-red", "p1-blue"],
        "product:2": ["p2-red", "p2-blue"],
        "room:7": ["sofa", "lamp"],  # go together, but a lamp's photo is no sofa's
    }
    sampler = PairSampler(ids, groups, walk_length=1)
    objectives = Objectives(
        config=TrainConfig(),
        sampler=sampler,
        ids=ids,
        labels=torch.full((6,), -1),
        text_of=torch.arange(6),
        w_neighbour=0.0,
        w_category=0.0,
        w_variant=1.0,
    )
    a_idx, b_idx = [0, 2, 4], [1, 3, 5]  # pairs: product 1, room 7, product 2
    # A step's image rows: the anchors' (a_idx order), then their neighbours' (b_idx order).
    image = F.normalize(torch.randn(6, 8), dim=-1).requires_grad_()
    scale = torch.tensor(math.log(10.0))
    loss = objectives._variant_loss(image, scale, a_idx, b_idx)
    assert loss is not None
    rows_a, rows_b = image[[0, 2]], image[[3, 5]]
    assert loss.item() == pytest_approx(masked_infonce(10.0 * rows_a @ rows_b.T).item())
    loss.backward()
    assert image.grad is not None
    assert image.grad[[1, 4]].abs().max().item() == 0.0  # the room pair is not asked
    assert image.grad[[0, 2, 3, 5]].abs().min().item() > 0.0
    # One variant pair alone has no negative to learn from: the term sits the step out.
    assert objectives._variant_loss(image, scale, [0, 2], [1, 3]) is None
