"""Photo search says "no good match" for a photo of something the catalog does not sell,
by what the photo shows (the image trunk's own classes against the catalog's class
profile, and how strongly any class responds): through the real default model, the real
calibration, the API and the results page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from embeddings.ml.image_classes import synthetic_photos
from search.calibration import image_class_fit
from search.models import ApiKey, SearchCalibration
from search.services import api_key_create
from tests.factories import photo_noise, photo_plain
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = pytest.mark.datasets


def _api(data: bytes) -> dict[str, Any]:
    key = api_key_create(name="storefront", scope=ApiKey.Scope.READ).plaintext
    client = Client(headers={"Authorization": f"Api-Key {key}"})
    upload = SimpleUploadedFile("query.jpg", data, content_type="image/jpeg")
    response = client.post("/api/v1/search/image/", {"image": upload, "limit": 10})
    assert response.status_code == 200, response.content[:300]
    body: dict[str, Any] = response.json()
    return body


def _page(data: bytes) -> str:
    client = Client()
    posted = client.post("/search/photo/", {"image": SimpleUploadedFile("photo.jpg", data)})
    return str(client.get(posted["Location"]).content.decode())


def _a_top(catalog: ShopCatalog) -> bytes:
    sku = next(s for s, p in catalog.products.items() if p.category.startswith("Garment Upper"))
    return catalog.images[sku]


def test_the_calibration_reads_the_catalogs_photos_by_their_classes(
    hm_catalog: tuple[ShopCatalog, SearchCalibration],
) -> None:
    _, calibration = hm_catalog
    report = calibration.report["image_class_threshold"]
    assert report["profile_photos"] == 60 and report["genuine"] == 30
    assert 610 in report["top_classes"]  # "jersey, T-shirt" among what the photos show
    # Kept only when it flags 90% of the synthetic unrelated photos; else it says why.
    kept = calibration.image_class_threshold is not None
    assert kept == (report["unrelated_flagged"] >= 0.9) == ("reason" not in report)
    assert kept == (len(calibration.image_class_profile) == 1000)


@pytest.fixture
def class_fitted(hm_catalog: tuple[ShopCatalog, SearchCalibration]) -> ShopCatalog:
    """The catalog with its class profile and thresholds, as fitted, whatever share of the
    calibration's 40 synthetic photos they flag: 30 threshold photos are too few for that
    check to pass reliably (the 1st percentile of 30 is their lowest), which the
    calibration's rule rightly refuses; the flagging path is what is tested here."""
    catalog, calibration = hm_catalog
    fitted = image_class_fit(model=catalog.model, unrelated_flag_rate=0.0)
    SearchCalibration.objects.create(
        model=catalog.model, catalog_stamp=calibration.catalog_stamp,
        weights=calibration.weights, text_threshold=calibration.text_threshold,
        **{k: v for k, v in fitted.items() if k != "report"},
    )  # fmt: skip
    return catalog


@pytest.mark.parametrize(
    "photo",
    [
        lambda: photo_noise(7, size=(240, 320)),
        lambda: photo_plain((240, 320), (90, 160, 120)),  # a wall, a sheet of card
        lambda: synthetic_photos(3, seed=123)[2],  # a gradient (not the calibration's seed)
    ],
    ids=["noise", "flat", "gradient"],
)
def test_an_unrelated_photo_is_flagged_by_the_api_and_the_results_page(
    class_fitted: ShopCatalog, photo: Any
) -> None:
    data = photo()
    body = _api(data)
    assert body["no_good_match"] is True
    assert len(body["results"]) == 10  # the nearest are still shown, as such
    html = _page(data)
    assert 'data-testid="no-good-match"' in html and "No good match" in html
    assert re.findall(r'href="/products/([^/"]+)/"', html)


def test_a_catalog_photo_is_not_flagged(class_fitted: ShopCatalog) -> None:
    data = _a_top(class_fitted)
    assert _api(data)["no_good_match"] is False
    assert "No good match" not in _page(data)
