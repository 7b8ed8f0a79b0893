"""Model versions in the admin: train, compare evaluations side by side, activate, roll back.

Every action calls `embeddings.services` (or queues its task): the admin decides nothing
about the life cycle itself. Training and evaluation run on the worker (minutes to hours).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from embeddings import selectors, text_map, training
from embeddings.ml.recipes import CATALOG_BASE
from embeddings.models import EmbeddingModel, TextQueryMap
from embeddings.services.errors import EmbeddingModelStateError
from embeddings.services.evaluation import embedding_model_evaluate_start
from embeddings.services.lifecycle import (
    embedding_model_activate_gated,
    embedding_model_retire,
    embedding_model_rollback,
)


class FineTuneForm(forms.Form):
    base = forms.CharField(
        help_text="The version to fine-tune (its spec: the active one, or the bundled "
        "default:v2 while a bundled model is active), or “new:&lt;timm arch&gt;” to train an "
        "image tower from scratch.",
    )
    key = forms.SlugField(required=False, help_text="Leave empty to name it automatically.")
    max_steps = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=1_000_000,
        label="Steps",
        help_text="Leave empty for 10 passes over the catalog.",
    )

    def clean_key(self) -> str:
        # Checked before queueing: the run trains into models/<key>, where an earlier
        # version's weights may live, and would only fail hours later at registration.
        key: str = self.cleaned_data["key"]
        if key and EmbeddingModel.objects.filter(key=key).exists():
            raise forms.ValidationError(f"A version named {key!r} exists already.")
        return key


class ActivateForm(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Required when the version does not beat the active one on the held-out "
        "split; recorded on the version with your name.",
    )


def metric_rows(models: list[EmbeddingModel]) -> list[dict[str, Any]]:
    """One row per (metric, cell) present in any version's evaluation: values side by side.

    `metrics` holds `{"metrics": {name: {cell: {value, ci_low, ci_high, n}}}}` (see
    `embeddings.ml.evaluation.EvaluationResult.to_dict`).
    """
    names: dict[tuple[str, str], None] = {}
    for model in models:
        for name, cells in (model.metrics or {}).get("metrics", {}).items():
            for cell in cells:
                names[(name, cell)] = None
    rows = []
    for name, cell in names:
        values = []
        for model in models:
            entry = (model.metrics or {}).get("metrics", {}).get(name, {}).get(cell)
            values.append(entry if isinstance(entry, dict) else None)
        present = [v["value"] for v in values if v and v.get("value") is not None]
        best = max(present) if present else None
        cells = [
            {
                **value,
                "width": round(120 * max(0.0, min(1.0, float(value["value"])))),
                "best": len(present) > 1 and value["value"] == best,
            }
            if value and value.get("value") is not None
            else None
            for value in values
        ]
        rows.append({"metric": name, "cell": cell, "values": cells})
    return rows


def plain_rows(*, candidate: EmbeddingModel, active: EmbeddingModel | None) -> list[Any]:
    """The merchandiser's figures with bar widths (0-100 %) for the side-by-side plot."""
    if active is not None and active.pk == candidate.pk:
        active = None
    return [
        {
            "row": row,
            "active_width": round(100 * (row.active or 0)),
            "candidate_width": round(100 * (row.candidate or 0)),
            "better": row.candidate is not None
            and row.active is not None
            and row.candidate > row.active,
        }
        for row in selectors.embedding_model_plain_metrics(candidate=candidate, active=active)
    ]


