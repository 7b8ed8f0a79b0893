"""An H&M catalog (the shared datasets) embedded by the real default model and calibrated by
the real search calibration, committed once for the package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from search.calibration import search_calibration_fit
from search.models import SearchCalibration
from tests.pages.catalog_fixtures import ShopCatalog, build_catalog, catalog_remove


@pytest.fixture(scope="package")
def committed_hm_catalog(
    django_db_setup: None, django_db_blocker: Any, datasets_dir: Path
) -> Iterator[tuple[ShopCatalog, SearchCalibration]]:
    """90 H&M articles (no drawn products: a drawing shows no ImageNet class) and the
    calibration the beat would fit for them."""
    with django_db_blocker.unblock():
        built = build_catalog(use_datasets=True, drawn=False, hm_articles=90)
        calibration = search_calibration_fit(model=built.model)
    yield built, calibration
    with django_db_blocker.unblock():
        catalog_remove(built)  # its model's calibrations go with it


@pytest.fixture
def hm_catalog(
    db: None, committed_hm_catalog: tuple[ShopCatalog, SearchCalibration]
) -> tuple[ShopCatalog, SearchCalibration]:
    return committed_hm_catalog
