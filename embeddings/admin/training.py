"""Fine-tuning jobs in the admin: live progress (step, loss, ETA), log tail, cancel, resume.

A job's page polls a small fragment view (htmx, every second) until the job is final; the
buttons post to views that call `embeddings.training` and come back to the page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from embeddings import selectors, training
from embeddings.admin.versions import plain_rows
from embeddings.models import TrainingJob
from webapp.admin_pages import LivePanelAdmin

POLL_SECONDS = 1  # htmx polls a job's progress this often while it is not final


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def progress_context(job: TrainingJob) -> dict[str, Any]:
    """What the progress fragment shows for `job`."""
    context: dict[str, Any] = {
        "job": job,
        "final": job.is_final,
        "poll_seconds": POLL_SECONDS,
        "eta": _duration(selectors.training_job_eta_seconds(job=job)),
        "can_cancel": job.state
        in (TrainingJob.State.QUEUED, TrainingJob.State.RUNNING, TrainingJob.State.INTERRUPTED)
        and not job.cancel_requested,
        "can_resume": job.state in training.RESUMABLE,
    }
    if job.state == TrainingJob.State.SUCCEEDED and job.model is not None:
        active = selectors.embedding_model_active()
        context["plain"] = plain_rows(candidate=job.model, active=active)
        context["active"] = active
    return context


@admin.register(TrainingJob)
class TrainingJobAdmin(LivePanelAdmin):
    list_display = ("id", "state_badge", "base", "progress", "loss_value", "model", "created_at")
    list_filter = ("state",)
    fields = ("base", "key", "out_dir", "config", "created_by", "created_at")
    readonly_fields = fields
    change_form_template = "admin/embeddings/trainingjob/change_form.html"

    class Media:
        css = {"all": ("vitrine_admin/admin.css",)}
        js = ("vendor/htmx-2.0.11.min.js",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are started by "Fine-tune on this catalog" (or the command)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a job is read-only; its buttons are the only changes

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        own = [
            path(
                "<int:object_id>/progress/",
                view(self.progress_view),
                name="embeddings_trainingjob_progress",
            ),
            path(
                "<int:object_id>/cancel/",
                view(require_POST(self.cancel_view)),
                name="embeddings_trainingjob_cancel",
            ),
            path(
                "<int:object_id>/resume/",
                view(require_POST(self.resume_view)),
                name="embeddings_trainingjob_resume",
            ),
        ]
        return own + super().get_urls()

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: TrainingJob) -> str:
        return format_html(
            '<span class="vt-status vt-status--{}">{}</span>', obj.state, obj.get_state_display()
        )

    @admin.display(description="Progress")
    def progress(self, obj: TrainingJob) -> str:
        return format_html(
            '<span class="vt-progress" title="step {} of {}"><span style="width:{}%"></span>'
            "</span> {}%",
            obj.step,
            obj.total_steps,
            obj.progress_percent,
            obj.progress_percent,
        )

    @admin.display(description="Loss")
    def loss_value(self, obj: TrainingJob) -> str:
        return "—" if obj.loss is None else f"{obj.loss:.3f}"

    def panel_queryset(self) -> QuerySet[TrainingJob]:
        return TrainingJob.objects.select_related("model")

    def panel_context(self, request: HttpRequest, obj: TrainingJob) -> dict[str, Any]:
        return progress_context(obj)

    def progress_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The progress panel (an htmx fragment): it keeps polling until the job is final."""
        job = self.viewable_object(request, object_id)
        return TemplateResponse(
            request, "admin/embeddings/trainingjob/_progress.html", self.panel_context(request, job)
        )

    def cancel_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        job = self.viewable_object(request, object_id)
        try:
            job = training.training_job_cancel(job=job)
        except training.TrainingJobStateError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            text = (
                "Cancelled."
                if job.state == TrainingJob.State.CANCELLED
                else "Cancelling: the run stops after its current step and keeps its state."
            )
            self.message_user(request, text, messages.INFO)
        return redirect("admin:embeddings_trainingjob_change", job.pk)

    def resume_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        job = self.viewable_object(request, object_id)
        try:
            job = training.training_job_resume(job=job)
        except training.TrainingJobStateError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.message_user(
                request, f"Queued again; it continues from step {job.step}.", messages.INFO
            )
        return redirect("admin:embeddings_trainingjob_change", job.pk)
