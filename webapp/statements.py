"""Statements compiled once per process, for the few reads every shopper request makes.

Building a queryset and compiling it through the ORM costs a web process about half a
millisecond, more than PostgreSQL spends running a one-row lookup; for a statement whose
SQL never changes, the compiled text and parameters are kept for the process's life.
`rows_by_keys_once` does the same for a model's rows by a list of keys (a results page's
products and their images), making the instances as the ORM makes them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router
from django.db.models import Field, Model, QuerySet

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


@dataclass(frozen=True)
class _RowsStatement[M: Model]:
    sql: str
    model: type[M]
    attnames: list[str]  # the model's columns in the SELECT's order (what `from_db` takes)
    converters: list[tuple[int, list[Callable[..., Any]], Any]]  # (column, converters, expression)
    fetch_mode: Any
    prepare: Callable[[Any], Any]  # the key field's `get_prep_value`, as a lookup calls it


def rows_by_keys_once[M: Model](
    build: Callable[[], QuerySet[M]], *, key: str
) -> Callable[[list[Any]], list[M]]:
    """Return a function giving `build()`'s instances whose `key` is one of the values it is
    called with, in `build()`'s order: what iterating `build().filter(key__in=values)` gives,
    without building and compiling that queryset on every call.

    Compiled on the first call, as `build().filter(key=...)` with its one parameter turned
    into `= ANY(%s::type[])`: the text is the same for any number of values, so it is kept
    for the process's life, with the column list and the fields' converters. The rows
    become instances as Django's `ModelIterable` makes them (`Model.from_db`, converters
    applied, the queryset's fetch mode). For a plain model queryset only: no
    `select_related`, annotations, deferred fields or parameters of its own.
    """

    @functools.cache
    def statement() -> _RowsStatement[M]:
        connection = connections[DEFAULT_DB_ALIAS]
        queryset = build()
        model = queryset.model
        field = model._meta.get_field(key)
        if not isinstance(field, Field):  # a reverse relation: no column of its own
            raise ValueError(f"{key} is not a column of {model.__name__}")
        compiler = queryset.filter(**{key: 0}).query.get_compiler(using=DEFAULT_DB_ALIAS)
        sql, params = compiler.as_sql()
        select, klass_info = compiler.select, compiler.klass_info
        cast = field.db_type(connection) or ""  # the key's column type, "bigint" for an id
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        if (
            len(params) != 1
            or sql.count("%s") != 1
            or sql.count(" = %s") != 1
            or (start, end) != (0, len(select))
            or klass_info.get("related_klass_infos")
            or compiler.annotation_col_map
            or len(select) != len(model._meta.concrete_fields)
            or not re.fullmatch(r"[a-z][a-z0-9 ]*", cast)
        ):
            raise ValueError(f"not a plain queryset filtered by one parameter: {sql}")
        return _RowsStatement(
            sql=sql.replace(" = %s", f" = ANY(%s::{cast}[])"),
            model=model,
            attnames=[column[0].target.attname for column in select],
            converters=[
                (column, converters, expression)
                for column, (converters, expression) in compiler.get_converters(
                    [column[0] for column in select]
                ).items()
            ],
            fetch_mode=queryset._fetch_mode,  # type: ignore[attr-defined]
            prepare=field.get_prep_value,
        )

    def rows(values: list[Any]) -> list[M]:
        found = statement()
        db = router.db_for_read(found.model)
        connection = connections[db]
        with connection.cursor() as cursor:
            # Prepared as `key__in` prepares them: a numpy integer, a numeric string become ints.
            cursor.execute(found.sql, [[found.prepare(value) for value in values]])
            fetched = cursor.fetchall()
        from_db, attnames = found.model.from_db, found.attnames
        instances = []
        for row in fetched:
            if found.converters:
                row = list(row)
                for column, converters, expression in found.converters:
                    value = row[column]
                    for converter in converters:
                        value = converter(value, expression, connection)
                    row[column] = value
            instances.append(from_db(db, attnames, row, fetch_mode=found.fetch_mode))
        return instances

    return rows
