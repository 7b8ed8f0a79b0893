"""A small, searchable catalog for the page and browser tests.

Products, images and lookbooks are real rows with real image files. Vectors are real
`ProductEmbedding` rows searched by the real `search.selectors` (pgvector SQL), but they
come from a tiny deterministic encoder (a 3x3 colour grid of the photo) instead of the
neural one, so the tests run in seconds on a CPU and never import torch. The encoder
stands in at the selectors' seam to `embeddings.runtime` (`_encode_image`/`_encode_text`).

With the shared datasets present (VITRINE_DATASETS), real H&M article photos and text are
used so that screenshots show a believable shop; otherwise drawn product images are.
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image, ImageDraw

from catalog.models import Lookbook, LookbookItem, Product, ProductImage

DIMENSION = 27  # 3 x 3 cells x RGB

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


def fake_encode(data: bytes) -> np.ndarray:
    """A photo's 3x3 mean colours, centred and L2-normalised (a stand-in encoder)."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB").resize((3, 3), Image.Resampling.BOX)
    vector = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0 - 0.5
    norm = float(np.linalg.norm(vector)) or 1.0
    return (vector / norm).astype(np.float32)


def fake_encode_text(text: str) -> np.ndarray:
    """Words to a vector: a colour word picks that colour, anything else a stable hash."""
    colours = {"red": (200, 40, 40), "blue": (40, 70, 190), "white": (235, 235, 235),
               "black": (20, 20, 20), "brown": (110, 70, 40), "beige": (200, 180, 140)}  # fmt: skip
    for word, colour in colours.items():
        if word in text.lower():
            return fake_encode(drawn_image(colour))
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    vector = rng.standard_normal(DIMENSION).astype(np.float32)
    return vector / float(np.linalg.norm(vector))


def drawn_image(colour: tuple[int, int, int], size: tuple[int, int] = (360, 450)) -> bytes:
    """A product-shot-like PNG: a coloured garment shape on a light studio background."""
    image = Image.new("RGB", size, (243, 241, 237))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rounded_rectangle((w * 0.22, h * 0.18, w * 0.78, h * 0.86), radius=28, fill=colour)
    draw.polygon([(w * 0.22, h * 0.2), (w * 0.05, h * 0.42), (w * 0.2, h * 0.5)], fill=colour)
    draw.polygon([(w * 0.78, h * 0.2), (w * 0.95, h * 0.42), (w * 0.8, h * 0.5)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def street_photo(left: bytes, right: bytes) -> bytes:
    """Two items side by side in one JPEG: a 'street photo' to crop one item out of."""
    with Image.open(io.BytesIO(left)) as a, Image.open(io.BytesIO(right)) as b:
        a, b = a.convert("RGB").resize((360, 450)), b.convert("RGB").resize((360, 450))
        canvas = Image.new("RGB", (720, 450), (243, 241, 237))
        canvas.paste(a, (0, 0))
        canvas.paste(b, (360, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@dataclass
class ShopCatalog:
    products: dict[str, Product]
    images: dict[str, bytes]  # sku -> photo bytes
    lookbook: Lookbook
    model: Any


def _add_product(*, sku: str, title: str, brand: str, category: str, price: str,
                 in_stock: bool, photo: bytes, description: str = "",
                 attributes: dict[str, str] | None = None) -> Product:  # fmt: skip
    product = Product.objects.create(
        sku=sku, title=title, brand=brand, category=category, price=Decimal(price),
        currency="EUR", in_stock=in_stock, description=description,
        attributes=attributes or {}, content_hash=f"hash-{sku}",
    )  # fmt: skip
    image = ProductImage(product=product, position=0, status=ProductImage.Status.READY)
    image.image.save(f"{sku}.png", ContentFile(photo), save=False)
    image.thumbnail = image.image.name
    with Image.open(io.BytesIO(photo)) as opened:
        image.width, image.height = opened.size
    image.save()
    return product


def _hm_rows(datasets: Path, limit: int) -> list[dict[str, str]]:
    """A varied, deterministic pick of H&M articles: tops, bottoms, shoes, accessories."""
    wanted = {"Garment Upper body": 12, "Garment Lower body": 8, "Shoes": 6,
              "Accessories": 5, "Garment Full body": 5}  # fmt: skip
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


def build_catalog(*, use_datasets: bool = True) -> ShopCatalog:
    """Products with photos, their vectors under an active test model, and a lookbook."""
    from embeddings.models import EmbeddingModel, ProductEmbedding

    datasets = Path(settings.VITRINE_DATASETS)
    products: dict[str, Product] = {}
    images: dict[str, bytes] = {}
    for sku, title, brand, category, colour, price, in_stock in DRAWN_PRODUCTS:
        photo = drawn_image(colour)
        products[sku] = _add_product(sku=sku, title=title, brand=brand, category=category,
                                     price=price, in_stock=in_stock, photo=photo,
                                     description=f"A {title.lower()} for every day.")  # fmt: skip
        images[sku] = photo
    if use_datasets and (datasets / "hm" / "articles.csv").is_file():
        for index, row in enumerate(_hm_rows(datasets, limit=36)):
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

    model = EmbeddingModel.objects.create(
        key="pages-test-v1", spec="default", dimension=DIMENSION,
        state=EmbeddingModel.State.ACTIVE, activated_at=timezone.now(),
        prepared_at=timezone.now(),
    )  # fmt: skip
    rows = []
    for sku, product in products.items():
        vector = fake_encode(images[sku])
        for kind in ("image", "text", "fused"):
            rows.append(ProductEmbedding(product=product, model=model, kind=kind,
                                         vector=vector.tolist(),
                                         content_hash=product.content_hash))  # fmt: skip
    ProductEmbedding.objects.bulk_create(rows)

    lookbook = Lookbook.objects.create(
        title="Weekend in red", slug="weekend-in-red", is_published=True,
        description="Easy pieces in warm reds, for long Saturdays.",
    )  # fmt: skip
    for position, sku in enumerate(["TEE-RED", "JEANS-BLU", "SNEAK-WHT"]):
        LookbookItem.objects.create(lookbook=lookbook, product=products[sku], position=position)
    return ShopCatalog(products=products, images=images, lookbook=lookbook, model=model)


def patch_encoders(monkeypatch: Any, model: Any) -> None:
    """Route the selectors' calls to `embeddings.runtime` to the stand-in encoder."""
    from search import selectors

    monkeypatch.setattr(selectors, "_encode_image", lambda data, *, model: fake_encode(data))
    monkeypatch.setattr(selectors, "_encode_text", lambda text, *, model: fake_encode_text(text))
    from embeddings.selectors import embedding_model_active

    if embedding_model_active() is None:
        # Until the registry's selector reads the table, point search at the test model.
        monkeypatch.setattr(selectors, "_active_model", lambda: model)
