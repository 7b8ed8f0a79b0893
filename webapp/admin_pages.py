"""What the admin pages of long-running work share: an import job, a feed of posts, a post
being tagged, a fine-tuning job.

Each has a change page with a panel that updates itself (an htmx fragment that polls its own
URL until the work is final), rendered from one context for the page and the fragment alike,
so the two never disagree; and an "Add" page that is a plain form of its own instead of the
model form.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse

FormT = TypeVar("FormT", bound=forms.Form)


class LivePanelAdmin(admin.ModelAdmin):
    """A change page whose panel shows `panel_context`, also served as a fragment."""

    def panel_context(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        """The template context of the object's panel (page and fragment)."""
        raise NotImplementedError

    def panel_queryset(self) -> QuerySet[Any]:
        """Where the panel's object is read from (override to select related rows)."""
        return self.model._default_manager.all()

    def viewable_object(self, request: HttpRequest, object_id: int | str) -> Any:
        """The object, if this user may view it: a 404 when there is none, else a 403."""
        found = self._panel_object(object_id)
        if found is None:
            raise Http404(f"no such {self.opts.verbose_name}")
        if not self.has_view_permission(request, found):
            raise PermissionDenied
        return found

    def _panel_object(self, object_id: int | str) -> Model | None:
        if not str(object_id).isdigit():
            return None
        found: Model | None = self.panel_queryset().filter(pk=object_id).first()
        return found

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        found = self._panel_object(object_id)
        if found is not None and self.has_view_permission(request, found):
            context.update(self.panel_context(request, found))
        return super().change_view(request, object_id, form_url, context)

    def add_form(self, request: HttpRequest, form_class: type[FormT]) -> FormT:
        """The "Add" page's form, bound on any POST (even an empty one, so "nothing given" is
        an error, not a blank form); a 403 for a user who may not add."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return form_class(request.POST, request.FILES)
        return form_class()

    def form_page(
        self,
        request: HttpRequest,
        *,
        title: str,
        form: forms.Form,
        extra_context: dict[str, Any] | None = None,
    ) -> TemplateResponse:
        """The "Add" page (`add_form_template`) showing `form` in the admin's frame."""
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "form": form,
            "media": self.media + form.media,
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.add_form_template or "", context)
