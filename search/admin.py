"""Admin for the brand's-site features (publishable keys, A/B experiments, analytics) and
for query understanding (the synonym table merchandisers edit; the vocabulary and the
calibrations search derives from the catalog, read-only). The catalog's product and
lookbook pages get search's additions in `search/admin_catalog.py`, registered on import."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from search import admin_catalog as admin_catalog  # registers on import
from search.analytics.admin_views import analytics_dashboard
from search.experiments import services as experiment_services
from search.experiments.selectors import experiment_results
from search.models import (
    ApiKey,
    Experiment,
    PublishableKey,
    SearchCalibration,
    Synonym,
    VocabularyTerm,
)
from search.services import api_key_create, api_key_revoke
from search.storefront.keys import (
    InvalidOrigin,
    origin_normalise,
    publishable_key_create,
    publishable_key_revoke,
    publishable_keys_forget,
)
from search.understanding import phrase_key


class PublishableKeyForm(forms.ModelForm):
    allowed_origins = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One origin a line, e.g. https://www.brand.com (scheme, host, port only)",
    )

    class Meta:
        model = PublishableKey
        fields = ["name", "allowed_origins"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["allowed_origins"] = "\n".join(self.instance.allowed_origins)

    def clean_allowed_origins(self) -> list[str]:
        lines = [line for line in self.cleaned_data["allowed_origins"].split() if line]
        try:
            return sorted({origin_normalise(line) for line in lines})
        except InvalidOrigin as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(PublishableKey)
class PublishableKeyAdmin(admin.ModelAdmin):
    form = PublishableKeyForm
    list_display = ["name", "key", "origins", "created_at", "revoked_at"]
    readonly_fields = ["key", "created_at", "revoked_at"]
    change_form_template = "admin/search/publishablekey/change_form.html"
    actions = ["revoke"]

    @admin.display(description="Allowed origins")
    def origins(self, obj: PublishableKey) -> str:
        return ", ".join(obj.allowed_origins)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        key = PublishableKey.objects.filter(pk=object_id).first()
        if key is not None:
            script = request.build_absolute_uri(reverse("widget-script"))
            extra_context = {**(extra_context or {}), "script_url": script, "key": key}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"allowed_origins": ""}

    def save_model(
        self, request: HttpRequest, obj: PublishableKey, form: Any, change: bool
    ) -> None:
        if change:
            obj.save()
            publishable_keys_forget()
            return
        created = publishable_key_create(name=obj.name, allowed_origins=obj.allowed_origins)
        obj.pk, obj.key, obj.created_at = created.pk, created.key, created.created_at

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[PublishableKey]) -> None:
        usable = list(queryset.filter(revoked_at__isnull=True))
        for publishable in usable:
            publishable_key_revoke(key=publishable.key)
        self.message_user(request, f"Revoked {len(usable)} key(s).")


class ExperimentForm(forms.ModelForm):
    class Meta:
        model = Experiment
        fields = [
            "name", "a_model_key", "a_diversify", "b_model_key", "b_diversify", "b_percent",
            "minimum_detectable_lift",
        ]  # fmt: skip

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        arms = {name: value for name, value in data.items() if name != "name"}
        try:
            experiment_services.experiment_validate(**arms)
        except experiment_services.ExperimentError as error:
            raise forms.ValidationError(str(error)) from None
        return data


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    list_display = ["name", "status", "arms", "b_percent", "started_at", "results_link"]

    @admin.display(description="A / B")
    def arms(self, obj: Experiment) -> str:
        def arm(model_key: str, diversify: bool) -> str:
            return f"{model_key or 'active'}, diversify {'on' if diversify else 'off'}"

        return f"{arm(obj.a_model_key, obj.a_diversify)} / {arm(obj.b_model_key, obj.b_diversify)}"

    @admin.display(description="Results")
    def results_link(self, obj: Experiment) -> str:
        url = reverse("admin:search_experiment_results", args=[obj.pk])
        return format_html('<a href="{}">Results</a>', url)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A running test is never edited: its arms would change under its sessions.
        return False if obj is not None else super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Experiment, form: Any, change: bool) -> None:
        data = form.cleaned_data
        started = experiment_services.experiment_start(**data)
        obj.pk = started.pk

    def response_add(
        self, request: HttpRequest, obj: Experiment, post_url_continue: Any = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:search_experiment_results", args=[obj.pk]))

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:pk>/results/",
                self.admin_site.admin_view(self.results_view),
                name="search_experiment_results",
            ),
            path(
                "analytics/",
                self.admin_site.admin_view(analytics_dashboard),
                name="search_analytics",
            ),
        ]
        return own + super().get_urls()

    def results_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        experiment = get_object_or_404(Experiment, pk=pk)
        if request.method == "POST":
            action = request.POST.get("action")
            try:
                if action == "stop":
                    experiment_services.experiment_stop(experiment=experiment)
                    self.message_user(request, "Stopped: every shopper gets the usual search.")
                elif action == "promote":
                    experiment_services.experiment_promote(experiment=experiment)
                    self.message_user(request, "Promoted B.")
            except Exception as error:  # activation refused: say why, where the user looks
                self.message_user(request, f"Could not {action}: {error}", level=messages.ERROR)
            return HttpResponseRedirect(request.path)
        context = {
            **self.admin_site.each_context(request),
            "title": f"A/B test: {experiment.name}",
            "experiment": experiment,
            "results": experiment_results(experiment=experiment),
        }
        return TemplateResponse(request, "admin/search/experiment_results.html", context)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """REST API keys, created here as with ``manage.py api_keys create``: the key is
    shown once, in the message after saving; only its hash is stored."""

    list_display = ["name", "prefix", "scope", "rate", "created_at", "expires_at", "revoked_at",
                    "last_used_at"]  # fmt: skip
    fields = ["name", "scope", "rate", "expires_at", "prefix", "created_at", "last_used_at",
              "revoked_at"]  # fmt: skip
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A key's scope and rate are part of what was handed out: revoke and re-issue.
        return self.readonly_fields + (["scope", "rate"] if obj is not None else [])

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        try:
            issued = api_key_create(
                name=obj.name, scope=obj.scope, expires_at=obj.expires_at, rate=obj.rate
            )
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None
        obj.pk = issued.api_key.pk
        obj.prefix, obj.created_at = issued.api_key.prefix, issued.api_key.created_at
        self.message_user(
            request,
            f"Copy the key now, it is not shown again: {issued.plaintext}",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            api_key_revoke(prefix=key.prefix)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(Synonym)
class SynonymAdmin(admin.ModelAdmin):
    list_display = ("phrase", "means", "updated_at")
    search_fields = ("phrase", "means")
    ordering = ("phrase",)

    def save_model(self, request: HttpRequest, obj: Synonym, form: Any, change: bool) -> None:
        obj.phrase = " ".join(obj.phrase.split()).lower()
        obj.means = "|".join(part.strip() for part in obj.means.split("|") if part.strip())
        super().save_model(request, obj, form, change)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(VocabularyTerm)
class VocabularyTermAdmin(ReadOnlyAdmin):
    list_display = ("value", "field", "key", "product_count")
    list_filter = ("field",)
    search_fields = ("value", "key")

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        # Found by the shopper's spelling too ("T-Shirts" finds the key "tshirt").
        results, duplicates = super().get_search_results(request, queryset, search_term)
        if search_term:
            results = results | queryset.filter(key=phrase_key(search_term))
        return results, duplicates


@admin.register(SearchCalibration)
class SearchCalibrationAdmin(ReadOnlyAdmin):
    list_display = ("model", "catalog_stamp", "weights", "text_threshold", "image_threshold",
                    "image_class_threshold", "image_energy_threshold", "created_at")  # fmt: skip
    readonly_fields = ("model", "catalog_stamp", "weights", "text_threshold", "image_threshold",
                       "image_class_threshold", "image_energy_threshold",
                       "image_class_profile", "report", "created_at")  # fmt: skip
