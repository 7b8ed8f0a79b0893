"""Small held-out retrieval metrics for model cards (the full study is `evaluation/`).

Definitions (all over the held-out items only, cosine similarity):
- text->image recall@k: query = an item's text, hit if that item's image is in the top k
  images. Items that share the same text are indistinguishable by text, so the chance and
  the ceiling are reported beside it.
- image->text recall@k: query = an item's image, ranked against the DISTINCT held-out
  texts; hit if the item's own text is in the top k.
- image->image category precision@k: share of the k nearest other images with the same
  category; also with images from the query's own lookbooks excluded (for clothing,
  same-sender photos share a backdrop, which a model can match without seeing clothes).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from embeddings.ml.data import ItemDataset

if TYPE_CHECKING:
    from embeddings.ml.loading import LoadedModel


def quick_metrics(loaded: LoadedModel, ds: ItemDataset, k: int = 10) -> dict[str, Any]:
    """Return the metrics above (floats rounded to 4 places) for `ds` with `loaded`."""
    from embeddings.ml.encoder import Encoder

    enc = Encoder(loaded, device="cpu")
    res = enc.encode_images([str(ds.image_file(it)) for it in ds.items])
    items = [ds.items[i] for i in res.indices]
    if len(items) < 2:
        return {"n_items": len(items), "failed_images": len(res.failed)}
    img = res.vectors
    texts = sorted({it.text for it in items})
    tvec = enc.encode_texts(texts)
    t_of = np.array([texts.index(it.text) for it in items])
    n = len(items)

    # text -> image (item level)
    sims = tvec[t_of] @ img.T  # (N, N)
    rank_t2i = (sims > sims[np.arange(n), np.arange(n)][:, None]).sum(1)
    group = Counter(t_of.tolist())
    ceiling = float(np.mean([min(1.0, k / group[t]) for t in t_of]))

    # image -> distinct text
    s_i2t = img @ tvec.T  # (N, U)
    rank_i2t = (s_i2t > s_i2t[np.arange(n), t_of][:, None]).sum(1)

    # image -> image category precision
    cats = np.array([it.category or "" for it in items])
    lbs = ds.item_lookbooks()
    groups = [set(lbs.get(it.item_id, [])) for it in items]
    s_ii = img @ img.T
    np.fill_diagonal(s_ii, -np.inf)
    prec, prec_x = [], []
    for i in range(n):
        if not cats[i]:
            continue
        top = np.argsort(-s_ii[i])
        prec.append(float(np.mean(cats[top[:k]] == cats[i])))
        other = [j for j in top if not (groups[i] & groups[j])][:k]
        if other:
            prec_x.append(float(np.mean(cats[other] == cats[i])))
    labelled = cats[cats != ""]
    freq = np.array(list(Counter(labelled.tolist()).values())) / max(1, len(labelled))
    r = lambda x: round(float(x), 4)  # noqa: E731
    return {
        "n_items": n,
        "n_distinct_texts": len(texts),
        "failed_images": len(res.failed),
        f"text_to_image_recall@{k}": r(np.mean(rank_t2i < k)),
        f"text_to_image_recall@{k}_chance": r(k / n),
        f"text_to_image_recall@{k}_ceiling": r(ceiling),
        f"image_to_text_recall@{k}": r(np.mean(rank_i2t < k)),
        f"image_to_text_recall@{k}_chance": r(min(1.0, k / len(texts))),
        "image_to_text_recall@1": r(np.mean(rank_i2t < 1)),
        f"image_to_image_category_precision@{k}": r(np.mean(prec)) if prec else None,
        f"image_to_image_category_precision@{k}_other_lookbooks": (
            r(np.mean(prec_x)) if prec_x else None
        ),
        f"image_to_image_category_precision@{k}_chance": r(np.sum(freq**2)),
    }
