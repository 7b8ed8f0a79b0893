"""The catalog's vocabulary in the database: built from the products, typos found by
pg_trgm, synonyms edited by merchandisers in the admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from search import selectors
from search.models import CatalogWord, Synonym, VocabularyTerm
from search.selectors import SearchFilters
from search.vocabulary import (
    vocabulary_corrections,
    vocabulary_get,
    vocabulary_holds_a_word,
    vocabulary_rebuild,
    vocabulary_rebuild_if_stale,
)
from tests.search.catalog import Catalog

pytestmark = pytest.mark.django_db


def labels(query: str) -> list[str]:
    results = selectors.search_by_text(query=query, filters=SearchFilters(), limit=10,
                                       diversify=False)  # fmt: skip
    return [concept.label for concept in results.concepts]


def test_the_vocabulary_holds_attribute_values_category_levels_and_brands(
    catalog: Catalog,
) -> None:
    terms = set(VocabularyTerm.objects.values_list("key", "field", "value"))

    assert ("red", "attribute:colour", "Red") in terms
    assert ("slim", "attribute:fit", "slim") in terms
    assert ("sneaker", "category", "Sneakers") in terms
    assert ("zenith", "brand", "Zenith") in terms
    sneakers = VocabularyTerm.objects.get(key="sneaker", field="category")
    assert sneakers.categories == ["Shoes > Sneakers"] and sneakers.product_count == 9


def test_the_vocabulary_follows_catalog_changes(catalog: Catalog) -> None:
    assert vocabulary_rebuild_if_stale() is False  # built by the fixture, nothing changed
    product = catalog.products["RED-1"]
    product.attributes = {**product.attributes, "pattern": "Striped"}
    product.save()

    assert vocabulary_rebuild_if_stale() is True
    assert VocabularyTerm.objects.filter(key="striped", value="Striped").exists()


def test_the_catalogs_words_follow_its_documents(catalog: Catalog) -> None:
    assert CatalogWord.objects.filter(lexeme="rang").exists()  # "range", stemmed
    assert not CatalogWord.objects.filter(lexeme="cashmer").exists()
    product = catalog.products["RED-1"]
    product.description = "Soft cashmere, knitted by hand."
    product.save()

    assert vocabulary_rebuild_if_stale() is True
    assert CatalogWord.objects.get(lexeme="cashmer").product_count == 1
    assert vocabulary_holds_a_word("cashmere scarf") is True
    assert vocabulary_holds_a_word("cashmeer") is True  # a misspelling
    assert vocabulary_holds_a_word("saxophone") is False
    assert vocabulary_holds_a_word("the") is None  # no word full text keeps


def test_misspelt_words_find_their_catalog_word_by_trigram_similarity(catalog: Catalog) -> None:
    assert vocabulary_corrections(["trowser", "sneeker", "qzxv"]) == {
        "trowser": "trouser",
        "sneeker": "sneaker",
    }
    results = selectors.search_by_text(query="trowsers", filters=SearchFilters(), limit=9,
                                       diversify=False)  # fmt: skip
    [concept] = results.concepts
    assert concept.label == "Trousers" and concept.via == "typo"
    # The catalog's 9 trousers come first.
    assert {catalog.products[h.product.sku].category for h in results.hits} == {
        "Garment Lower body > Trousers"
    }


def test_words_run_together_or_apart_meet_the_catalogs_spelling(catalog: Catalog) -> None:
    Product.objects.filter(sku="GREEN-0").update(category="Garment Upper body > T-shirt")
    vocabulary_rebuild()

    assert labels("green tshirt") == labels("green t shirt") == labels("Green T-Shirts")
    assert labels("green tshirt") == ["Green", "T-shirt"]


def test_a_synonym_added_in_the_admin_is_understood_at_once(catalog: Catalog) -> None:
    assert labels("footwear") == []
    admin = Client()
    admin.force_login(User.objects.create_superuser("merch", "m@example.com", "pass-123-456"))

    response = admin.post(
        "/admin/search/synonym/add/", {"phrase": "  Footwear ", "means": "sneakers | boots"}
    )

    assert response.status_code == 302, response.content.decode()[:500]
    assert Synonym.objects.get(phrase="footwear").means == "sneakers|boots"
    assert labels("footwear") == ["Sneakers"]


def test_default_synonyms_are_seeded(db: Any) -> None:
    seeded = dict(Synonym.objects.values_list("phrase", "means"))

    assert seeded["tee"] == "t-shirt" and seeded["trainers"].startswith("sneakers")
    assert "sweater" in seeded["jumper"] and "denim" in seeded["jeans"]


def test_a_process_asks_whether_the_vocabulary_changed_in_one_statement(catalog: Catalog) -> None:
    vocabulary_get()  # loaded
    with CaptureQueriesContext(connection) as unchanged:
        vocabulary_get()
    assert len(unchanged.captured_queries) == 1
    # A removed synonym that is neither the newest nor the last edited is still noticed.
    older = Synonym.objects.create(phrase="footwear", means="sneakers")
    Synonym.objects.create(phrase="kickz", means="sneakers")
    assert "footwear" in vocabulary_get().synonyms
    older.delete()
    assert "footwear" not in vocabulary_get().synonyms
