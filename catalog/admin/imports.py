"""Import jobs in the admin: an upload form, live progress, and the failed rows.

The form creates jobs through ``import_job_create``, the same service the API
and ``import_catalog`` use, so a job started here runs the same pipeline on the workers.
A job's page polls a small fragment view (htmx, every second) until the job is final.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from catalog import selectors
from catalog.ingest.mapping import (
    FORMATS,
    MappingError,
    available_presets,
    mapping_object_parse,
)
from catalog.models import ImportJob, ImportRowError
from catalog.services.feeds import ImportRefusedError
from catalog.services.jobs import import_job_create, import_job_repeat
from webapp.admin_pages import LivePanelAdmin

ERRORS_PER_PAGE = 50
#: htmx polls a running job's progress this often (the change page and the list).
POLL_SECONDS = 1
FINAL_STATES = ImportJob.FINAL_STATES


class ImportUploadForm(forms.Form):
    """What a merchandiser gives to start an import: a feed file or URL and how to read it."""

    file = forms.FileField(
        required=False,
        help_text="CSV, TSV, JSON Lines, JSON or Google Merchant Center XML. "
        "Image columns must hold http(s) URLs.",
    )
    url = forms.URLField(
        label="or feed URL", required=False, max_length=2000, assume_scheme="https"
    )
    preset = forms.ChoiceField(
        required=False,
        choices=[("", "— none (Google Merchant Center column names) —")]
        + [(name, name) for name in available_presets()],
        help_text="A ready-made column mapping. Leave empty when you give a mapping below.",
    )
    format = forms.ChoiceField(
        required=False,
        choices=[("", "— guess from the file —")] + [(fmt, fmt.upper()) for fmt in FORMATS],
    )
    currency = forms.RegexField(
        regex=r"^[A-Za-z]{3}$",
        required=False,
        max_length=3,
        help_text="For prices without a currency, e.g. EUR.",
        error_messages={"invalid": "Enter a three-letter ISO 4217 code, e.g. EUR."},
    )
    mapping = forms.CharField(
        label="Column mapping (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "spellcheck": "false"}),
        help_text='e.g. {"fields": {"id": "article_no", "title": "name", "image_link": "picture"}}',
    )
    lookbooks = forms.FileField(
        label="Lookbooks (JSON)",
        required=False,
        help_text="Optional: a JSON list of lookbooks, each naming the SKUs it holds.",
    )

    def clean_mapping(self) -> dict[str, Any] | None:
        text = self.cleaned_data["mapping"].strip()
        if not text:
            return None
        try:
            return mapping_object_parse(text)
        except MappingError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_lookbooks(self) -> Any:
        upload = self.cleaned_data["lookbooks"]
        if upload is None:
            return None
        try:
            json.loads(upload.read())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise forms.ValidationError(f"The lookbook file is not valid JSON: {exc}.") from exc
        finally:
            upload.seek(0)
        return upload

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        if bool(data.get("file")) == bool(data.get("url")):
            raise forms.ValidationError("Upload a feed file or give a feed URL (one of them).")
        if data.get("preset") and data.get("mapping"):
            raise forms.ValidationError("Choose a preset or give a column mapping, not both.")
        return data


def progress_bar_html(job: ImportJob, *, poll: bool) -> str:
    """The compact bar the changelist shows; it polls its fragment while the job runs."""
    return render_to_string(
        "admin/catalog/importjob/_progress_bar.html",
        {"job": job, "poll": poll and job.state not in FINAL_STATES, "poll_seconds": POLL_SECONDS},
    )


@admin.register(ImportJob)
class ImportJobAdmin(LivePanelAdmin):
    list_display = (
        "id", "source", "state", "progress", "total_rows", "done_rows", "failed_rows",
        "skipped_rows", "created_at",
    )  # fmt: skip
    list_filter = ("state", "source_format")
    search_fields = ("source",)
    # State, counts, error and times live in the progress panel alone, which updates
    # itself while the job runs: fields below it showed the numbers of the page load.
    fields = ("source", "source_format", "options", "created_by", "created_at")
    readonly_fields = fields
    actions = ["import_again"]

    @admin.action(description="Import again (fetches failed images again)", permissions=["add"])
    def import_again(self, request: HttpRequest, queryset: QuerySet[ImportJob]) -> None:
        for job in queryset:
            again = import_job_repeat(job_id=job.pk, created_by_id=request.user.pk)
            self.message_user(
                request, f"Import #{job.pk} is queued again as #{again.pk}.", messages.INFO
            )

    change_form_template = "admin/catalog/importjob/change_form.html"
    add_form_template = "admin/catalog/importjob/upload.html"

    class Media:
        js = ("vendor/htmx-2.0.11.min.js",)
        css = {"all": ("vitrine_admin/admin.css",)}

    # Jobs are written by the pipeline only: their page is read-only (deleting is allowed).
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:object_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="catalog_importjob_progress",
            ),
            path(
                "<int:object_id>/row-errors/",
                self.admin_site.admin_view(self.row_errors_view),
                name="catalog_importjob_row_errors",
            ),
            path(
                "<int:object_id>/errors.csv",
                self.admin_site.admin_view(self.errors_csv_view),
                name="catalog_importjob_errors_csv",
            ),
        ]
        return own + super().get_urls()

    @admin.display(description="Progress")
    def progress(self, obj: ImportJob) -> str:
        return progress_bar_html(obj, poll=True)

    # --- The upload form (replaces the model form on "Add") ------------------------------

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        form = self.add_form(request, ImportUploadForm)
        if form.is_valid():
            job = self._create_job(request, form)
            if job is not None:
                self.message_user(
                    request, f"Import #{job.pk} is queued; its progress shows below.", messages.INFO
                )
                return HttpResponseRedirect(
                    reverse("admin:catalog_importjob_change", args=[job.pk])
                )
        return self.form_page(
            request, title="Import a product feed", form=form, extra_context=extra_context
        )

    def _create_job(self, request: HttpRequest, form: ImportUploadForm) -> ImportJob | None:
        """Create and queue the job, or put the service's refusal on the form."""
        data = form.cleaned_data
        upload = data.get("file")
        try:
            return import_job_create(
                kind="upload" if upload else "url",
                source=upload.name if upload else data["url"],
                preset=data.get("preset") or None,
                mapping=data.get("mapping"),
                fmt=data.get("format") or None,
                currency=data.get("currency") or "",
                upload=upload,
                lookbooks_upload=data.get("lookbooks"),
                created_by_id=request.user.pk,
            )
        except ImportRefusedError as exc:
            field = exc.field if exc.field in form.fields else None
            if field == "file" and not upload:
                field = "url"
            form.add_error(field, str(exc))
            return None

    # --- A job's page and its fragments --------------------------------------------------

    def _errors_page(self, request: HttpRequest, job: ImportJob) -> Page[ImportRowError]:
        paginator = Paginator(selectors.import_row_errors(job=job), ERRORS_PER_PAGE)
        return paginator.get_page(request.GET.get("errors_page"))

    def panel_context(self, request: HttpRequest, obj: ImportJob) -> dict[str, Any]:
        return {
            "job": obj,
            "poll_seconds": POLL_SECONDS,
            "final": obj.state in FINAL_STATES,
            "errors_page": self._errors_page(request, obj),
        }

    def progress_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The progress panel (an htmx fragment): it keeps polling until the job is final.

        ``?bar=1`` renders the changelist's compact bar instead. When the job has just
        become final, the response triggers ``import-finished`` so the page reloads its
        list of failed rows once.
        """
        job = self.viewable_object(request, object_id)
        final = job.state in FINAL_STATES
        if request.GET.get("bar"):
            return HttpResponse(progress_bar_html(job, poll=True))
        response = TemplateResponse(
            request,
            "admin/catalog/importjob/_progress.html",
            {"job": job, "final": final, "poll_seconds": POLL_SECONDS},
        )
        if final and request.headers.get("HX-Request"):
            response["HX-Trigger"] = "import-finished"
        return response

    def row_errors_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """One page of the job's failed, skipped and warned rows (an htmx fragment)."""
        job = self.viewable_object(request, object_id)
        context = {
            "job": job,
            "final": job.state in FINAL_STATES,
            "errors_page": self._errors_page(request, job),
        }
        return TemplateResponse(request, "admin/catalog/importjob/_row_errors.html", context)

    def errors_csv_view(self, request: HttpRequest, object_id: int) -> StreamingHttpResponse:
        """The whole error report as CSV: the same export as the API's ``errors.csv``."""
        job = self.viewable_object(request, object_id)
        response = StreamingHttpResponse(
            selectors.import_row_errors_csv(job=job), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="import-{job.pk}-errors.csv"'
        return response
