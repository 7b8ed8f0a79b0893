"""Statements compiled once per process, for the few reads every shopper request makes.

Building a queryset and compiling it through the ORM costs a web process about half a
millisecond, more than PostgreSQL spends running a one-row lookup; for a statement whose
SQL never changes, the compiled text and parameters are kept for the process's life.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models import QuerySet

Statement = tuple[str, tuple[Any, ...]]


def compiled_once(build: Callable[[], QuerySet[Any]]) -> Callable[[], Statement]:
    """Return a function giving `build()`'s SQL and parameters, compiled on its first call.

    Compiled for the default database: every alias runs PostgreSQL, so the text holds on a
    replica too; the caller routes the execution as it would route the queryset.
    """

    @functools.cache
    def statement() -> Statement:
        sql, params = build().query.get_compiler(using=DEFAULT_DB_ALIAS).as_sql()
        return sql, tuple(params)

    return statement
