"""Import jobs in the admin."""

from __future__ import annotations

from django.contrib import admin

from catalog.models import ImportJob


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = (
        "id", "source", "state", "progress", "total_rows", "done_rows", "failed_rows",
        "skipped_rows", "created_at",
    )  # fmt: skip
    list_filter = ("state", "source_format")
    search_fields = ("source",)
    readonly_fields = (
        "state", "total_rows", "done_rows", "failed_rows", "skipped_rows", "error",
        "started_at", "finished_at", "created_by",
    )  # fmt: skip

    @admin.display(description="Progress")
    def progress(self, obj: ImportJob) -> str:
        return f"{obj.progress_percent}%"
