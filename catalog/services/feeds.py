"""A job's feed, opened from its options, and the check an upload gets before a job exists."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile

from catalog.ingest.fetching import SafeFetcher
from catalog.ingest.mapping import ColumnMapping, MappingError
from catalog.ingest.readers import MAX_COLUMNS, FeedError, guess_format
from catalog.ingest.rows import RowError
from catalog.ingest.sources import Feed, fetch_url, load_mapping, open_bytes, open_path
from catalog.models import (
    ImportJob,
)
from catalog.services.fetch import fetch_policy

#: An upload's first bytes and validated items (rows, or errors) checked before a job exists.
UPLOAD_SNIFF_BYTES = 1024 * 1024
UPLOAD_SNIFF_ITEMS = 50


class ImportRefusedError(ValueError):
    """The import cannot be created as asked (bad mapping, bad source). Shown to users.

    ``field`` names the input at fault (``mapping``, ``file``, ``url``) when there is one,
    so a form can show the message beside it.
    """

    def __init__(self, reason: str, *, field: str = "") -> None:
        super().__init__(reason)
        self.field = field


def upload_check(*, upload: UploadedFile, mapping: ColumnMapping, fmt: str | None) -> None:
    """Refuse an uploaded file that cannot be a feed, before any job exists.

    Reads the first MiB only: the rows in it must parse and at least one of them must be
    importable with this mapping. A feed whose first rows all fail is nearly always the
    wrong file or the wrong mapping, and is better refused at once than run to the end.
    """
    name = upload.name or "feed"
    upload.seek(0)
    head = upload.read(UPLOAD_SNIFF_BYTES + 1)
    upload.seek(0)
    if not head.strip():
        raise ImportRefusedError("the file is empty", field="file")
    if b"\x00" in head[:8192]:
        raise ImportRefusedError(
            "the file is not a text feed (CSV, TSV, JSON Lines, JSON or XML in UTF-8): "
            "it looks like a binary file",
            field="file",
        )
    feed_fmt = fmt or mapping.format or guess_format(name, head[:4096])
    if len(head) > UPLOAD_SNIFF_BYTES:
        if feed_fmt in ("json", "xml"):
            return  # one document: a cut one cannot parse; the job reports a bad one
        last_line_end = head.rfind(b"\n")
        if last_line_end < 0 and feed_fmt in ("csv", "tsv"):
            raise ImportRefusedError(
                f"the header row is longer than {UPLOAD_SNIFF_BYTES:,} bytes: a feed's "
                f"header names its columns (at most {MAX_COLUMNS:,})",
                field="file",
            )
        if last_line_end < 0:
            return  # no whole line in a MiB: nothing to judge by; the job reports on it
        head = head[: last_line_end + 1]
    feed = open_bytes(head, name=name, mapping=mapping, fmt=feed_fmt)
    try:
        sample = list(itertools.islice(feed.products(), UPLOAD_SNIFF_ITEMS))
    except (FeedError, MappingError, UnicodeError) as exc:
        reason = f"the file cannot be read as {feed_fmt}: {exc}"
        raise ImportRefusedError(reason, field="file") from exc
    if not sample:
        raise ImportRefusedError(f"the file has no product rows (read as {feed_fmt})", field="file")
    errors = [item for item in sample if isinstance(item, RowError)]
    if len(errors) == len(sample) and any(not e.skipped for e in errors):
        shown = "; ".join(f"row {e.row} {e.field or '-'}: {e.reason}" for e in errors[:3])
        raise ImportRefusedError(
            f"none of the first rows can be imported, read as {feed_fmt} with this mapping "
            f"({shown}); check the file, the format and the column mapping",
            field="file",
        )


def import_job_feed(job: ImportJob) -> Feed:
    options = job.options
    mapping = load_mapping(
        preset=options.get("preset"),
        mapping_json=json.dumps(options["mapping"]) if options.get("mapping") else None,
    )
    fmt = options.get("format") or None
    kind = options.get("kind")
    feed: Feed
    if kind == "path":
        feed = open_path(
            Path(job.source),
            mapping=mapping,
            sidecar=Path(options["sidecar"]) if options.get("sidecar") else None,
            lookbooks=Path(options["lookbooks"]) if options.get("lookbooks") else None,
            fmt=fmt,
        )
    elif kind == "upload":
        with job.upload.open("rb") as handle:
            data = handle.read()
        lookbooks = None
        if options.get("lookbooks_upload"):
            with default_storage.open(options["lookbooks_upload"], "rb") as handle:
                lookbooks = handle.read()
        feed = open_bytes(data, name=job.source, mapping=mapping, lookbooks=lookbooks, fmt=fmt)
    elif kind == "url":
        with SafeFetcher(fetch_policy(feed=True)) as fetcher:
            feed = fetch_url(job.source, fetcher=fetcher, mapping=mapping, fmt=fmt)
    else:
        raise FeedError(f"unknown import kind {kind!r}")
    feed.default_currency = options.get("currency") or ""
    feed.row_limit = options.get("row_limit")
    return feed
