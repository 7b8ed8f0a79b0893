"""A small catalog with known vectors, and a fake encoder that maps words and colours onto
them, so search results can be asserted exactly without loading a real model.

Axis 0 is "red", 1 "green", 2 "blue"; the other axes are unused, so a query for anything
else points nowhere near the catalog (and must be reported as "no good match").
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from django.core.files.base import ContentFile
from django.db import connection
from django.utils import timezone
from PIL import Image

from catalog.models import Lookbook, LookbookItem, Product, ProductImage
from embeddings import services
from embeddings.models import EmbeddingModel, ProductEmbedding

DIM = 8
COLOURS = {"red": 0, "green": 1, "blue": 2}
RGB = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
CATEGORIES = [
    "Garment Upper body > Shirt",
    "Garment Lower body > Trousers",
    "Shoes > Sneakers",
]


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def colour_vector(colour: str, *, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[COLOURS[colour]] = 1.0
    if jitter:
        noise = np.random.default_rng(seed).normal(0, jitter, DIM).astype(np.float32)
        noise[3:] = 0.0  # unused axes stay empty: other queries point away from all
        vector += noise
    return unit(vector)


def fake_encode_text(text: str, *, model: object) -> np.ndarray:
    """A colour word points at its axis; anything else at an axis no product uses."""
    vector = np.zeros(DIM, dtype=np.float32)
    for word, axis in COLOURS.items():
        if word in text.lower():
            vector[axis] += 1.0
    if not vector.any():
        vector[DIM - 1] = 1.0
    return unit(vector)


def fake_encode_image(data: bytes, *, model: object) -> np.ndarray:
    """The photo's mean colour, projected on the red/green/blue axes."""
    with Image.open(io.BytesIO(data)) as image:
        mean = np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=(0, 1))
    vector = np.zeros(DIM, dtype=np.float32)
    vector[:3] = mean - mean.min() + 1e-3
    return unit(vector)


def photo(colour: str | tuple[str, str], *, size: int = 64, fmt: str = "PNG") -> bytes:
    """A plain photo of one colour, or two (left half, right half)."""
    left, right = (colour, colour) if isinstance(colour, str) else colour
    image = Image.new("RGB", (size, size), RGB[left])
    image.paste(Image.new("RGB", (size // 2, size), RGB[right]), (size // 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass
class Catalog:
    model: EmbeddingModel
    products: dict[str, Product]


def embedding_model_active_create(*, key: str = "test-v1", dimension: int = DIM) -> EmbeddingModel:
    model = EmbeddingModel.objects.create(
        key=key,
        spec="default",
        dimension=dimension,
        state=EmbeddingModel.State.ACTIVE,
        prepared_at=timezone.now(),
        activated_at=timezone.now(),
    )
    with connection.cursor() as cursor:
        for kind in ("image", "text", "fused"):
            # The contract's partial index (not CONCURRENTLY: tests run in a transaction).
            cursor.execute(
                f"CREATE INDEX emb_{model.pk}_{kind}_hnsw ON embeddings_productembedding "
                f"USING hnsw ((vector::halfvec({dimension})) halfvec_cosine_ops) "
                f"WHERE model_id = {model.pk} AND kind = '{kind}'"
            )
    return model


def vectors_store(*, model: EmbeddingModel, product: Product, vector: np.ndarray) -> None:
    ProductEmbedding.objects.bulk_create(
        ProductEmbedding(
            product=product, model=model, kind=kind, vector=vector.tolist(),
            content_hash=product.content_hash,
        )
        for kind in ("image", "text", "fused")
    )  # fmt: skip


def catalog_create(*, real_model: bool = False) -> Catalog:
    """30 products: 10 per colour, spread over 3 categories, 2 brands, in and out of stock.

    By default their vectors are hand-made (colour axes, for the ranking mechanics). With
    `real_model`, each product has a stored photo of its colour and the vectors come from the
    bundled default model, registered, prepared and run by `embeddings.services` like on a
    fresh install; queries are then encoded by the same model (no fake encoder needed).
    """
    model = embedding_model_active_create() if not real_model else None
    products: dict[str, Product] = {}
    for colour in COLOURS:
        for index in range(10):
            sku = f"{colour.upper()}-{index}"
            category = CATEGORIES[index % 3]
            product = Product.objects.create(
                sku=sku,
                title=f"{colour.title()} {category.split(' > ')[1].lower()} {index}",
                description=f"A {colour} piece from the {['Acme', 'Zenith'][index % 2]} range.",
                brand=["Acme", "Zenith"][index % 2],
                category=category,
                price=Decimal(10 + 5 * index),
                currency="EUR",
                in_stock=index % 4 != 3,
                attributes={"colour": colour.title(), "fit": ["slim", "loose"][index % 2]},
                content_hash=f"hash-{sku}",
            )
            image = ProductImage(product=product, position=0, status=ProductImage.Status.READY)
            if real_model:
                image.image.save(f"{sku}.png", ContentFile(photo(colour)), save=False)
            image.save()
            if model is not None:
                vectors_store(
                    model=model,
                    product=product,
                    vector=colour_vector(
                        colour, jitter=0.05 + 0.02 * index, seed=zlib.crc32(sku.encode())
                    ),
                )
            products[sku] = product
    if model is None:
        model = default_model_embed(product_ids=[p.pk for p in products.values()])
    return Catalog(model=model, products=products)


def default_model_embed(*, product_ids: list[int]) -> EmbeddingModel:
    """Register and prepare the bundled default model here (it goes active, being the first),
    then embed the products with the service the embedding task runs; return the model."""
    model = services.embedding_model_register(spec=services.DEFAULT_SPEC)
    model = services.embedding_model_prepare(model=model)
    assert model.state == EmbeddingModel.State.ACTIVE, (model.state, model.error)
    result = services.products_embed(product_ids=product_ids, model=model)
    assert sorted(result.embedded) == sorted(product_ids), result
    return model


def lookbook_create(*, slug: str, skus: list[str], published: bool = True) -> Lookbook:
    lookbook = Lookbook.objects.create(title=slug.title(), slug=slug, is_published=published)
    for position, sku in enumerate(skus):
        LookbookItem.objects.create(
            lookbook=lookbook, product=Product.objects.get(sku=sku), position=position
        )
    return lookbook
