"""A Python client generated from the live OpenAPI schema works against a real server.

The schema promises to be accurate enough that a generated client works; these tests hold
it to that. `openapi-python-client` (pinned in requirements-dev.txt) generates a package
from `/api/schema/` into a temporary directory; the tests import it and call a live server
(pytest-django's `live_server`, a thread of this process serving committed rows) with real
API keys, and assert on the typed objects the client parses. A generator warning, a wrong
request encoding or a response the client cannot parse is a schema bug, to be fixed in the
code (serializers, `extend_schema`), never worked around here.
"""

from __future__ import annotations

import datetime
import importlib
import io
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from embeddings.models import EmbeddingModel
from embeddings.services.indexes import embedding_model_indexes_drop
from search.models import ApiKey
from search.services import api_key_create
from tests.factories import photo_colour
from tests.search.catalog import Catalog, EncodedCatalog, catalog_create

PACKAGE = "vitrine_client"
# The generator's own config: a package name of ours instead of one derived from the title.
GENERATOR_CONFIG = f"project_name_override: vitrine-client\npackage_name_override: {PACKAGE}\n"


class GeneratedClient:
    """The generated package's modules, by the names the tests use."""

    def __init__(self, root: str) -> None:
        def module(name: str) -> ModuleType:
            return importlib.import_module(f"{root}.{name}")

        self.client = module("client")
        self.models = module("models")
        self.types = module("types")
        self.products_list = module("api.v1.v1_products_list")
        self.products_retrieve = module("api.v1.v1_products_retrieve")
        self.products_create = module("api.v1.v1_products_create")
        self.products_partial_update = module("api.v1.v1_products_partial_update")
        self.products_destroy = module("api.v1.v1_products_destroy")
        self.products_similar = module("api.v1.v1_products_similar_retrieve")
        self.complete_the_look = module("api.v1.v1_products_complete_the_look_retrieve")
        self.search_text = module("api.v1.v1_search_text_retrieve")
        self.search_image = module("api.v1.v1_search_image_create")
        self.imports_create = module("api.v1.imports_create")

    def connect(self, base_url: str, key: str) -> Any:
        """An `AuthenticatedClient` that sends `Authorization: Api-Key <key>`.

        Use it in a `with` block: a kept-alive connection keeps the live server's request
        thread, and that thread's database connection, open until the client is closed.
        """
        return self.client.AuthenticatedClient(base_url=base_url, token=key, prefix="Api-Key")


@pytest.fixture(scope="module")
def generated(
    live_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GeneratedClient]:
    """The client package generated from the live server's schema, imported."""
    pytest.importorskip(
        "openapi_python_client",
        reason="openapi-python-client is not installed (pip install -r requirements-dev.txt)",
    )
    workdir = tmp_path_factory.mktemp("generated-client")
    schema = httpx.get(f"{live_server.url}/api/schema/?format=json", timeout=30)
    assert schema.status_code == 200, schema.text[:500]
    (workdir / "openapi.json").write_bytes(schema.content)
    (workdir / "config.yml").write_text(GENERATOR_CONFIG)
    # The generator's post hooks run `ruff` (ours, pinned) from PATH: the venv's bin first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [
        sys.executable, "-m", "openapi_python_client", "generate",
        "--path", str(workdir / "openapi.json"), "--config", str(workdir / "config.yml"),
        "--output-path", str(workdir / PACKAGE), "--meta", "none",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A warning means an operation or a model was left out of the client: a schema bug.
    assert "Warning" not in output and "Error" not in output, output

    sys.path.insert(0, str(workdir))
    try:
        # Every module imports, the operations these tests do not call included.
        package = importlib.import_module(PACKAGE)
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{PACKAGE}."):
            importlib.import_module(module.name)
        yield GeneratedClient(PACKAGE)
    finally:
        sys.path.remove(str(workdir))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def served_catalog(transactional_db: None, encoded_catalog: EncodedCatalog) -> Iterator[Catalog]:
    """The search catalog, committed so the live server's thread sees it.

    `transactional_db` empties the tables after the test; the per-version HNSW indexes
    outlive that, so they are dropped here.
    """
    catalog = catalog_create(encoded=encoded_catalog)
    yield catalog
    for model in EmbeddingModel.objects.all():
        embedding_model_indexes_drop(model=model)


