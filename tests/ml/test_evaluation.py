"""Tests of the evaluation package on hand-built embeddings with known answers.

Framework-free: no database, no torch, no dataset files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embeddings.ml.evaluation import metrics as m
from embeddings.ml.evaluation.bootstrap import bootstrap_ci, paired_relative_ci
from embeddings.ml.evaluation.catalog import Catalog, CatalogItem, Scene, as_catalog
from embeddings.ml.evaluation.evaluate import (
    EvalConfig,
    cooccurrence_baseline,
    evaluate,
    plan_queries,
)
from embeddings.ml.evaluation.look_fit import fit_look_ranking, validation_split
from embeddings.ml.evaluation.splits import Split, make_split


def unit(*rows: list[float]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# ---------------------------------------------------------------- metrics


def test_target_ranks_count_items_scoring_at_least_the_target() -> None:
    gallery = unit([1, 0], [0.8, 0.6], [0, 1], [-1, 0])
    queries = unit([1, 0], [0, 1], [1, 0])
    # q0 -> item 0 is best (rank 1); q1 -> item 1 is second after item 2; q2 -> item 3 last.
    ranks = m.target_ranks(queries, gallery, [0, 1, 3])
    assert ranks.tolist() == [1, 2, 4]


def test_target_ranks_skip_excluded_items() -> None:
    gallery = unit([1, 0], [0.8, 0.6], [0, 1], [-1, 0])
    queries = unit([1, 0])
    assert m.target_ranks(queries, gallery, [3], [[0, 1]]).tolist() == [2]
    with pytest.raises(ValueError):
        m.target_ranks(queries, gallery, [0], [[0]])


def test_ties_count_against_the_target() -> None:
    gallery = unit([1, 0], [1, 0], [0, 1])
    assert m.target_ranks(unit([1, 0]), gallery, [1]).tolist() == [2]


def test_recall_mrr_and_ndcg_exact_values() -> None:
    ranks = np.array([1, 2, 5, 11])
    assert m.recall_at_k(ranks, 1).tolist() == [1, 0, 0, 0]
    assert m.recall_at_k(ranks, 5).tolist() == [1, 1, 1, 0]
    assert m.recall_at_k(ranks, 10).mean() == pytest.approx(0.75)
    assert m.reciprocal_rank(ranks).mean() == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 11) / 4)
    ndcg = m.ndcg_at_k(ranks, 10)
    assert ndcg.tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0])


def test_top_k_is_sorted_best_first_and_respects_exclusions() -> None:
    gallery = unit([1, 0], [0.8, 0.6], [0, 1], [-1, 0])
    top = m.top_k(unit([1, 0]), gallery, 3)
    assert top.tolist() == [[0, 1, 2]]
    assert m.top_k(unit([1, 0]), gallery, 2, [[0]]).tolist() == [[1, 2]]


def test_set_recall_and_label_precision() -> None:
    top = np.array([[3, 1, 4, 0], [2, 0, 1, 3]])
    rec = m.set_recall_at_k(top, [[1, 0, 9], []], k=2)
    assert rec[0] == pytest.approx(1 / 3)
    assert math.isnan(rec[1])
    prec = m.label_precision_at_k(top, ["a", "b", "a", "b", "a"], ["a", "b"], k=4)
    assert prec.tolist() == pytest.approx([0.5, 0.5])


def test_mean_of_normalised_is_unit_length() -> None:
    v = m.mean_of_normalised(unit([1, 0], [0, 1]))
    assert np.linalg.norm(v) == pytest.approx(1.0)
    assert v.tolist() == pytest.approx([math.sqrt(0.5)] * 2)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_the_point_estimate() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 5, 40, 500):
        values = rng.random(n) < 0.3
        mv = bootstrap_ci(values.astype(float), resamples=300, seed=1)
        assert mv.ci_low <= mv.value <= mv.ci_high
        assert mv.n == n
        assert mv.value == pytest.approx(values.mean())


def test_bootstrap_ci_drops_nans_and_narrows_with_more_queries() -> None:
    mv = bootstrap_ci([1.0, float("nan"), 0.0])
    assert mv.n == 2 and mv.value == 0.5
    small = bootstrap_ci(np.tile([0.0, 1.0], 10))
    large = bootstrap_ci(np.tile([0.0, 1.0], 1000))
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low)
    empty = bootstrap_ci([])
    assert empty.n == 0 and math.isnan(empty.value)


def test_paired_relative_change() -> None:
    base = np.array([1.0, 0.0, 1.0, 0.0] * 25)
    better = np.array([1.0, 1.0, 1.0, 0.0] * 25)
    rc = paired_relative_ci(base, better, seed=0)
    assert rc.value == pytest.approx(0.5)
    assert rc.ci_low <= 0.5 <= rc.ci_high and rc.ci_low > 0.0


# ---------------------------------------------------------------- splits


def make_catalog(n: int = 60, n_lookbooks: int = 12, with_scenes: bool = True) -> Catalog:
    items = [
        CatalogItem(f"i{i:03d}", f"/img/i{i:03d}.jpg", f"text {i}", f"cat{i % 3}") for i in range(n)
    ]
    lookbooks = {
        f"lb{j:02d}": [f"i{i:03d}" for i in range(j * 4, j * 4 + 4)] for j in range(n_lookbooks)
    }
    lookbooks["lb00"].append("i050")  # an item in two lookbooks
    scenes = (
        [
            Scene(f"lb{j:02d}", f"/img/scene{j}.jpg", tuple(lookbooks[f"lb{j:02d}"]), f"lb{j:02d}")
            for j in range(n_lookbooks)
        ]
        if with_scenes
        else []
    )
    return Catalog("toy", items, lookbooks, scenes)


def test_make_split_is_deterministic_and_reloadable(tmp_path: Path) -> None:
    cat = make_catalog()
    a = make_split(cat, seed=7)
    b = make_split(cat, seed=7)
    assert a == b
    assert make_split(cat, seed=8) != a
    path = a.save(tmp_path / "split.json")
    assert path.read_text() == b.save(tmp_path / "again.json").read_text()
    loaded = Split.load(path)
    assert loaded == a
    assert loaded.cell(a.cold_items[0]) == "cold"
    assert len(a.cold_items) == 12  # 20% of 49 linked items (10) + of 11 unlinked (2)
    assert len(a.heldout_lookbooks) == 3


def test_cold_items_and_heldout_lookbooks_never_reach_the_training_graph() -> None:
    cat = make_catalog()
    for seed in range(5):
        split = make_split(cat, seed=seed, cold_fraction=0.3, heldout_lookbook_fraction=0.3)
        graph = split.training_lookbooks(cat.lookbooks)
        in_graph = {i for members in graph.values() for i in members}
        assert not in_graph & set(split.cold_items)
        assert not set(graph) & set(split.heldout_lookbooks)
        assert all(len(v) >= 2 for v in graph.values())
        train_ids = split.training_item_ids(cat.item_ids)
        assert not set(train_ids) & set(split.cold_items)
        assert len(train_ids) + len(split.cold_items) == len(cat.items)


def test_heldout_lookbooks_respect_prefix_and_size() -> None:
    cat = make_catalog()
    cat.lookbooks["section:big"] = [it.item_id for it in cat.items]
    cat.lookbooks["section:small"] = ["i001", "i002"]
    split = make_split(cat, seed=0, heldout_lookbook_fraction=0.9, max_lookbook_size=50)
    assert "section:big" not in split.heldout_lookbooks
    split = make_split(cat, seed=0, heldout_lookbook_fraction=0.9, lookbook_prefix="lb")
    assert all(lid.startswith("lb") for lid in split.heldout_lookbooks)


def test_split_refuses_another_dataset() -> None:
    split = make_split(make_catalog())
    with pytest.raises(ValueError, match="fingerprint"):
        split.check(make_catalog(n=61))


# ---------------------------------------------------------------- end to end


@dataclass
class FakeResult:
    vectors: np.ndarray
    failed: dict[int, str] = field(default_factory=dict)


class TableEncoder:
    """Looks vectors up by path/text; a path containing 'broken' fails to decode."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.dim = len(next(iter(table.values())))

    def _many(self, keys: Sequence[Any]) -> FakeResult:
        failed = {i: "cannot decode" for i, k in enumerate(keys) if "broken" in k}
        rows = [np.zeros(self.dim) if i in failed else self.table[k] for i, k in enumerate(keys)]
        return FakeResult(np.asarray(rows, dtype=np.float32), failed)

    def encode_images(self, images: Sequence[Any]) -> FakeResult:
        return self._many(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._many(texts).vectors

    def encode_items(self, images: Sequence[Any], texts: Sequence[str]) -> FakeResult:
        img, txt = self._many(images), self._many(texts)
        fused = img.vectors + txt.vectors
        norms = np.linalg.norm(fused, axis=1, keepdims=True)
        return FakeResult(fused / np.where(norms == 0, 1, norms), img.failed)


def oracle_table(cat: Catalog, seed: int = 0, dim: int = 64) -> dict[str, np.ndarray]:
    """Image = text = one random direction per item; a scene = the mean of its products."""
    rng = np.random.default_rng(seed)
    table: dict[str, np.ndarray] = {}
    for it in cat.items:
        v = rng.normal(size=dim)
        v /= np.linalg.norm(v)
        table[it.image_path] = table[it.text] = v
    for s in cat.scenes:
        v = np.mean([table[cat.items[cat.index[i]].image_path] for i in s.item_ids], axis=0)
        table[s.image_path] = v / np.linalg.norm(v)
    return table


def test_evaluate_with_an_oracle_encoder_gets_perfect_retrieval() -> None:
    cat = make_catalog()
    split = make_split(cat, seed=1)
    result = evaluate(TableEncoder(oracle_table(cat)), cat, split, EvalConfig(resamples=200))
    for metric in ("text_to_image/recall@1", "image_to_text/mrr"):
        for cell in ("cold", "warm"):
            mv = result.metrics[metric][cell]
            assert mv.value == 1.0 and mv.ci_low == 1.0
    assert result.metrics["text_to_image/recall@1"]["cold"].n == len(split.cold_items)
    # Scenes are the mean of their (4-5) products: all of them are in the top 10.
    assert result.metrics["shop_the_look/recall@10"]["cold"].value == 1.0
    d = result.to_dict()
    assert d["metrics"]["text_to_image/recall@1"]["warm"]["n"] == 60 - len(split.cold_items)


def test_image_to_text_ranks_shared_texts_once() -> None:
    # Two items per text (like clothing's "a photo of a t-shirt"): each photo still finds
    # its text first, and text->image category precision sees the shared category.
    items = [
        CatalogItem(f"i{i}", f"/img/{i}.jpg", f"text {i // 2}", f"c{i // 2}") for i in range(8)
    ]
    cat = Catalog("shared", items)
    rng = np.random.default_rng(0)
    table: dict[str, np.ndarray] = {}
    for j in range(4):
        v = rng.normal(size=16)
        table[f"text {j}"] = v / np.linalg.norm(v)
    for it in items:
        table[it.image_path] = table[it.text]
    split = make_split(cat, seed=0, cold_fraction=0.0)
    result = evaluate(TableEncoder(table), cat, split, EvalConfig(resamples=50, k=2))
    assert result.metrics["image_to_text/recall@1"]["warm"].value == 1.0
    assert result.metrics["text_to_image/category_precision@10"]["warm"].value == 1.0
    assert result.metrics["text_to_image/recall@1"]["warm"].value == 0.0  # ties count against
    assert result.chance["image_to_text/recall@1"]["warm"] == 0.25  # 4 distinct texts


def test_evaluate_puts_lookbook_queries_in_the_left_out_items_cell() -> None:
    cat = make_catalog()
    split = make_split(cat, seed=2, cold_fraction=0.5, heldout_lookbook_fraction=0.5)
    result = evaluate(TableEncoder(oracle_table(cat)), cat, split, EvalConfig(resamples=50))
    n = {c: result.metrics["lookbook_completion/recall@10"][c].n for c in ("cold", "warm")}
    expected = {"cold": 0, "warm": 0}
    for lid in split.heldout_lookbooks:
        for i in cat.lookbooks[lid]:
            expected[split.cell(i)] += 1
    assert n == expected


def test_fitb_negatives_come_from_the_same_category_outside_the_lookbook() -> None:
    cat = make_catalog()
    split = make_split(cat, seed=3, heldout_lookbook_fraction=0.5)
    plan = plan_queries(cat, split, EvalConfig(), np.ones(len(cat.items), dtype=bool))
    queries = [q for c in ("cold", "warm") for q in plan.leave_one_out[c]]
    assert queries and plan.fitb_fallbacks == 0
    for q in queries:
        target_cat = cat.items[q.target].category
        members = {cat.index[i] for i in cat.lookbooks[q.lookbook_id]}
        assert q.candidates[0] == q.target and len(q.candidates) == 4
        assert len(set(q.candidates)) == 4
        for neg in q.candidates[1:]:
            assert cat.items[neg].category == target_cat
            assert neg not in members


def test_query_plan_does_not_depend_on_the_model() -> None:
    cat = make_catalog()
    split = make_split(cat, seed=4)
    cfg = EvalConfig(resamples=50)
    a = evaluate(TableEncoder(oracle_table(cat, seed=0)), cat, split, cfg)
    b = evaluate(TableEncoder(oracle_table(cat, seed=1)), cat, split, cfg)
    for metric, cells in a.per_query.items():
        for cell, values in cells.items():
            assert len(values) == len(b.per_query[metric][cell])


def test_failed_photos_are_neither_queries_nor_results() -> None:
    cat = make_catalog()
    broken = CatalogItem("i999", "/img/broken.jpg", "text broken", "cat0")
    cat = Catalog("toy", [*cat.items, broken], cat.lookbooks, cat.scenes)
    table = oracle_table(cat)
    split = make_split(cat, seed=5, cold_fraction=0.0)
    result = evaluate(TableEncoder(table), cat, split, EvalConfig(resamples=50))
    assert result.n_failed == 1
    assert result.metrics["text_to_image/recall@1"]["warm"].n == 60
    assert "cold" not in result.metrics["text_to_image/recall@1"]


def test_as_catalog_reads_model_package_style_objects() -> None:
    @dataclass
    class Item:
        item_id: str
        image_path: Path
        text: str
        category: str

    @dataclass
    class Room:
        room: str
        image_path: Path
        products: list[str]

    @dataclass
    class Dataset:
        name: str
        items: list[Item]
        lookbooks: dict[str, list[str]]
        scenes: list[Room]

    ds = Dataset(
        "x",
        [Item("a", Path("/a.jpg"), "A", "c"), Item("b", Path("/b.jpg"), "B", "c")],
        {"room:r": ["a", "b", "zz"]},
        [Room("r", Path("/r.jpg"), ["a", "zz"])],
    )
    cat = as_catalog(ds)
    assert cat.name == "x" and cat.item_ids == ["a", "b"]
    assert cat.lookbooks == {"room:r": ["a", "b"]}
    assert cat.scenes == [Scene("r", "/r.jpg", ("a",), "room:r")]


def test_training_dataset_drops_cold_items_and_heldout_lookbooks(tmp_path: Path) -> None:
    from embeddings.ml.data import Item, ItemDataset
    from embeddings.ml.evaluation.experiment import training_dataset

    cat = make_catalog()
    ds = ItemDataset(
        name="toy",
        items=[Item(it.item_id, it.image_path, it.text, it.category) for it in cat.items],
        lookbooks={k: list(v) for k, v in cat.lookbooks.items()},
    )
    split = make_split(as_catalog(ds), seed=9, cold_fraction=0.3)
    train = training_dataset(ds, split)
    cold = set(split.cold_items)
    assert cold and not cold & {it.item_id for it in train.items}
    assert not cold & {i for members in train.lookbooks.values() for i in members}
    assert not set(train.lookbooks) & set(split.heldout_lookbooks)
    assert train.queries == []


def test_split_from_heldout_holds_out_boards_made_only_of_heldout_items() -> None:
    from embeddings.ml.evaluation.experiment import split_from_heldout

    cat = make_catalog()
    held = set(cat.lookbooks["lb01"]) | {"i000"}  # lb00 is only partly held out
    split = split_from_heldout(cat, held, "toy", seed=0)
    assert split.heldout_lookbooks == ("lb01",)
    assert set(split.cold_items) == held
    split.check(cat)


def test_other_lookbooks_precision_ignores_lookbook_mates() -> None:
    # Every item looks exactly like its lookbook-mates (a shared backdrop) and its category
    # is unrelated to the lookbook: precision is perfect only while mates may be retrieved.
    items = [CatalogItem(f"i{i}", f"/img/{i}.jpg", f"t{i}", f"c{i % 2}") for i in range(40)]
    lookbooks = {f"lb{j}": [f"i{i}" for i in range(j * 10, j * 10 + 10)] for j in range(4)}
    cat = Catalog("backdrops", items, lookbooks)
    rng = np.random.default_rng(0)
    directions = [v / np.linalg.norm(v) for v in rng.normal(size=(4, 32))]
    table: dict[str, np.ndarray] = {}
    for i, it in enumerate(items):
        table[it.image_path] = directions[i // 10] + 0.01 * (i % 2) * directions[(i // 10 + 1) % 4]
        table[it.image_path] /= np.linalg.norm(table[it.image_path])
        table[it.text] = table[it.image_path]
    split = make_split(cat, seed=0, cold_fraction=0.0, heldout_lookbook_fraction=0.0)
    cfg = EvalConfig(resamples=50, k=4, other_lookbooks_precision=True)
    result = evaluate(TableEncoder(table), cat, split, cfg)
    same = result.metrics["image_to_image/category_precision@10"]["warm"].value
    other = result.metrics["image_to_image/category_precision@10_other_lookbooks"]["warm"].value
    assert same == 1.0
    assert other < 0.75


def test_chance_levels_match_the_catalog() -> None:
    cat = make_catalog()  # 60 items, 3 categories of 20
    split = make_split(cat, seed=0)
    result = evaluate(TableEncoder(oracle_table(cat)), cat, split, EvalConfig(resamples=50))
    chance = result.chance
    assert chance["fill_in_the_blank/accuracy"]["cold"] == 0.25
    assert chance["text_to_image/recall@10"]["warm"] == pytest.approx(10 / 60)
    assert chance["image_to_image/category_precision@10"]["warm"] == pytest.approx(19 / 59)
    assert chance["text_to_image/category_precision@10"]["cold"] == pytest.approx(20 / 60)


def test_sample_dataset_keeps_groups_whole() -> None:
    from embeddings.ml.data import Item, ItemDataset
    from embeddings.ml.evaluation.experiment import sample_dataset

    items = [Item(f"a{i}", f"/a{i}.jpg", "t", "c") for i in range(100)]
    lookbooks = {f"product:{j}": [f"a{i}" for i in range(j * 5, j * 5 + 5)] for j in range(10)}
    lookbooks["section:all"] = [it.item_id for it in items]
    ds = ItemDataset("toy", items, lookbooks)
    sample = sample_dataset(ds, 40, seed=0, group_prefix="product:")
    assert 40 <= len(sample.items) <= 44
    kept = {it.item_id for it in sample.items}
    for lid, members in lookbooks.items():
        if lid.startswith("product:"):
            assert set(members) <= kept or not set(members) & kept
    assert sample_dataset(ds, 40, seed=0, group_prefix="product:").items == sample.items


def _room_catalog() -> tuple[Catalog, Split]:
    """a, b, c always appear together in training lookbooks (z00 once beside them); the
    held-out room shows a, b, c again plus a cold newcomer no training lookbook has; 29
    more items were never seen with them."""
    items = [CatalogItem(x, f"/img/{x}.jpg", x, "c") for x in ["a", "b", "c", "new"]]
    items += [CatalogItem(f"z{i:02d}", f"/img/z{i}.jpg", f"z{i}", "c") for i in range(30)]
    lookbooks = {
        "train1": ["a", "b", "c"],
        "train2": ["a", "b", "c", "z00"],
        "room": ["a", "b", "c", "new"],
    }
    cat = Catalog("room", items, lookbooks)
    split = Split(
        dataset="room", seed=0, cold_fraction=0.0, heldout_lookbook_fraction=0.0,
        cold_items=("new",), heldout_lookbooks=("room",), n_items=len(items),
        n_lookbooks=3, fingerprint=make_split(cat).fingerprint,
    )  # fmt: skip
    return cat, split


def test_cooccurrence_baseline_counts_shared_training_lookbooks() -> None:
    # a, b, c always appear together in training lookbooks; the held-out room shows a, b, c
    # again (leave one out: the other two find it first) plus a cold newcomer no training
    # lookbook has (expected recall@10 at chance among the ties).
    cat, split = _room_catalog()

    result = cooccurrence_baseline(cat, split, EvalConfig(resamples=50))

    warm = result.per_query["lookbook_completion/recall@10"]["warm"]
    assert list(warm) == [1.0, 1.0, 1.0]  # a, b, c: each found first by the other two
    # "new" ties with the 29 items never seen with a, b, c (z00 outranks it): 9 of the
    # remaining places in the top 10 for 30 tied items.
    cold = result.per_query["lookbook_completion/recall@10"]["cold"]
    assert cold[0] == pytest.approx(9 / 30)


def test_complete_the_look_reads_the_lookbooks_then_the_model() -> None:
    # As the search app orders it: what shares training lookbooks with the query's items
    # first, the model's cosine blended in. A cold newcomer shares none, so whether it
    # reaches the top 10 (here: one of the places kept for products no lookbook holds) is
    # the model's doing.
    cat, split = _room_catalog()
    rng = np.random.default_rng(0)
    look = rng.normal(size=16)
    table: dict[str, np.ndarray] = {}
    for it in cat.items:
        in_the_look = it.item_id in ("a", "b", "c")
        v = look + 0.1 * rng.normal(size=16) if in_the_look else rng.normal(size=16)
        table[it.image_path] = table[it.text] = v / np.linalg.norm(v)

    def complete_the_look(new_vector: np.ndarray) -> dict[str, list[float]]:
        table["/img/new.jpg"] = table["new"] = new_vector / np.linalg.norm(new_vector)
        result = evaluate(TableEncoder(table), cat, split, EvalConfig(resamples=50))
        cells = result.per_query["complete_the_look/recall@10"]
        return {cell: list(values) for cell, values in cells.items()}

    knows = complete_the_look(look)  # the model puts the newcomer with a, b and c
    assert knows == {"warm": [1.0, 1.0, 1.0], "cold": [1.0]}
    # A model that puts the newcomer far from the look ranks it below the 29 never-seen
    # items, which take the kept places before it: out of the top 10.
    assert complete_the_look(-look) == {"warm": [1.0, 1.0, 1.0], "cold": [0.0]}
    baseline = cooccurrence_baseline(cat, split, EvalConfig(resamples=50)).per_query
    assert list(baseline["complete_the_look/recall@10"]["cold"]) == [pytest.approx(9 / 30)]


def test_complete_the_look_keeps_places_for_a_new_product_behind_many_shared_ones() -> None:
    # Twelve regulars share training lookbooks with a, b and c, more than ten: the old order
    # ("more shared lookbooks first, the model within an equal count") put a newcomer no
    # lookbook holds below all twelve, out of the top 10 however well the model matched it.
    items = [CatalogItem(x, f"/img/{x}.jpg", x, "c") for x in ["a", "b", "c", "new"]]
    regulars = [f"r{i:02d}" for i in range(12)]
    items += [CatalogItem(r, f"/img/{r}.jpg", r, "c") for r in regulars]
    items += [CatalogItem(f"z{i:02d}", f"/img/z{i}.jpg", f"z{i}", "c") for i in range(20)]
    lookbooks = {f"train{i}": ["a", "b", "c", r] for i, r in enumerate(regulars)}
    lookbooks["room"] = ["a", "b", "c", "new"]
    cat = Catalog("regulars", items, lookbooks)
    split = Split(
        dataset="regulars", seed=0, cold_fraction=0.0, heldout_lookbook_fraction=0.0,
        cold_items=("new",), heldout_lookbooks=("room",), n_items=len(items),
        n_lookbooks=len(lookbooks), fingerprint=make_split(cat).fingerprint,
    )  # fmt: skip
    rng = np.random.default_rng(1)
    look = rng.normal(size=16)
    table: dict[str, np.ndarray] = {}
    for it in cat.items:
        close = it.item_id in ("a", "b", "c", "new")
        v = look + 0.1 * rng.normal(size=16) if close else rng.normal(size=16)
        table[it.image_path] = table[it.text] = v / np.linalg.norm(v)

    result = evaluate(TableEncoder(table), cat, split, EvalConfig(resamples=50))

    assert list(result.per_query["complete_the_look/recall@10"]["cold"]) == [1.0]
    assert list(result.per_query["complete_the_look/recall@10"]["warm"]) == [1.0, 1.0, 1.0]
    # Counting alone: the newcomer ties with the 20 never-seen items behind the 12 regulars.
    baseline = cooccurrence_baseline(cat, split, EvalConfig(resamples=50)).per_query
    assert list(baseline["complete_the_look/recall@10"]["cold"]) == [0.0]


def test_the_model_weight_is_fitted_on_training_rooms_only() -> None:
    # 12 training rooms hold a, b, c and one regular each; "room" is held out for the test.
    items = [CatalogItem(x, f"/img/{x}.jpg", x, "c") for x in ["a", "b", "c", "new"]]
    regulars = [f"r{i:02d}" for i in range(12)]
    items += [CatalogItem(r, f"/img/{r}.jpg", r, "c") for r in regulars]
    lookbooks = {f"room:{i}": ["a", "b", "c", r] for i, r in enumerate(regulars)}
    lookbooks["room:test"] = ["a", "b", "new"]
    cat = Catalog("rooms", items, lookbooks)
    split = Split(
        dataset="rooms", seed=0, cold_fraction=0.0, heldout_lookbook_fraction=0.0,
        cold_items=("new",), heldout_lookbooks=("room:test",), n_items=len(items),
        n_lookbooks=len(lookbooks), fingerprint=make_split(cat).fingerprint,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    fused = rng.normal(size=(len(items), 8))
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)

    val_catalog, val_split = validation_split(cat, split, prefix="room:", fraction=0.25, seed=0)
    fit = fit_look_ranking(fused, cat, split, prefix="room:", new_every=(0, 5), weights=(0.1, 1))

    assert len(val_split.heldout_lookbooks) == 3
    assert "room:test" not in val_split.heldout_lookbooks
    assert "room:test" not in val_catalog.lookbooks  # the test room is never read
    assert all("new" not in members for members in val_catalog.lookbooks.values())  # cold
    # 3 validation rooms x 4 members, each left out once; the graph is the other 9 rooms.
    assert (fit["validation_lookbooks"], fit["graph_lookbooks"], fit["queries"]) == (3, 9, 12)
    # Each validation room's regular is in no other room: new to the graph.
    assert fit["queries_new"] == 3
    assert [(r["model_weight"], r["new_every"]) for r in fit["grid"]] == [
        (0.1, 0), (1, 0), (0.1, 5), (1, 5)
    ]  # fmt: skip
    assert set(fit["best_model_weights"]) == {"0", "5"}
    for n in ("0", "5"):
        best = max(r["recall"] for r in fit["grid"] if r["new_every"] == int(n))
        assert fit["best_model_weights"][n] == [
            r["model_weight"]
            for r in fit["grid"]
            if r["new_every"] == int(n) and r["recall"] == best
        ]
