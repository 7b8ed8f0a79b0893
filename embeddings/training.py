"""Fine-tuning jobs (`TrainingJob`): start, run on the training worker, cancel, resume.

A job runs `embedding_model_train` on the `training` queue, whose worker runs one
task at a time in its main process (`--pool solo`, see webapp/stack.py), so the shutdown
signal reaches the training loop: Ctrl-C saves the train state and leaves the job
`interrupted`, and the next training worker to start queues it again. A worker that died
without saying so (killed, out of memory) stops its heartbeat; the beat sweep queues such
a job again after `STALE_AFTER`. Every re-run continues from the last saved step.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from embeddings.ml.recipes import CATALOG_FINE_TUNE
from embeddings.models import EmbeddingModel, TrainingJob
from embeddings.services.evaluation import embedding_model_evaluate
from embeddings.services.fine_tuning import embedding_model_train

log = logging.getLogger(__name__)

LOG_LINES = 200  # lines of the run's log kept on the job (the page's live tail)
FLUSH_SECONDS = 1.0  # progress is written to the row at most this often
HEARTBEAT_SECONDS = 10.0  # a running job's liveness stamp, from a thread of its own
STALE_AFTER = timedelta(seconds=90)  # a running job with no heartbeat this long is dead
CANCEL_CHECK_SECONDS = 1.0  # how often the loop reads the cancel flag

#: Set when this process's Celery worker begins a shutdown (tasks.py connects it).
shutdown_requested = threading.Event()

RESUMABLE = (TrainingJob.State.FAILED, TrainingJob.State.CANCELLED, TrainingJob.State.INTERRUPTED)


class TrainingJobStateError(Exception):
    """The job's state does not allow the asked change (e.g. cancelling a finished job)."""


def training_job_start(
    *,
    base: str,
    key: str = "",
    config_overrides: dict[str, Any] | None = None,
    created_by: Any = None,
) -> TrainingJob:
    """Create a queued job and send it to the training worker once the row is committed."""
    if key and EmbeddingModel.objects.filter(key=key).exists():
        raise TrainingJobStateError(f"a version named {key!r} exists already")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
    out_dir = Path(settings.DATA_DIR) / "models" / (key or f"catalog-{stamp}")
    job = TrainingJob.objects.create(
        base=base,
        key=key,
        out_dir=str(out_dir),
        config={**CATALOG_FINE_TUNE, **(config_overrides or {})},  # recipe: ml/recipes.py
        created_by=created_by if getattr(created_by, "pk", None) else None,
        log=_stamped(f"queued: fine-tune {base} on the catalog"),
    )
    _send(job)
    return job


def _send(job: TrainingJob) -> None:
    from embeddings.tasks import training_job_run_task

    job_id = job.pk
    transaction.on_commit(lambda: training_job_run_task.delay(job_id=job_id))


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """Cancel a job: at once if it waits, at the end of its current step if it runs."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.state in (TrainingJob.State.QUEUED, TrainingJob.State.INTERRUPTED):
            job.state = TrainingJob.State.CANCELLED
            job.finished_at = timezone.now()
            job.log = _tail(job.log, _stamped("cancelled before it ran again"))
        elif job.state == TrainingJob.State.RUNNING:
            job.cancel_requested = True
            job.log = _tail(job.log, _stamped("cancel requested: stopping after this step"))
        else:
            raise TrainingJobStateError(f"job #{job.pk} is {job.state}: nothing to cancel")
        job.save()
    return job


def training_job_resume(*, job: TrainingJob) -> TrainingJob:
    """Queue a failed, cancelled or interrupted job again; it continues from its last save."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.state not in RESUMABLE:
            raise TrainingJobStateError(f"job #{job.pk} is {job.state}: it cannot be resumed")
        _requeue(job, why="resume requested")
    return job