@admin.register(EmbeddingModel)
class EmbeddingModelAdmin(admin.ModelAdmin):
    list_display = (
        "key", "state_badge", "spec", "dimension", "backfill", "headline_metric",
        "created_at", "activated_at",
    )  # fmt: skip
    list_filter = ("state",)
    search_fields = ("key", "spec")
    readonly_fields = (
        "key", "spec", "dimension", "weights_sha256", "state", "error", "activation_reason",
        "metrics",
        "backfill_total", "backfill_done", "text_query", "created_at", "prepared_at",
        "activated_at", "retired_at",
    )  # fmt: skip
    fields = ("auto_activate", *readonly_fields)
    actions = ["activate", "evaluate", "compare", "retire"]
    change_list_template = "admin/embeddings/embeddingmodel/change_list.html"

    class Media:
        css = {"all": ("vitrine_admin/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions are registered by training or `register` (services)

    def get_urls(self) -> list[URLPattern]:
        own = [
            path("train/", self.admin_site.admin_view(self.train_view), name="embeddings_train"),
            path(
                "rollback/",
                self.admin_site.admin_view(self.rollback_view),
                name="embeddings_rollback",
            ),
            path(
                "compare/", self.admin_site.admin_view(self.compare_view), name="embeddings_compare"
            ),
            path(
                "<int:object_id>/activate/",
                self.admin_site.admin_view(self.activate_view),
                name="embeddings_activate",
            ),
        ]
        return own + super().get_urls()

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: EmbeddingModel) -> str:
        return format_html(
            '<span class="vt-status vt-status--{}">{}</span>', obj.state, obj.get_state_display()
        )

    @admin.display(description="Backfill")
    def backfill(self, obj: EmbeddingModel) -> str:
        return format_html(
            '<span class="vt-progress" title="{} of {}"><span style="width:{}%"></span></span> {}%',
            obj.backfill_done,
            obj.backfill_total,
            obj.backfill_percent,
            obj.backfill_percent,
        )

    @admin.display(description="Text query map")
    def text_query(self, obj: EmbeddingModel) -> str:
        fitted = TextQueryMap.objects.filter(model=obj).first()
        if fitted is None:
            return (
                "Not fitted: text queries use the words' own vector until at least "
                f"{text_map.pairs_needed(obj.dimension or 0)} products have vectors"
            )
        return (
            f"Fitted on {fitted.pairs} products at {fitted.fitted_at:%Y-%m-%d %H:%M}; "
            f"mapped text is {fitted.fit_cosine:.3f} cosine from its product's fused vector"
        )

    @admin.display(description="Lookbook recall@10")
    def headline_metric(self, obj: EmbeddingModel) -> str:
        cells: dict[str, Any] = (
            (obj.metrics or {}).get("metrics", {}).get("lookbook_completion/recall@10", {})
        )
        first: dict[str, Any] = next(iter(cells.values()), {}) if cells else {}
        value = first.get("value")
        return "—" if value is None else f"{value:.3f}"

    # --- actions (each a service call) ----------------------------------------------------
    @admin.action(description="Activate the selected version")
    def activate(
        self, request: HttpRequest, queryset: QuerySet[EmbeddingModel]
    ) -> HttpResponseRedirect | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return None
        # The activation page shows the version beside the active one and asks for a
        # reason when it does not beat it.
        return HttpResponseRedirect(reverse("admin:embeddings_activate", args=[queryset.get().pk]))

    @admin.action(description="Evaluate on the catalog (runs on the worker)")
    def evaluate(self, request: HttpRequest, queryset: QuerySet[EmbeddingModel]) -> None:
        for model in queryset:
            embedding_model_evaluate_start(model=model)
        self.message_user(request, f"Evaluation queued for {queryset.count()} version(s).")

    @admin.action(description="Compare evaluations side by side")
    def compare(
        self, request: HttpRequest, queryset: QuerySet[EmbeddingModel]
    ) -> HttpResponseRedirect:
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return HttpResponseRedirect(f"{reverse('admin:embeddings_compare')}?ids={ids}")

    @admin.action(description="Retire (delete its vectors)")
    def retire(self, request: HttpRequest, queryset: QuerySet[EmbeddingModel]) -> None:
        for model in queryset:
            try:
                embedding_model_retire(model=model)
            except EmbeddingModelStateError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"{model.key} retired.", messages.SUCCESS)

    # --- views ----------------------------------------------------------------------------
    def rollback_view(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            try:
                model = embedding_model_rollback()
            except EmbeddingModelStateError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"Rolled back: {model.key} is active.", messages.SUCCESS)
        return redirect("admin:embeddings_embeddingmodel_changelist")

    def train_view(self, request: HttpRequest) -> HttpResponse:
        active = selectors.embedding_model_active()
        # A retailer's own active version is fine-tuned further; the bundled defaults (and a
        # fresh install) start from CATALOG_BASE, whose pretrained trunks freeze and cache.
        base = active.spec if active is not None else CATALOG_BASE
        if base.startswith("default"):
            base = CATALOG_BASE
        form = FineTuneForm(request.POST or None, initial={"base": base})
        if request.method == "POST" and form.is_valid():
            overrides = {}
            if form.cleaned_data["max_steps"]:
                overrides["max_steps"] = form.cleaned_data["max_steps"]
            job = training.training_job_start(
                base=form.cleaned_data["base"],
                key=form.cleaned_data["key"],
                config_overrides=overrides,
                created_by=request.user,
            )
            return redirect("admin:embeddings_trainingjob_change", job.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": "Fine-tune on this catalog",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/embeddings/embeddingmodel/train.html", context)

    def activate_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        model = EmbeddingModel.objects.filter(pk=object_id).first()
        if model is None:
            self.message_user(request, "That version does not exist.", messages.ERROR)
            return redirect("admin:embeddings_embeddingmodel_changelist")
        form = ActivateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                embedding_model_activate_gated(
                    model=model,
                    reason=form.cleaned_data["reason"],
                    user=request.user.get_username(),
                )
            except EmbeddingModelStateError as error:
                form.add_error("reason", str(error))
            else:
                self.message_user(request, f"{model.key} is now active.", messages.SUCCESS)
                return redirect("admin:embeddings_embeddingmodel_changelist")
        active = selectors.embedding_model_active()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Activate {model.key}",
            "candidate": model,
            "active": active,
            "check": selectors.embedding_model_activation_check(candidate=model),
            "plain": plain_rows(candidate=model, active=active),
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/embeddings/embeddingmodel/activate.html", context)

    def compare_view(self, request: HttpRequest) -> HttpResponse:
        raw = request.GET.get("ids", "")
        ids = [int(part) for part in raw.split(",") if part.isdigit()]
        models = list(EmbeddingModel.objects.filter(pk__in=ids).order_by("created_at"))
        if not models:
            models = list(EmbeddingModel.objects.exclude(metrics={}).order_by("created_at"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Compare model versions",
            "versions": models,
            "rows": metric_rows(models),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/embeddings/embeddingmodel/compare.html", context)
