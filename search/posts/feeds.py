"""Reading a feed of posts (no Django): CSV with a header row, a JSON list of objects, or
JSON Lines. Each row becomes a `PostRow` or a `RowProblem` saying what is wrong with it.

Columns: `image_url` (required, http or https), `caption`, `creator_handle`, `post_url`,
`rights_status` (granted, requested, denied or none; empty is none).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

COLUMNS = ("image_url", "caption", "creator_handle", "post_url", "rights_status")
RIGHTS_VALUES = ("granted", "requested", "denied", "none")
#: Rows read from one feed at most; the rest are refused with one error.
MAX_ROWS = 5000
MAX_FIELD_CHARS = {"image_url": 2000, "post_url": 2000, "creator_handle": 200, "caption": 5000}


class PostFeedError(ValueError):
    """The feed as a whole cannot be read (not CSV or JSON, no image_url column...)."""


@dataclass(frozen=True)
class PostRow:
    row: int  # 1 = the first post in the file
    image_url: str
    caption: str
    creator_handle: str
    post_url: str
    rights: str  # one of RIGHTS_VALUES


@dataclass(frozen=True)
class RowProblem:
    row: int
    field: str
    reason: str


def http_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://")) and len(value) > 8


def row_validate(row: int, record: Any) -> PostRow | RowProblem:
    """One feed record as a post row, or the first problem found in it."""
    if not isinstance(record, dict):
        return RowProblem(row, "", "each post must be an object of column: value")
    values: dict[str, str] = {}
    for name in COLUMNS:
        value = record.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return RowProblem(row, name, "must be text")
        text = str(value).strip()
        if "\x00" in text:
            return RowProblem(row, name, "must not contain NUL characters")
        if len(text) > MAX_FIELD_CHARS.get(name, 100):
            return RowProblem(row, name, f"longer than {MAX_FIELD_CHARS.get(name, 100)} characters")
        values[name] = text
    if not values["image_url"]:
        return RowProblem(row, "image_url", "is required")
    if not http_url(values["image_url"]):
        return RowProblem(row, "image_url", "must be an http or https URL")
    if values["post_url"] and not http_url(values["post_url"]):
        return RowProblem(row, "post_url", "must be an http or https URL")
    rights = values["rights_status"].lower() or "none"
    if rights not in RIGHTS_VALUES:
        allowed = ", ".join(RIGHTS_VALUES)
        return RowProblem(row, "rights_status", f"{rights!r} is not one of {allowed}")
    return PostRow(
        row=row,
        image_url=values["image_url"],
        caption=values["caption"],
        creator_handle=values["creator_handle"].lstrip("@"),
        post_url=values["post_url"],
        rights=rights,
    )


def _records(data: bytes, *, name: str) -> Iterator[Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PostFeedError(f"the file is not UTF-8 text ({exc.reason})") from exc
    stripped = text.lstrip()
    if name.lower().endswith((".json", ".jsonl", ".ndjson")) or stripped.startswith(("[", "{")):
        if stripped.startswith("["):
            try:
                records = json.loads(stripped)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise PostFeedError(f"not valid JSON: {exc}") from exc
            yield from records
            return
        for number, line in enumerate(stripped.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                yield RowProblem(number, "", f"not valid JSON: {exc}")
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "image_url" not in [f.strip() for f in reader.fieldnames]:
        raise PostFeedError(
            f"no image_url column: the first row must name the columns ({', '.join(COLUMNS)})"
        )
    for record in reader:
        yield {(k or "").strip(): v for k, v in record.items() if not isinstance(v, list)}


def feed_rows(data: bytes, *, name: str) -> Iterator[PostRow | RowProblem]:
    """Every row of the feed, validated, in file order; raises PostFeedError when the file
    cannot be read at all."""
    for number, record in enumerate(_records(data, name=name), start=1):
        if number > MAX_ROWS:
            yield RowProblem(number, "", f"a feed holds at most {MAX_ROWS} posts; rest not read")
            return
        if isinstance(record, RowProblem):
            yield RowProblem(number, record.field, record.reason)
            continue
        try:
            yield row_validate(number, record)
        except Exception as exc:
            yield RowProblem(number, "", f"unreadable row: {exc}")
