"""Thin PNGs (absurd aspect ratios under the pixel cap) on every path that decodes images:
the shopper form, the API upload and image URL, catalog images, and the encoder itself."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from catalog.ingest.imaging import ImageRejectedError, normalise_image
from search.models import ApiKey, QueryPhoto
from search.services import api_key_create
from tests.ingest.conftest import LocalServer
from tests.support.hostile import THIN_SHAPES, thin_png

pytestmark = pytest.mark.django_db

SHAPE_IDS = [f"{w}x{h}" for w, h in THIN_SHAPES]


@pytest.fixture(scope="module")
def thin_pngs() -> dict[tuple[int, int], bytes]:
    return {shape: thin_png(width=shape[0], height=shape[1]) for shape in THIN_SHAPES}


@pytest.mark.parametrize("shape", THIN_SHAPES, ids=SHAPE_IDS)
def test_the_shopper_form_refuses_a_thin_png_with_a_400_and_the_reason(
    thin_pngs: dict[tuple[int, int], bytes], shape: tuple[int, int]
) -> None:
    data = thin_pngs[shape]
    assert len(data) < 600_000  # small files: the danger is in the decoded shape
    response = Client().post(
        "/search/photo/", {"image": SimpleUploadedFile("thin.png", data, "image/png")}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert f"{shape[0]}x{shape[1]} pixels" in html
    assert "more than 20 times the other" in html
    assert not QueryPhoto.objects.exists()


@pytest.mark.parametrize("shape", THIN_SHAPES, ids=SHAPE_IDS)
def test_the_api_refuses_a_thin_png_upload_and_url(
    thin_pngs: dict[tuple[int, int], bytes],
    shape: tuple[int, int],
    http_server: LocalServer,
    settings: Any,
) -> None:
    settings.VITRINE_FETCH_ALLOWED_HOSTS = ["localhost"]
    key = api_key_create(name="storefront", scope=ApiKey.Scope.READ).plaintext
    client = Client(headers={"Authorization": f"Api-Key {key}"})
    http_server.add_file("/thin.png", thin_pngs[shape], "image/png")

    uploaded = client.post(
        "/api/v1/search/image/",
        {"image": SimpleUploadedFile("thin.png", thin_pngs[shape], "image/png")},
    )
    fetched = client.post(
        "/api/v1/search/image/",
        json.dumps({"image_url": http_server.url("/thin.png", host="localhost")}),
        content_type="application/json",
    )

    for response in (uploaded, fetched):
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "bad_aspect_ratio"
    assert http_server.hits["/thin.png"] == 1


@pytest.mark.parametrize("shape", THIN_SHAPES, ids=SHAPE_IDS)
def test_a_thin_catalog_image_is_refused_before_decoding(
    thin_pngs: dict[tuple[int, int], bytes], shape: tuple[int, int]
) -> None:
    with pytest.raises(ImageRejectedError, match="times its"):
        normalise_image(thin_pngs[shape])


def test_a_banner_shape_under_the_ratio_is_still_accepted() -> None:
    normalised = normalise_image(thin_png(width=1900, height=100))
    assert (normalised.width, normalised.height) == (1024, 54)


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a probe started
# from a pytest process that holds models would report the parent's peak.
ENCODER_PROBE = """
import re, time
from pathlib import Path
from embeddings.ml.images import decode_image
from tests.support.hostile import thin_png
data = thin_png(width=38, height=1_000_000)
started = time.monotonic()
array = decode_image(data, 96)
peak = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(array.shape, time.monotonic() - started, peak)
"""


def test_the_encoder_decodes_a_thin_image_in_bounded_memory_and_time() -> None:
    # The last line of defence, behind the gates above: the model's own decoder. In a
    # fresh interpreter so the peak resident size is this decode's alone.
    out = subprocess.run(
        [sys.executable, "-c", ENCODER_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    shape, seconds, peak_kib = out.stdout.rsplit(" ", 2)
    assert shape.strip() == "(3, 96, 96)"
    assert float(seconds) < 5.0
    assert int(peak_kib) < 400 * 1024, f"peak RSS {int(peak_kib) / 1024:.0f} MiB"
