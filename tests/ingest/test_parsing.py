"""Feeds in, validated rows and readable per-row errors out."""

# ruff: noqa: E501 (feed fixtures are easier to read one product per line)

from __future__ import annotations

import csv
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from catalog.ingest.fetching import FetchPolicy, SafeFetcher, StaticResolver
from catalog.ingest.mapping import ColumnMapping, MappingError, load_preset
from catalog.ingest.readers import FeedError
from catalog.ingest.rows import FieldError, LookbookRow, ProductRow, RowError, parse_price
from catalog.ingest.sources import Feed, fetch_url, load_mapping, open_bytes, open_path
from tests.factories import photo_plain
from tests.ingest.conftest import LocalServer

GMC_CSV = """\
id,title,description,link,image_link,additional_image_link,price,availability,brand,product_type,item_group_id,lookbooks
SKU-1,Red dress,A red dress,https://shop.example/p/1,https://cdn.example/1.jpg,"https://cdn.example/1b.jpg,https://cdn.example/w_10,h_20/1c.jpg",12.00 USD,in stock,Acme,Dresses,G1,Summer|Party
SKU-2,Blue shirt,,https://shop.example/p/2,https://cdn.example/2.jpg,,"1,234.50 EUR",out_of_stock,Acme,Shirts,,Summer
,No id,,,https://cdn.example/3.jpg,,5 USD,in_stock,,,,
SKU-4,Bad price,,,https://cdn.example/4.jpg,,twelve dollars,in_stock,,,,
SKU-5,Bad stock,,,https://cdn.example/5.jpg,,5 USD,maybe,,,,
SKU-6,Local file,,,/etc/passwd,,5 USD,in_stock,,,,
SKU-1,Repeated,,,https://cdn.example/1.jpg,,5 USD,in_stock,,,,
SKU-8,Too,many,fields,here,x,y,z,1,2,3,4,5,6
SKU-9,Javascript link,,javascript:alert(1),ftp://cdn.example/9.jpg,,,preorder,,,,
"""


def products(feed: Feed) -> tuple[list[ProductRow], list[RowError]]:
    rows: list[ProductRow] = []
    errors: list[RowError] = []
    for item in feed.products():
        (rows if isinstance(item, ProductRow) else errors).append(item)  # type: ignore[arg-type]
    return rows, errors


def test_a_gmc_csv_gives_rows_and_one_readable_error_per_problem() -> None:
    rows, errors = products(open_bytes(GMC_CSV.encode(), name="feed.csv"))

    assert [r.sku for r in rows] == ["SKU-1", "SKU-2"]
    first, second = rows
    assert first.row == 2
    assert (first.price, first.currency, first.availability) == (
        Decimal("12.00"),
        "USD",
        "in_stock",
    )
    assert [ref.value for ref in first.images] == [
        "https://cdn.example/1.jpg",
        "https://cdn.example/1b.jpg",
        "https://cdn.example/w_10,h_20/1c.jpg",
    ]
    assert first.lookbooks == ("Summer", "Party")
    assert (second.price, second.currency, second.availability) == (
        Decimal("1234.50"),
        "EUR",
        "out_of_stock",
    )

    by_row = {(e.row, e.field): e for e in errors}
    assert by_row[(4, "id")].reason == "id (SKU) is missing"
    assert "not a price" in by_row[(5, "price")].reason
    assert "unknown availability 'maybe'" in by_row[(6, "availability")].reason
    assert "not an http(s) URL" in by_row[(7, "image_link")].reason
    assert by_row[(8, "id")].skipped
    assert "already appeared on row 2" in by_row[(8, "id")].reason
    assert "has 14 fields but the header has 12" in by_row[(9, "")].reason
    assert by_row[(10, "link")].reason == "link must be an http(s) URL"
    assert "only http and https image URLs" in by_row[(10, "image_link")].reason
    assert all(not e.skipped for e in errors if e.row != 8)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12.00 USD", (Decimal("12.00"), "USD")),
        ("12 usd", (Decimal("12.00"), "USD")),
        ("USD 7.5", (Decimal("7.50"), "USD")),
        ("1.234,56 EUR", (Decimal("1234.56"), "EUR")),
        ("12,50 EUR", (Decimal("12.50"), "EUR")),
        ("1,234 GBP", (Decimal("1234.00"), "GBP")),
        ("", (None, "")),
    ],
)
def test_prices_in_the_shapes_feeds_use(raw: str, expected: tuple[Decimal | None, str]) -> None:
    assert parse_price(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("-5 USD", "not a price"),
        ("12.345 USD", "more than 2 decimal places"),
        ("12.00", "no currency"),
        ("12 USD EUR", "two currencies"),
        ("99999999999 USD", "too large"),
    ],
)
def test_bad_prices_say_why(raw: str, reason: str) -> None:
    with pytest.raises(FieldError, match=reason):
        parse_price(raw)


