"""``evaluate(encoder, dataset, split) -> EvaluationResult``: every metric, per cold/warm cell.

Tasks (queries are drawn from the split; galleries are always the whole catalog):
- text→image / image→text: an item's text finds its own photo (and back): recall@1/5/10, MRR.
  image→text ranks among the distinct texts (items sharing a text share the answer).
- text→image and image→image category precision@10: share of the 10 nearest photos (the
  query's own photo excluded for image→image) with the query item's category.
- lookbook completion: in a held-out lookbook, the mean of the other items' vectors finds the
  left-out item among all items except those others: recall@10, nDCG@10.
- fill-in-the-blank: the same partial lookbook picks the left-out item among it and 3 negatives
  of the same category: accuracy (chance = 0.25).
- shop-the-look: a held-out scene photo (ikea room) retrieves the products shown in it:
  recall@10 over the scene's products of each cell.

A query's cell is its target's: cold when the target item was held out of training. The query
sets depend only on the split, the dataset and ``EvalConfig.seed`` — never on the model — so
two models' per-query values can be compared pairwise. One module over 400 lines: every
task scores the same encoded catalog with the same query plan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from embeddings.ml.evaluation import metrics as m
from embeddings.ml.evaluation.bootstrap import DEFAULT_RESAMPLES, MetricValue, bootstrap_ci
from embeddings.ml.evaluation.catalog import Catalog, as_catalog
from embeddings.ml.evaluation.splits import CELLS, Split
from embeddings.ml.look_ranking import DEFAULT_LOOK_RANKING, LookRanking, look_order

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

# Metric keys, in report order, and the task each belongs to.
METRICS: tuple[str, ...] = (
    "text_to_image/recall@1",
    "text_to_image/recall@5",
    "text_to_image/recall@10",
    "text_to_image/mrr",
    "text_to_image/category_precision@10",
    "image_to_text/recall@1",
    "image_to_text/recall@5",
    "image_to_text/recall@10",
    "image_to_text/mrr",
    "image_to_image/category_precision@10",
    "image_to_image/category_precision@10_other_lookbooks",
    "lookbook_completion/recall@10",
    "lookbook_completion/ndcg@10",
    "complete_the_look/recall@10",
    "fill_in_the_blank/accuracy",
    "shop_the_look/recall@10",
)


class _EncodeResult(Protocol):
    vectors: Any
    failed: dict[int, str]


class Encoder(Protocol):
    """What the evaluation needs of an encoder (``embeddings.ml.loading.load_encoder``)."""

    def encode_images(self, images: Sequence[Any]) -> _EncodeResult: ...

    def encode_texts(self, texts: Sequence[str]) -> Any: ...

    def encode_items(self, images: Sequence[Any], texts: Sequence[str]) -> _EncodeResult: ...


@dataclass(frozen=True)
class EvalConfig:
    """Knobs of an evaluation run. Defaults are the ones the committed reports use."""

    seed: int = 0  # draws query subsets and FITB negatives; independent of the model
    max_queries_per_cell: int = 1000  # caps retrieval queries per cell (deterministic subset)
    max_lookbook_queries_per_cell: int = 3000  # caps leave-one-out queries per cell
    max_context: int = 30  # at most this many other items form a lookbook query
    fitb_candidates: int = 4  # the left-out item plus 3 negatives
    k: int = 10
    # Galleries as the search app uses them (search/selectors.py): "complete the look" and
    # "similar" rank fused item vectors; a query photo is matched against image vectors.
    catalog_vectors: Literal["fused", "image"] = "fused"  # lookbook completion and FITB
    scene_vectors: Literal["fused", "image"] = "image"  # shop-the-look gallery
    other_lookbooks_precision: bool = False  # also image->image precision without lookbook-mates
    # How complete_the_look/recall@10 orders (the search app's `DEFAULT_LOOK_RANKING`).
    look_ranking: LookRanking = DEFAULT_LOOK_RANKING
    resamples: int = DEFAULT_RESAMPLES


@dataclass
class EncodedCatalog:
    """Vectors of every item (row i = catalog item i) and of the evaluated scenes.

    ``ok`` marks items whose photo was encoded; failed items are neither queries nor
    retrievable (their rows are zero, and they are excluded from every gallery).
    """

    image: Vectors
    text: Vectors
    fused: Vectors
    scenes: dict[str, Vectors]  # scene_id -> (D,)
    ok: npt.NDArray[np.bool_]
    failed: dict[str, str]  # item or scene id -> reason


@dataclass(frozen=True)
class LookbookGraph:
    """The lookbooks training could see, to count how many of them a query's items share
    with each catalog item (the co-occurrence the search app's complete the look reads
    first, from the merchandisers' lookbooks)."""

    members: list[list[int]]  # lookbook -> catalog rows
    of_row: list[list[int]]  # catalog row -> lookbooks

    @classmethod
    def of(cls, catalog: Catalog, split: Split) -> LookbookGraph:
        return cls.of_lookbooks(catalog, split.training_lookbooks(catalog.lookbooks).values())

    @classmethod
    def of_lookbooks(cls, catalog: Catalog, lookbooks: Iterable[Sequence[str]]) -> LookbookGraph:
        """The graph of ``lookbooks`` (each a list of item ids) over ``catalog``'s rows."""
        members = [[catalog.index[i] for i in items if i in catalog.index] for items in lookbooks]
        of_row: list[list[int]] = [[] for _ in catalog.items]
        for g, rows in enumerate(members):
            for r in rows:
                of_row[r].append(g)
        return cls(members, of_row)

    def shared(self, context: Sequence[int]) -> npt.NDArray[np.float64]:
        """(n,) how many (context item, lookbook) pairs each catalog row shares."""
        score = np.zeros(len(self.of_row))
        for row in context:
            for g in self.of_row[row]:
                score[self.members[g]] += 1
        return score

    def is_new(self) -> npt.NDArray[np.bool_]:
        """(n,) True for the catalog rows no lookbook of the graph holds."""
        return np.asarray([not lookbooks for lookbooks in self.of_row], dtype=bool)


@dataclass
class EvaluationResult:
    """All metrics of one model on one dataset split.

    ``metrics[metric][cell]`` is a ``MetricValue`` (mean, bootstrap 95% CI, n queries);
    ``per_query[metric][cell]`` keeps the per-query values (same query order for every model
    evaluated with the same split and config) for paired comparisons; it is not serialised.
    """

    model: str
    dataset: str
    split_fingerprint: str
    config: EvalConfig
    metrics: dict[str, dict[str, MetricValue]]
    per_query: dict[str, dict[str, npt.NDArray[np.float64]]] = field(repr=False)
    chance: dict[str, dict[str, float]] = field(default_factory=dict)  # random-ranking level
    n_items: int = 0
    n_failed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: metadata plus metrics[metric][cell] = {value, ci_low, ci_high, n}."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "split_fingerprint": self.split_fingerprint,
            "config": asdict(self.config),
            "n_items": self.n_items,
            "n_failed": self.n_failed,
            "seconds": round(self.seconds, 1),
            "metrics": {
                name: {cell: v.to_dict() for cell, v in cells.items()}
                for name, cells in self.metrics.items()
            },
            "chance": self.chance,
        }


