"""The logs speak of the application: no static-file lines, 4xx not as warnings, a level."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from django.test import Client

from tests.support.processes import BASE_DIR, subprocess_environment

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


def test_the_log_level_setting_sets_the_level_and_refuses_a_made_up_one() -> None:
    code = (
        "import logging, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'webapp.settings');"
        "import django; django.setup();"
        "print(logging.getLevelName(logging.getLogger().level))"
    )

    def run(level: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True,
            env=subprocess_environment(LOG_LEVEL=level), timeout=120,
        )  # fmt: skip

    quiet = run("warning")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "WARNING"
    made_up = run("chatty")
    assert made_up.returncode != 0
    assert "LOG_LEVEL='CHATTY': use DEBUG, INFO, WARNING, ERROR or CRITICAL" in made_up.stderr
