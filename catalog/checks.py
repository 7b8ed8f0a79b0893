"""System check: the database must offer the pgvector extension.

`migrate` runs database checks before touching anything, so a PostgreSQL without pgvector
gets this message instead of a stack trace from `CREATE EXTENSION`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Tags, register
from django.db import connections

PGVECTOR_MISSING_HINT = (
    "Install pgvector on that server (Debian/Ubuntu: `apt install postgresql-<major>-pgvector`; "
    "see https://github.com/pgvector/pgvector#installation), or unset DATABASE_URL to use "
    "Vitrine's embedded PostgreSQL, which ships with pgvector."
)


@register(Tags.database)
def check_pgvector_available(
    app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for alias in databases or []:
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            )
            if cursor.fetchone() is None:
                errors.append(
                    Error(
                        f"The PostgreSQL server of database '{alias}' does not have the "
                        "pgvector extension ('vector'), which Vitrine needs to store embeddings.",
                        hint=PGVECTOR_MISSING_HINT,
                        id="vitrine.E001",
                    )
                )
    return errors
