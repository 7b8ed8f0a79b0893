"""A small catalog embedded by the bundled default model, for search and API tests.

30 products, 10 per colour (red, green, blue), each with a stored photo of its plain colour,
spread over 3 categories, 2 brands, in and out of stock. Their vectors are computed once per
test session by the real default model (the same `Encoder.encode_all` the embedding task
runs, on the same photo and `product_text`) and inserted again for each test, so every test
starts from the same rows inside its own transaction; queries are encoded by that model too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.db import connection
from django.utils import timezone

from catalog.models import Lookbook, LookbookItem, Product, ProductImage
from embeddings import runtime
from embeddings.ml import DEFAULT_MODEL_VERSION
from embeddings.models import KINDS, EmbeddingModel, ProductEmbedding
from embeddings.services.centroids import embedding_model_centroids_update
from embeddings.services.indexes import embedding_model_indexes_create
from embeddings.services.registry import DEFAULT_SPEC
from embeddings.services.vectors import product_text
from search.vocabulary import vocabulary_rebuild
from tests.factories import photo_colour

COLOURS = ("red", "green", "blue")
BRANDS = ("Acme", "Zenith")
CATEGORIES = (
    "Garment Upper body > Shirt",
    "Garment Lower body > Trousers",
    "Shoes > Sneakers",
)


def product_fields(colour: str, index: int) -> dict[str, Any]:
    """The catalog's product `<COLOUR>-<index>` (index 0..9), as Product field values."""
    sku = f"{colour.upper()}-{index}"
    category = CATEGORIES[index % 3]
    brand = BRANDS[index % 2]
    return {
        "sku": sku,
        "title": f"{colour.title()} {category.split(' > ')[1].lower()} {index}",
        "description": f"A {colour} piece from the {brand} range.",
        "brand": brand,
        "category": category,
        "price": Decimal(10 + 5 * index),
        "currency": "EUR",
        "in_stock": index % 4 != 3,
        "attributes": {"colour": colour.title(), "fit": ["slim", "loose"][index % 2]},
        "content_hash": f"hash-{sku}",
    }


CATALOG = [product_fields(colour, index) for colour in COLOURS for index in range(10)]


@dataclass(frozen=True)
class EncodedCatalog:
    """The default model's vectors of `CATALOG`, computed once per session."""

    key: str
    spec: str
    dimension: int
    weights_sha256: str
    vectors: dict[str, dict[str, np.ndarray]]  # sku -> kind -> (dimension,) float32


# The registry key of the bundled default model that encodes the test catalog.
MODEL_KEY = f"default-{DEFAULT_MODEL_VERSION}"


@functools.cache
def catalog_encode() -> EncodedCatalog:
    """Encode `CATALOG` with the bundled default model, as the embedding task would.

    Once per process (the search and API packages' fixtures share the result), read-only.
    The encoder is loaded through `runtime.encoder_for` under the key and checksum the test
    versions get, so the queries of every test find it cached in this process.
    """
    version = EmbeddingModel(key=MODEL_KEY, spec=DEFAULT_SPEC)
    encoder = runtime.encoder_for(version)
    products = [Product(**fields) for fields in CATALOG]
    encoded = encoder.encode_all(
        [photo_colour(fields["attributes"]["colour"].lower()) for fields in CATALOG],
        [product_text(product) for product in products],
    )
    assert not encoded.failed and encoded.indices == list(range(len(CATALOG))), encoded.failed
    for array in (encoded.image, encoded.text, encoded.fused):
        array.setflags(write=False)  # shared by every test of the session
    vectors = {
        fields["sku"]: {
            "image": encoded.image[row],
            "text": encoded.text[row],
            "fused": encoded.fused[row],
        }
        for row, fields in enumerate(CATALOG)
    }
    return EncodedCatalog(
        key=version.key,
        spec=version.spec,
        dimension=int(encoder.dim),
        weights_sha256=str(encoder.weights_sha256),
        vectors=vectors,
    )


@dataclass
class Catalog:
    model: EmbeddingModel
    products: dict[str, Product]


def embedding_model_active_create(*, key: str, dimension: int) -> EmbeddingModel:
    """An active version with the contract's partial HNSW indexes (vectors made by hand)."""
    model = EmbeddingModel.objects.create(
        key=key,
        spec="default",
        dimension=dimension,
        state=EmbeddingModel.State.ACTIVE,
        prepared_at=timezone.now(),
        activated_at=timezone.now(),
    )
    with connection.cursor() as cursor:
        for kind in KINDS:
            # The contract's partial index (not CONCURRENTLY: tests run in a transaction).
            cursor.execute(
                f"CREATE INDEX emb_{model.pk}_{kind}_hnsw ON embeddings_productembedding "
                f"USING hnsw ((vector::halfvec({dimension})) halfvec_cosine_ops) "
                f"WHERE model_id = {model.pk} AND kind = '{kind}'"
            )
    return model


def catalog_create(*, encoded: EncodedCatalog, centroids: bool = True) -> Catalog:
    """Store `CATALOG` with photos and its default-model vectors under an active version.

    The version looks like the bundled default model after a fresh install's preparation
    (same key, spec, dimension and checksum; indexes built by `embeddings.services`) and,
    with `centroids`, after the sweep that stores its mean vectors (the modality gap).
    """
    now = timezone.now()
    model = EmbeddingModel.objects.create(
        key=encoded.key,
        spec=encoded.spec,
        dimension=encoded.dimension,
        weights_sha256=encoded.weights_sha256,
        state=EmbeddingModel.State.ACTIVE,
        prepared_at=now,
        activated_at=now,
    )
    embedding_model_indexes_create(model=model)
    products: dict[str, Product] = {}
    for fields in CATALOG:
        product = Product.objects.create(**fields)
        image = ProductImage(product=product, position=0, status=ProductImage.Status.READY)
        colour = fields["attributes"]["colour"].lower()
        image.image.save(f"{product.sku}.png", ContentFile(photo_colour(colour)), save=False)
        image.save()
        products[product.sku] = product
    ProductEmbedding.objects.bulk_create(
        ProductEmbedding(
            product=product,
            model=model,
            kind=kind,
            vector=encoded.vectors[sku][kind].tolist(),
            content_hash=product.content_hash,
        )
        for sku, product in products.items()
        for kind in KINDS
    )
    if centroids:
        embedding_model_centroids_update(model=model)
    vocabulary_rebuild()  # as the beat does after an import
    return Catalog(model=model, products=products)


def lookbook_create(*, slug: str, skus: list[str], published: bool = True) -> Lookbook:
    lookbook = Lookbook.objects.create(title=slug.title(), slug=slug, is_published=published)
    for position, sku in enumerate(skus):
        LookbookItem.objects.create(
            lookbook=lookbook, product=Product.objects.get(sku=sku), position=position
        )
    return lookbook