@pytest.fixture
def reader(generated: GeneratedClient, live_server: Any, transactional_db: None) -> Iterator[Any]:
    key = api_key_create(name="storefront", scope=ApiKey.Scope.READ).plaintext
    with generated.connect(live_server.url, key) as client:
        yield client


@pytest.fixture
def writer(generated: GeneratedClient, live_server: Any, transactional_db: None) -> Iterator[Any]:
    key = api_key_create(name="pim-sync", scope=ApiKey.Scope.READ_WRITE).plaintext
    with generated.connect(live_server.url, key) as client:
        yield client


def cursor_of(url: str) -> str:
    """The `cursor` parameter of a `next` / `previous` link."""
    return parse_qs(urlsplit(url).query)["cursor"][0]


def test_generated_client_filters_products_and_follows_the_cursor(
    generated: GeneratedClient, served_catalog: Catalog, reader: Any, live_server: Any
) -> None:
    models = generated.models
    # Acme sneakers: indices 2 and 8 of each colour, 6 products.
    filters = {"brand": ["Acme"], "category": ["Shoes > Sneakers"], "in_stock": True}

    first = generated.products_list.sync(client=reader, page_size=4, **filters)

    assert isinstance(first, models.PaginatedProductList), first
    assert len(first.results) == 4 and first.previous is None
    assert isinstance(first.next_, str)
    product = first.results[0]
    assert isinstance(product, models.Product)
    assert (product.brand, product.category, product.in_stock) == ("Acme", "Shoes > Sneakers", True)
    assert isinstance(product.created_at, datetime.datetime) and product.created_at.tzinfo
    assert isinstance(product.attributes, models.ProductAttributes)
    assert set(product.attributes.additional_properties) == {"colour", "fit"}
    assert isinstance(product.images[0], models.ProductImage)
    assert product.images[0].url.startswith(f"{live_server.url}/media/")

    second = generated.products_list.sync(
        client=reader, page_size=4, cursor=cursor_of(first.next_), **filters
    )

    assert isinstance(second, models.PaginatedProductList), second
    assert len(second.results) == 2 and second.next_ is None and second.previous
    skus = {product.sku for page in (first, second) for product in page.results}
    assert skus == {f"{colour}-{index}" for colour in ("RED", "GREEN", "BLUE") for index in (2, 8)}


def test_generated_client_creates_reads_updates_and_deletes_a_product(
    generated: GeneratedClient, served_catalog: Catalog, writer: Any
) -> None:
    models = generated.models
    body = models.ProductWriteRequest(
        sku="SCARF-1",
        title="Wool scarf",
        brand="Acme",
        category="Accessories > Scarf",
        price="24.50",
        currency="EUR",
        in_stock=True,
        attributes=models.ProductWriteRequestAttributes.from_dict({"colour": "Grey"}),
    )

    created = generated.products_create.sync(client=writer, body=body)

    assert isinstance(created, models.Product), created
    assert (created.sku, created.title, created.price) == ("SCARF-1", "Wool scarf", "24.50")
    assert created.attributes.to_dict() == {"colour": "Grey"}
    assert created.images == []

    read = generated.products_retrieve.sync("SCARF-1", client=writer)
    assert isinstance(read, models.Product) and read.updated_at == created.updated_at

    patch = models.PatchedProductWriteRequest(title="Wool scarf, long", in_stock=False)
    updated = generated.products_partial_update.sync("SCARF-1", client=writer, body=patch)

    assert isinstance(updated, models.Product), updated
    assert (updated.title, updated.in_stock, updated.price) == ("Wool scarf, long", False, "24.50")
    assert updated.updated_at > created.updated_at

    deleted = generated.products_destroy.sync_detailed("SCARF-1", client=writer)
    assert deleted.status_code == 204

    gone = generated.products_retrieve.sync("SCARF-1", client=writer)
    assert isinstance(gone, models.Error), gone
    assert gone.error.code == "not_found" and isinstance(gone.error.message, str)