def _as_array(x: Any) -> Vectors:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _fill(n: int, result: _EncodeResult, dim: int) -> tuple[Vectors, dict[int, str]]:
    """Vectors for all n inputs, rows of failed inputs zero, and the failures.

    Accepts one row per input, or one row per successful input (placed by
    ``result.indices`` when the result has them, else in input order).
    """
    vecs = _as_array(result.vectors)
    failed = {int(k): str(v) for k, v in (result.failed or {}).items()}
    if len(vecs) == n and not failed:
        return vecs.copy(), failed
    out = np.zeros((n, vecs.shape[1] if vecs.ndim == 2 and len(vecs) else dim), np.float32)
    indices = getattr(result, "indices", None)
    rows = list(indices) if indices else [i for i in range(n) if i not in failed]
    if len(rows) != len(vecs):
        if len(vecs) == n:  # one row per input, failed rows included
            rows = list(range(n))
        else:
            raise ValueError("encoder returned neither one row per input nor per success")
    out[rows] = vecs
    out[list(failed)] = 0.0
    return out, failed


# Frozen text-trunk outputs, keyed by (digest of the trunk's weights, text). The fine-tuned
# variants of an experiment share the base model's frozen MiniLM trunk, so the trunk (the
# costliest part of an item on CPU) runs once per distinct text per process.
_TRUNK_CACHE: dict[tuple[str, str], tuple[Any, Any, Any]] = {}