def test_a_default_currency_fills_bare_prices() -> None:
    assert parse_price("9.99", default_currency="SEK") == (Decimal("9.99"), "SEK")


def test_gmc_tsv_headers_with_spaces_and_prefixes() -> None:
    tsv = "g:id\tTitle\tImage Link\tPrice\tAvailability\nA1\tLamp\thttps://cdn.example/a.jpg\t3 USD\tpreorder\n"
    rows, errors = products(open_bytes(tsv.encode(), name="feed.txt"))
    assert errors == []
    assert (rows[0].sku, rows[0].title, rows[0].availability) == ("A1", "Lamp", "preorder")


def test_jsonl_keeps_going_after_a_broken_line() -> None:
    lines = [
        json.dumps({"id": "J1", "title": "One", "image_link": "https://cdn.example/1.jpg"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "J4", "title": "Four", "image_link": "https://cdn.example/4.jpg"}),
    ]
    rows, errors = products(open_bytes("\n".join(lines).encode(), name="feed.jsonl"))
    assert [r.sku for r in rows] == ["J1", "J4"]
    assert [(e.row, e.reason.split(":")[0]) for e in errors] == [
        (2, "line is not valid JSON"),
        (3, "line is not a JSON object"),
    ]


def test_gmc_rss_xml_with_repeated_additional_images() -> None:
    xml = b"""<?xml version="1.0"?>
<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0"><channel>
<item><g:id>X1</g:id><title>Chair</title><link>https://shop.example/x1</link>
<g:image_link>https://cdn.example/x1.jpg</g:image_link>
<g:additional_image_link>https://cdn.example/x1b.jpg</g:additional_image_link>
<g:additional_image_link>https://cdn.example/x1c.jpg</g:additional_image_link>
<g:price>49.90 EUR</g:price><g:availability>in_stock</g:availability></item>
<item><g:id>X2</g:id><title></title><g:image_link>https://cdn.example/x2.jpg</g:image_link></item>
</channel></rss>"""
    rows, errors = products(open_bytes(xml, name="feed.xml"))
    assert [r.sku for r in rows] == ["X1"]
    assert len(rows[0].images) == 3
    assert rows[0].price == Decimal("49.90")
    assert [(e.row, e.field) for e in errors] == [(2, "title")]


def test_xml_entity_declarations_are_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><rss><channel></channel></rss>'
    with pytest.raises(FeedError, match="entity"):
        products(open_bytes(bomb, name="feed.xml"))


def make_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    (folder / "img").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "img/c.png", "orphan.jpg"):
        (folder / name).write_bytes(photo_plain())
    (tmp_path / "outside.jpg").write_bytes(photo_plain())
    (folder / "escape.jpg").symlink_to(tmp_path / "outside.jpg")
    return folder


def test_a_folder_sidecar_names_images_and_unnamed_images_become_products(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "products.csv").write_text(
        "sku,name,image,price\n"
        "a,Alpha,,5 USD\n"  # no image: found as a.jpg by SKU
        "cee,Cee,img/c.png,6 USD\n"
        "bad,Escapes,../outside.jpg,1 USD\n"
        "link,Symlink,escape.jpg,1 USD\n"
        "abs,Absolute,/etc/hostname,1 USD\n"
    )
    rows, errors = products(open_path(folder))
    assert {r.sku: [i.value for i in r.images] for r in rows} == {
        "a": ["a.jpg"],
        "cee": ["img/c.png"],
        "b": ["b.jpg"],
        "orphan": ["orphan.jpg"],
    }
    assert all(ref.kind == "path" for r in rows for ref in r.images)
    reasons = {e.row: e.reason for e in errors}
    assert "must be a path inside the feed's folder" in reasons[4]
    assert "points outside the feed's folder" in reasons[5]
    assert "must be a path inside the feed's folder" in reasons[6]


