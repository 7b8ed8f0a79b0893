"""The logs speak of the application: no static-file lines, 4xx not as warnings, a level."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_a_client_error_is_info_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert Client().get("/nowhere-at-all/").status_code == 404
    logged = [r for r in caplog.records if r.name == "django.request"]
    assert logged and {r.levelname for r in logged} == {"INFO"}


def test_above_info_a_client_error_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert Client().get("/nowhere-at-all/").status_code == 404
    assert not [r for r in caplog.records if r.name == "django.request"]


def test_static_file_requests_leave_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    access = logging.getLogger("gunicorn.access")  # gunicorn logs a dict of "atoms"
    with caplog.at_level(logging.INFO):
        access.info('"GET %(U)s" %(s)s', {"U": "/static/css/vitrine.css", "s": "200"})
        access.info('"GET %(U)s" %(s)s', {"U": "/api/v1/products/", "s": "200"})
    lines = [r.getMessage() for r in caplog.records if r.name == "gunicorn.access"]
    assert lines == ['"GET /api/v1/products/" 200']
