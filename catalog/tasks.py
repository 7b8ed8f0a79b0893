"""Celery tasks of the import pipeline: thin wrappers over ``catalog.services``.

All are acknowledged late and rejected back to the queue when the worker is lost, take
ids, and tolerate stale input (a deleted job or a finished chunk is a quiet no-op).
Image network errors are retried with exponential backoff at the chunk level: images
already stored are skipped on the retry.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task

from catalog.services import chunks, images, jobs

MAX_IMAGE_RETRIES = 4

log = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def import_job_parse_task(*, job_id: int) -> int:
    chunk_ids = jobs.import_job_parse(job_id=job_id)
    for chunk_id in chunk_ids:
        import_chunk_process_task.delay(chunk_id=chunk_id)
    return len(chunk_ids)


def import_job_parse_send(*, job_id: int) -> None:
    """Send a new job to the workers, once: with the broker down the job stays queued, and
    the import sweeper (beat, every minute) sends it once it has waited STALE_AFTER_SECONDS.

    The job is committed by then, so a failed send must not answer the caller 500 (after
    kombu's retries, 19 s with Redis down) for a job that runs later anyway.
    """
    try:
        import_job_parse_task.apply_async(kwargs={"job_id": job_id}, retry=False)
    except Exception:
        log.warning("import job %s not sent (broker down?): the sweeper sends it", job_id)


@shared_task(bind=True, max_retries=MAX_IMAGE_RETRIES, acks_late=True, reject_on_worker_lost=True)
def import_chunk_process_task(self: Task, *, chunk_id: int) -> str:
    try:
        outcome = chunks.import_chunk_process(
            chunk_id=chunk_id,
            worker=self.request.id,
            may_retry=self.request.retries < MAX_IMAGE_RETRIES,
        )
    except Exception as exc:
        # The crash is recorded on the chunk (one attempt of MAX_CHUNK_ATTEMPTS); try again
        # soon rather than wait for the sweeper. Past the last attempt its rows fail.
        if self.request.retries >= MAX_IMAGE_RETRIES:
            raise
        raise self.retry(exc=exc, countdown=2 * 2**self.request.retries) from exc
    if outcome == "retry":
        # 5s, 10s, 20s, 40s: long enough for a CDN hiccup to pass.
        raise self.retry(countdown=5 * 2**self.request.retries)
    return outcome


@shared_task(acks_late=True, reject_on_worker_lost=True)
def product_images_fetch_task(*, image_ids: list[int]) -> int:
    return len(images.product_images_fetch(image_ids=image_ids))


@shared_task(acks_late=True, reject_on_worker_lost=True)
def import_job_finalize_task(*, job_id: int) -> None:
    jobs.import_job_finalize(job_id=job_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def import_sweep_task(*, stale_after_seconds: int = chunks.STALE_AFTER_SECONDS) -> dict[str, int]:
    """Re-queue import work stuck in a non-final state (run by Celery beat)."""
    found = chunks.import_sweep(stale_after_seconds=stale_after_seconds)
    for job_id in found.parse:
        import_job_parse_task.delay(job_id=job_id)
    for chunk_id in found.chunks:
        import_chunk_process_task.delay(chunk_id=chunk_id)
    for job_id in found.finalize:
        import_job_finalize_task.delay(job_id=job_id)
    return {"parse": len(found.parse), "chunks": len(found.chunks), "finalize": len(found.finalize)}
