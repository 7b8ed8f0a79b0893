"""The API's photo search encodes under the shopper pages' cap (`photo_encoding_slot`): one
photo at a time per client, so one client sending photos in parallel cannot take every
encoding thread of a web process (issue 12). Other requests arrive while a photo is being
searched: the tests replace the search the API calls (through the results cache)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from search import result_cache
from search.models import ApiKey
from search.services import api_key_create
from tests.api.conftest import api_client
from tests.api.test_search_api import upload
from tests.factories import photo_colour
from tests.search.catalog import Catalog


def test_an_api_client_encodes_one_photo_at_a_time_and_others_keep_their_slot(
    reader: Client, catalog: Catalog, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.VITRINE_PHOTO_ENCODE_CONCURRENCY = 2
    other = api_client(api_key_create(name="other", scope=ApiKey.Scope.READ).plaintext)
    search_by_image = result_cache.search_by_image_cached
    during: dict[str, Any] = {}

    def search_while_others_call(**kwargs: Any) -> Any:
        if not during:  # the first photo: the others arrive while it is being encoded
            during["first"] = True
            during["same key"] = reader.post(
                "/api/v1/search/image/", {"image": upload(photo_colour("red"))}
            )
            during["other key"] = other.post(
                "/api/v1/search/image/", {"image": upload(photo_colour("red"))}
            )
        return search_by_image(**kwargs)

    monkeypatch.setattr(result_cache, "search_by_image_cached", search_while_others_call)
    first = reader.post("/api/v1/search/image/", {"image": upload(photo_colour("blue"))})

    assert first.status_code == 200, first.content
    busy = during["same key"]
    assert busy.status_code == 429, busy.content
    assert busy["Retry-After"] == "2"
    assert busy.json()["error"]["code"] == "photo_encoding_busy"
    assert during["other key"].status_code == 200, during["other key"].content
    # The slot is free again once the first photo is done.
    assert (
        reader.post("/api/v1/search/image/", {"image": upload(photo_colour("red"))}).status_code
        == 200
    )


def test_a_scene_search_waits_for_the_same_clients_photo_search(
    reader: Client, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.looks import selectors as looks_selectors

    search_by_image = result_cache.search_by_image_cached
    during: dict[str, Any] = {}

    def search_while_a_scene_comes(**kwargs: Any) -> Any:
        if not during:
            during["first"] = True
            scene = reader.post("/api/v1/search/scene/", {"image": upload(photo_colour("red"))})
            during["scene"] = scene
        return search_by_image(**kwargs)

    monkeypatch.setattr(result_cache, "search_by_image_cached", search_while_a_scene_comes)
    monkeypatch.setattr(looks_selectors, "scene_search", lambda **kwargs: pytest.fail("encoded"))
    assert (
        reader.post("/api/v1/search/image/", {"image": upload(photo_colour("blue"))}).status_code
        == 200
    )
    assert during["scene"].status_code == 429, during["scene"].content
    assert during["scene"].json()["error"]["code"] == "photo_encoding_busy"


def test_a_brand_servers_key_encodes_several_photos_at_once_but_leaves_a_slot_for_others(
    reader: Client, catalog: Catalog, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A brand's server sends many shoppers' photos through one secret key: with three
    # slots it may hold two, never the third.
    settings.VITRINE_PHOTO_ENCODE_CONCURRENCY = 3
    search_by_image = result_cache.search_by_image_cached
    sent: list[str] = []
    answers: dict[str, int] = {}

    def nested_search(**kwargs: Any) -> Any:
        if len(sent) < 2:  # while a photo is encoded, the same key sends one more
            name = ("second", "third")[len(sent)]
            sent.append(name)
            answers[name] = reader.post(
                "/api/v1/search/image/", {"image": upload(photo_colour("red"))}
            ).status_code
        return search_by_image(**kwargs)

    monkeypatch.setattr(result_cache, "search_by_image_cached", nested_search)
    assert (
        reader.post("/api/v1/search/image/", {"image": upload(photo_colour("blue"))}).status_code
        == 200
    )
    assert answers == {"second": 200, "third": 429}
