"""Sources: where a feed comes from, and the stream of validated rows it yields.

* :func:`open_path` — a feed file, or a folder (a preset's feed file, a sidecar CSV, or
  just images). Local image paths are allowed, confined to that folder. CLI only.
* :func:`open_bytes` — an uploaded file (API, admin): http(s) images only.
* :func:`fetch_url` — a feed at an http(s) URL, fetched through the SSRF-safe fetcher.

All return a :class:`Feed`; ``feed.products()`` yields ``ProductRow`` or ``RowError``,
``feed.lookbooks()`` yields ``LookbookRow`` or ``RowError`` (from a lookbook file and
from a lookbook column in the product rows). One module: the three sources share ``Feed``
and its row limit, sidecar and lookbook handling.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from catalog.ingest.fetching import SafeFetcher
from catalog.ingest.mapping import (
    DEFAULT_MAPPING,
    ColumnMapping,
    MappingError,
    humanize,
    load_preset,
)
from catalog.ingest.readers import (
    MAX_NESTING,
    FeedError,
    RawRecord,
    guess_format,
    json_load_bounded,
    nesting_depth,
    read_records,
)
from catalog.ingest.rows import (
    MAX_SKU,
    FieldError,
    ImageContext,
    ImageRef,
    LookbookRow,
    ProductRow,
    RowError,
    parse_image_ref,
    validate_product,
)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
FEED_SUFFIXES = frozenset({".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".xml"})
MAX_FOLDER_IMAGES = 1_000_000
MAX_FEED_BYTES = 512 * 1024 * 1024

Opener = Callable[[], BinaryIO]

logger = logging.getLogger(__name__)


@dataclass
class Feed:
    name: str
    mapping: ColumnMapping
    context: ImageContext
    open_feed: Opener | None = None
    fmt: str = "csv"
    open_lookbooks: Opener | None = None
    lookbooks_fmt: str = "json"
    #: Folder sources: image files (relative POSIX paths) that may become products.
    folder_images: list[str] = field(default_factory=list)
    default_currency: str = ""
    #: Read only this many rows (imported, failed or skipped alike; None: all of them), to
    #: try a big feed on its first rows. Reading stops there: the rest is never parsed.
    row_limit: int | None = None

    def products(self) -> Iterator[ProductRow | RowError]:
        """Validated products in feed order; a repeated SKU is skipped (first one wins).

        With ``row_limit``, only the first that many rows: a row counts once however many
        errors it has, and a folder's unnamed images count as rows after the feed's.
        """
        items = self._all_products()
        if self.row_limit is None:
            yield from items
            return
        rows: set[int] = set()
        for item in items:
            if item.row not in rows:
                if len(rows) == self.row_limit:
                    items.close()  # closes the feed file now, not when collected
                    return
                rows.add(item.row)
            yield item

    def _all_products(self) -> Generator[ProductRow | RowError, None, None]:
        seen: dict[str, int] = {}
        by_stem = {Path(p).stem: p for p in self.folder_images}
        claimed: set[str] = set()
        last_row = 0
        currency = self.default_currency or self.mapping.default_currency
        for item in self._records():
            if isinstance(item, RowError):
                last_row = max(last_row, item.row)
                yield item
                continue
            last_row = max(last_row, item.row)
            record = self.mapping.apply(item.data)
            sku = str(record.get("id") or "").strip()
            if by_stem and not record.get("image_link") and sku in by_stem:
                record["image_link"] = by_stem[sku]
            try:
                result = validate_product(
                    record, row=item.row, context=self.context, default_currency=currency
                )
            except Exception as exc:
                # A validator bug must cost one row, never the job: the audit's long price
                # escaped as an exception and crashed its chunk on every retry.
                logger.exception("row %s of %s could not be validated", item.row, self.name)
                yield RowError(row=item.row, field="", reason=f"the row could not be read ({exc})")
                continue
            if isinstance(result, list):
                yield from result
                continue
            if result.sku in seen:
                yield RowError(
                    row=item.row,
                    field="id",
                    reason=f"id {result.sku!r} already appeared on row {seen[result.sku]}; "
                    "this row was skipped",
                    sku=result.sku,
                    skipped=True,
                )
                continue
            seen[result.sku] = item.row
            claimed.update(ref.value for ref in result.images if ref.kind == "path")
            yield result
        # Images in a folder that no feed row mentions become products of their own.
        for offset, path in enumerate(p for p in self.folder_images if p not in claimed):
            row = last_row + offset + 1
            stem = Path(path).stem
            if stem in seen:
                continue
            if len(stem) > MAX_SKU:
                yield RowError(
                    row=row, field="id", reason=f"file name {stem!r} is too long for a SKU"
                )
                continue
            seen[stem] = row
            yield ProductRow(
                row=row,
                sku=stem,
                title=humanize(stem),
                images=(ImageRef(kind="path", value=path),),
                attributes={"file": path},
            )

    def _records(self) -> Iterator[RawRecord | RowError]:
        if self.open_feed is None:
            return
        with self.open_feed() as stream:
            yield from read_records(stream, fmt=self.fmt)

    def lookbooks(
        self, products: list[ProductRow] | None = None
    ) -> Iterator[LookbookRow | RowError]:
        """Lookbooks from the lookbook file, then from the products' lookbook column."""
        if self.open_lookbooks is not None:
            yield from self._lookbook_file()
        if products:
            boards: dict[str, list[str]] = {}
            first_row: dict[str, int] = {}
            for product in products:
                for name in product.lookbooks:
                    boards.setdefault(name, []).append(product.sku)
                    first_row.setdefault(name, product.row)
            for name, skus in boards.items():
                yield LookbookRow(
                    row=first_row[name], key=name[:200], title=name[:200], skus=tuple(skus)
                )

    def _lookbook_file(self) -> Iterator[LookbookRow | RowError]:
        assert self.open_lookbooks is not None
        with self.open_lookbooks() as stream:
            if self.lookbooks_fmt == "json":
                data = json_load_bounded(stream, what="the lookbook file")
                if nesting_depth(data, limit=MAX_NESTING + 1) > MAX_NESTING + 1:
                    raise FeedError(
                        f"the lookbook file is nested more than {MAX_NESTING} levels deep"
                    )
                if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
                    # {"Summer edit": ["sku1", "sku2"], ...}
                    records: list[RawRecord | RowError] = [
                        RawRecord(row=i, data={"key": k, "skus": v})
                        for i, (k, v) in enumerate(data.items(), start=1)
                    ]
                else:
                    records = list(read_records(io.BytesIO(json.dumps(data).encode()), fmt="json"))
            else:
                records = list(read_records(stream, fmt=self.lookbooks_fmt))
        for item in records:
            if isinstance(item, RowError):
                yield item
                continue
            yield self._validate_lookbook(item)

    def _validate_lookbook(self, item: RawRecord) -> LookbookRow | RowError:
        record = self.mapping.apply_lookbook(item.data)
        key = " ".join(str(record.get("key") or "").split())[:200]
        if not key:
            return RowError(row=item.row, field="key", reason="lookbook name is missing")
        raw_skus = record.get("skus") or []
        if isinstance(raw_skus, str):
            raw_skus = [s for s in raw_skus.replace("|", ",").split(",")]
        skus = tuple(dict.fromkeys(str(s).strip() for s in raw_skus if str(s).strip()))
        if not skus:
            return RowError(
                row=item.row, field="skus", reason=f"lookbook {key!r} lists no products", sku=key
            )
        image = None
        if record.get("image"):
            try:
                image = parse_image_ref(
                    str(record["image"]), field_name="image", context=self.context
                )
            except FieldError as exc:
                return RowError(row=item.row, field="image", reason=exc.reason, sku=key)
        title = " ".join(str(record.get("title") or key).split())[:200]
        attributes = {
            str(k): str(v)[:255]
            for k, v in (record.get("attributes") or {}).items()
            if v not in (None, "")
        }
        return LookbookRow(
            row=item.row, key=key, title=title, skus=skus, image=image, attributes=attributes
        )


