"""Running a whole import job in this process (the CLI), step by step."""

from __future__ import annotations

import time
from collections.abc import Iterator

from catalog.models import (
    ImportJob,
)
from catalog.services.chunks import import_chunk_process
from catalog.services.jobs import import_job_finalize, import_job_parse


def import_job_run_inline(*, job_id: int, max_retries: int = 3) -> Iterator[ImportJob]:
    """Run every step in the calling process, yielding the job after each chunk.

    The same functions the workers run; used by ``import_catalog`` without ``--background``.
    """
    chunk_ids = import_job_parse(job_id=job_id, dispatch=False)
    yield ImportJob.objects.get(id=job_id)
    for chunk_id in chunk_ids:
        for attempt in range(max_retries + 1):
            outcome = import_chunk_process(
                chunk_id=chunk_id, may_retry=attempt < max_retries, dispatch=False
            )
            if outcome != "retry":
                break
            time.sleep(min(30, 2**attempt))
        yield ImportJob.objects.get(id=job_id)
    import_job_finalize(job_id=job_id)
    yield ImportJob.objects.get(id=job_id)
