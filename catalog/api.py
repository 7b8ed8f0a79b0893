"""REST API for imports: ``POST /api/v1/imports`` (file or URL), status, error report."""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError
from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors, services
from catalog.ingest.mapping import FORMATS, available_presets
from catalog.models import ImportJob
from search.models import ApiKey
from search.parsers import BoundedJSONParser
from search.permissions import HasApiAccess
from search.serializers import ErrorSerializer


class ImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(required=False)
    url = serializers.URLField(required=False, max_length=2000)
    preset = serializers.ChoiceField(choices=available_presets(), required=False)
    mapping = serializers.JSONField(required=False)
    format = serializers.ChoiceField(choices=FORMATS, required=False)
    currency = serializers.RegexField(r"^[A-Za-z]{3}$", required=False)
    lookbooks = serializers.FileField(required=False)

    def validate_mapping(self, value: Any) -> Any:
        if isinstance(value, str):  # multipart forms send JSON as text
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise serializers.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON object")
        # Stored with the job as jsonb, which cannot hold a NUL character (a 500, not a 400).
        if _holds_nul(value):
            raise serializers.ValidationError("must not contain NUL characters")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("file")) == bool(attrs.get("url")):
            raise serializers.ValidationError("send either a file or a url")
        return attrs


def _holds_nul(value: Any) -> bool:
    """True when a NUL character is in any string, key or value, of this JSON value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


class ImportCreateByUrlSerializer(ImportCreateSerializer):
    """An import sent as JSON: a feed `url` (uploading a file needs multipart).

    Schema only (the view validates every body with `ImportCreateSerializer`).
    """

    file = None  # type: ignore[assignment]
    lookbooks = None  # type: ignore[assignment]


class ImportJobSerializer(serializers.ModelSerializer):
    progress_percent = serializers.IntegerField(read_only=True)
    progress_url = serializers.SerializerMethodField()
    errors_url = serializers.SerializerMethodField()

    class Meta:
        model = ImportJob
        fields = [
            "id", "source", "source_format", "state", "total_rows", "done_rows", "failed_rows",
            "skipped_rows", "progress_percent", "stats", "error", "created_at", "started_at",
            "finished_at", "progress_url", "errors_url",
        ]  # fmt: skip

    def _absolute(self, name: str, obj: ImportJob) -> str:
        path = reverse(name, kwargs={"job_id": obj.id})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_progress_url(self, obj: ImportJob) -> str:
        return self._absolute("catalog:import-detail", obj)

    def get_errors_url(self, obj: ImportJob) -> str:
        return self._absolute("catalog:import-errors", obj)


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Error responses in the API's one error body (see `search.api.api_exception_handler`)."""
    described = {
        400: "Refused input",
        401: "No credentials, or wrong ones",
        403: "Not allowed for this key or user",
        404: "No such job",
        422: "The Idempotency-Key already started an import of another feed",
        429: "Too many requests; retry later",
    }
    return {
        code: OpenApiResponse(ErrorSerializer, description=described[code])
        for code in (401, 403, 429, *codes)
    }


class CanImport(permissions.BasePermission):
    """Imports, even to read, need a read-write key or a staff session: a job's source URL
    and error rows are the brand's back office, not the storefront's business."""

    message = "Imports need a read-write API key."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, ApiKey):
            return request.auth.can_write
        return bool(request.user and request.user.is_staff)


def _key_scope(request: Request) -> int | None:
    """The key whose jobs the caller may see; None for a staff session (every job)."""
    return request.auth.id if isinstance(request.auth, ApiKey) else None


def _job_or_404(request: Request, job_id: int) -> ImportJob:
    # Another key's job is a 404, not a 403: its id says nothing about it either.
    job = selectors.import_job_get(job_id=job_id, api_key_id=_key_scope(request))
    if job is None:
        raise exceptions.NotFound(f"No import job {job_id}.")
    return job


