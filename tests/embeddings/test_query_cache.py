"""Text query vectors are cached per process: a repeated query skips the text tower."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings import runtime
from tests.embeddings.conftest import prepare_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_repeated_query_reuses_its_vector(checkpoints: dict[str, str]) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")

    first = runtime.encode_query_text("red  dress", model=model)
    again = runtime.encode_query_text(" red dress ", model=model)  # same words, other spacing

    assert again is first
    assert not first.flags.writeable  # shared between requests: nobody may change it
    np.testing.assert_allclose(
        first, runtime.encoder_for(model).encode_texts(["red dress"])[0], atol=1e-6
    )
    assert runtime.encode_query_text("blue dress", model=model) is not first


def test_versions_do_not_share_cached_vectors(checkpoints: dict[str, str]) -> None:
    blue = prepare_here(spec=checkpoints["a"], key="blue")
    green = prepare_here(spec=checkpoints["b"], key="green")

    from_blue = runtime.encode_query_text("red dress", model=blue)
    from_green = runtime.encode_query_text("red dress", model=green)

    assert from_green is not from_blue
    assert not np.allclose(from_green, from_blue)  # other weights, other vector


def test_the_least_recently_used_query_is_dropped(
    checkpoints: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")
    monkeypatch.setattr(runtime, "TEXT_QUERY_CACHE_SIZE", 2)
    runtime._text_vectors.clear()

    red = runtime.encode_query_text("red", model=model)
    green = runtime.encode_query_text("green", model=model)
    assert runtime.encode_query_text("red", model=model) is red  # red is now the most recent
    runtime.encode_query_text("blue", model=model)  # over the size: green goes

    assert runtime.encode_query_text("red", model=model) is red
    assert runtime.encode_query_text("green", model=model) is not green


def test_a_photo_asked_again_reuses_its_vector(checkpoints: dict[str, str]) -> None:
    from tests.factories import photo_noise

    model = prepare_here(spec=checkpoints["a"], key="blue")

    first = runtime.encode_query_image(photo_noise(1), model=model)
    again = runtime.encode_query_image(photo_noise(1), model=model)  # the same bytes, a new request

    assert again is first
    assert not first.flags.writeable
    other = runtime.encode_query_image(photo_noise(2), model=model)
    assert other is not first and not np.allclose(other, first)
    with pytest.raises(ValueError, match="unreadable image"):  # failures are not cached
        runtime.encode_query_image(b"<html>", model=model)
    with pytest.raises(ValueError, match="unreadable image"):
        runtime.encode_query_image(b"<html>", model=model)
