"""Celery tasks of shoppable posts: thin wrappers over `search.posts.services`.

They take ids, tolerate stale input (a post removed meanwhile is left alone) and are
acknowledged late. Tagging runs where the encoder is loaded (the `embeddings` queue);
feeds on the `ingest` queue, beside catalog imports (settings `CELERY_TASK_ROUTES`).
"""

from __future__ import annotations

from celery import shared_task

from search.posts import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def post_prepare_task(*, post_id: int) -> str:
    """Fetch a new post's photo when it came as a URL, then tag it."""
    return services.post_prepare(post_id=post_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def post_feed_process_task(*, feed_id: int) -> str:
    return services.post_feed_process(feed_id=feed_id)


@shared_task
def posts_sweep_task() -> dict[str, list[int]]:
    """Send again the tasks of post feeds and posts that were lost (beat, every minute)."""
    found = services.posts_sweep()
    return {"feeds": found.feeds, "posts": found.posts}
