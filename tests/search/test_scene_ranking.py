"""The scene ranking's math (pure numpy, shared by the web app and the shop-the-look bench)."""

from __future__ import annotations

import numpy as np
import pytest

from search.scene_ranking import (
    CatalogueCosines,
    CoverWindowMatches,
    LookbookGraph,
    LookbookNeighbour,
    RegionMatches,
    SceneContext,
    SceneEvidence,
    SceneWeights,
    context_evidence,
    cover_window_evidence,
    cover_windows_nearest,
    evidence_table,
    kind_vote,
    region_evidence,
    scene_combine,
    scene_order,
    scene_rank,
)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def logistic(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def test_catalogue_cosines_give_each_querys_mean_and_spread_over_the_catalogue() -> None:
    rng = np.random.default_rng(0)
    products = unit(rng.normal(size=(500, 16)) + 0.5)
    queries = unit(rng.normal(size=(3, 16)))

    means, stds = CatalogueCosines.from_vectors(products).of(queries)

    cosines = queries @ products.T  # (3, 500)
    np.testing.assert_allclose(means, cosines.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stds, cosines.std(axis=1), rtol=1e-9)


def test_a_match_standing_out_of_its_window_beats_a_higher_cosine_of_a_bland_window() -> None:
    # A window of bare wall is close to every product shot on white (mean 0.8): its best
    # match, 0.85, is ordinary there. The sofa window's 0.6 is far above its mean of 0.2.
    wall = RegionMatches((0, 0, 0.5, 0.5), [(1, 0.85)], catalogue_mean=0.8, catalogue_std=0.05)
    sofa = RegionMatches((0.5, 0.5, 1, 1), [(2, 0.6)], catalogue_mean=0.2, catalogue_std=0.1)

    evidence, best = region_evidence([wall, sofa], floor=2.0, span=1.0, rank_constant=1.0)

    # z-scores 1 and 4 through the logistic around 2
    assert evidence == pytest.approx({1: logistic(-1.0), 2: logistic(2.0)})
    assert best == {1: (0, 0.85), 2: (1, 0.6)}


def test_a_product_keeps_its_best_z_score_and_is_listed_under_its_best_cosine() -> None:
    first = RegionMatches((0, 0, 1, 1), [(1, 0.5), (2, 0.3)], catalogue_mean=0.1, catalogue_std=0.1)
    second = RegionMatches((0, 0, 1, 1), [(2, 0.7)], catalogue_mean=0.5, catalogue_std=0.1)

    evidence, best = region_evidence([first, second], floor=3.0, span=0.5, rank_constant=1e9)

    # z: product 1 is 4 in the first window; product 2 is 2 in both
    assert evidence == pytest.approx({1: logistic(2.0), 2: logistic(-2.0)})
    assert best[2] == (1, 0.7)  # the window it matches best by cosine, for the hotspots


def test_without_the_catalogues_spread_a_window_is_judged_by_its_own_matches() -> None:
    region = RegionMatches((0, 0, 1, 1), [(1, 0.9), (2, 0.5), (3, 0.4)])

    evidence, _ = region_evidence([region], floor=0.0, span=1.0, rank_constant=2.0)

    cosines = np.array([0.9, 0.5, 0.4])
    z = (cosines - cosines.mean()) / cosines.std()
    # and the rank discount c / (c + rank): 1, 2/3, 1/2
    assert evidence == pytest.approx(
        {1: logistic(z[0]), 2: logistic(z[1]) * 2 / 3, 3: logistic(z[2]) / 2}
    )


def graph() -> LookbookGraph:
    return LookbookGraph(
        members={10: [1, 2], 11: [2, 3], 12: [4], 13: [5]},
        kinds={10: "Kitchen", 11: "Kitchen", 12: "Bedroom", 13: ""},
    )


def test_the_kind_is_voted_by_the_nearest_covers_and_kindless_lookbooks_abstain() -> None:
    neighbours = [
        LookbookNeighbour(13, 0.99),  # nearest, but has no kind
        LookbookNeighbour(12, 0.90),
        LookbookNeighbour(10, 0.80),
        LookbookNeighbour(11, 0.80),
    ]

    context = kind_vote(neighbours, graph(), count=3, temperature=1e9)  # equal votes

    assert context.kind == "Kitchen"
    assert context.confidence == pytest.approx(2 / 3)
    assert context.kinds == pytest.approx({"Kitchen": 2 / 3, "Bedroom": 1 / 3})
    assert kind_vote([], graph(), count=3, temperature=0.1) == SceneContext("", 0.0, {})


def test_context_weighs_each_kinds_popularity_by_its_share_of_the_vote() -> None:
    popularity = graph().kind_popularity()
    assert popularity == {"Kitchen": {1: 0.5, 2: 1.0, 3: 0.5}, "Bedroom": {4: 1.0}}

    context = SceneContext("Kitchen", 0.75, {"Kitchen": 0.75, "Bedroom": 0.25})

    assert context_evidence(context, popularity) == pytest.approx(
        {1: 0.375, 2: 0.75, 3: 0.375, 4: 0.25}
    )


def test_scene_rank_lists_each_product_once_under_its_best_region_with_the_guessed_kind() -> None:
    left = RegionMatches(
        (0, 0, 0.5, 1), [(4, 0.9), (1, 0.4)], catalogue_mean=0.1, catalogue_std=0.1
    )
    right = RegionMatches((0.5, 0, 1, 1), [(1, 0.6)], catalogue_mean=0.1, catalogue_std=0.1)
    weights = SceneWeights(
        region=1.0, lookalike=0.0, context=0.1, graph=0.0, region_z_floor=3.0, region_z_span=1.0
    )

    ranked, context = scene_rank(
        regions=[left, right],
        neighbours=[LookbookNeighbour(12, 0.9), LookbookNeighbour(10, 0.2)],
        graph=graph(),
        weights=weights,
    )

    ids = [r.product_id for r in ranked]
    assert len(ids) == len(set(ids))
    assert ids[:2] == [4, 1]  # the region matches first, the strongest first
    assert (ranked[1].region, ranked[1].region_score) == (1, 0.6)
    assert context.kind == "Bedroom"
    assert {2, 3} <= set(ids)  # the other kind's products come in by context alone
    assert all(r.region is None for r in ranked if r.product_id in {2, 3})


def test_each_scene_window_shares_one_vote_among_its_nearest_cover_windows_lookbooks() -> None:
    windows = [
        # nearest first: 11 twice (two of its windows), then 10; the 4th is past `count`
        CoverWindowMatches([(11, 0.9), (11, 0.8), (10, 0.7), (12, 0.6)]),
        CoverWindowMatches([(12, 0.5)]),
        CoverWindowMatches([]),  # a window the index found nothing for votes for nothing
    ]

    evidence = cover_window_evidence(windows, graph(), count=3, temperature=1e9)  # equal shares

    # lookbook votes: 11 -> 2/3, 10 -> 1/3, 12 -> 1; products: 1 (10), 2 (10, 11), 3 (11), 4 (12)
    assert evidence == pytest.approx({1: 1 / 3, 2: 1.0, 3: 2 / 3, 4: 1.0})


def test_a_cold_temperature_gives_a_scene_windows_vote_to_its_nearest_cover_window() -> None:
    windows = [CoverWindowMatches([(10, 0.6), (12, 0.9)])]  # unsorted: the nearest is 12

    evidence = cover_window_evidence(windows, graph(), count=2, temperature=1e-4)

    assert evidence[4] == pytest.approx(1.0)
    assert evidence.get(1, 0.0) < 1e-9


def test_products_of_the_lookbook_whose_cover_windows_match_the_scene_lead_the_ranking() -> None:
    # The regions match nothing well (a room's sofa against product shots on white); the
    # scene's windows find the windows of lookbook 12's cover (the same sofa, photographed
    # in a room). The nearest cover as a whole photo is a kitchen, so the kind's popularity
    # alone puts the kitchen products first, as the ranking did before it read cover windows.
    bland = RegionMatches((0, 0, 1, 1), [(1, 0.3)], catalogue_mean=0.25, catalogue_std=0.1)
    weights = SceneWeights(context=1.0, graph=0.0, cover_windows=2.0)

    def first(cover_windows: list[CoverWindowMatches]) -> int:
        ranked, _ = scene_rank(
            regions=[bland],
            neighbours=[LookbookNeighbour(11, 0.9)],
            graph=graph(),
            weights=weights,
            cover_windows=cover_windows,
        )
        return ranked[0].product_id

    assert first([]) == 2  # the kitchens' most frequent product
    assert first([CoverWindowMatches([(12, 0.8)]), CoverWindowMatches([(12, 0.7)])]) == 4


def test_each_scene_window_gets_its_nearest_cover_windows_best_first_with_their_lookbook() -> None:
    rng = np.random.default_rng(3)
    covers = unit(rng.normal(size=(40, 8)))
    owner = np.repeat(np.arange(100, 108), 5)  # 8 lookbooks of 5 windows
    scene = unit(covers[[7, 21]] + 0.05 * rng.normal(size=(2, 8)))

    found = cover_windows_nearest(scene, covers, owner)

    for window, matches in zip(scene, found, strict=True):
        cosines = covers @ window
        expected = np.argsort(-cosines)[: len(matches.matches)]
        assert len(matches.matches) == 10
        assert [lookbook for lookbook, _ in matches.matches] == owner[expected].tolist()
        np.testing.assert_allclose([c for _, c in matches.matches], cosines[expected], rtol=1e-6)
    assert found[0].matches[0][0] == owner[7] and found[1].matches[0][0] == owner[21]
    assert cover_windows_nearest(scene, covers[:0], owner[:0]) == [
        CoverWindowMatches([]),
        CoverWindowMatches([]),
    ]


def test_weighing_an_evidence_table_orders_the_products_as_scene_combine_does() -> None:
    """The bench's weight search weighs one table per scene for every mix: the order must be
    the ranking's own, ties by product id included."""
    rng = np.random.default_rng(4)

    def some(n: int) -> dict[int, float]:
        ids = rng.choice(60, size=n, replace=False)
        return {int(p): float(rng.choice([0.0, 0.5, 1.0, rng.random()])) for p in ids}

    evidence = SceneEvidence(
        region=some(20),
        region_of={},
        lookalike=some(15),
        context=some(30),
        graph=some(10),
        kind=SceneContext("", 0.0),
        cover_windows=some(25),
    )
    table = evidence_table(evidence)
    assert table.product_ids.tolist() == sorted(
        set(evidence.region)
        | set(evidence.lookalike)
        | set(evidence.context)
        | set(evidence.graph)
        | set(evidence.cover_windows)
    )
    for mix in [(1.0, 0.0, 0.5, 0.5, 2.0), (1.0, 1.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0, 0.0)]:
        weights = SceneWeights(
            region=mix[0], lookalike=mix[1], context=mix[2], graph=mix[3], cover_windows=mix[4]
        )
        ranked = scene_combine(evidence, weights)
        assert table.product_ids[scene_order(table, weights)].tolist() == [
            r.product_id for r in ranked
        ]
        scores = [r.score for r in ranked]
        assert scores == sorted(scores, reverse=True)
