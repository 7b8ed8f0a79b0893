"""The merchandisers' inbox of shoppable posts: add (upload, image URL, feed), review the
suggested tags per region (approve, replace the product, remove), publish or reject, and
record a creator's removal request. Every button calls one service; the rules (rights
before publishing, what a removal deletes) live there."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from catalog.models import Product
from search.posts import selectors, services
from search.posts.models import Post, PostFeed, PostTag
from webapp.admin_pages import LivePanelAdmin

POLL_SECONDS = 2


def _thumb(post: Post, size: int = 64) -> str:
    field = post.thumbnail or post.image
    if not field:
        return "—"
    return format_html(
        '<img src="{}" alt="" style="width:{}px;height:{}px;object-fit:cover;border-radius:4px">',
        field.url, size, size,
    )  # fmt: skip


class PostAddForm(forms.Form):
    image = forms.ImageField(required=False, label="Photo", help_text="JPEG, PNG or WebP")
    image_url = forms.URLField(
        label="or image URL", required=False, max_length=2000, assume_scheme="https",
        help_text="Fetched by the workers through the same safe fetcher as catalog images.",
    )  # fmt: skip
    caption = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    creator_handle = forms.CharField(required=False, max_length=200)
    post_url = forms.URLField(label="Post URL", required=False, max_length=2000)
    rights = forms.ChoiceField(choices=Post.Rights.choices, initial=Post.Rights.NONE)
    rights_note = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="How the rights were recorded (who, when, where).",
    )  # fmt: skip

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors and bool(data.get("image")) == bool(data.get("image_url")):
            raise forms.ValidationError("Upload a photo or give an image URL (one of them).")
        return data


@admin.register(Post)
class PostAdmin(LivePanelAdmin):
    list_display = ("photo", "__str__", "state", "rights", "tags_summary", "source", "created_at")
    list_filter = ("state", "rights", "source", "feed")
    search_fields = ("creator_handle", "caption", "post_url", "image_url")
    # State, failure reason and times live in the review panel alone, which updates itself
    # while the post is tagged: fields here would show the numbers of the page load.
    fields = (
        "caption", "creator_handle", "post_url", "rights", "rights_note",
        "source", "image_url", "feed", "created_at",
    )  # fmt: skip
    readonly_fields = ("source", "image_url", "feed", "created_at")
    change_form_template = "admin/posts/post/change_form.html"
    add_form_template = "admin/posts/post/add.html"

    class Media:
        js = ("vendor/htmx-2.0.11.min.js", "vitrine_admin/posts.js")
        css = {"all": ("vitrine_admin/admin.css", "vitrine_admin/posts.css")}

    @admin.display(description="Photo")
    def photo(self, obj: Post) -> str:
        return _thumb(obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Post]:
        tags = "regions__tags__state"
        return (
            super()
            .get_queryset(request)
            .annotate(
                approved_count=Count("regions__tags", filter=Q(**{tags: PostTag.State.APPROVED})),
                suggested_count=Count("regions__tags", filter=Q(**{tags: PostTag.State.SUGGESTED})),
            )
        )

    @admin.display(description="Tags (approved / suggested)")
    def tags_summary(self, obj: Any) -> str:
        return f"{obj.approved_count} / {obj.suggested_count}"

    def has_change_permission(self, request: HttpRequest, obj: Post | None = None) -> bool:
        if obj is not None and obj.state == Post.State.REMOVED:
            return False  # a removed post is a record only
        return super().has_change_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Post) -> None:
        services.post_delete(post=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Post]) -> None:
        for post in queryset:
            services.post_delete(post=post)

    def save_model(self, request: HttpRequest, obj: Post, form: Any, change: bool) -> None:
        """Edits go through `post_update`: rights taken back unpublish the post."""
        data = form.cleaned_data
        updated = services.post_update(
            post=obj, caption=data["caption"], creator_handle=data["creator_handle"],
            post_url=data["post_url"], rights=data["rights"], rights_note=data["rights_note"],
        )  # fmt: skip
        if obj.state == Post.State.PUBLISHED and updated.state != Post.State.PUBLISHED:
            self.message_user(
                request, "The rights are no longer granted, so the post is unpublished.",
                messages.WARNING,
            )  # fmt: skip

    # --- Adding a post -----------------------------------------------------------------

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        form = self.add_form(request, PostAddForm)
        if form.is_valid():
            data = form.cleaned_data
            upload = data.get("image")
            try:
                post = services.post_create(
                    image=upload.read() if upload else None,
                    image_url=data.get("image_url") or "",
                    caption=data["caption"], creator_handle=data["creator_handle"],
                    post_url=data["post_url"], rights=data["rights"],
                    rights_note=data["rights_note"], created_by_id=request.user.pk,
                )  # fmt: skip
            except services.PostRefusedError as exc:
                field = exc.field if exc.field in form.fields else None
                form.add_error(field, exc.reason)
            else:
                self.message_user(
                    request, f"{post} is in the inbox; its tags appear below in a moment.",
                    messages.INFO,
                )  # fmt: skip
                return HttpResponseRedirect(reverse("admin:posts_post_change", args=[post.pk]))
        return self.form_page(request, title="Add a post", form=form, extra_context=extra_context)

    # --- Review ---------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        own = [
            path("<int:post_id>/review/", view(self.review_view), name="posts_post_review"),
            path(
                "<int:post_id>/tags/<int:tag_id>/<str:op>/",
                view(require_POST(self.tag_view)),
                name="posts_post_tag",
            ),
            path(
                "<int:post_id>/regions/add/",
                view(require_POST(self.region_add_view)),
                name="posts_post_region_add",
            ),
            path(
                "<int:post_id>/do/<str:op>/",
                view(require_POST(self.post_action_view)),
                name="posts_post_action",
            ),
        ]
        return own + super().get_urls()

    def _post(self, request: HttpRequest, post_id: int) -> Post:
        """The post, if this user may change it (a review action)."""
        post: Post = self.viewable_object(request, post_id)
        if not self.has_change_permission(request, post):
            raise PermissionDenied
        return post

    def panel_queryset(self) -> QuerySet[Post]:
        return Post.objects.all()

    def panel_context(self, request: HttpRequest, obj: Post) -> dict[str, Any]:
        return {
            "post": obj,
            "regions": selectors.post_review_regions(post=obj),
            "poll": obj.state == Post.State.NEW,
            "poll_seconds": POLL_SECONDS,
        }

    def review_view(self, request: HttpRequest, post_id: int) -> HttpResponse:
        """The review panel (an htmx fragment): polls itself while the post is being tagged."""
        post = self.viewable_object(request, post_id)
        return TemplateResponse(
            request, "admin/posts/post/_review.html", self.panel_context(request, post)
        )

    def _back(self, post: Post) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:posts_post_change", args=[post.pk]))

    def tag_view(self, request: HttpRequest, post_id: int, tag_id: int, op: str) -> HttpResponse:
        post = self._post(request, post_id)
        tag = get_object_or_404(PostTag, pk=tag_id, region__post=post)
        try:
            if op == "approve":
                services.post_tag_approve(tag=tag)
            elif op == "reject":
                services.post_tag_reject(tag=tag)
            elif op == "replace":
                product = _product_of_sku(request.POST.get("sku", ""))
                services.post_tag_replace(tag=tag, product=product)
            else:
                raise PermissionDenied
        except services.PostRefusedError as exc:
            self.message_user(request, exc.reason, messages.ERROR)
        return self._back(post)

    def region_add_view(self, request: HttpRequest, post_id: int) -> HttpResponse:
        """A region the tagger missed: its box (percentages of the photo) and optionally the
        SKU of the product in it."""
        post = self._post(request, post_id)
        form = PostRegionForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                self.message_user(request, " ".join(str(e) for e in errors), messages.ERROR)
            return self._back(post)
        try:
            sku = form.cleaned_data["sku"]
            region = services.post_region_add(
                post=post, box=form.box(), product=_product_of_sku(sku) if sku else None
            )
        except services.PostRefusedError as exc:
            self.message_user(request, exc.reason, messages.ERROR)
        else:
            self.message_user(
                request, f"Region {region.index + 1} added with its suggestions.", messages.SUCCESS
            )
        return self._back(post)

    def post_action_view(self, request: HttpRequest, post_id: int, op: str) -> HttpResponse:
        post = self._post(request, post_id)
        done = {
            "publish": "Published: the post shows on its page, its products' pages and the API.",
            "unpublish": "Unpublished.",
            "reject": "Rejected: the post stays out of the shop.",
            "retag": "Tagging again; the new suggestions appear in a moment.",
            "removal": "Removed at the creator's request: unpublished, photo and tags deleted.",
        }
        if op not in done:
            raise PermissionDenied
        try:
            if op == "publish":
                services.post_publish(post=post)
            elif op == "unpublish":
                services.post_unpublish(post=post)
            elif op == "reject":
                services.post_reject(post=post)
            elif op == "retag":
                services.post_retag(post=post)
            else:
                services.post_removal_request(post=post, note=request.POST.get("note", ""))
        except services.PostRefusedError as exc:
            self.message_user(request, exc.reason, messages.ERROR)
        else:
            self.message_user(request, done[op], messages.SUCCESS)
        return self._back(post)


def _product_of_sku(sku: str) -> Product:
    """The product a merchandiser named by SKU, for a tag."""
    product = Product.objects.filter(sku=sku.strip()).first()
    if product is None:
        raise services.PostRefusedError(f"No product with SKU {sku.strip()!r}.")
    return product


class PostRegionForm(forms.Form):
    """A region drawn on the photo (its edges in percent of the photo's width and height)."""

    left = forms.FloatField(min_value=0, max_value=100)
    top = forms.FloatField(min_value=0, max_value=100)
    right = forms.FloatField(min_value=0, max_value=100)
    bottom = forms.FloatField(min_value=0, max_value=100)
    sku = forms.CharField(required=False, max_length=128)  # stripped by CharField

    def box(self) -> tuple[float, float, float, float]:
        data = self.cleaned_data
        return (data["left"] / 100, data["top"] / 100, data["right"] / 100, data["bottom"] / 100)


# --- Feeds -------------------------------------------------------------------------------------
class PostFeedForm(forms.Form):
    file = forms.FileField(
        required=False,
        help_text="CSV with a header row, a JSON list of objects, or JSON Lines; columns "
        "image_url (required), caption, creator_handle, post_url, rights_status "
        "(granted, requested, denied or none).",
    )
    url = forms.CharField(
        label="or the feed's URL",
        required=False,
        max_length=2000,
        help_text="The same formats, fetched by the worker (public addresses only, 20 MB at most).",
    )


@admin.register(PostFeed)
class PostFeedAdmin(LivePanelAdmin):
    list_display = ("__str__", "state", "progress", "total_rows", "done_rows", "failed_rows",
                    "created_at")  # fmt: skip
    list_filter = ("state",)
    fields = ("name", "source_url", "created_by", "created_at")
    readonly_fields = fields
    change_form_template = "admin/posts/postfeed/change_form.html"
    add_form_template = "admin/posts/postfeed/add.html"

    class Media:
        js = ("vendor/htmx-2.0.11.min.js",)
        css = {"all": ("vitrine_admin/admin.css", "vitrine_admin/posts.css")}

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # written by the worker only

    @admin.display(description="Progress")
    def progress(self, obj: PostFeed) -> str:
        return f"{obj.progress_percent}%"

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:feed_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="posts_postfeed_progress",
            )
        ]
        return own + super().get_urls()

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        form = self.add_form(request, PostFeedForm)
        if form.is_valid():
            try:
                feed = services.post_feed_create(
                    upload=form.cleaned_data["file"],
                    url=form.cleaned_data["url"],
                    created_by_id=request.user.pk,
                )
            except services.PostRefusedError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.reason)
            else:
                self.message_user(request, f"{feed} is queued.", messages.INFO)
                return HttpResponseRedirect(reverse("admin:posts_postfeed_change", args=[feed.pk]))
        return self.form_page(
            request, title="Add a feed of posts", form=form, extra_context=extra_context
        )

    def panel_context(self, request: HttpRequest, obj: PostFeed) -> dict[str, Any]:
        return {
            "feed": obj,
            "final": obj.state in PostFeed.FINAL_STATES,
            "row_errors": selectors.post_feed_row_errors(feed=obj)[:500],
            "poll_seconds": POLL_SECONDS,
        }

    def progress_view(self, request: HttpRequest, feed_id: int) -> HttpResponse:
        """Progress and row errors (an htmx fragment), polling until the feed is final."""
        feed = self.viewable_object(request, feed_id)
        return TemplateResponse(
            request, "admin/posts/postfeed/_progress.html", self.panel_context(request, feed)
        )
