"""What a batch of shopper events may contain, checked row by row (no Django models here).

A batch: `{"session_id": "<16-64 of A-Z a-z 0-9 _ ->", "consent": true, "events": [...]}`.
Each event: `type`, `surface`, and as the type needs: `sku`, `query`, `results_count`,
`position`, `model_key`. Any other field rejects the row: the endpoint never stores
what it was not designed to hold, so a page cannot send personal data by mistake (an e-mail
in a field). Words typed into search may still hold some: e-mail addresses and long digit
runs (phone, card, order numbers) are replaced before storing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

EVENT_TYPES = ("search", "view", "impression", "click", "add_to_cart", "purchase")
SURFACES = (
    "text_search", "photo_search", "similar", "complete_the_look", "often_bought_together",
    "posts", "product_page", "checkout",
)  # fmt: skip
#: Types a browser may send; purchases come from the brand's server with a secret key.
BROWSER_TYPES = frozenset(EVENT_TYPES) - {"purchase"}
MAX_EVENTS_PER_BATCH = 500
MAX_BATCH_BYTES = 512 * 1024
QUERY_MAX_CHARS = 200
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_FIELDS = {"type", "surface", "sku", "query", "results_count", "position", "model_key"}
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
_DIGIT_RUN = re.compile(r"\d[\d\s-]{5,}\d")


class BatchInvalid(ValueError):
    """The batch as a whole cannot be taken (nothing of it is stored); `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EventRow:
    type: str
    surface: str
    sku: str
    query: str
    results_count: int | None
    position: int | None
    model_key: str


@dataclass(frozen=True)
class RowRejected:
    index: int
    error: str


@dataclass(frozen=True)
class ParsedBatch:
    session_id: str
    rows: list[EventRow]
    rejected: list[RowRejected]


def query_redact(query: str) -> str:
    """Shoppers' words without e-mail addresses or long digit runs, trimmed to 200 chars."""
    query = _EMAIL.sub("[email]", query)
    return _DIGIT_RUN.sub("[number]", query).strip()[:QUERY_MAX_CHARS]


def _text(event: dict[str, Any], name: str, limit: int) -> str:
    value = event.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if "\x00" in value:
        raise ValueError(f"{name} holds a NUL character")
    if len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    return value


def _small_int(event: dict[str, Any], name: str, maximum: int) -> int | None:
    value = event.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be a whole number from 0 to {maximum}")
    return value


def event_row_parse(event: Any, *, allowed_types: frozenset[str]) -> EventRow:
    """One event, checked; raises ValueError saying what is wrong with it."""
    if not isinstance(event, dict):
        raise ValueError("an event must be an object")
    unknown = set(event) - _FIELDS
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown)[:5])}")
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        raise ValueError(f"type must be one of {', '.join(EVENT_TYPES)}")
    if kind not in allowed_types:
        raise ValueError(f"{kind} events must come from the brand's server (a secret key)")
    surface = event.get("surface")
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}")
    row = EventRow(
        type=kind,
        surface=surface,
        sku=_text(event, "sku", 255),
        query=query_redact(_text(event, "query", 1000)),
        results_count=_small_int(event, "results_count", 1_000_000),
        position=_small_int(event, "position", 10_000),
        model_key=_text(event, "model_key", 64),
    )
    if kind != "search" and not row.sku:
        raise ValueError(f"a {kind} event needs the product's sku")
    if kind == "search" and row.results_count is None:
        raise ValueError("a search event needs results_count")
    return row


def event_batch_parse(data: Any, *, allowed_types: frozenset[str]) -> ParsedBatch:
    """The batch's good rows and the index and reason of each bad one (raises BatchInvalid
    when the batch itself is unusable: no consent, a bad session id, too many events)."""
    if not isinstance(data, dict):
        raise BatchInvalid("invalid", "The body must be a JSON object.")
    if data.get("consent") is not True:
        raise BatchInvalid(
            "consent_required",
            'No consent, no events: send "consent": true only once the shopper agreed.',
        )
    session_id = data.get("session_id")
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise BatchInvalid(
            "invalid_session",
            "session_id must be 16 to 64 random characters (A-Z, a-z, 0-9, _ or -), "
            "made by the browser: never a customer number or e-mail.",
        )
    events = data.get("events")
    if not isinstance(events, list) or not events:
        raise BatchInvalid("invalid", "events must be a non-empty list.")
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise BatchInvalid("too_many_events", f"At most {MAX_EVENTS_PER_BATCH} events per batch.")
    rows: list[EventRow] = []
    rejected: list[RowRejected] = []
    for index, event in enumerate(events):
        try:
            rows.append(event_row_parse(event, allowed_types=allowed_types))
        except ValueError as error:
            rejected.append(RowRejected(index=index, error=str(error)))
    return ParsedBatch(session_id=session_id, rows=rows, rejected=rejected)
