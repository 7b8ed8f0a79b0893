"""Shared fixtures.

`make test` runs pytest inside `webapp.stack exec --throwaway`: a real PostgreSQL with
pgvector and a real Redis in a temporary data directory (media files land there too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.support.processes import WorkerProcess


@pytest.fixture(autouse=True)
def _static_files_without_manifest(settings: Any) -> None:
    """Tests render templates without running collectstatic first."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, django_db_blocker: object
) -> Iterator[WorkerProcess]:
    """A real Celery worker subprocess on the test database, shared by the session.

    Tests that use it must use `transactional_db` so the worker sees their rows.
    """
    worker = WorkerProcess().start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The shared retail datasets; tests that need them skip when they are absent."""
    path = Path(settings.VITRINE_DATASETS)
    if not path.is_dir():
        pytest.skip(f"datasets not found at {path} (set VITRINE_DATASETS to run this test)")
    return path