def _requeue(job: TrainingJob, *, why: str) -> None:
    job.state = TrainingJob.State.QUEUED
    job.cancel_requested = False
    job.error = ""
    job.finished_at = None
    job.log = _tail(job.log, _stamped(f"queued again ({why}); continues from step {job.step}"))
    job.save()
    _send(job)


def training_jobs_recover() -> int:
    """Queue again the jobs a shut-down or dead training worker left; return how many."""
    stale = timezone.now() - STALE_AFTER
    count = 0
    with transaction.atomic():
        jobs = TrainingJob.objects.select_for_update(skip_locked=True).filter(
            state__in=[TrainingJob.State.INTERRUPTED, TrainingJob.State.RUNNING]
        )
        for job in jobs:
            if job.state == TrainingJob.State.RUNNING and (
                job.heartbeat_at is not None and job.heartbeat_at > stale
            ):
                continue  # alive
            why = (
                "the training worker restarted"
                if job.state == TrainingJob.State.INTERRUPTED
                else f"no heartbeat from its worker for {int(STALE_AFTER.total_seconds())} s"
            )
            _requeue(job, why=why)
            count += 1
    return count


# ---- running ---------------------------------------------------------------------------
def training_job_run(*, job_id: int) -> TrainingJob | None:
    """Run (or continue) a job in this process; return it in its final or interrupted state.

    Returns None when there is nothing to run: the job is gone, final, or another worker
    runs it (a duplicate message).
    """
    job = _claim(job_id)
    if job is None:
        return None
    reporter = _Reporter(job)
    beat = _Heartbeat(job.pk)
    beat.start()
    try:
        model = embedding_model_train(
            out_dir=Path(job.out_dir),
            key=job.key or None,
            base=job.base,
            config_overrides=job.config,
            progress=reporter.progress,
            report=reporter.line,
            should_stop=reporter.should_stop,
        )
        reporter.line(f"registered {model.key}; evaluating it beside the active version")
        _evaluate_beside_active(model, reporter)
    except Exception as error:
        from embeddings.ml.train import TrainingStopped

        if isinstance(error, TrainingStopped):
            final = reporter.cancelled
            reporter.finish(
                state=TrainingJob.State.CANCELLED if final else TrainingJob.State.INTERRUPTED,
                line=f"{'cancelled' if final else 'worker shutting down'}: {error}",
            )
        else:
            log.exception("training job #%s failed", job_id)
            reporter.finish(
                state=TrainingJob.State.FAILED,
                line="failed:\n" + "".join(traceback.format_exception(error)[-3:]).rstrip(),
                error=_reason(error),
            )
    else:
        reporter.finish(state=TrainingJob.State.SUCCEEDED, line="done", model=model)
    finally:
        beat.stop()
    job.refresh_from_db()
    return job


def _reason(error: BaseException) -> str:
    """The failure as a merchandiser reads it: what went wrong, without the stack."""
    text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}" if len(text) < 20 else text


def _claim(job_id: int) -> TrainingJob | None:
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state not in (
            TrainingJob.State.QUEUED,
            TrainingJob.State.INTERRUPTED,
        ):
            return None
        now = timezone.now()
        job.state = TrainingJob.State.RUNNING
        job.attempts += 1
        job.attempt_started_at = now
        job.attempt_start_step = job.step
        job.heartbeat_at = now
        job.phase = "starting"
        job.log = _tail(job.log, _stamped(f"attempt {job.attempts} started on the worker"))
        job.save()
    return job


def _evaluate_beside_active(model: EmbeddingModel, reporter: _Reporter) -> None:
    """Evaluate the new version, and the active one if it has no score on this split.

    The version is registered already: an evaluation that fails is reported in the log and
    can be run again from the version list ("Evaluate on the catalog"); it does not fail
    the job (resuming it would train and register the version a second time).
    """
    try:
        reporter.line(f"evaluating {model.key} on the catalog's held-out split")
        metrics = embedding_model_evaluate(model=model)
        active = EmbeddingModel.objects.filter(state=EmbeddingModel.State.ACTIVE).first()
        if active is None or active.pk == model.pk:
            return
        if (active.metrics or {}).get("split_fingerprint") != metrics.get("split_fingerprint"):
            reporter.line(f"evaluating the active version {active.key} on the same split")
            embedding_model_evaluate(model=active)
    except Exception as error:
        log.warning("evaluation after training job failed", exc_info=True)
        reporter.line(f"evaluation failed ({_reason(error)}); run it from the version list")