def _file_opener(path: Path) -> Opener:
    return lambda: path.open("rb")


def _bytes_opener(data: bytes) -> Opener:
    return lambda: io.BytesIO(data)


def _sniff(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(4096)


def _list_images(folder: Path) -> list[str]:
    images: list[str] = []
    base = folder.resolve()
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            if not path.resolve().is_relative_to(base):
                continue  # a symlink out of the folder is not part of the folder
            images.append(path.relative_to(folder).as_posix())
            if len(images) > MAX_FOLDER_IMAGES:
                raise FeedError(f"the folder holds more than {MAX_FOLDER_IMAGES:,} images")
    return images


def open_path(
    path: Path,
    *,
    mapping: ColumnMapping | None = None,
    sidecar: Path | None = None,
    lookbooks: Path | None = None,
    fmt: str | None = None,
) -> Feed:
    """A feed file or folder on the server's disk (CLI). Local image paths allowed."""
    mapping = mapping or DEFAULT_MAPPING
    path = path.expanduser()
    if not path.exists():
        raise FeedError(f"{path} does not exist")
    folder_images: list[str] = []
    if path.is_dir():
        folder = path
        feed_file: Path | None = sidecar
        if feed_file is None and mapping.feed:
            feed_file = folder / mapping.feed
            if not feed_file.is_file():
                raise FeedError(f"preset {mapping.name!r} expects {mapping.feed} in {folder}")
        if feed_file is None:
            candidates = sorted(
                p
                for p in folder.iterdir()
                if p.is_file()
                and p.suffix.lower() in FEED_SUFFIXES
                and (lookbooks is None or p.resolve() != lookbooks.resolve())
                and not (mapping.lookbooks and mapping.lookbooks.file == p.name)
            )
            if len(candidates) > 1:
                names = ", ".join(p.name for p in candidates)
                raise FeedError(
                    f"{folder} holds several feed files ({names}); name one with --sidecar"
                )
            feed_file = candidates[0] if candidates else None
            # Without a preset, a folder is "photos plus an optional sidecar": every image
            # not named by a sidecar row becomes a product of its own.
            folder_images = _list_images(folder)
    else:
        folder = path.parent
        feed_file = path
    if lookbooks is None and mapping.lookbooks and mapping.lookbooks.file:
        lookbooks = folder / mapping.lookbooks.file
        if not lookbooks.is_file():
            raise FeedError(f"preset {mapping.name!r} expects {mapping.lookbooks.file} in {folder}")
    feed_fmt = fmt or mapping.format
    if feed_file is not None and feed_fmt is None:
        feed_fmt = guess_format(feed_file.name, _sniff(feed_file))
    lb_fmt = "json"
    if lookbooks is not None:
        lb_fmt = (mapping.lookbooks.format if mapping.lookbooks else None) or guess_format(
            lookbooks.name, _sniff(lookbooks)
        )
    return Feed(
        name=(feed_file or folder).name,
        mapping=mapping,
        context=ImageContext(base_dir=folder.resolve()),
        open_feed=_file_opener(feed_file) if feed_file is not None else None,
        fmt=feed_fmt or "csv",
        open_lookbooks=_file_opener(lookbooks) if lookbooks is not None else None,
        lookbooks_fmt=lb_fmt,
        folder_images=folder_images,
    )


def open_bytes(
    data: bytes,
    *,
    name: str,
    mapping: ColumnMapping | None = None,
    lookbooks: bytes | None = None,
    fmt: str | None = None,
) -> Feed:
    """An uploaded feed (API, admin): images must be http(s) URLs."""
    mapping = mapping or DEFAULT_MAPPING
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(f"the feed is larger than {MAX_FEED_BYTES:,} bytes")
    feed_fmt = fmt or mapping.format or guess_format(name, data[:4096])
    lb_fmt = "json"
    if lookbooks is not None:
        lb_fmt = (mapping.lookbooks.format if mapping.lookbooks else None) or guess_format(
            "", lookbooks[:4096]
        )
    return Feed(
        name=name,
        mapping=mapping,
        context=ImageContext(base_dir=None),
        open_feed=_bytes_opener(data),
        fmt=feed_fmt,
        open_lookbooks=_bytes_opener(lookbooks) if lookbooks is not None else None,
        lookbooks_fmt=lb_fmt,
    )


def fetch_url(
    url: str,
    *,
    fetcher: SafeFetcher,
    mapping: ColumnMapping | None = None,
    fmt: str | None = None,
) -> Feed:
    """Download a feed through the safe fetcher, then treat it like an upload."""
    result = fetcher.fetch(url, accept="text/csv, application/json, application/xml, */*;q=0.5")
    name = result.final_url.rsplit("/", 1)[-1] or "feed"
    if fmt is None and mapping is not None:
        fmt = mapping.format
    if fmt is None:
        content_type = result.content_type.split(";", 1)[0].strip().lower()
        fmt = {
            "text/csv": "csv",
            "text/tab-separated-values": "tsv",
            "application/json": "json",
            "application/x-ndjson": "jsonl",
            "application/jsonl": "jsonl",
            "application/xml": "xml",
            "text/xml": "xml",
            "application/rss+xml": "xml",
            "application/atom+xml": "xml",
        }.get(content_type)
    return open_bytes(result.content, name=name, mapping=mapping, fmt=fmt)


def load_mapping(*, preset: str | None = None, mapping_json: str | None = None) -> ColumnMapping:
    """A preset by name, or a mapping given as JSON text (or a path to a JSON file)."""
    if preset and mapping_json:
        raise MappingError("give a preset or a mapping, not both")
    if preset:
        return load_preset(preset)
    if mapping_json:
        text = mapping_json
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        return ColumnMapping.from_json(text)
    return DEFAULT_MAPPING
