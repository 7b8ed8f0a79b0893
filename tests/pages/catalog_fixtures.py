"""A small, searchable catalog for the page and browser tests.

Products, images and lookbooks are real rows with real image files, and their vectors come
from the real embedding path: the bundled default model (spec `default`) is registered and
prepared by `embeddings.services` (it goes active, being the first), and the products are
embedded by `products_embed`, the service the embedding task runs. The pages'
searches then encode the shopper's photo or words with the same model, through
`embeddings.runtime`, which loads it once per process.

With the shared datasets present (VITRINE_DATASETS), real H&M article photos and text are
added so that screenshots show a believable shop; the drawn products are always there.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from catalog.models import Lookbook, LookbookItem, Product
from embeddings.models import EmbeddingModel, PendingEmbedding, ProductEmbedding
from embeddings.selectors import products_needing_embedding
from embeddings.services.indexes import embedding_model_indexes_drop
from embeddings.services.registry import (
    DEFAULT_SPEC,
    embedding_model_prepare,
    embedding_model_register,
)
from embeddings.services.vectors import products_embed
from search.models import QueryPhoto, VocabularyTerm
from search.vocabulary import vocabulary_rebuild
from tests.factories import photo_garment, product_create

# Departments follow the catalog's "Department > Type" paths, which "complete the look"
# groups by (a shirt is completed by trousers and shoes, not by another shirt).
DRAWN_PRODUCTS = [
    # sku, title, brand, category, colour, price, in stock
    (
        "TEE-RED",
        "Organic cotton tee",
        "Northwind",
        "Garment Upper body > T-shirt",
        (200, 40, 40),
        "19.90",
        True,
    ),
    (
        "TEE-BLU",
        "Relaxed fit tee",
        "Northwind",
        "Garment Upper body > T-shirt",
        (40, 70, 190),
        "17.50",
        True,
    ),
    (
        "SHIRT-RED",
        "Linen shirt",
        "Atelier Nord",
        "Garment Upper body > Shirt",
        (190, 50, 60),
        "49.00",
        False,
    ),
    (
        "JEANS-BLU",
        "Straight leg jeans",
        "Atelier Nord",
        "Garment Lower body > Trousers",
        (35, 60, 150),
        "59.95",
        True,
    ),
    (
        "CHINO-BEI",
        "Slim chinos",
        "Northwind",
        "Garment Lower body > Trousers",
        (200, 180, 140),
        "39.95",
        True,
    ),
    (
        "SNEAK-WHT",
        "Leather sneakers",
        "Atelier Nord",
        "Shoes > Sneakers",
        (235, 235, 235),
        "89.00",
        True,
    ),
    ("BOOT-BRN", "Chelsea boots", "Northwind", "Shoes > Boots", (110, 70, 40), "129.00", True),
    (
        "BAG-RED",
        "Small shoulder bag",
        "Atelier Nord",
        "Accessories > Bag",
        (170, 30, 40),
        "69.00",
        True,
    ),
]


COLOUR_NAMES = {"RED": "red", "BLU": "blue", "BEI": "beige", "WHT": "white", "BRN": "brown"}


@dataclass
class ShopCatalog:
    products: dict[str, Product]
    images: dict[str, bytes]  # sku -> photo bytes
    lookbook: Lookbook
    model: EmbeddingModel


def _add_product(*, sku: str, title: str, brand: str, category: str, price: str,
                 in_stock: bool, photo: bytes, description: str = "",
                 attributes: dict[str, str] | None = None) -> Product:  # fmt: skip
    return product_create(
        sku=sku, title=title, photo=photo, thumbnail=True, brand=brand, category=category,
        price=Decimal(price), currency="EUR", in_stock=in_stock, description=description,
        attributes=attributes or {}, content_hash=f"hash-{sku}",
    )  # fmt: skip


def _hm_rows(datasets: Path, limit: int) -> list[dict[str, str]]:
    """A varied, deterministic pick of H&M articles: tops, bottoms, shoes, accessories (in
    these shares of `limit`)."""
    shares = {"Garment Upper body": 12, "Garment Lower body": 8, "Shoes": 6,
              "Accessories": 5, "Garment Full body": 5}  # fmt: skip
    wanted = {group: -(-share * limit // 36) for group, share in shares.items()}
    rows: list[dict[str, str]] = []
    with (datasets / "hm" / "articles.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            group = row["product_group_name"]
            if (
                wanted.get(group, 0)
                and (datasets / "hm" / "images" / f"{row['article_id']}.jpg").exists()
            ):
                wanted[group] -= 1
                rows.append(row)
            if len(rows) >= limit:
                break
    return rows


def build_catalog(
    *, use_datasets: bool = True, drawn: bool = True, hm_articles: int = 36
) -> ShopCatalog:
    """Products with photos, a lookbook, and their vectors by the active default model:
    the drawn products (unless not `drawn`) and, with the datasets, `hm_articles` H&M ones."""

    datasets = Path(settings.VITRINE_DATASETS)
    products: dict[str, Product] = {}
    images: dict[str, bytes] = {}
    for sku, title, brand, category, colour, price, in_stock in DRAWN_PRODUCTS if drawn else ():
        photo = photo_garment(colour)
        name = COLOUR_NAMES[sku[-3:]]
        products[sku] = _add_product(sku=sku, title=title, brand=brand, category=category,
                                     price=price, in_stock=in_stock, photo=photo,
                                     description=f"A {name} {title.lower()} for every day.",
                                     attributes={"colour": name.title()})  # fmt: skip
        images[sku] = photo
    if use_datasets and (datasets / "hm" / "articles.csv").is_file():
        for index, row in enumerate(_hm_rows(datasets, limit=hm_articles)):
            photo = (datasets / "hm" / "images" / f"{row['article_id']}.jpg").read_bytes()
            sku = f"HM-{row['article_id']}"
            products[sku] = _add_product(
                sku=sku, title=row["prod_name"],
                brand="Divided" if row["index_group_name"] == "Divided" else "H&M",
                category=f"{row['product_group_name']} > {row['product_type_name']}",
                price=f"{9.99 + (index % 8) * 5:.2f}", in_stock=index % 6 != 5, photo=photo,
                description=row["detail_desc"],
                attributes={"colour": row["colour_group_name"]},
            )  # fmt: skip
            images[sku] = photo

    lookbook = Lookbook.objects.create(
        title="Weekend in red", slug="weekend-in-red", is_published=True,
        description="Easy pieces in warm reds, for long Saturdays.",
    )  # fmt: skip
    for position, sku in enumerate(
        ["TEE-RED", "JEANS-BLU", "SNEAK-WHT"] if drawn else list(products)[:3]
    ):
        LookbookItem.objects.create(lookbook=lookbook, product=products[sku], position=position)

    # What a fresh install does: register the bundled default model and prepare it (the
    # worker's job; being the first version it goes active), then embed the products with
    # the service the embedding task runs.
    model = embedding_model_register(spec=DEFAULT_SPEC)
    model = embedding_model_prepare(model=model)
    # Outside a test transaction a running test worker may have taken the "prepare" message
    # first (then the call above left it to the worker): wait for it to finish.
    deadline = time.monotonic() + 120
    while model.state == EmbeddingModel.State.BUILDING and time.monotonic() < deadline:
        time.sleep(0.1)
        model.refresh_from_db()
    if model.state != EmbeddingModel.State.ACTIVE:
        raise AssertionError(f"the default model did not go active: {model.state} {model.error}")
    result = products_embed(product_ids=[product.pk for product in products.values()], model=model)
    # Products a running test worker is embedding right now are skipped here (one embedder
    # per product): wait for that worker's vectors instead.
    pending = set(result.skipped)
    while pending and time.monotonic() < deadline + 120:
        time.sleep(0.2)
        pending = set(
            products_needing_embedding(model=model, exclude_pending=False)
            .filter(pk__in=pending)
            .values_list("pk", flat=True)
        )
    if result.image_failed or pending:
        raise AssertionError(f"test catalog not fully embedded: {result}, pending {pending}")
    vocabulary_rebuild()  # as the beat does after an import
    return ShopCatalog(products=products, images=images, lookbook=lookbook, model=model)


def catalog_remove(catalog: ShopCatalog) -> None:
    """Delete a committed test catalog: its model's indexes and vectors, products, lookbooks.

    The HNSW indexes are per model id and outlive a flush, so they are dropped explicitly.
    """
    for model in EmbeddingModel.objects.all():
        embedding_model_indexes_drop(model=model)
    ProductEmbedding.objects.all().delete()
    PendingEmbedding.objects.all().delete()
    EmbeddingModel.objects.all().delete()
    Lookbook.objects.all().delete()
    Product.objects.all().delete()
    QueryPhoto.objects.all().delete()
    VocabularyTerm.objects.all().delete()