def _trunk_digest(model: Any) -> str | None:
    """sha256 of the text trunk's weights (all text weights but the projection), or None
    when the model's text tower is not a Hugging Face trunk with a separate projection."""
    if not getattr(model, "hf_text", False):
        return None
    import hashlib

    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if key.startswith("backbone.text.") and not key.startswith("backbone.text.proj"):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _trunk_outputs(encoder: Any, texts: Sequence[str], batch_size: int = 128) -> Any:
    """``TextTrunkOut`` (pooled, states, mask) for ``texts``, stacked, using the cache."""
    import torch

    from embeddings.ml.model import TextTrunkOut

    model = encoder.model
    digest = _trunk_digest(model)
    missing = list(
        dict.fromkeys(t for t in texts if digest is None or (digest, t) not in _TRUNK_CACHE)
    )
    fresh: dict[str, tuple[Any, Any, Any]] = {}
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        with torch.inference_mode():
            out = model.text_trunk(encoder.tokenizer(chunk).to(encoder.device))
        for j, text in enumerate(chunk):
            fresh[text] = (out.pooled[j].cpu(), out.states[j].cpu(), out.mask[j].cpu())
    if digest is not None:
        _TRUNK_CACHE.update({(digest, t): v for t, v in fresh.items()})
    rows = [fresh[t] if t in fresh else _TRUNK_CACHE[(digest, t)] for t in texts]  # type: ignore[index]
    return TextTrunkOut(*(torch.stack([r[i] for r in rows]) for i in range(3)))


def _encode_one_pass(
    encoder: Any, paths: Sequence[str], texts: Sequence[str], batch_size: int = 64
) -> tuple[Vectors, Vectors, Vectors, dict[int, str]] | None:
    """Image, text and fused vectors (one row per item, zero where the photo failed) from
    ``Encoder.encode_all``'s one pass over the photos, or None for an encoder without it.

    The text trunk's outputs come from ``_TRUNK_CACHE`` (fine-tuned variants of one base
    share its frozen trunk).
    """
    encode_all = getattr(encoder, "encode_all", None)
    if encode_all is None or not hasattr(getattr(encoder, "model", None), "text_trunk"):
        return None
    out = encode_all(
        paths, texts, text_trunk=lambda chunk: _trunk_outputs(encoder, chunk), batch_size=batch_size
    )
    n, dim = len(paths), int(encoder.dim)
    image, fused = np.zeros((n, dim), np.float32), np.zeros((n, dim), np.float32)
    image[out.indices] = out.image
    fused[out.indices] = out.fused
    return image, _as_array(out.text), fused, dict(out.failed)


def encode_catalog(
    encoder: Encoder, catalog: Catalog, scene_ids: Sequence[str] = ()
) -> EncodedCatalog:
    """Encode every item's photo and text, their fusion, and the photos of ``scene_ids``.

    Returns an ``EncodedCatalog``. With ``embeddings.ml``'s ``Encoder`` the photos are read
    once (``_encode_one_pass``); any other encoder goes through ``encode_images``,
    ``encode_texts`` and ``encode_items``.
    """
    paths = [it.image_path for it in catalog.items]
    texts = [it.text for it in catalog.items]
    one_pass = _encode_one_pass(encoder, paths, texts)
    if one_pass is not None:
        image, text, fused, failed_img = one_pass
        dim = image.shape[1]
    else:
        img_res = encoder.encode_images(paths)
        dim = int(getattr(encoder, "dim", 0) or _as_array(img_res.vectors).shape[-1])
        image, failed_img = _fill(len(paths), img_res, dim)
        text = _as_array(encoder.encode_texts(texts))
        fused, failed_fused = _fill(len(paths), encoder.encode_items(paths, texts), dim)
        failed_img.update(failed_fused)
    ok = np.ones(len(paths), dtype=bool)
    ok[list(failed_img)] = False
    failed = {catalog.items[i].item_id: r for i, r in failed_img.items()}
    scenes: dict[str, Vectors] = {}
    if scene_ids:
        by_id = {s.scene_id: s for s in catalog.scenes}
        scene_paths = [by_id[s].image_path for s in scene_ids]
        svecs, sfailed = _fill(len(scene_paths), encoder.encode_images(scene_paths), dim)
        for j, sid in enumerate(scene_ids):
            if j in sfailed:
                failed[sid] = sfailed[j]
            else:
                scenes[sid] = svecs[j]
    return EncodedCatalog(image, text, fused, scenes, ok, failed)


