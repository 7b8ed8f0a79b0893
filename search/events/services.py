"""Write side of events: store a checked batch, keep the monthly partitions, apply retention."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from search.events.batches import ParsedBatch
from search.events.partitions import month_start, partitions_drop_before, partitions_ensure
from search.experiments.assignment import experiment_arm, experiment_running

_COLUMNS = (
    "received_at", "type", "surface", "session_id", "sku", "query", "results_count",
    "position", "model_key", "experiment_id", "arm", "source",
)  # fmt: skip


@dataclass(frozen=True)
class StoredBatch:
    accepted: int
    experiment_id: int | None
    arm: str


def event_batch_store(*, batch: ParsedBatch, source: str) -> StoredBatch:
    """Write the batch's rows in one COPY (one statement, so all or none) and return once it
    is committed: an acknowledged event is on disk. The experiment arm is the server's own
    assignment of the session, never what the page claims."""
    experiment = experiment_running()
    arm = experiment_arm(experiment=experiment, session_id=batch.session_id) if experiment else ""
    experiment_id = experiment.pk if experiment else None
    received_at = timezone.now()
    if not batch.rows:
        return StoredBatch(accepted=0, experiment_id=experiment_id, arm=arm)
    # COPY is several times faster than INSERT for a batch, and psycopg streams it.
    statement = f"COPY search_event ({', '.join(_COLUMNS)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in batch.rows:
            copy.write_row(
                (
                    received_at, row.type, row.surface, batch.session_id, row.sku,
                    row.query, row.results_count, row.position, row.model_key,
                    experiment_id, arm, source,
                )
            )  # fmt: skip
    return StoredBatch(accepted=len(batch.rows), experiment_id=experiment_id, arm=arm)


@dataclass(frozen=True)
class PartitionChanges:
    created: list[str]
    dropped: list[str]


def event_retention_cutoff(*, today: date) -> date:
    """Events received before this day are past VITRINE_EVENT_RETENTION_MONTHS (whole
    months: the first day of the month that many months back)."""
    return month_start(today, shift=-settings.VITRINE_EVENT_RETENTION_MONTHS)


def event_partitions_maintain(*, now: datetime | None = None) -> PartitionChanges:
    """Create the coming months' partitions and drop the expired ones (daily beat task)."""
    today = (now or timezone.now()).date()
    with connection.cursor() as cursor:
        created = partitions_ensure(cursor, today=today)
        dropped = partitions_drop_before(cursor, cutoff=event_retention_cutoff(today=today))
    return PartitionChanges(created=created, dropped=dropped)
