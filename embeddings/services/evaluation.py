"""The catalog as an evaluation dataset, its held-out split, and evaluating a version on it."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from catalog.models import Lookbook
from embeddings import runtime, selectors
from embeddings.models import EmbeddingModel
from embeddings.services.vectors import product_image_primary, product_text


def catalog_dataset(*, name: str = "catalog") -> Any:
    """Return an `embeddings.ml.data.ItemDataset` of the embeddable products and their graph.

    Item ids are product ids (as strings). The graph (the dataset's groups) is everything
    the catalog knows about what belongs together: lookbooks ("lookbook:<slug>", published
    or not: an unpublished board is still a merchandiser's judgement), variants of one
    product ("variant:<group_id>", the feed's item_group_id) and, for the attributes the
    retailer maps in VITRINE_GRAPH_ATTRIBUTES, products sharing a value
    ("attr:<name>=<value>"; walked through but not masked from negatives, see
    `TrainConfig.unmasked_groups`). Products record no engagement, so there are no
    co-engagement edges yet.
    """
    from django.conf import settings

    from embeddings.ml.data import Item, ItemDataset

    graph_attributes = list(settings.VITRINE_GRAPH_ATTRIBUTES)
    items = []
    groups: dict[str, list[str]] = {}
    for product in selectors.products_embeddable().prefetch_related("images").order_by("id"):
        image = product_image_primary(product)
        if image is None:
            continue
        try:
            path = str(image.image.path)
        except NotImplementedError:
            continue  # training reads files; remote storages are not supported here
        item_id = str(product.pk)
        items.append(Item(item_id, path, product_text(product), product.category or None))
        if product.group_id:
            groups.setdefault(f"variant:{product.group_id}", []).append(item_id)
        for attribute in graph_attributes:
            value = (product.attributes or {}).get(attribute)
            if isinstance(value, str | int | float) and str(value).strip():
                groups.setdefault(f"attr:{attribute}={value}", []).append(item_id)
    known = {item.item_id for item in items}
    for lookbook in Lookbook.objects.prefetch_related("items"):
        members = [str(it.product_id) for it in lookbook.items.all()]
        groups[f"lookbook:{lookbook.slug}"] = [m for m in members if m in known]
    return ItemDataset(
        name=name, items=items, lookbooks={g: m for g, m in groups.items() if len(m) >= 2}
    )


def embedding_model_evaluate(*, model: EmbeddingModel, seed: int | None = None) -> dict[str, Any]:
    """Evaluate `model` on the catalog (products + lookbooks) and store `metrics`; return them.

    Uses `embeddings.ml.evaluation` (cold items and held-out lookbooks drawn from `seed`;
    the default is the catalog's own held-out split, which fine-tuning leaves out).
    """
    from embeddings.ml.evaluation import as_catalog, evaluate, make_split

    dataset = catalog_dataset()
    if len(dataset) < 4:
        raise ValueError(f"only {len(dataset)} embeddable products: too few to evaluate")
    catalog = as_catalog(dataset)
    split = make_split(catalog, seed=CATALOG_SPLIT_SEED if seed is None else seed)
    evaluation = evaluate(runtime.encoder_for(model), catalog, split, model_name=model.key)
    metrics = {**evaluation.to_dict(), "evaluated_at": timezone.now().isoformat()}
    EmbeddingModel.objects.filter(pk=model.pk).update(metrics=metrics)
    model.metrics = metrics
    return metrics


#: Seed of the catalog's held-out split: training leaves it out, evaluation and the
#: activation gate score on it, so every version of one catalog is compared on the same one.
CATALOG_SPLIT_SEED = 0


def catalog_split(*, dataset: Any) -> Any:
    """Return the catalog's held-out `Split` (cold items + held-out lookbooks)."""
    from embeddings.ml.evaluation import as_catalog, make_split

    return make_split(as_catalog(dataset), seed=CATALOG_SPLIT_SEED)


def embedding_model_evaluate_start(*, model: EmbeddingModel) -> None:
    """Queue an evaluation of `model` on a worker (for the admin: no torch in the web)."""
    from embeddings.tasks import embedding_model_evaluate_task

    model_id = model.pk
    transaction.on_commit(lambda: embedding_model_evaluate_task.delay(model_id=model_id))