def _subset(idx: list[int], cap: int, rng: np.random.Generator) -> list[int]:
    if len(idx) <= cap:
        return idx
    return sorted(rng.choice(idx, size=cap, replace=False).tolist())


@dataclass(frozen=True)
class _LeaveOneOut:
    lookbook_id: str
    target: int  # catalog index of the left-out item
    context: tuple[int, ...]  # catalog indices of the other items
    candidates: tuple[int, ...]  # FITB: target first, then negatives


@dataclass
class QueryPlan:
    """The model-independent queries of an evaluation, per cell.

    Built once from the catalog, split and config (and which photos failed), so every model
    answers exactly the same questions.
    """

    retrieval: dict[str, list[int]]  # cell -> item indices used as text/image queries
    leave_one_out: dict[str, list[_LeaveOneOut]]
    scenes: list[tuple[str, dict[str, list[int]]]]  # (scene_id, cell -> relevant indices)
    fitb_fallbacks: int = 0  # negatives drawn outside the category (too few inside)


def plan_queries(
    catalog: Catalog, split: Split, config: EvalConfig, ok: npt.NDArray[np.bool_]
) -> QueryPlan:
    """Choose the queries of every task (see ``QueryPlan``); deterministic in config.seed."""
    rng = np.random.default_rng(config.seed)
    cell_of = [split.cell(it.item_id) for it in catalog.items]
    retrieval: dict[str, list[int]] = {
        c: _subset(
            [i for i in range(len(catalog.items)) if cell_of[i] == c and ok[i]],
            config.max_queries_per_cell,
            rng,
        )
        for c in CELLS
    }

    by_category: dict[str, list[int]] = {}
    for i, it in enumerate(catalog.items):
        if ok[i]:
            by_category.setdefault(it.category, []).append(i)
    all_ok = [i for i in range(len(catalog.items)) if ok[i]]
    n_neg = config.fitb_candidates - 1
    fallbacks = 0
    loo: dict[str, list[_LeaveOneOut]] = {c: [] for c in CELLS}
    for lid in split.heldout_lookbooks:
        members = [catalog.index[i] for i in dict.fromkeys(catalog.lookbooks.get(lid, []))]
        members = [i for i in members if ok[i]]
        if len(members) < 2:
            continue
        member_set = set(members)
        for target in members:
            others = [i for i in members if i != target]
            if len(others) > config.max_context:
                others = sorted(rng.choice(others, size=config.max_context, replace=False))
            category = catalog.items[target].category
            pool = [i for i in by_category.get(category, []) if i not in member_set and category]
            if len(pool) < n_neg:  # too few of its category outside the lookbook
                fallbacks += 1
                in_pool = set(pool)
                pool += [i for i in all_ok if i not in member_set and i not in in_pool]
            negs = [int(x) for x in rng.choice(pool, size=n_neg, replace=False)]
            loo[cell_of[target]].append(
                _LeaveOneOut(lid, target, tuple(int(o) for o in others), (target, *negs))
            )
    for c in CELLS:
        if len(loo[c]) > config.max_lookbook_queries_per_cell:
            keep = _subset(list(range(len(loo[c]))), config.max_lookbook_queries_per_cell, rng)
            loo[c] = [loo[c][j] for j in keep]

    held = set(split.heldout_lookbooks)
    scenes: list[tuple[str, dict[str, list[int]]]] = []
    for s in catalog.scenes:
        if s.lookbook_id is not None and s.lookbook_id not in held:
            continue
        rel: dict[str, list[int]] = {c: [] for c in CELLS}
        for item_id in dict.fromkeys(s.item_ids):
            j = catalog.index.get(item_id)
            if j is not None and ok[j]:
                rel[cell_of[j]].append(j)
        if any(rel.values()):
            scenes.append((s.scene_id, rel))
    return QueryPlan(retrieval, loo, scenes, fallbacks)