class ImportListCreateApi(APIView):
    permission_classes = [HasApiAccess, CanImport]
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    @extend_schema(
        operation_id="imports_list",
        summary="The 50 most recent import jobs",
        responses={200: ImportJobSerializer(many=True), **_errors()},
    )
    def get(self, request: Request) -> Response:
        jobs = selectors.import_job_list(api_key_id=_key_scope(request))[:50]
        return Response(ImportJobSerializer(jobs, many=True, context={"request": request}).data)

    @extend_schema(
        operation_id="imports_create",
        summary="Start an import from an uploaded feed or a feed URL",
        # Distinct shapes per content type: a file needs multipart, and a generated client
        # picks the encoding by the body's type, so one shape for both would send it as JSON.
        request={
            "multipart/form-data": ImportCreateSerializer,
            "application/json": ImportCreateByUrlSerializer,
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Any unique string of yours (up to 255 characters): a retry with "
                "the same key is answered with the job the first call created.",
            )
        ],
        responses={202: ImportJobSerializer, **_errors(400, 422)},
    )
    def post(self, request: Request) -> Response:
        serializer = ImportCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data.get("file")
        source = upload.name if upload else data["url"]
        key = _idempotency_key(request)
        if key and (job := _job_of_key(request, key, source)) is not None:
            return _accepted(request, job)  # a retry: the job the first call created
        try:
            job = services.import_job_create(
                kind="upload" if upload else "url",
                source=source,
                preset=data.get("preset"),
                mapping=data.get("mapping"),
                fmt=data.get("format"),
                currency=data.get("currency", ""),
                upload=upload,
                lookbooks_upload=data.get("lookbooks"),
                created_by_id=request.user.id,
                api_key_id=_key_scope(request),
                idempotency_key=key,
            )
        except services.ImportRefusedError as exc:
            field = exc.field or "non_field_errors"
            raise exceptions.ValidationError({field: [str(exc)]}) from exc
        except IntegrityError:  # the same key's first call created its job a moment ago
            if not key or (job := _job_of_key(request, key, source)) is None:
                raise
        return _accepted(request, job)


class IdempotencyKeyReusedError(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key already started an import of another feed."


def _idempotency_key(request: Request) -> str:
    """The `Idempotency-Key` header: up to 255 printable ASCII characters, or none."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 255 or not key.isascii() or not key.isprintable():
        raise exceptions.ValidationError(
            {"Idempotency-Key": ["must be at most 255 printable ASCII characters"]}
        )
    return key


def _job_of_key(request: Request, key: str, source: str) -> ImportJob | None:
    job = selectors.import_job_by_idempotency_key(
        key=key, api_key_id=_key_scope(request), created_by_id=request.user.id
    )
    if job is not None and job.source != source[:2000]:
        raise IdempotencyKeyReusedError()
    return job


def _accepted(request: Request, job: ImportJob) -> Response:
    body = ImportJobSerializer(job, context={"request": request}).data
    return Response(
        body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["progress_url"]}
    )


class ImportDetailApi(APIView):
    permission_classes = [HasApiAccess, CanImport]

    @extend_schema(
        operation_id="imports_retrieve",
        summary="An import job's state and progress",
        responses={200: ImportJobSerializer, **_errors(404)},
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = _job_or_404(request, job_id)
        return Response(ImportJobSerializer(job, context={"request": request}).data)


class ImportErrorsCsvApi(APIView):
    permission_classes = [HasApiAccess, CanImport]

    @extend_schema(
        operation_id="imports_errors_csv",
        summary="The job's failed and skipped rows as CSV (row, field, reason)",
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            **_errors(404),
        },
    )
    def get(self, request: Request, job_id: int) -> StreamingHttpResponse:
        job = _job_or_404(request, job_id)
        response = StreamingHttpResponse(
            selectors.import_row_errors_csv(job=job), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="import-{job.id}-errors.csv"'
        return response
