"""Validated rows: what a feed row becomes before it touches the database.

``validate_product`` turns one raw record (already renamed to our field names by a
:class:`~catalog.ingest.mapping.ColumnMapping`) into a :class:`ProductRow`, or into a
list of :class:`RowError`, each naming the row, the field and a reason a retailer can act
on. Field names follow the Google Merchant Center product data specification, which is
the default layout of a feed. One module over 400 lines: one validator a field, read
together with the row types they fill.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

Availability = Literal["in_stock", "out_of_stock", "preorder", "backorder"]

MAX_SKU = 64
MAX_TITLE = 500
MAX_DESCRIPTION = 10_000
MAX_SHORT = 255
MAX_URL = 2_000
#: Attributes a product may have: filters and the admin list them, and each is in the
#: embedded text. A feed with thousands of columns per row is not describing a product.
MAX_ATTRIBUTES = 100
MAX_IMAGES = 11  # GMC: one image_link plus up to 10 additional_image_link


@dataclass(frozen=True)
class RowError:
    """One problem with one row: ``row`` is the spreadsheet row (header = row 1)."""

    row: int
    field: str
    reason: str
    sku: str = ""
    #: A skipped row is not wrong, just not imported (a repeated SKU, for one).
    skipped: bool = False


@dataclass(frozen=True)
class ImageRef:
    """Where an image comes from: an http(s) URL, or a file inside the feed's folder."""

    kind: Literal["url", "path"]
    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ProductRow:
    row: int
    sku: str
    title: str
    description: str = ""
    link: str = ""
    images: tuple[ImageRef, ...] = ()
    price: Decimal | None = None
    currency: str = ""
    sale_price: Decimal | None = None
    availability: Availability = "in_stock"
    brand: str = ""
    product_type: str = ""
    google_product_category: str = ""
    item_group_id: str = ""
    color: str = ""
    size: str = ""
    gender: str = ""
    lookbooks: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (Decimal as string) for staging rows between tasks."""
        data = asdict(self)
        data["images"] = [{"kind": ref.kind, "value": ref.value} for ref in self.images]
        data["lookbooks"] = list(self.lookbooks)
        for key in ("price", "sale_price"):
            data[key] = None if data[key] is None else str(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProductRow:
        values = dict(data)
        values["images"] = tuple(ImageRef(kind=i["kind"], value=i["value"]) for i in data["images"])
        values["lookbooks"] = tuple(data.get("lookbooks", ()))
        for key in ("price", "sale_price"):
            values[key] = None if data.get(key) is None else Decimal(data[key])
        return cls(**values)


@dataclass(frozen=True)
class LookbookRow:
    """A lookbook (board, room, outfit): a named, ordered set of SKUs, maybe with a photo."""

    row: int
    key: str
    title: str
    skus: tuple[str, ...]
    image: ImageRef | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageContext:
    """What image references a feed may use.

    ``base_dir`` is set only for feeds read from the local disk by an operator (CLI,
    folder import): then relative paths are allowed, but never outside ``base_dir``.
    Feeds that arrive over the API or from a URL get ``base_dir=None``: http(s) only.
    """

    base_dir: Path | None = None


class FieldError(ValueError):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


_AVAILABILITY = {
    "in_stock": "in_stock",
    "instock": "in_stock",
    "in": "in_stock",
    "available": "in_stock",
    "true": "in_stock",
    "yes": "in_stock",
    "1": "in_stock",
    "out_of_stock": "out_of_stock",
    "outofstock": "out_of_stock",
    "out": "out_of_stock",
    "sold_out": "out_of_stock",
    "discontinued": "out_of_stock",
    "false": "out_of_stock",
    "no": "out_of_stock",
    "0": "out_of_stock",
    "preorder": "preorder",
    "pre_order": "preorder",
    "backorder": "backorder",
    "back_order": "backorder",
    "available_for_order": "backorder",
}

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TWO_CURRENCIES = re.compile(
    r"^\s*(?:[A-Za-z]{3}\s*[0-9][0-9.,' ]*\s*[A-Za-z]{3}"
    r"|[0-9][0-9.,' ]*\s*[A-Za-z]{3}\s+[A-Za-z]{3})\s*$"
)
_PRICE = re.compile(
    r"^\s*(?:(?P<cur1>[A-Za-z]{3})\s*)?(?P<amount>[0-9][0-9.,' ]*)\s*(?P<cur2>[A-Za-z]{3})?\s*$"
)


def parse_availability(raw: str) -> Availability:
    """GMC values (``in_stock``, ``in stock``, ``out of stock``...) and yes/no flags."""
    key = re.sub(r"[\s\-]+", "_", raw.strip().lower())
    if not key:
        return "in_stock"
    value = _AVAILABILITY.get(key)
    if value is None:
        raise FieldError(
            "availability",
            f"unknown availability {raw[:40]!r}: use in_stock, out_of_stock, preorder or backorder",
        )
    return value  # type: ignore[return-value]


def _parse_amount(text: str, field_name: str) -> Decimal:
    cleaned = text.replace(" ", "").replace("'", "")
    if "," in cleaned and "." in cleaned:
        # Whichever separator comes last is the decimal one: 1,234.56 or 1.234,56.
        if cleaned.rfind(",") > cleaned.rfind("."):
            cleaned = cleaned.replace(".", "").replace(",", ".")
        else:
            cleaned = cleaned.replace(",", "")
    elif "," in cleaned:
        head, _, tail = cleaned.rpartition(",")
        # 12,50 is a decimal comma; 1,234 is a thousands separator.
        cleaned = f"{head.replace(',', '')}.{tail}" if len(tail) != 3 else cleaned.replace(",", "")
    try:
        amount = Decimal(cleaned)
    except InvalidOperation as exc:
        raise FieldError(field_name, f"{text!r} is not a number") from exc
    if not amount.is_finite():
        raise FieldError(field_name, f"{text!r} is not a number")
    if amount >= Decimal("1e10"):
        raise FieldError(field_name, f"{text!r} is too large")
    if amount != amount.quantize(Decimal("0.01")):
        raise FieldError(field_name, f"{text!r} has more than 2 decimal places")
    return amount.quantize(Decimal("0.01"))


def parse_price(
    raw: str, *, field_name: str = "price", default_currency: str = ""
) -> tuple[Decimal | None, str]:
    """Parse ``12.00 USD`` (GMC), ``USD 12``, ``1,234.50 EUR``, or ``12.00`` + default."""
    text = raw.strip()
    if not text:
        return None, ""
    match = _PRICE.match(text)
    if not match and _TWO_CURRENCIES.match(text):
        raise FieldError(field_name, f"{text[:40]!r} names two currencies")
    if not match:
        raise FieldError(field_name, f"{text[:40]!r} is not a price: write it like '12.00 USD'")
    if match["cur1"] and match["cur2"]:
        raise FieldError(field_name, f"{text[:40]!r} names two currencies")
    currency = (match["cur1"] or match["cur2"] or default_currency).upper()
    amount = _parse_amount(match["amount"], field_name)
    if not currency:
        raise FieldError(field_name, f"{text[:40]!r} has no currency: write it like '12.00 USD'")
    if not _CURRENCY.match(currency):
        raise FieldError(field_name, f"{currency!r} is not an ISO 4217 currency code")
    return amount, currency


def parse_image_ref(raw: str, *, field_name: str, context: ImageContext) -> ImageRef:
    """Accept an http(s) URL, or (local feeds only) a path inside the feed's folder."""
    text = raw.strip()
    if len(text) > MAX_URL:
        raise FieldError(field_name, f"image reference is longer than {MAX_URL} characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise FieldError(field_name, f"{text[:80]!r} has no host name")
        return ImageRef(kind="url", value=text)
    # "C:\\x.jpg" parses with scheme "c": a one-letter scheme is a Windows drive, not a URL.
    if scheme and len(scheme) > 1:
        raise FieldError(field_name, f"only http and https image URLs are allowed, not {scheme}:")
    if context.base_dir is None:
        raise FieldError(
            field_name,
            f"{text[:80]!r} is not an http(s) URL (local file paths are only allowed "
            "when importing from a folder on the server)",
        )
    relative = PurePosixPath(text.replace("\\", "/"))
    if relative.is_absolute() or scheme or ".." in relative.parts:
        raise FieldError(field_name, f"{text[:80]!r} must be a path inside the feed's folder")
    base = context.base_dir.resolve()
    target = (base / relative).resolve()
    # resolve() follows symlinks, so a link pointing out of the folder is caught here.
    if not target.is_relative_to(base):
        raise FieldError(field_name, f"{text[:80]!r} points outside the feed's folder")
    if not target.is_file():
        raise FieldError(field_name, f"image file {text[:80]!r} does not exist")
    return ImageRef(kind="path", value=relative.as_posix())


def _text(record: dict[str, Any], key: str, *, limit: int = MAX_SHORT) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = " ".join(str(value).split()) if limit <= MAX_SHORT else str(value).strip()
    if len(text) > limit:
        raise FieldError(key, f"is {len(text)} characters long; the limit is {limit}")
    return text


def _split_list(value: Any, separators: str = ",|;") -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        items = [str(v) for v in value]
    else:
        items = re.split(f"[{re.escape(separators)}]", str(value))
    return [item.strip() for item in items if item and item.strip()]


def _split_urls(value: Any) -> list[str]:
    """GMC separates additional images with commas. A URL may itself hold a comma (CDN
    resize parameters), so when the value has URLs, split only where a new one starts."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value)
    pattern = r",\s*(?=https?://)" if "://" in text else r","
    return [part.strip() for part in re.split(pattern, text, flags=re.IGNORECASE) if part.strip()]


KNOWN_FIELDS = frozenset(
    {
        "id",
        "title",
        "description",
        "link",
        "image_link",
        "additional_image_link",
        "price",
        "sale_price",
        "availability",
        "brand",
        "product_type",
        "google_product_category",
        "item_group_id",
        "color",
        "size",
        "gender",
        "lookbooks",
    }
)


def validate_product(
    record: dict[str, Any],
    *,
    row: int,
    context: ImageContext,
    default_currency: str = "",
) -> ProductRow | list[RowError]:
    """Validate one record keyed by GMC field names (plus ``attributes``)."""
    errors: list[RowError] = []
    sku = ""

    def guard(where: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one field parser, collecting its FieldError so every problem is reported."""
        try:
            return func(*args, **kwargs)
        except FieldError as exc:
            errors.append(RowError(row=row, field=exc.field or where, reason=exc.reason, sku=sku))
            return None

    sku = guard("id", _text, record, "id", limit=MAX_SKU + 1) or ""
    if not sku:
        errors.append(RowError(row=row, field="id", reason="id (SKU) is missing"))
    elif len(sku) > MAX_SKU:
        errors.append(
            RowError(
                row=row,
                field="id",
                reason=f"id is longer than {MAX_SKU} characters",
                sku=sku[:MAX_SKU],
            )
        )
        sku = sku[:MAX_SKU]
    title = guard("title", _text, record, "title", limit=MAX_TITLE) or ""
    if not title:
        errors.append(RowError(row=row, field="title", reason="title is missing", sku=sku))
    description = guard("description", _text, record, "description", limit=MAX_DESCRIPTION) or ""

    link = guard("link", _text, record, "link", limit=MAX_URL) or ""
    if link and urlsplit(link).scheme.lower() not in ("http", "https"):
        errors.append(
            RowError(row=row, field="link", reason="link must be an http(s) URL", sku=sku)
        )

    images: list[ImageRef] = []
    for field_name, raws in (
        ("image_link", _split_urls(record.get("image_link"))[:1]),
        ("additional_image_link", _split_urls(record.get("additional_image_link"))),
    ):
        for raw in raws:
            ref = guard(field_name, parse_image_ref, raw, field_name=field_name, context=context)
            if ref is not None and ref not in images:
                images.append(ref)
    if not images and not any(e.field in ("image_link", "additional_image_link") for e in errors):
        errors.append(
            RowError(row=row, field="image_link", reason="image_link is missing", sku=sku)
        )

    # Reading the text goes inside the guard too: an over-long value is this row's error.
    price, currency = guard(
        "price", lambda: parse_price(_text(record, "price"), default_currency=default_currency)
    ) or (None, "")
    sale_price, sale_currency = guard(
        "sale_price",
        lambda: parse_price(
            _text(record, "sale_price"),
            field_name="sale_price",
            default_currency=currency or default_currency,
        ),
    ) or (None, "")
    if sale_price is not None and currency and sale_currency != currency:
        errors.append(
            RowError(
                row=row,
                field="sale_price",
                reason="sale_price currency differs from price",
                sku=sku,
            )
        )
    availability = guard("availability", lambda: parse_availability(_text(record, "availability")))

    short: dict[str, str] = {}
    for key in (
        "brand",
        "product_type",
        "google_product_category",
        "item_group_id",
        "color",
        "size",
        "gender",
    ):
        short[key] = guard(key, _text, record, key) or ""
    lookbooks = tuple(dict.fromkeys(_split_list(record.get("lookbooks"))))

    attributes: dict[str, str] = {}
    raw_attributes = {
        key: value
        for key, value in (record.get("attributes") or {}).items()
        if value is not None and str(value).strip() != ""
    }
    if len(raw_attributes) > MAX_ATTRIBUTES:
        errors.append(
            RowError(
                row=row,
                field="attributes",
                reason=f"the row has {len(raw_attributes):,} attributes; the limit is "
                f"{MAX_ATTRIBUTES}",
                sku=sku,
            )
        )
        raw_attributes = {}
    for key, value in raw_attributes.items():
        if value is None or str(value).strip() == "":
            continue
        attributes[str(key)[:64]] = " ".join(str(value).split())[:MAX_SHORT]

    if errors:
        return errors
    return ProductRow(
        row=row,
        sku=sku,
        title=title,
        description=description,
        link=link,
        images=tuple(images[:MAX_IMAGES]),
        price=price,
        currency=currency if price is not None else "",
        sale_price=sale_price,
        availability=availability or "in_stock",
        lookbooks=lookbooks,
        attributes=attributes,
        **short,
    )