def test_a_folder_of_images_alone_is_a_catalog(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    rows, errors = products(open_path(folder))
    assert errors == []
    assert sorted(r.sku for r in rows) == ["a", "b", "c", "orphan"]
    assert next(r for r in rows if r.sku == "orphan").title == "Orphan"


def test_uploaded_feeds_may_not_name_local_files(tmp_path: Path) -> None:
    csv_text = "id,title,image_link\nA,Alpha,a.jpg\n"
    _rows, errors = products(open_bytes(csv_text.encode(), name="feed.csv"))
    assert errors[0].field == "image_link"
    assert "local file paths are only allowed" in errors[0].reason


def test_a_lookbook_json_file_and_a_lookbook_column(tmp_path: Path) -> None:
    (tmp_path / "feed.csv").write_text(
        "id,title,image_link,boards\n"
        "A,Alpha,https://cdn.example/a.jpg,Autumn\n"
        "B,Beta,https://cdn.example/b.jpg,Autumn|Winter\n"
    )
    (tmp_path / "looks.json").write_text(json.dumps({"Office": ["A", "B", "A"], "Empty": []}))
    feed = open_path(tmp_path / "feed.csv", lookbooks=tmp_path / "looks.json")
    rows, _ = products(feed)
    looks = list(feed.lookbooks(rows))
    good = {lb.key: lb.skus for lb in looks if isinstance(lb, LookbookRow)}
    assert good == {"Office": ("A", "B"), "Autumn": ("A", "B"), "Winter": ("B",)}
    bad = [lb for lb in looks if isinstance(lb, RowError)]
    assert [(e.row, e.reason) for e in bad] == [(2, "lookbook 'Empty' lists no products")]


def test_mapping_templates_cannot_reach_python_attributes() -> None:
    mapping = ColumnMapping.from_dict(
        {"fields": {"id": "code", "title": {"template": "{name.__class__} {0}"}}}
    )
    record = mapping.apply({"code": "Z", "name": "Zed", "image_link": "https://x.example/z.jpg"})
    # Unknown placeholders are missing values, never evaluated.
    assert record["title"] is None


def test_mapping_errors_are_reported_before_reading_rows() -> None:
    with pytest.raises(MappingError, match="not a feed field"):
        ColumnMapping.from_dict({"fields": {"colourway": "x"}})
    with pytest.raises(MappingError, match="unknown preset"):
        load_preset("../../etc/passwd")


def test_a_feed_url_is_fetched_through_the_safe_fetcher(http_server: LocalServer) -> None:
    http_server.add_file(
        "/feed.csv",
        b"id,title,image_link\nU1,Url item,https://cdn.example/u1.jpg\n",
        "text/csv; charset=utf-8",
    )
    policy = FetchPolicy(allowed_hosts=frozenset({"feeds.test"}))
    with SafeFetcher(policy, resolver=StaticResolver({"feeds.test": ["127.0.0.1"]})) as fetcher:
        rows, errors = products(
            fetch_url(http_server.url("/feed.csv", "feeds.test"), fetcher=fetcher)
        )
    assert [r.sku for r in rows] == ["U1"]
    assert errors == []


@pytest.mark.datasets
def test_the_hm_preset_reads_the_first_200_articles(tmp_path: Path, datasets_dir: Path) -> None:
    source = datasets_dir / "hm"
    with (source / "articles.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        head = [next(reader) for _ in range(201)]
    with (tmp_path / "articles.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(head)
    (tmp_path / "images").mkdir()
    for row in head[1:]:
        shutil.copy(source / "images" / f"{row[0]}.jpg", tmp_path / "images")
    rows, errors = products(open_path(tmp_path, mapping=load_mapping(preset="hm")))
    assert errors == []
    assert len(rows) == 200
    assert rows[0].sku == head[1][0] == "0111565001"
    assert rows[0].title == "20 den 1p Stockings"
    assert rows[0].images[0].value == "images/0111565001.jpg"
    assert rows[0].attributes["garment_group"] == "Socks and Tights"


@pytest.mark.datasets
def test_the_ikea_preset_reads_products_and_rooms_as_lookbooks(datasets_dir: Path) -> None:
    feed = open_path(datasets_dir / "ikea", mapping=load_mapping(preset="ikea"))
    rows, errors = products(feed)
    assert errors == []
    assert len(rows) == 2187
    looks = [lb for lb in feed.lookbooks(rows) if isinstance(lb, LookbookRow)]
    assert len(looks) == 164
    first = looks[0]
    assert first.title == "A bright kitchen idea with custom character"
    assert first.attributes == {"room_type": "Kitchen"}
    assert first.image is not None and first.image.value.startswith("rooms/")
    assert len(first.skus) == 17


def test_control_characters_are_dropped_from_text_so_the_row_can_be_stored() -> None:
    # Postgres cannot store NUL: left in, it would fail the upsert of the row's whole chunk.
    feed = (
        "id,title,description,image_link,price,availability,brand,lookbooks\n"
        "SKU-\x001,Red\x00 dress\x07,Soft\x00 cotton\x1b.,https://cdn.example/1.jpg,"
        "12.00 USD,in stock,Ac\x7fme,Sum\x00mer\n"
    )
    rows, errors = products(open_bytes(feed.encode(), name="feed.csv"))

    assert errors == []
    (row,) = rows
    assert (row.sku, row.title, row.description, row.brand) == (
        "SKU-1",
        "Red dress",
        "Soft cotton.",
        "Acme",
    )
    assert row.lookbooks == ("Summer",)
    assert "\\u0000" not in json.dumps(row.to_json())
