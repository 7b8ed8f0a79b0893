"""Complete the look's shared order (`embeddings.ml.look_ranking`), used by the search app and
the evaluation alike."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.ml.look_ranking import LookRanking, look_order, look_scores


def test_scores_blend_the_share_of_the_most_shared_with_the_cosine() -> None:
    scores = look_scores([4, 2, 0], [1.0, -1.0, 0.0], model_weight=0.5)

    assert scores == pytest.approx([1.0 + 0.5, 0.5 + 0.0, 0.0 + 0.25])
    # Nothing shared at all: the model alone.
    assert look_scores([0, 0], [0.2, 0.6], 1.0) == pytest.approx([0.6, 0.8])


def test_a_good_match_passes_a_poor_one_that_shares_one_lookbook_more() -> None:
    # Shares 2 of the query's lookbooks but the model finds it unrelated, against one that
    # shares 1 and matches well: strict "count first" would list the first one first.
    order = look_order([2, 1], [-0.8, 0.9], [False, False], ranking=LookRanking(1.0, 0))
    assert list(order) == [1, 0]
    # With a small weight the count still decides.
    order = look_order([2, 1], [-0.8, 0.9], [False, False], ranking=LookRanking(0.1, 0))
    assert list(order) == [0, 1]


def test_places_two_and_seven_go_to_products_no_lookbook_holds() -> None:
    # 10 products sharing lookbooks with the query, then 3 new ones the model likes less
    # than any of them: without kept places they would fill places 11-13.
    shared = [5] * 10 + [0, 0, 0]
    cosine = [0.9 - 0.01 * i for i in range(10)] + [0.3, 0.5, 0.1]
    is_new = [False] * 10 + [True] * 3

    unkept = look_order(shared, cosine, is_new, ranking=LookRanking(0.5, new_every=0))
    kept = look_order(shared, cosine, is_new, ranking=LookRanking(0.5, new_every=5), limit=10)

    assert list(unkept[:10]) == list(range(10))
    # The best new product (11, cosine 0.5) second, the next (10) seventh; the rest keep
    # their order in the places left.
    assert list(kept) == [0, 11, 1, 2, 3, 4, 10, 5, 6, 7]


def test_kept_places_fall_back_to_the_score_order_when_no_new_product_is_left() -> None:
    order = look_order([1, 1, 0], [0.1, 0.2, 0.0], [False, False, True], limit=None)

    # The only new product takes place 2; the later kept place has none left to give.
    assert list(order) == [1, 2, 0]
    assert list(look_order([1, 1], [0.1, 0.2], [False, False])) == [1, 0]
    assert list(look_order([], [], [])) == []


def test_a_new_product_already_ranked_above_its_kept_place_is_not_listed_twice() -> None:
    order = look_order([0, 0, 0], [0.9, 0.1, 0.5], [True, True, True], limit=None)

    assert list(order) == [0, 2, 1]
    assert len(set(order.tolist())) == 3


def test_every_candidate_gets_exactly_one_place() -> None:
    rng = np.random.default_rng(0)
    shared = rng.integers(0, 4, size=200)
    order = look_order(shared, rng.uniform(-1, 1, 200), shared == 0, limit=None)

    assert sorted(order.tolist()) == list(range(200))


def test_one_value_per_candidate_is_required() -> None:
    with pytest.raises(ValueError, match="one value per candidate"):
        look_order([1, 2], [0.1, 0.2], [True])
