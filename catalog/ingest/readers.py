"""Read raw records from feed bytes: CSV/TSV, JSON Lines, a JSON array, GMC RSS/Atom XML.

Each reader yields ``RawRecord`` (row number + dict) or ``RowError`` for a row that
cannot even be read (bad JSON on one line, a CSV row with too many fields); one bad row
never stops the rest. Row numbers are what a person sees: for CSV the spreadsheet row
(the header is row 1), for JSON Lines the line, for a JSON array or XML the item's
position (first item = 1).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from catalog.ingest.rows import RowError

# A single CSV field larger than this is a broken quote swallowing the file, not data.
MAX_FIELD = 1_000_000
csv.field_size_limit(MAX_FIELD)

#: Columns a CSV/TSV header may have. GMC defines about 60 fields and a retailer's own
#: attributes add some dozens; a million-column header is an attack on memory, not a feed.
MAX_COLUMNS = 1_000

#: How deep a record's values may nest (a record, its attributes object, a list in it).
#: Python's json parses about a thousand levels, and every walk over the value afterwards
#: (cleaning, hashing, storing as jsonb) would recurse as deep: the audit's 1,000-level
#: row crashed its chunk on every retry.
MAX_NESTING = 8

_GOOGLE_NS = "http://base.google.com/ns/1.0"


class FeedError(ValueError):
    """The feed as a whole is unreadable (not a single row's problem)."""


@dataclass(frozen=True)
class RawRecord:
    row: int
    data: dict[str, Any]


def guess_format(name: str, head: bytes) -> str:
    """Format from the file name, else from the first bytes."""
    lower = name.lower().split("?", 1)[0]
    for suffix, fmt in (
        (".csv", "csv"),
        (".tsv", "tsv"),
        (".txt", "tsv"),  # GMC's "text feed" is tab separated
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".xml", "xml"),
        (".rss", "xml"),
    ):
        if lower.endswith(suffix):
            return fmt
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return "xml"
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    first_line = text.split(b"\n", 1)[0]
    return "tsv" if first_line.count(b"\t") > first_line.count(b",") else "csv"


def _text_stream(stream: BinaryIO) -> io.TextIOBase:
    """UTF-8 (with or without BOM); fall back to Windows-1252, as Excel exports often are."""
    head = stream.read(1 << 20)
    stream.seek(0)
    try:
        # incremental decode so a multi-byte character cut at 1 MiB is not an error
        codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
        encoding = "utf-8-sig"
    except UnicodeDecodeError:
        encoding = "cp1252"
    # errors="replace": a stray byte later on becomes U+FFFD in one field, not a failed feed.
    return io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline="")


