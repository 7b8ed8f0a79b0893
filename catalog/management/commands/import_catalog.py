"""``manage.py import_catalog SOURCE``: import a feed file, folder or URL with a progress bar.

By default the pipeline runs in this process (no worker needed); ``--background`` queues
it for the Celery workers and follows the job's progress instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog import selectors
from catalog.ingest.mapping import FORMATS, MappingError, available_presets, mapping_object_parse
from catalog.models import ImportJob
from catalog.services.feeds import ImportRefusedError
from catalog.services.inline import import_job_run_inline
from catalog.services.jobs import import_job_create


class Command(BaseCommand):
    help = "Import a product feed (CSV, JSON Lines, JSON, GMC XML), a folder of images, or a URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="feed file, folder, or http(s) URL")
        parser.add_argument("--preset", choices=available_presets(), help="ready-made mapping")
        parser.add_argument("--mapping", help="column mapping: a JSON file or inline JSON")
        parser.add_argument("--format", dest="fmt", choices=FORMATS, help="default: guessed")
        parser.add_argument("--sidecar", help="folder imports: the CSV describing the images")
        parser.add_argument("--lookbooks", help="JSON (or CSV) file of lookbooks -> SKUs")
        parser.add_argument("--currency", default="", help="currency for bare prices (EUR)")
        parser.add_argument(
            "--limit", type=int, metavar="N", help="import only the feed's first N rows"
        )
        parser.add_argument(
            "--background", action="store_true", help="queue for the workers and follow it"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        source: str = options["source"]
        is_url = source.startswith(("http://", "https://"))
        mapping = None
        if options["mapping"]:
            text = options["mapping"]
            if not text.lstrip().startswith("{"):
                text = Path(text).read_text()
            try:
                mapping = mapping_object_parse(text)
            except MappingError as exc:
                raise CommandError(f"--mapping: {exc}") from exc
        if not is_url and not Path(source).exists():
            raise CommandError(f"{source} does not exist")
        try:
            job = import_job_create(
                kind="url" if is_url else "path",
                source=source if is_url else str(Path(source).resolve()),
                preset=options["preset"],
                mapping=mapping,
                fmt=options["fmt"],
                currency=options["currency"],
                sidecar=str(Path(options["sidecar"]).resolve()) if options["sidecar"] else None,
                lookbooks=str(Path(options["lookbooks"]).resolve())
                if options["lookbooks"]
                else None,
                row_limit=options["limit"],
                dispatch=options["background"],
            )
        except ImportRefusedError as exc:
            raise CommandError(str(exc)) from exc
        started = time.monotonic()
        bar = tqdm(total=0, unit="row", desc=f"import #{job.id}", disable=options["no_progress"])
        if options["background"]:
            job = self._follow(job, bar)
        else:
            for snapshot in import_job_run_inline(job_id=job.id):
                self._update(bar, snapshot)
                job = snapshot
        bar.close()
        self._report(job, time.monotonic() - started)

    def _update(self, bar: tqdm, job: ImportJob) -> None:
        bar.total = job.total_rows
        bar.n = job.done_rows + job.failed_rows + job.skipped_rows
        bar.set_postfix(failed=job.failed_rows, skipped=job.skipped_rows, refresh=False)
        bar.refresh()

    def _follow(self, job: ImportJob, bar: tqdm) -> ImportJob:
        while job.state in (ImportJob.State.QUEUED, ImportJob.State.RUNNING):
            time.sleep(1.0)
            job.refresh_from_db()
            self._update(bar, job)
        return job

    def _report(self, job: ImportJob, seconds: float) -> None:
        stats = job.stats
        self.stdout.write(
            f"import #{job.id} {job.state} in {seconds:.1f}s: {job.total_rows} rows, "
            f"{job.done_rows} imported ({stats.get('created', 0)} created, "
            f"{stats.get('updated', 0)} updated), {job.failed_rows} failed, "
            f"{job.skipped_rows} skipped, {stats.get('lookbooks', 0)} lookbooks"
        )
        if job.error:
            self.stdout.write(f"error: {job.error}")
        shown = selectors.import_row_errors(job=job)[:10]
        for error in shown:
            self.stdout.write(f"  row {error.row} {error.field or '-'}: {error.reason}")
        if job.failed_rows or job.skipped_rows:
            self.stdout.write(
                f"full error report: /api/v1/imports/{job.id}/errors.csv (or the admin page)"
            )
        if job.state == ImportJob.State.FAILED:
            raise CommandError(f"import #{job.id} failed")