def _retrieval(
    queries: Vectors, gallery: Vectors, targets: list[int], exclude_failed: list[int], prefix: str
) -> dict[str, npt.NDArray[np.float64]]:
    exclude = [exclude_failed] * len(targets) if exclude_failed else None
    ranks = m.target_ranks(queries, gallery, targets, exclude)
    return {
        f"{prefix}/recall@1": m.recall_at_k(ranks, 1),
        f"{prefix}/recall@5": m.recall_at_k(ranks, 5),
        f"{prefix}/recall@10": m.recall_at_k(ranks, 10),
        f"{prefix}/mrr": m.reciprocal_rank(ranks),
    }


def complete_the_look_hits(
    cat_vecs: Vectors,
    queries: Vectors,
    loo: Sequence[_LeaveOneOut],
    graph: LookbookGraph,
    exclude: Sequence[int],
    ranking: LookRanking,
    k: int,
) -> npt.NDArray[np.float64]:
    """(len(loo),) 1.0 where the left-out item is among the first ``k`` of complete the
    look's order (`embeddings.ml.look_ranking.look_order`, the search app's) over every
    catalog row but the query's own items and ``exclude``, else 0.0."""
    is_new = graph.is_new()
    hits = []
    for qv, x in zip(queries, loo, strict=True):
        candidate = np.ones(len(cat_vecs), dtype=bool)
        candidate[[*x.context, *exclude]] = False
        rows = np.flatnonzero(candidate)
        top = rows[
            look_order(
                graph.shared(x.context)[rows],
                cat_vecs[rows] @ qv,
                is_new[rows],
                ranking=ranking,
                limit=k,
            )
        ]
        hits.append(float(x.target in top))
    return np.asarray(hits)


def score_queries(
    enc: EncodedCatalog,
    catalog: Catalog,
    plan: QueryPlan,
    config: EvalConfig,
    graph: LookbookGraph,
) -> dict[str, dict[str, npt.NDArray[np.float64]]]:
    """Per-query values of every metric: ``{metric: {cell: (n,) array}}``.

    ``complete_the_look/recall@10`` orders as the search app's complete the look does (its
    grouping by department aside), with ``embeddings.ml.look_ranking.look_order``: the
    share of training lookbooks an item shares with the query's items blended with the
    model's fused cosine, and every ``new_every``-th place kept for the best item no
    training lookbook holds (for a cold item, the model alone decides whether it gets one).
    """
    k = config.k
    failed_idx = [i for i in range(len(enc.ok)) if not enc.ok[i]]
    cat_vecs = enc.fused if config.catalog_vectors == "fused" else enc.image
    labels = [it.category for it in catalog.items]
    out: dict[str, dict[str, npt.NDArray[np.float64]]] = {name: {} for name in METRICS}
    # image->text ranks the item's text among the distinct texts: items sharing a text
    # (clothing: "a photo of a t-shirt") share one answer, not thousands of tied ones.
    text_ids: dict[str, int] = {}
    for i, it in enumerate(catalog.items):
        text_ids.setdefault(it.text, i)
    mates: dict[int, set[int]] = {}
    if config.other_lookbooks_precision:
        for members in catalog.lookbooks.values():
            idx = [catalog.index[i] for i in members]
            for i in idx:
                mates.setdefault(i, set()).update(idx)
    distinct = list(text_ids.values())
    position = {first: j for j, first in enumerate(distinct)}
    text_target = {i: position[text_ids[it.text]] for i, it in enumerate(catalog.items)}
    for c in CELLS:
        q = plan.retrieval[c]
        if q:
            for name, vals in _retrieval(
                enc.text[q], enc.image, q, failed_idx, "text_to_image"
            ).items():
                out[name][c] = vals
            for name, vals in _retrieval(
                enc.image[q], enc.text[distinct], [text_target[i] for i in q], [], "image_to_text"
            ).items():
                out[name][c] = vals
            labelled = [i for i in q if labels[i]]  # unlabelled items have no category to match
            if labelled:
                query_labels = [labels[i] for i in labelled]
                exclude = [failed_idx] * len(labelled) if failed_idx else None
                top = m.top_k(enc.text[labelled], enc.image, k, exclude)
                out["text_to_image/category_precision@10"][c] = m.label_precision_at_k(
                    top, labels, query_labels, k
                )
                top = m.top_k(
                    enc.image[labelled], enc.image, k, [[i, *failed_idx] for i in labelled]
                )
                out["image_to_image/category_precision@10"][c] = m.label_precision_at_k(
                    top, labels, query_labels, k
                )
                if config.other_lookbooks_precision:
                    # Photos from the query's own lookbooks excluded: clothing senders share
                    # a backdrop, which a model can match without looking at the garment.
                    exclude_lb = [[i, *failed_idx, *mates.get(i, ())] for i in labelled]
                    top = m.top_k(enc.image[labelled], enc.image, k, exclude_lb)
                    out["image_to_image/category_precision@10_other_lookbooks"][c] = (
                        m.label_precision_at_k(top, labels, query_labels, k)
                    )
        loo = plan.leave_one_out[c]
        if loo:
            queries = np.stack([m.mean_of_normalised(cat_vecs[list(x.context)]) for x in loo])
            ranks = m.target_ranks(
                queries,
                cat_vecs,
                [x.target for x in loo],
                [[*x.context, *failed_idx] for x in loo],
            )
            out["lookbook_completion/recall@10"][c] = m.recall_at_k(ranks, k)
            out["lookbook_completion/ndcg@10"][c] = m.ndcg_at_k(ranks, k)
            out["complete_the_look/recall@10"][c] = complete_the_look_hits(
                cat_vecs, queries, loo, graph, failed_idx, config.look_ranking, k
            )
            correct = []
            for qv, x in zip(queries, loo, strict=True):
                s = cat_vecs[list(x.candidates)] @ qv
                correct.append(float(s[0] > s[1:].max()))
            out["fill_in_the_blank/accuracy"][c] = np.asarray(correct)
        scenes = [(sid, rel[c]) for sid, rel in plan.scenes if rel[c] and sid in enc.scenes]
        if scenes:
            qv = np.stack([enc.scenes[sid] for sid, _ in scenes])
            scene_gallery = enc.image if config.scene_vectors == "image" else enc.fused
            exclude = [failed_idx] * len(scenes) if failed_idx else None
            top = m.top_k(qv, scene_gallery, k, exclude)
            out["shop_the_look/recall@10"][c] = m.set_recall_at_k(top, [r for _, r in scenes], k)
    return out