def read_csv(stream: BinaryIO, *, delimiter: str | None = None) -> Iterator[RawRecord | RowError]:
    text = _text_stream(stream)
    sample = text.read(64 * 1024)
    text.seek(0)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",\t;|").delimiter
        except csv.Error:
            delimiter = ","
    tap = _LineTap(iter(text))
    reader = csv.reader(tap, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise FeedError(f"the header row is unreadable: {exc}") from exc
    columns = [c.strip().lstrip("\ufeff") for c in header]
    if not any(columns):
        raise FeedError("the header row is empty")
    if len(columns) > MAX_COLUMNS:
        raise FeedError(
            f"the header row has {len(columns):,} columns; the limit is {MAX_COLUMNS:,}"
        )
    row = 1
    while True:
        first_line = reader.line_num + 1
        tap.record = []
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row += 1
            yield RowError(row=row, field="", reason=f"row is not valid CSV: {exc}")
            continue
        row += 1
        if not values or all(not v.strip() for v in values):
            continue  # blank lines are not rows to a spreadsheet user either
        if reader.line_num > first_line and _quote_never_closed("".join(tap.record), delimiter):
            yield RowError(
                row=row,
                field="",
                reason=f"a quote opened on this row (line {first_line}) is never closed, so "
                f"lines {first_line}-{reader.line_num} were read as this one row: no row "
                "after it was imported. Close the quote and import the file again.",
            )
            return
        if len(values) > len(columns):
            yield RowError(
                row=row,
                field="",
                reason=f"row has {len(values)} fields but the header has {len(columns)} "
                "(an unquoted comma or a stray quote?)",
            )
            continue
        yield RawRecord(row=row, data=dict(zip(columns, values, strict=False)))


class _LineTap:
    """Lines for ``csv.reader`` that remembers the raw lines of the record being read."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.record: list[str] = []

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.record.append(line)
        return line


def _quote_never_closed(raw: str, delimiter: str) -> bool:
    """Whether ``raw`` (one record's lines) ends inside a quoted field. Python's csv module
    (unless strict, which refuses more than this) returns such a record without a word,
    swallowing every line after the quote."""
    try:
        list(csv.reader(io.StringIO(raw), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def read_jsonl(stream: BinaryIO) -> Iterator[RawRecord | RowError]:
    for number, raw_line in enumerate(stream, start=1):
        line = raw_line.strip()
        if not line:
            continue
        try:
            data = json.loads(line.decode("utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield RowError(row=number, field="", reason=f"line is not valid JSON: {exc}")
            continue
        except RecursionError:
            yield RowError(row=number, field="", reason=_TOO_DEEP)
            continue
        if not isinstance(data, dict):
            yield RowError(row=number, field="", reason="line is not a JSON object")
            continue
        yield RawRecord(row=number, data=data)


_TOO_DEEP = f"the values are nested more than {MAX_NESTING} levels deep"


def json_load_bounded(stream: BinaryIO, *, what: str) -> Any:
    """``json.load`` whose failures, a document nested past the parser's own recursion
    limit included, are a FeedError naming ``what`` was read."""
    try:
        return json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeedError(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise FeedError(f"{what} is nested too deeply to read") from None


def nesting_depth(value: Any, *, limit: int) -> int:
    """How deep lists and objects nest in ``value`` (a scalar is 0), counting no further
    than ``limit + 1``. Iterative: it must not recurse on the values it guards against."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def read_json(stream: BinaryIO, *, items_key: str | None = None) -> Iterator[RawRecord | RowError]:
    data = json_load_bounded(stream, what="the file")
    if isinstance(data, dict):
        # {"products": [...]} or {"items": [...]}: take the one list inside.
        lists = [v for k, v in data.items() if isinstance(v, list) and (items_key in (None, k))]
        if len(lists) != 1:
            raise FeedError("expected a JSON array of objects (or an object holding one)")
        data = lists[0]
    if not isinstance(data, list):
        raise FeedError("expected a JSON array of objects")
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            yield RowError(row=number, field="", reason="item is not a JSON object")
            continue
        yield RawRecord(row=number, data=item)


def _has_entity_declaration(stream: BinaryIO) -> bool:
    """Whether the document declares entities anywhere (chunked scan with overlap)."""
    tail = b""
    while chunk := stream.read(1 << 20):
        if b"<!ENTITY" in tail + chunk:
            return True
        tail = chunk[-16:]
    return False


def read_xml(stream: BinaryIO) -> Iterator[RawRecord | RowError]:
    """GMC RSS 2.0 (``<item>``) or Atom (``<entry>``) feeds with the ``g:`` namespace."""
    # Entity declarations are how XML bombs and external-entity reads work; no real
    # product feed needs them, so refuse them outright before parsing (stdlib expat
    # resolves no external entities, and with none declared there is nothing to expand).
    if _has_entity_declaration(stream):
        raise FeedError("XML feeds with DOCTYPE entity declarations are not accepted")
    stream.seek(0)
    number = 0
    try:
        for _event, element in ET.iterparse(stream, events=("end",)):  # noqa: S314 (see above)
            tag = element.tag.rsplit("}", 1)[-1]
            if tag not in ("item", "entry"):
                continue
            number += 1
            record: dict[str, Any] = {}
            for child in element:
                name = child.tag.rsplit("}", 1)[-1]
                foreign = child.tag.startswith("{") and not child.tag.startswith("{" + _GOOGLE_NS)
                # Atom's own <title>/<link> live in the Atom namespace; keep those.
                if foreign and name not in ("title", "link", "summary", "id"):
                    continue
                value = (child.text or "").strip()
                if name == "link" and not value:
                    value = child.get("href", "")
                if name == "summary":
                    name = "description"
                if name in record:
                    if name in ("id", "title", "link"):
                        # g:id wins over Atom's <id>: prefer the namespaced one seen later.
                        if child.tag.startswith("{" + _GOOGLE_NS):
                            record[name] = value
                        continue
                    previous = record[name]
                    record[name] = (
                        [*previous, value] if isinstance(previous, list) else [previous, value]
                    )
                else:
                    record[name] = value
            element.clear()
            yield RawRecord(row=number, data=record)
    except ET.ParseError as exc:
        # Rows read so far stand; the rest of the file is unreadable.
        yield RowError(row=number + 1, field="", reason=f"XML is malformed from here on: {exc}")


#: C0 control characters but tab, newline and carriage return, and DEL: never meant in a
#: feed's text, and NUL cannot be stored by Postgres at all (the upsert of the row's whole
#: chunk would fail).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def without_control_characters(value: Any) -> Any:
    """`value` with control characters dropped from every string in it, keys included."""
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    if isinstance(value, dict):
        return {
            without_control_characters(k): without_control_characters(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_control_characters(item) for item in value]
    return value


def _cleaned(records: Iterator[RawRecord | RowError]) -> Iterator[RawRecord | RowError]:
    for item in records:
        if isinstance(item, RawRecord):
            # The record itself is one level: its values may nest MAX_NESTING - 1 more.
            if nesting_depth(item.data, limit=MAX_NESTING) > MAX_NESTING:
                yield RowError(row=item.row, field="", reason=_TOO_DEEP)
                continue
            item = RawRecord(row=item.row, data=without_control_characters(item.data))
        yield item


def read_records(stream: BinaryIO, *, fmt: str) -> Iterator[RawRecord | RowError]:
    """Every format's records, with control characters dropped from their text (one place
    for products and lookbooks, whatever field a feed puts them in)."""
    if fmt == "csv":
        return _cleaned(read_csv(stream))
    if fmt == "tsv":
        return _cleaned(read_csv(stream, delimiter="\t"))
    if fmt == "jsonl":
        return _cleaned(read_jsonl(stream))
    if fmt == "json":
        return _cleaned(read_json(stream))
    if fmt == "xml":
        return _cleaned(read_xml(stream))
    raise FeedError(f"unknown feed format {fmt!r}")
