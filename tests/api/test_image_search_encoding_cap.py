"""The API's photo search encodes under the shopper pages' cap (`photo_encoding_slot`): one
photo at a time per client, so one client sending photos in parallel cannot take every
encoding thread of a web process (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from search import selectors
from search.models import ApiKey
from search.services import api_key_create
from tests.api.conftest import api_client
from tests.api.test_search_api import upload
from tests.search.catalog import Catalog, photo


def test_an_api_client_encodes_one_photo_at_a_time_and_others_keep_their_slot(
    reader: Client, catalog: Catalog, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.VITRINE_PHOTO_ENCODE_CONCURRENCY = 2
    other = api_client(api_key_create(name="other", scope=ApiKey.Scope.READ).plaintext)
    search_by_image = selectors.search_by_image
    during: dict[str, Any] = {}

    def search_while_others_call(**kwargs: Any) -> Any:
        if not during:  # the first photo: the others arrive while it is being encoded
            during["first"] = True
            during["same key"] = reader.post(
                "/api/v1/search/image/", {"image": upload(photo("red"))}
            )
            during["other key"] = other.post(
                "/api/v1/search/image/", {"image": upload(photo("red"))}
            )
        return search_by_image(**kwargs)

    monkeypatch.setattr(selectors, "search_by_image", search_while_others_call)
    first = reader.post("/api/v1/search/image/", {"image": upload(photo("blue"))})

    assert first.status_code == 200, first.content
    busy = during["same key"]
    assert busy.status_code == 429, busy.content
    assert busy["Retry-After"] == "2"
    assert busy.json()["error"]["code"] == "photo_encoding_busy"
    assert during["other key"].status_code == 200, during["other key"].content
    # The slot is free again once the first photo is done.
    assert reader.post("/api/v1/search/image/", {"image": upload(photo("red"))}).status_code == 200


def test_a_scene_search_waits_for_the_same_clients_photo_search(
    reader: Client, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.looks import selectors as looks_selectors

    search_by_image = selectors.search_by_image
    during: dict[str, Any] = {}

    def search_while_a_scene_comes(**kwargs: Any) -> Any:
        if not during:
            during["first"] = True
            scene = reader.post("/api/v1/search/scene/", {"image": upload(photo("red"))})
            during["scene"] = scene
        return search_by_image(**kwargs)

    monkeypatch.setattr(selectors, "search_by_image", search_while_a_scene_comes)
    monkeypatch.setattr(looks_selectors, "scene_search", lambda **kwargs: pytest.fail("encoded"))
    assert reader.post("/api/v1/search/image/", {"image": upload(photo("blue"))}).status_code == 200
    assert during["scene"].status_code == 429, during["scene"].content
    assert during["scene"].json()["error"]["code"] == "photo_encoding_busy"
