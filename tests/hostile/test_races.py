"""Shoppers who do the same thing at the same moment."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from PIL import Image

from search.models import QueryPhoto

SHOPPERS = 6


def _photo(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (seed * 40 % 256, 80, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.django_db(transaction=True)
def test_shoppers_uploading_the_same_photo_at_once_all_get_their_results(
    settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = str(tmp_path)
    settings.VITRINE_PAGE_PHOTO_RATE = "1000/min"  # the race is under test, not the limit
    for seed in range(5):  # several rounds: the race is a window, not a certainty
        data = _photo(seed)
        start = threading.Barrier(SHOPPERS)
        statuses: list[int] = []

        def shopper(
            data: bytes = data, start: threading.Barrier = start, statuses: list[int] = statuses
        ) -> None:
            try:
                start.wait()
                upload = SimpleUploadedFile("same.png", data, "image/png")
                response = Client(raise_request_exception=False).post(
                    "/search/photo/", {"image": upload}
                )
                statuses.append(response.status_code)
            finally:
                connection.close()

        threads = [threading.Thread(target=shopper) for _ in range(SHOPPERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [302] * SHOPPERS
    assert QueryPhoto.objects.count() == 5
    # One file per photo: the losers' copies were removed.
    assert len([p for p in (tmp_path / "queries").rglob("*") if p.is_file()]) == 5