def chance_levels(
    catalog: Catalog, plan: QueryPlan, config: EvalConfig, ok: npt.NDArray[np.bool_]
) -> dict[str, dict[str, float]]:
    """Expected value of each metric under a random ranking, per cell (where it is simple).

    recall@k of one target among N: k/N (image->text: N distinct texts); category
    precision: the share of the gallery with the query's category; FITB: 1/candidates;
    shop-the-look recall@10: 10/N. Used as a reference column in reports (a coarse label
    makes a high precision meaningless).
    """
    k = config.k
    n = int(ok.sum())
    n_texts = len({it.text for it in catalog.items})
    labels = [it.category for it in catalog.items]
    counts: dict[str, int] = {}
    for i, label in enumerate(labels):
        if ok[i]:
            counts[label] = counts.get(label, 0) + 1
    out: dict[str, dict[str, float]] = {}
    for c in CELLS:
        q = plan.retrieval[c]
        labelled = [i for i in q if labels[i]]
        if q:
            for kk in (1, 5, 10):
                out.setdefault(f"text_to_image/recall@{kk}", {})[c] = min(1.0, kk / n)
                # image->text ranks among the distinct texts
                out.setdefault(f"image_to_text/recall@{kk}", {})[c] = min(1.0, kk / n_texts)
        if labelled:
            out.setdefault("text_to_image/category_precision@10", {})[c] = float(
                np.mean([counts[labels[i]] / n for i in labelled])
            )
            out.setdefault("image_to_image/category_precision@10", {})[c] = float(
                np.mean([(counts[labels[i]] - 1) / max(1, n - 1) for i in labelled])
            )
        loo = plan.leave_one_out[c]
        if loo:
            out.setdefault("lookbook_completion/recall@10", {})[c] = float(
                np.mean([min(1.0, k / (n - len(x.context))) for x in loo])
            )
            out.setdefault("fill_in_the_blank/accuracy", {})[c] = 1.0 / config.fitb_candidates
        if any(rel[c] for _, rel in plan.scenes):
            out.setdefault("shop_the_look/recall@10", {})[c] = min(1.0, k / n)
    return out


