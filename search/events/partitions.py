"""Monthly partitions of `search_event` (plain SQL on a cursor, so the migration can use it).

The parent table is `PARTITION BY RANGE (received_at)`; each month is a table named
`search_event_yYYYYmMM`. A DEFAULT partition catches any month not created yet, so an insert
never fails for want of a partition; the beat task keeps months created ahead, so the
default stays empty (a new month cannot be attached while the default holds rows of it).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

PARENT = "search_event"
DEFAULT_PARTITION = "search_event_default"
_MONTH_NAME = re.compile(r"^search_event_y(\d{4})m(\d{2})$")


def month_start(day: date, *, shift: int = 0) -> date:
    """The first day of `day`'s month, moved by `shift` months."""
    index = day.year * 12 + (day.month - 1) + shift
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARENT}_y{month.year:04d}m{month.month:02d}"


def partitions_list(cursor: Any) -> dict[str, date]:
    """The monthly partitions that exist: name -> the month's first day."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = %s",
        [PARENT],
    )
    months: dict[str, date] = {}
    for (name,) in cursor.fetchall():
        match = _MONTH_NAME.match(name)
        if match:
            months[name] = date(int(match[1]), int(match[2]), 1)
    return months


def partitions_ensure(cursor: Any, *, today: date, months_ahead: int = 2) -> list[str]:
    """Create this month's partition and the next `months_ahead` ones; return those created."""
    existing = partitions_list(cursor)
    created = []
    for shift in range(months_ahead + 1):
        start = month_start(today, shift=shift)
        name = partition_name(start)
        if name in existing:
            continue
        end = month_start(start, shift=1)
        # Names and bounds come from dates, never from input: safe to format.
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {PARENT} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
        created.append(name)
    return created


def partitions_drop_before(cursor: Any, *, cutoff: date) -> list[str]:
    """Drop every monthly partition that ends on or before `cutoff`; delete older rows that
    landed in the default partition. Returns the dropped partitions' names."""
    dropped = []
    for name, start in sorted(partitions_list(cursor).items(), key=lambda item: item[1]):
        if month_start(start, shift=1) <= cutoff:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    cursor.execute(f"DELETE FROM {DEFAULT_PARTITION} WHERE received_at < %s", [cutoff])  # noqa: S608
    return dropped