def _stamped(line: str) -> str:
    return f"{timezone.now():%H:%M:%S} {line}"


def _tail(log_text: str, *lines: str) -> str:
    kept = [*log_text.splitlines(), *lines]
    return "\n".join(kept[-LOG_LINES:])


@dataclass
class _Pending:
    lines: list[str]
    phase: str | None = None
    step: int | None = None
    total: int | None = None
    losses: dict[str, float] | None = None


class _Reporter:
    """Turns the training loop's hooks into (throttled) writes to the job row."""

    def __init__(self, job: TrainingJob) -> None:
        self.job_id = job.pk
        self.pending = _Pending(lines=[])
        self.last_flush = 0.0
        self.last_cancel_check = 0.0
        self.cancelled = False
        self.last_logged_step = 0

    def line(self, text: str) -> None:
        log.info("training job #%s: %s", self.job_id, text)
        self.pending.lines.append(_stamped(text))
        self.pending.phase = text.splitlines()[0][:300]
        self.flush(force=True)

    def progress(self, step: int, total: int, losses: dict[str, float]) -> None:
        self.pending.step, self.pending.total, self.pending.losses = step, total, losses
        self.pending.phase = "training"
        if step == total or step - self.last_logged_step >= max(1, total // 50):
            self.last_logged_step = step
            figures = ", ".join(f"{k} {v:.3f}" for k, v in sorted(losses.items()))
            self.pending.lines.append(_stamped(f"step {step}/{total}: {figures}"))
        self.flush(force=step == total)

    def should_stop(self) -> bool:
        if shutdown_requested.is_set():
            return True
        now = time.monotonic()
        if now - self.last_cancel_check >= CANCEL_CHECK_SECONDS:
            self.last_cancel_check = now
            self.cancelled = TrainingJob.objects.filter(
                pk=self.job_id, cancel_requested=True
            ).exists()
        return self.cancelled

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_flush < FLUSH_SECONDS:
            return
        self.last_flush = now
        pending, self.pending = self.pending, _Pending(lines=[])
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=self.job_id)
            if pending.phase is not None:
                job.phase = pending.phase
            if pending.step is not None:
                job.step = pending.step
            if pending.total is not None:
                job.total_steps = pending.total
            if pending.losses is not None:
                job.losses = {k: round(v, 4) for k, v in pending.losses.items()}
            if pending.lines:
                job.log = _tail(job.log, *pending.lines)
            job.heartbeat_at = timezone.now()
            job.save()

    def finish(
        self,
        *,
        state: str,
        line: str,
        error: str = "",
        model: EmbeddingModel | None = None,
    ) -> None:
        self.pending.lines.append(_stamped(line))
        self.flush(force=True)
        updates: dict[str, Any] = {"state": state, "error": error, "phase": line.splitlines()[0]}
        if state != TrainingJob.State.INTERRUPTED:
            updates["finished_at"] = timezone.now()
        if model is not None:
            updates["model"] = model
        TrainingJob.objects.filter(pk=self.job_id).update(**updates)


class _Heartbeat:
    """Stamps `heartbeat_at` every few seconds from its own thread while the job runs.

    The loop's own writes cannot be the liveness signal: decoding a large catalog's images
    or evaluating can take minutes between two of them.
    """

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vitrine-heartbeat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=HEARTBEAT_SECONDS)

    def _run(self) -> None:
        try:
            while not self.stopped.wait(HEARTBEAT_SECONDS):
                close_old_connections()
                TrainingJob.objects.filter(pk=self.job_id, state=TrainingJob.State.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()  # this thread's own connection