def evaluate(
    encoder: Encoder,
    dataset: Any,
    split: Split,
    config: EvalConfig | None = None,
    *,
    model_name: str = "model",
    encoded: EncodedCatalog | None = None,
) -> EvaluationResult:
    """Evaluate ``encoder`` on ``dataset`` (a model-package dataset or a ``Catalog``).

    Returns an ``EvaluationResult`` with every metric of ``METRICS`` per cell ("cold",
    "warm"), each a mean over queries with a bootstrap 95% CI. A metric with no query in a
    cell (e.g. shop-the-look on a dataset without scenes) is absent from that cell.
    """
    config = config or EvalConfig()
    started = time.monotonic()
    catalog = as_catalog(dataset)
    split.check(catalog)
    held = set(split.heldout_lookbooks)
    scene_ids = [
        s.scene_id for s in catalog.scenes if s.lookbook_id is None or s.lookbook_id in held
    ]
    if encoded is None:
        encoded = encode_catalog(encoder, catalog, scene_ids)
    plan = plan_queries(catalog, split, config, encoded.ok)
    per_query = score_queries(encoded, catalog, plan, config, LookbookGraph.of(catalog, split))
    metrics_out: dict[str, dict[str, MetricValue]] = {}
    for name, cells in per_query.items():
        for c, vals in cells.items():
            metrics_out.setdefault(name, {})[c] = bootstrap_ci(
                vals, resamples=config.resamples, seed=config.seed
            )
    per_query = {name: cells for name, cells in per_query.items() if cells}
    chance = chance_levels(catalog, plan, config, encoded.ok)
    if plan.fitb_fallbacks:
        log.info("FITB: %d queries drew negatives outside their category", plan.fitb_fallbacks)
    return EvaluationResult(
        model=model_name,
        dataset=catalog.name,
        split_fingerprint=split.fingerprint,
        config=config,
        metrics=metrics_out,
        per_query=per_query,
        chance=chance,
        n_items=len(catalog.items),
        n_failed=len(encoded.failed),
        seconds=time.monotonic() - started,
    )


def cooccurrence_recall(graph: LookbookGraph, query: _LeaveOneOut, k: int) -> float:
    """Expected recall@k of ``query``'s left-out item when candidates are ranked by the
    lookbooks they share with its context (``graph.shared``), ties in random order."""
    score = graph.shared(query.context)
    score[list(query.context)] = -np.inf  # the query's own items are not answers
    target = score[query.target]
    greater = int((score > target).sum())
    ties = int((score == target).sum()) - 1  # others tied with the target
    return float(np.clip((k - greater) / (ties + 1), 0.0, 1.0))


def cooccurrence_baseline(
    dataset: Any, split: Split, config: EvalConfig | None = None
) -> EvaluationResult:
    """Lookbook completion by counting co-occurrences in the lookbooks training could see.

    The queries are the models' (`plan_queries`, every photo taken as readable); a
    candidate's score is the number of (context item, training lookbook) pairs it shares a
    lookbook with. Ties (every item never seen with the context, e.g. all cold items) are
    broken at random: a query's value is its expected recall@10 over the tie order. The
    bar a model must clear to be worth more than the graph it was trained on.
    """
    config = config or EvalConfig()
    started = time.monotonic()
    catalog = as_catalog(dataset)
    split.check(catalog)
    n = len(catalog.items)
    ok = np.ones(n, dtype=bool)
    plan = plan_queries(catalog, split, config, ok)
    graph = LookbookGraph.of(catalog, split)
    k = config.k
    per_query: dict[str, dict[str, npt.NDArray[np.float64]]] = {"lookbook_completion/recall@10": {}}
    for c in CELLS:
        values = []
        for x in plan.leave_one_out[c]:
            values.append(cooccurrence_recall(graph, x, k))
        if values:
            per_query["lookbook_completion/recall@10"][c] = np.asarray(values)
    # Complete the look with no model: the same counts, random order within one.
    per_query["complete_the_look/recall@10"] = per_query["lookbook_completion/recall@10"]
    metrics_out = {
        name: {
            c: bootstrap_ci(v, resamples=config.resamples, seed=config.seed)
            for c, v in cells.items()
        }
        for name, cells in per_query.items()
    }
    return EvaluationResult(
        model="co-occurrence",
        dataset=catalog.name,
        split_fingerprint=split.fingerprint,
        config=config,
        metrics=metrics_out,
        per_query=per_query,
        chance=chance_levels(catalog, plan, config, ok),
        n_items=n,
        seconds=time.monotonic() - started,
    )