def test_generated_client_parses_errors_as_typed_objects(
    generated: GeneratedClient, served_catalog: Catalog, reader: Any, live_server: Any
) -> None:
    models = generated.models

    missing = generated.products_retrieve.sync_detailed("NO-SUCH-SKU", client=reader)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Error)
    assert missing.parsed.error.code == "not_found"

    with generated.connect(live_server.url, "0123abcd.not-a-real-key") as stranger:
        refused = generated.products_list.sync_detailed(client=stranger)
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Error)
    assert refused.parsed.error.code == "authentication_failed"
    assert "invalid" in refused.parsed.error.message

    read_only = generated.products_destroy.sync_detailed("RED-0", client=reader)
    assert read_only.status_code == 403
    assert isinstance(read_only.parsed, models.Error)

    invalid = generated.search_text.sync_detailed(client=reader, q="red", limit=1000)
    assert invalid.status_code == 400
    assert isinstance(invalid.parsed, models.Error)
    assert invalid.parsed.error.code == "invalid"
    assert "limit" in invalid.parsed.error.details.additional_properties


def test_generated_client_searches_by_text_photo_and_similar_items(
    generated: GeneratedClient, served_catalog: Catalog, reader: Any, tmp_path: Path
) -> None:
    models = generated.models

    by_text = generated.search_text.sync(client=reader, q="red sneakers", limit=5)

    assert isinstance(by_text, models.SearchPage), by_text
    assert by_text.model_key == served_catalog.model.key and by_text.no_good_match is False
    assert by_text.results and all(isinstance(hit, models.SearchHit) for hit in by_text.results)
    assert by_text.results[0].product.sku.startswith("RED-")
    assert isinstance(by_text.results[0].score, float)

    # A JPEG file on disk, uploaded as a shopper's photo would be.
    path = tmp_path / "red-photo.jpg"
    path.write_bytes(photo_colour("red", size=128, fmt="JPEG"))
    with path.open("rb") as file:
        upload = generated.types.File(payload=file, file_name=path.name, mime_type="image/jpeg")
        by_photo = generated.search_image.sync(
            client=reader,
            body=models.ImageSearchRequestRequest(
                image=upload, category=["Shoes > Sneakers"], limit=3
            ),
        )

    assert isinstance(by_photo, models.ImageSearchResults), by_photo
    assert [hit.product.sku.split("-")[0] for hit in by_photo.results] == ["RED"] * 3
    assert {hit.product.category for hit in by_photo.results} == {"Shoes > Sneakers"}
    assert isinstance(by_photo.photo_id, str) and len(by_photo.photo_id) == 64

    # The same photo again, by reference and cropped to its left half: a JSON body.
    again = generated.search_image.sync(
        client=reader,
        body=models.ImageSearchByReferenceRequest(
            photo_id=by_photo.photo_id, crop=[0.0, 0.0, 0.5, 1.0], limit=3
        ),
    )

    assert isinstance(again, models.ImageSearchResults), again
    assert again.photo_id == by_photo.photo_id
    assert [hit.product.sku.split("-")[0] for hit in again.results] == ["RED"] * 3

    similar = generated.products_similar.sync("BLUE-1", client=reader, limit=4, in_stock_only=True)

    # The nearest to a pair of trousers are other trousers (the default model's fused vectors).
    assert isinstance(similar, models.SearchResults), similar
    assert len(similar.results) == 4
    assert "BLUE-1" not in {hit.product.sku for hit in similar.results}
    assert {hit.product.category for hit in similar.results} == {"Garment Lower body > Trousers"}
    assert all(hit.product.in_stock is True for hit in similar.results)
    scores = [hit.score for hit in similar.results]
    assert scores == sorted(scores, reverse=True)

    look = generated.complete_the_look.sync("BLUE-1", client=reader, limit_per_category=2)

    assert isinstance(look, models.CompleteTheLook), look
    assert all(isinstance(group, models.LookGroup) for group in look.groups)
    assert "Garment Lower body > Trousers" not in {group.category for group in look.groups}


def test_generated_client_sends_an_import_upload_as_multipart(
    generated: GeneratedClient, transactional_db: None, writer: Any
) -> None:
    models = generated.models
    feed = io.BytesIO(b"sku,title\nSCARF-1,Wool scarf\n")
    # Both a file and a URL: refused by validation, so no job is queued, and a 400 "invalid"
    # (not "parse_error") proves the server read the upload as a multipart form.
    body = models.ImportCreateRequest(
        file=generated.types.File(payload=feed, file_name="feed.csv", mime_type="text/csv"),
        url="https://feeds.example.com/feed.csv",
    )

    refused = generated.imports_create.sync_detailed(client=writer, body=body)

    assert refused.status_code == 400, refused.content
    assert isinstance(refused.parsed, models.Error)
    assert refused.parsed.error.code == "invalid"
    assert "either a file or a url" in str(refused.parsed.error.details.to_dict())
